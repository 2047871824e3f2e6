"""Estimator throughput: 5,000 feature maps of 512x28x28 float32 in batches of 64 (issue 2).

    python benchmarks/estimator.py [--samples 5000] [--batch 64]

Prints MB/s of float32 features consumed; the target is at least 500 MB/s on 2 cores.
"""

import argparse
import time

import numpy as np

import iba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 28, 28))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    pool = [
        np.maximum(rng.standard_normal((args.batch, *args.shape), np.float32), 0) for _ in range(2)
    ]
    est = iba.Estimator(layout="channels_first")
    seen, start = 0, time.perf_counter()
    while seen < args.samples:
        batch = pool[(seen // args.batch) % 2][: args.samples - seen]
        est.update(batch)
        seen += len(batch)
    seconds = time.perf_counter() - start
    megabytes = seen * np.prod(args.shape) * 4 / 1e6
    rows = [
        ("samples", f"{seen}"),
        ("feature shape", "x".join(map(str, args.shape))),
        ("batch size", f"{args.batch}"),
        ("data (MB)", f"{megabytes:.0f}"),
        ("seconds", f"{seconds:.2f}"),
        ("throughput (MB/s)", f"{megabytes / seconds:.0f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'estimator update':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
