"""What a new user waits for on one backend: the bundled EfficientNet-Lite0 at ``_blocks.4``
loaded, its estimator fitted on random crops of the bundled photos (as ``iba demo`` does), then
``analyze`` of one photo at a time, the first call with its tracing and compiling.

    python benchmarks/first_call.py [--backend torch|keras|jax] [--crops 1000] [--calls 4]

One backend per process; for Keras, ``KERAS_BACKEND`` picks Keras' backend (``jax`` by
default here). The photos are chelsea, coffee and quokka, explained in that order and again
from the first; each call explains one photo for its predicted class (10 steps x 10 noise
samples, seed 0). Prints one Markdown row of docs/performance.md's first-call table: seconds to
load the model, to fit the estimator, of the first ``analyze`` and the median of the later ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

PHOTOS = ("chelsea", "coffee", "quokka")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "keras", "jax"), default="torch")
    parser.add_argument("--crops", type=int, default=1000, help="crops the estimator is fit on")
    parser.add_argument("--calls", type=int, default=4, help="analyze calls of one photo each")
    args = parser.parse_args()
    if args.backend == "keras":
        os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from iba.demo import photos, runners

    start = time.perf_counter()
    run = runners.runner(args.backend, None)
    explainer = run.explainer(runners.DEFAULT_LAYER)
    loaded = time.perf_counter() - start

    crops = photos.random_crops(n=args.crops)
    start = time.perf_counter()
    run.estimate(explainer, crops, args.crops, progress=False)
    fitted = time.perf_counter() - start

    images = np.stack([photos.center_crop(photos.photo(name))[0] for name in PHOTOS])
    targets = run.predict(images).argmax(1)
    seconds = []
    for call in range(args.calls):
        i = call % len(PHOTOS)
        start = time.perf_counter()
        run.analyze(explainer, images[i : i + 1], targets[i : i + 1], seed=0)
        seconds.append(time.perf_counter() - start)

    name = args.backend
    if args.backend == "keras":
        name = f"keras-{os.environ['KERAS_BACKEND']}"
    later = f"{statistics.median(seconds[1:]):.2f}" if len(seconds) > 1 else "-"
    print("| backend | load s | estimator fit s (crops) | first analyze s | later analyze s |")
    print("|---|---|---|---|---|")
    print(f"| {name} | {loaded:.1f} | {fitted:.1f} ({args.crops}) | {seconds[0]:.2f} | {later} |")


if __name__ == "__main__":
    main()
