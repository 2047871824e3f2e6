"""Seconds per ``analyze`` of ``iba_tf`` on each Keras backend, beside ``iba_torch``, on the same
architecture and weights (the plain CNN of ``benchmarks/torch_analyze.py``: 8 convs, 112 px, the
bottleneck after the 4th conv's ReLU, 64 x 56 x 56), 10 steps x 10 noise samples.

    python benchmarks/keras_analyze.py [--threads 2] [--repeats 3] [--backends tensorflow jax torch]

Every backend runs in its own process (Keras picks its backend at import). Columns: the first
call (tracing / compiling the step included), then the median of ``--repeats`` calls for one
input and for 8 inputs in one call. All runs use the same ``iba.draw_noise`` draws, so the
heatmaps are compared with ``iba_torch``'s (float32: about 1e-5 relative).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

import iba

STEPS, BATCH, SIZE = 10, 10, 112
CHANNELS = [(3, 32), (32, 32), None, (32, 64), (64, 64), None, (64, 128), (128, 128), None]
CHANNELS += [(128, 256), (256, 256)]
FEATURES = (56, 56, 64)  # after the 4th conv's ReLU, channels-last


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialised conv weights in PyTorch's layout (out, in, k, k) and the linear head."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, io in enumerate(c for c in CHANNELS if c):
        c_in, c_out = io
        out[f"conv{i}.weight"] = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))
        out[f"conv{i}.bias"] = 0.01 * rng.standard_normal(c_out)
    out["fc.weight"] = rng.standard_normal((1000, 256)) * np.sqrt(1 / 256)
    out["fc.bias"] = np.zeros(1000)
    return {k: v.astype(np.float32) for k, v in out.items()}


def inputs(seed: int = 1):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    data = (image + 0.5 * rng.standard_normal((24, 3, SIZE, SIZE))).clip(-1, 1).astype(np.float32)
    batch = np.concatenate([image, image + 0.3 * rng.standard_normal((7, 3, SIZE, SIZE))])
    return image, data, batch.astype(np.float32)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Seconds of the first call and the median of ``repeats`` further calls."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def keras_worker(path: str, repeats: int) -> dict:
    import keras

    import iba_tf

    w = dict(np.load(path))
    x = keras.Input((SIZE, SIZE, 3))
    h, conv = x, 0
    for io in CHANNELS:
        if io is None:
            h = keras.layers.MaxPooling2D(2)(h)
            continue
        layer = keras.layers.Conv2D(io[1], 3, padding="same", activation="relu")
        h = layer(h)
        layer.set_weights([w[f"conv{conv}.weight"].transpose(2, 3, 1, 0), w[f"conv{conv}.bias"]])
        if conv == 3:
            h = iba_tf.IBALayer(name="iba")(h)
        conv += 1
    h = keras.layers.GlobalAveragePooling2D()(h)
    head = keras.layers.Dense(1000)
    out = head(h)
    head.set_weights([w["fc.weight"].T, w["fc.bias"]])
    model = keras.Model(x, out)
    return run_case(model, "iba", lambda a: a.transpose(0, 2, 3, 1), iba_tf.IBA, repeats)


def torch_worker(path: str, repeats: int) -> dict:
    import torch

    from iba_torch import IBA

    w = dict(np.load(path))
    layers, conv = [], 0
    for io in CHANNELS:
        if io is None:
            layers.append(torch.nn.MaxPool2d(2))
            continue
        layer = torch.nn.Conv2d(*io, 3, padding=1)
        layer.weight.data = torch.as_tensor(w[f"conv{conv}.weight"])
        layer.bias.data = torch.as_tensor(w[f"conv{conv}.bias"])
        layers += [layer, torch.nn.ReLU()]
        conv += 1
    head = torch.nn.Linear(256, 1000)
    head.weight.data, head.bias.data = (
        torch.as_tensor(w["fc.weight"]),
        torch.as_tensor(w["fc.bias"]),
    )
    model = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head)
    # "8": the 4th conv's ReLU (64 x 56 x 56), where the Keras model has its IBALayer
    return run_case(model.eval(), "8", torch.as_tensor, IBA, repeats, channels_first=True)


def run_case(model, target_layer, convert, explainer_class, repeats, channels_first=False) -> dict:
    image, data, batch = inputs()
    image, data, batch = convert(image), convert(data), convert(batch)
    explainer = explainer_class(target_layer)
    noise = iba.draw_noise(0, STEPS, BATCH, FEATURES)
    noise8 = iba.draw_noise(0, STEPS, BATCH, FEATURES, n_inputs=8)
    if channels_first:
        noise, noise8 = np.moveaxis(noise, -1, -3), np.moveaxis(noise8, -1, -3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(model, data, progress=False)
        first, one = timed(lambda: explainer.analyze(model, image, target=3, noise=noise), repeats)
        first8, eight = timed(
            lambda: explainer.analyze(model, batch, target=[3] * 8, noise=noise8), repeats
        )
        heatmap = explainer.analyze(model, image, target=3, noise=noise)
    return {
        "first": first,
        "one": one,
        "first8": first8,
        "eight": eight,
        "heatmap": heatmap.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "jax", "torch", "iba_torch"]
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = torch_worker if args.worker == "iba_torch" else keras_worker
        print(json.dumps(worker(args.weights, args.repeats)))
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.npz")
        np.savez(path, **weights())
        for backend in args.backends:
            threads = str(args.threads)
            env = {
                **os.environ,
                "KERAS_BACKEND": "torch" if backend == "iba_torch" else backend,
                "OMP_NUM_THREADS": threads,
                "TF_NUM_INTRAOP_THREADS": threads,
                "TF_NUM_INTEROP_THREADS": "1",
                "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}",
            }
            command = [sys.executable, __file__, "--worker", backend, "--weights", path]
            command += ["--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(f"{backend}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results[backend] = json.loads(done.stdout.strip().splitlines()[-1])

    reference = results.get("iba_torch")
    print(f"\nplain CNN (8 convs) @ 4th conv ReLU, {SIZE} px, {STEPS} steps x {BATCH} samples")
    print("| package (backend) | first call s | 1 input s | 8 inputs, 1 call s | vs iba_torch |")
    print("|---|---|---|---|---|")
    for backend, r in results.items():
        name = "iba_torch" if backend == "iba_torch" else f"iba_tf (keras-{backend})"
        diff = "-"
        if reference is not None and backend != "iba_torch":
            a, b = np.asarray(r["heatmap"]), np.asarray(reference["heatmap"])
            diff = f"{np.abs(a - b).max() / np.abs(b).max():.1e} rel."
        print(f"| {name} | {r['first']:.2f} | {r['one']:.3f} | {r['eight']:.3f} | {diff} |")


if __name__ == "__main__":
    main()
