"""Soak test: many ``analyze`` calls in one process, as a notebook or a training script makes them.

    python benchmarks/soak.py --backend torch --calls 1000
    python benchmarks/soak.py --backend all --calls 300 [--every 100] [--warmup 20] [--new-loss-fn]

Backends: ``torch``, ``keras-tensorflow``, ``keras-jax``, ``keras-torch``, ``flax-linen``,
``flax-nnx`` (``flax``: both Flax APIs, ``all``: every one). Each runs in its own process (Keras
picks its backend at import) with the interpreter running this script, which needs the
backend's framework. The model is the contract suite's (``tests/contract/subjects.py``): the tiny
CNN of the conformance suite, two 8x8 inputs per call, the bottleneck at ``relu2``, 3 steps x 2
noise samples, ``target=`` with the default noise.

One table per backend, a row every ``--every`` calls after ``--warmup`` calls: the calls per
second since the last row, the resident memory (RSS, from /proc/self/statm) and the device
memory where the framework runs on a GPU, and the compiled functions the explainer keeps (Keras:
its compiled steps; Flax: ``iba_jax.explainer._CACHE``; PyTorch compiles nothing: the hooks left
on the model are shown instead) with the number of traces since the warm-up (TensorFlow: the
steps' tracing count; JAX: ``jax.monitoring`` trace events). The summary gives the RSS growth per
100 calls (least-squares slope after the warm-up). ``--new-loss-fn`` passes a new ``loss_fn``
function object on every call: each compiles anew, and the explainer keeps a bounded number.

Timing is not a test: the reliability suite (``tests/reliability``) checks the bounds in CI with
fewer calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "keras-tensorflow", "keras-jax", "keras-torch", "flax-linen", "flax-nnx")


def rss_mb() -> float:
    """The resident set size of this process in MiB (Linux: /proc/self/statm)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak, which can only grow
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


class Probe:
    """What one backend's explainer keeps: device memory, compiled functions, traces."""

    def __init__(self, name: str, explainer, model):
        self.name, self.explainer, self.model = name, explainer, model
        self.traces = 0
        self.seen: dict[int, int] = {}  # TensorFlow: tracing count per compiled step
        if name in ("keras-jax", "flax-linen", "flax-nnx"):
            import jax.monitoring

            def listen(event: str, seconds: float, **kwargs) -> None:
                if event == "/jax/core/compile/jaxpr_trace_duration":
                    self.traces += 1

            jax.monitoring.register_event_duration_secs_listener(listen)
        self.start = 0

    def reset(self) -> None:
        self.start = self.trace_count()

    def trace_count(self) -> int:
        if self.name == "keras-tensorflow":  # per step seen (dropped steps keep their count)
            for step in self.explainer.engine._steps.values():
                self.seen[id(step)] = int(step.experimental_get_tracing_count())
            return sum(self.seen.values())
        return self.traces

    def compiled(self) -> str:
        """The compiled functions kept, and the traces since the warm-up."""
        if self.name == "torch":
            handles = len(self.explainer.engine.handles)
            hooks = sum(len(m._forward_hooks) for m in self.model.modules())
            return f"none (hooks: {handles} of the explainer, {hooks} on the model)"
        if self.name.startswith("keras-"):
            kept = len(self.explainer.engine._steps)
            if self.name == "keras-torch":
                return f"{kept} step(s), eager"
            return f"{kept} step(s), {self.trace_count() - self.start} trace(s)"
        from iba_jax import explainer as jax_explainer

        kept = len(jax_explainer._CACHE)
        return f"{kept} cached, {self.trace_count() - self.start} trace(s)"

    def device_mb(self) -> float | None:
        """Memory in use on the GPU, if the framework runs on one."""
        try:
            if self.name in ("torch", "keras-torch"):
                import torch

                return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None
            if self.name == "keras-tensorflow":
                import tensorflow as tf

                if not tf.config.list_physical_devices("GPU"):
                    return None
                return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20
            import jax

            device = jax.devices()[0]
            if device.platform == "cpu":
                return None
            return (device.memory_stats() or {}).get("bytes_in_use", 0) / 2**20
        except Exception:  # noqa: BLE001 - a framework without the query: not shown
            return None


