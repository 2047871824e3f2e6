"""Seconds per heatmap of ``iba_torch.IBA.analyze`` with the compiled step against the eager step,
on EfficientNet-Lite0 at ``_blocks.4`` (docs/performance.md, "PyTorch compiled path").

    python benchmarks/torch_compiled.py [--device cpu|cuda] [--inputs 1 8] [--threads 2]
        [--repeats 3]

Float32, 10 steps x 10 noise samples, the bundled ImageNet weights. For each number of inputs
``N``: the first call of each path (the compiled one compiles and checks itself against the eager
step there), then ``--repeats`` rounds that run both paths in turn (so that a change of the
machine's load slows both alike), their medians per heatmap (wall-clock seconds, and the
process's CPU seconds, which a shared machine's load disturbs less), the ratio eager / compiled,
and the largest difference of the two heatmaps (normalised to the eager one's maximum) on the
same noise. The load average is printed before and after: the timings of a shared machine need
it."""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--inputs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    sys.path[:0] = [os.path.dirname(HERE), HERE]  # this checkout's iba_torch, then torch_analyze
    from torch_analyze import efficientnet

    import iba
    from iba_torch import IBA

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    _, model, layer, image, _, _ = efficientnet()
    model = model.to(args.device)
    image = image.to(args.device)
    rng = torch.Generator().manual_seed(0)
    n_max = max(args.inputs)
    noisy = 0.3 * torch.randn(n_max - 1, *image.shape[1:], generator=rng)
    images = torch.cat([image, image + noisy.to(args.device)])
    with torch.no_grad():
        labels = [int(c) for c in model(images).argmax(1)]
    data = (image.cpu() + 0.5 * torch.randn(24, *image.shape[1:], generator=rng)).clamp(-1, 1)

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    eager = IBA(layer, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager.estimate(model, data.to(args.device).split(8), progress=False)
    compiled = IBA(layer, compile=True, estimators=eager.estimators)
    print(f"load before: {load()}", flush=True)
    rows = []
    for n in args.inputs:
        x, y = images[:n], labels[:n]
        noise = iba.draw_noise(0, 10, 10, eager.estimators[0].feature_shape, n_inputs=n)

        def run(explainer, noise=noise, x=x, y=y):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = explainer.analyze(model, x, target=y, noise=noise)
            sync()
            return out

        firsts = {}
        maps = {}
        for name, explainer in (("eager", eager), ("compiled", compiled)):
            start = time.perf_counter()
            maps[name] = run(explainer)
            firsts[name] = time.perf_counter() - start
        reason = compiled.last_compile_reason
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        cpu: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for name, explainer in (("eager", eager), ("compiled", compiled)):
                start, start_cpu = time.perf_counter(), time.process_time()
                run(explainer)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        diff = float(np.abs(maps["compiled"] - maps["eager"]).max() / np.abs(maps["eager"]).max())
        med = {k: statistics.median(v) for k, v in times.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        rows.append((n, firsts, med, med_cpu, diff, compiled.last_compiled))
        print(f"N={n}: wall {times}, CPU {cpu} ({reason}); load {load()}", flush=True)

    print(
        f"\nEfficientNet-Lite0 @ {layer}, float32, 10 steps x 10 noise samples, {args.device}, "
        f"{args.threads} threads, torch {torch.__version__}, {datetime.date.today()}, median of "
        f"{args.repeats}; load after: {load()}"
    )
    print(
        "| N | eager first s | compiled first s | eager s / heatmap | compiled s / heatmap "
        "| eager / compiled | CPU s / heatmap, eager | compiled | eager / compiled "
        "| heatmap difference | compiled ran |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, firsts, med, med_cpu, diff, ran in rows:
        print(
            f"| {n} | {firsts['eager']:.2f} | {firsts['compiled']:.1f} | {med['eager'] / n:.3f} | "
            f"{med['compiled'] / n:.3f} | {med['eager'] / med['compiled']:.2f} | "
            f"{med_cpu['eager'] / n:.3f} | {med_cpu['compiled'] / n:.3f} | "
            f"{med_cpu['eager'] / med_cpu['compiled']:.2f} | {diff:.1e} | {ran} |"
        )


if __name__ == "__main__":
    main()
