"""Degradation throughput: MoRF + LeRF with 100 points on 224 px images.

    python benchmarks/evaluation_degradation.py [--images 4] [--batch 64] [--tile 8 14]
        [--efficientnet] [--threads 2]

Prints seconds per image for a model that returns zeros (the metric's own cost: building the
perturbed images, softmax, bookkeeping), a cheap one (8x8 average pooling and a linear layer to
1,000 classes) and, with ``--efficientnet``, the bundled EfficientNet-Lite0 on PyTorch on the
bundled photos, with the default memory format and with channels-last memory (weights and
inputs; oneDNN's fast path on the CPU). Try ``--batch 8``: on a 2-core CPU small batches run
faster per image (they stay in the cache).
"""

import argparse
import time
import warnings

import numpy as np

from iba.evaluation import degradation


def cheap_model(seed: int = 0):
    """``(n, 224, 224, 3)`` -> 8x8 average pool -> linear -> ``(n, 1000)`` logits."""
    weights = np.random.default_rng(seed).standard_normal((28 * 28 * 3, 1000)).astype(np.float32)
    weights /= np.sqrt(len(weights))

    def model(batch: np.ndarray) -> np.ndarray:
        pooled = batch.reshape(len(batch), 28, 8, 28, 8, 3).mean(axis=(2, 4))
        return pooled.reshape(len(batch), -1) @ weights

    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tile", type=int, nargs="+", default=(8, 14))
    parser.add_argument("--efficientnet", action="store_true", help="also the real model")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads (2)")
    args = parser.parse_args()

    warnings.simplefilter("ignore", RuntimeWarning)  # the zeros model's curves are flat
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.images, 224, 224, 3)).astype(np.float32)
    heatmaps = rng.uniform(0, 1, (args.images, 224, 224))
    models = {"zeros": lambda batch: np.zeros((len(batch), 1000)), "cheap": cheap_model()}
    layout = {"zeros": "channels_last", "cheap": "channels_last"}
    if args.efficientnet:
        images = photo_batch(args.images)
        for channels_last in (False, True):
            name = "efficientnet-lite0" + (" channels-last" if channels_last else "")
            models[name] = efficientnet(channels_last, args.threads)
            layout[name] = "channels_first"
    print(f"{'model':>26}  {'tile':>4}  {'model inputs/image':>18}  {'s/image':>8}")
    for name, model in models.items():
        x = images if layout[name] == "channels_last" else np.moveaxis(images, -1, 1).copy()
        for tile in args.tile:
            start = time.perf_counter()
            result = degradation(
                model, x, heatmaps, 0, tile_size=tile, batch_size=args.batch, progress=False,
                data_format=layout[name],
            )  # fmt: skip
            seconds = (time.perf_counter() - start) / args.images
            inputs = 2 * len(result.fractions) - 2
            print(f"{name:>26}  {tile:>4}  {inputs:>18}  {seconds:>8.3f}")


def photo_batch(n: int) -> np.ndarray:
    """The first ``n`` bundled photos (224 px centre crops), preprocessed, ``(n, 224, 224, 3)``."""
    from iba.demo import photos, runners

    names = [*photos.EXPLAINED, *photos.ESTIMATION][:n]
    return runners.preprocess(np.stack([photos.center_crop(photos.photo(m))[0] for m in names]))


def efficientnet(channels_last: bool, threads: int):
    """The bundled EfficientNet-Lite0 on PyTorch as a NumPy callable (NCHW in, logits out), as
    ``benchmarks/faithfulness.py`` calls it (``channels_last``: oneDNN's fast path on the CPU)."""
    import torch
    from faithfulness import numpy_model  # this folder is on the path of a script run here

    from iba_torch.runner import TorchRunner

    torch.set_num_threads(threads)
    return numpy_model(TorchRunner().model, channels_last=channels_last)


if __name__ == "__main__":
    main()