def worker(name: str, calls: int, warmup: int, every: int, new_loss_fn: bool) -> dict:
    """Run the soak of one backend in this process; return its rows and summary."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the contract suite's subjects, as pytest
    warnings.simplefilter("ignore")  # the few-samples warning of the small estimation set
    from contract.subjects import make

    subject = make(name)
    model, x, labels = subject.model, subject.x, subject.labels
    if name == "torch":
        import torch

        if torch.cuda.is_available():
            model, x = model.to("cuda"), x.to("cuda")
    explainer = subject.explainer()
    explainer.estimate(model, subject.data, progress=False)
    probe = Probe(name, explainer, model)

    def call() -> np.ndarray:
        if new_loss_fn:
            loss = subject.per_row_loss(labels)  # a new function object every time
            return explainer.analyze(model, x, loss_fn=loss)
        return explainer.analyze(model, x, target=labels)

    first = call()
    for _ in range(max(warmup - 1, 0)):
        call()
    probe.reset()
    rows = [{"calls": 0, "seconds": 0.0, "rss": rss_mb(), "device": probe.device_mb()}]
    rows[0]["compiled"] = probe.compiled()
    start = last = time.perf_counter()
    same = True
    for i in range(1, calls + 1):
        maps = call()
        same = same and bool(np.array_equal(maps, first))
        if i % every == 0 or i == calls:
            now = time.perf_counter()
            done = i - rows[-1]["calls"]
            rows.append(
                {
                    "calls": i,
                    "seconds": now - start,
                    "per_second": done / (now - last),
                    "rss": rss_mb(),
                    "device": probe.device_mb(),
                    "compiled": probe.compiled(),
                }
            )
            last = now
    slope = float(np.polyfit([r["calls"] for r in rows], [r["rss"] for r in rows], 1)[0])
    return {
        "backend": name,
        "rows": rows,
        "calls_per_second": calls / (rows[-1]["seconds"] or float("nan")),
        "rss_start": rows[0]["rss"],
        "rss_end": rows[-1]["rss"],
        "growth_per_100": 100 * slope,
        "same_heatmaps": same,
    }


def print_table(result: dict, warmup: int, new_loss_fn: bool) -> None:
    name = result["backend"]
    loss = "a new loss_fn per call" if new_loss_fn else "target="
    print(f"\n{name}: {loss}, after {warmup} warm-up call(s)")
    device = any(r["device"] is not None for r in result["rows"])
    head = f"{'calls':>6} {'seconds':>8} {'calls/s':>8} {'RSS MiB':>8}"
    print(head + (f" {'GPU MiB':>8}" if device else "") + "  compiled functions kept")
    for r in result["rows"]:
        rate = f"{r['per_second']:8.1f}" if "per_second" in r else f"{'':>8}"
        line = f"{r['calls']:>6} {r['seconds']:8.1f} {rate} {r['rss']:8.1f}"
        if device:
            line += f" {r['device'] if r['device'] is not None else float('nan'):8.1f}"
        print(f"{line}  {r['compiled']}")
    print(
        f"summary {name}: {result['calls_per_second']:.1f} calls/s, RSS {result['rss_start']:.1f} "
        f"-> {result['rss_end']:.1f} MiB, growth {result['growth_per_100']:+.2f} MiB per 100 "
        f"calls, heatmaps {'identical' if result['same_heatmaps'] else 'DIFFER'} across calls"
    )


def environment(name: str) -> dict[str, str]:
    env = dict(os.environ, IBA_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="3")
    if name.startswith("keras-"):
        env["KERAS_BACKEND"] = name.removeprefix("keras-")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", required=True, help="repeatable")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--new-loss-fn", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.calls < 1 or args.every < 1 or args.warmup < 1:
        parser.error("--calls, --every and --warmup must be >= 1")
    if args.worker:
        result = worker(args.worker, args.calls, args.warmup, args.every, args.new_loss_fn)
        print("RESULT " + json.dumps(result))
        return
    names: list[str] = []
    for b in args.backend:
        names += {"all": list(BACKENDS), "flax": ["flax-linen", "flax-nnx"]}.get(b, [b])
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}, flax, all")
    for name in names:
        command = [sys.executable, __file__, "--backend", name, "--worker", name]
        command += ["--calls", str(args.calls), "--warmup", str(args.warmup)]
        command += ["--every", str(args.every)] + (["--new-loss-fn"] if args.new_loss_fn else [])
        done = subprocess.run(command, env=environment(name), capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            print(f"\n{name}: failed ({' / '.join(tail)})")
            continue
        print_table(json.loads(lines[-1].removeprefix("RESULT ")), args.warmup, args.new_loss_fn)


if __name__ == "__main__":
    main()
