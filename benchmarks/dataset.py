"""Images per second of ``iba explain-dataset`` (docs/dataset.md) on one backend: the bundled
EfficientNet-Lite0 at ``_blocks.4``, the job's default settings (10 steps x 10 noise samples;
degradation with 8 x 8 tiles and 100 points; insertion and deletion at 1,792 pixels per step),
the bundled photos chelsea, coffee, astronaut and rocket in blocks of 1.

    python benchmarks/dataset.py [--backend torch|keras|jax] [--keras-backend jax]
        [--threads 1] [--workers 0] [--points 100] [--photos 4]

Each run is ``python -m iba explain-dataset`` in a fresh process, timed from its start to its
end (start-up, model loading and compiling included), with the estimator already in a
temporary cache (a first, untimed run fits it). ``--threads N`` sets ``OMP_NUM_THREADS`` (PyTorch)
and XLA's CPU threads (JAX); ``--workers N`` runs the job on Ray Data. Prints one Markdown row of
docs/dataset.md's rates table: seconds per image (IBA alone, the rows' ``explain_seconds``, in
brackets) and images per second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def make_folder(folder: Path, n: int) -> None:
    """The first ``n`` of :data:`PHOTOS` as PNG files (unlabelled: each explained for its
    predicted class)."""
    from PIL import Image

    from iba.demo import photos

    folder.mkdir()
    for name in PHOTOS[:n]:
        Image.fromarray(np.asarray(photos.photo(name))).save(folder / f"{name}.png")


def environment(args: argparse.Namespace, cache: Path) -> dict[str, str]:
    env = dict(os.environ, IBA_CACHE=str(cache), PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.keras_backend:
        env["KERAS_BACKEND"] = args.keras_backend
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        flags = f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}"
        env["XLA_FLAGS"] = f"{flags} intra_op_parallelism_threads={args.threads}"
    return env


def run(args: argparse.Namespace, folder: Path, out: Path, env: dict, *extra: str) -> float:
    """Seconds of one ``python -m iba explain-dataset`` (fails loudly if the job does)."""
    argv = [sys.executable, "-m", "iba", "explain-dataset", str(folder), "--out", str(out)]
    argv += ["--backend", args.backend, "--block", str(args.block), "-q", *extra]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the job failed:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="torch", help="torch, keras or jax (default torch)")
    parser.add_argument("--keras-backend", help="KERAS_BACKEND for --backend keras")
    parser.add_argument("--threads", type=int, default=0, help="threads per process (0: default)")
    parser.add_argument("--workers", type=int, default=0, help="Ray Data workers (0: no Ray)")
    parser.add_argument("--points", type=int, default=100, help="degradation's points")
    parser.add_argument("--photos", type=int, default=len(PHOTOS), help="images (at most 4)")
    parser.add_argument("--block", type=int, default=1, help="images per block")
    parser.add_argument("--samples", type=int, default=1000, help="the estimator's crops")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # this checkout's iba, as the timed processes run it
    from iba import dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root / "photos", args.photos)
        env = environment(args, root / "cache")
        options = ["--points", str(args.points), "--samples", str(args.samples)]
        # untimed: fit and cache the estimator (one image, the cheapest metric)
        warm = ["--steps", "1", "--metrics", "insertion", "--samples", str(args.samples)]
        make_folder(root / "one", 1)
        run(args, root / "one", root / "warm", env, *warm)
        workers = ["--workers", str(args.workers)] if args.workers else []
        seconds = run(args, root / "photos", root / "out", env, *options, *workers)
        rows = dataset.read_rows(root / "out").to_pylist()
    assert len(rows) == args.photos and all(r["error"] is None for r in rows)
    explain = float(np.mean([r["explain_seconds"] for r in rows]))
    backend = args.backend + (f" ({args.keras_backend})" if args.keras_backend else "")
    threads = f"{args.threads} thread(s)" if args.threads else "default threads"
    how = f"Ray Data, {args.workers} worker(s)" if args.workers else "one process"
    print(f"| {backend}, {how}, {threads}, --points {args.points} | ", end="")
    print(f"{seconds / len(rows):.1f} ({explain:.1f}) | {len(rows) / seconds:.3f} |")


if __name__ == "__main__":
    main()
