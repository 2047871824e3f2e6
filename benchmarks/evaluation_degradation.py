"""Degradation throughput: MoRF + LeRF with 100 points on 224 px images, a cheap NumPy model.

    python benchmarks/evaluation_degradation.py [--images 4] [--batch 64] [--tile 8 14]

Prints seconds per image for two models: one that returns zeros (the metric's own cost: building
the perturbed images, softmax, bookkeeping) and a cheap one (8x8 average pooling and a linear
layer to 1,000 classes).
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
    args = parser.parse_args()

    warnings.simplefilter("ignore", RuntimeWarning)  # the zeros model's curves are flat
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.images, 224, 224, 3)).astype(np.float32)
    heatmaps = rng.uniform(0, 1, (args.images, 224, 224))
    models = {"zeros": lambda batch: np.zeros((len(batch), 1000)), "cheap": cheap_model()}
    print(f"{'model':>5}  {'tile':>4}  {'model inputs/image':>18}  {'s/image':>8}")
    for name, model in models.items():
        for tile in args.tile:
            start = time.perf_counter()
            result = degradation(
                model, images, heatmaps, 0, tile_size=tile, batch_size=args.batch, progress=False
            )
            seconds = (time.perf_counter() - start) / args.images
            inputs = 2 * len(result.fractions) - 2
            print(f"{name:>5}  {tile:>4}  {inputs:>18}  {seconds:>8.3f}")


if __name__ == "__main__":
    main()
