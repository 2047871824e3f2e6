"""Seconds per heatmap of ``analyze`` on one backend, beside that backend's compiled floor.

    python benchmarks/speed.py --backend torch|torch-compiled|keras-tensorflow|keras-jax|keras-torch|flax
        [--device cpu|cuda|gpu] [--size 32] [--inputs 1 8 32] [--steps 10] [--batch-size 10]
        [--threads 2] [--repeats 3]

Run it with the backend's Python (``.nox/tests-<backend>/bin/python``; Keras picks its backend
at import, so one backend per process). The model is the plain 8-conv CNN of
``benchmarks/torch_analyze.py`` (the same He-initialised weights on every backend, from
``benchmarks/keras_analyze.py``), with the bottleneck after the second max-pool (64 channels at
a quarter of ``--size``), ``--steps`` x ``--batch-size`` (defaults 10 x 10, the paper's).

Columns, for ``N`` inputs in one ``analyze`` call:

- ``first call s``: the first ``analyze`` of ``N`` inputs (tracing / compiling included);
- ``s / heatmap``: the median of ``--repeats`` later calls, divided by ``N``;
- ``floor s / heatmap``: the same steps written by hand in the framework's own compiled form,
  without the library: the layers before the target once, then ``steps - 1`` forward + backward
  passes of the layers after it on the ``N * batch_size`` rows, gradients for the features only
  (PyTorch: eager autograd, which is what ``iba_torch`` runs eagerly; for ``torch-compiled``,
  ``IBA(compile=True)``, the same forward + backward under ``torch.compile``; Keras: the
  backend's compiled gradient, ``tf.function`` / ``jax.jit`` / eager torch; Flax: one
  ``jax.jit`` of a ``lax.scan``). The bottleneck's own arithmetic (noise, smoothing, capacity,
  Adam) is not in it;
- ``ratio``: ``s / heatmap`` over the floor.

``--device cpu`` hides every GPU from the framework (before it is imported); ``cuda`` / ``gpu``
requires one and stops with a message when there is none.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CHANNELS = [(3, 32), (32, 32), None, (32, 64), (64, 64), None, (64, 128), (128, 128), None]
CHANNELS += [(128, 256), (256, 256)]
CUT = 5  # the bottleneck comes after CHANNELS[:CUT]: the second max-pool
BACKENDS = ("torch", "torch-compiled", "keras-tensorflow", "keras-jax", "keras-torch", "flax")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda", "gpu"), default="cpu")
    parser.add_argument("--size", type=int, default=32, help="input height and width (px)")
    parser.add_argument("--inputs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=10, help="noise samples per input")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.size % 8 or args.size < 8:
        parser.error("--size must be a multiple of 8 (three max-pools)")
    return args


def environment(args: argparse.Namespace) -> None:
    """Thread counts and device visibility, set before any framework is imported."""
    threads = str(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", threads)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ.setdefault(
            "XLA_FLAGS",
            f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}",
        )
    if args.backend.startswith("keras-"):
        os.environ["KERAS_BACKEND"] = args.backend.removeprefix("keras-")


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialised weights in PyTorch's layout (as ``benchmarks/keras_analyze.py``)."""
    sys.path.insert(0, HERE)
    from keras_analyze import weights as shared

    return shared(seed)


def median(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_and_median(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, median(fn, repeats)


class Case:
    """One backend: ``analyze(n)`` and ``floor(n)`` callables (each returns when done)."""

    name: str
    device: str

    def analyze(self, n: int) -> None:
        raise NotImplementedError

    def floor(self, n: int) -> None:
        raise NotImplementedError


# -- PyTorch -------------------------------------------------------------------------------------


class TorchCase(Case):
    def __init__(self, args: argparse.Namespace, w: dict, images: np.ndarray, data: np.ndarray):
        import torch

        from iba_torch import IBA

        torch.set_num_threads(args.threads)
        if args.device != "cpu" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        self.torch, self.device = torch, "cuda" if args.device != "cpu" else "cpu"
        compiled = args.backend == "torch-compiled"  # the compiled step (iba_torch._compiled)
        self.name = f"iba_torch {torch.__version__}{' (compiled)' if compiled else ''}"
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
        layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head]
        self.model = torch.nn.Sequential(*layers).eval().to(self.device)
        cut = len([m for io in CHANNELS[:CUT] for m in ((1, 2) if io else (1,))])
        self.prefix, self.tail = self.model[:cut], self.model[cut:]
        self.images = torch.as_tensor(images.transpose(0, 3, 1, 2).copy()).to(self.device)
        self.steps, self.batch = args.steps, args.batch_size
        self.explainer = IBA(
            str(cut - 1), compile=compiled, steps=args.steps, batch_size=args.batch_size
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data_t = torch.as_tensor(data.transpose(0, 3, 1, 2).copy()).to(self.device)
            self.explainer.estimate(self.model, data_t, progress=False)

        def score(z):
            return self.tail(z).logsumexp(1).sum()

        self.score = torch.compile(score, dynamic=False) if compiled else score

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def analyze(self, n: int) -> None:
        self.explainer.analyze(self.model, self.images[:n], target=[3] * n)
        self.sync()

    def floor(self, n: int) -> None:
        torch = self.torch
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            with torch.no_grad():
                features = self.prefix(self.images[:n])
            z = features.repeat_interleave(self.batch, 0).requires_grad_(True)
            for _ in range(self.steps - 1):
                self.score(z).backward()
                z.grad = None
        finally:
            for p in self.model.parameters():
                p.requires_grad_(True)
        self.sync()


# -- Keras 3 -------------------------------------------------------------------------------------


class KerasCase(Case):
    def __init__(self, args: argparse.Namespace, w: dict, images: np.ndarray, data: np.ndarray):
        import keras

        import iba_tf
        from iba_tf import _backend

        backend = keras.backend.backend()
        self.keras, self.device = keras, self._device(backend, args.device)
        self.name = f"iba_tf, Keras {keras.__version__} ({backend})"
        size = images.shape[1]
        x = keras.Input((size, size, 3))
        h, conv = x, 0
        for i, io in enumerate(CHANNELS):
            if io is None:
                h = keras.layers.MaxPooling2D(2)(h)
            else:
                layer = keras.layers.Conv2D(io[1], 3, padding="same", activation="relu")
                h = layer(h)
                kernel = w[f"conv{conv}.weight"].transpose(2, 3, 1, 0)
                layer.set_weights([kernel, w[f"conv{conv}.bias"]])
                conv += 1
            if i == CUT - 1:
                features_in = h
                h = iba_tf.IBALayer(name="iba")(h)
                tail_in = h
        h = keras.layers.GlobalAveragePooling2D()(h)
        head = keras.layers.Dense(1000)
        out = head(h)
        head.set_weights([w["fc.weight"].T, w["fc.bias"]])
        self.model = keras.Model(x, out)
        self.prefix = keras.Model(x, features_in)
        self.tail = keras.Model(tail_in, out)
        self.images, self.steps, self.batch = images, args.steps, args.batch_size
        self.explainer = iba_tf.IBA("iba", steps=args.steps, batch_size=args.batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.explainer.estimate(self.model, data, progress=False)
        ops = keras.ops
        tail = self.tail

        def score(z):
            return ops.sum(ops.logsumexp(tail(z, training=False), axis=1))

        self.gradient = _backend.make_input_gradient(score, tail.variables)

    @staticmethod
    def _device(backend: str, device: str) -> str:
        if device == "cpu":
            return "cpu"
        if backend == "tensorflow":
            import tensorflow as tf

            ok = bool(tf.config.list_physical_devices("GPU"))
        elif backend == "jax":
            import jax

            ok = jax.default_backend() == "gpu"
        else:
            import torch

            ok = torch.cuda.is_available()
        if not ok:
            raise SystemExit(f"--device {device}: Keras' {backend} backend sees no GPU")
        return "gpu"

    def analyze(self, n: int) -> None:
        self.explainer.analyze(self.model, self.images[:n], target=[3] * n)

    def floor(self, n: int) -> None:
        from iba_tf import _backend

        ops = self.keras.ops
        with _backend.no_grad():
            features = self.prefix(self.images[:n], training=False)
        z = ops.repeat(features, self.batch, axis=0)
        for _ in range(self.steps - 1):
            grad = self.gradient(z)
        ops.convert_to_numpy(grad)  # waits for the device


# -- Flax ----------------------------------------------------------------------------------------


class FlaxCase(Case):
    def __init__(self, args: argparse.Namespace, w: dict, images: np.ndarray, data: np.ndarray):
        import jax
        import jax.numpy as jnp

        sys.path.insert(0, HERE)
        from iba_jax import IBA

        if args.device != "cpu" and jax.default_backend() != "gpu":
            raise SystemExit("--device gpu: JAX sees no GPU")
        self.jax, self.device = jax, jax.default_backend()
        self.name = f"iba_jax, jax {jax.__version__}"
        module, params = _linen_cnn(w)
        self.model = (module, params)
        self.images = jnp.asarray(images)
        self.explainer = IBA("Pool_1", steps=args.steps, batch_size=args.batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.explainer.estimate(self.model, data, progress=False)
        self._floors: dict[int, Callable] = {}
        self.steps, self.batch = args.steps, args.batch_size

    def analyze(self, n: int) -> None:
        self.explainer.analyze(self.model, self.images[:n], target=[3] * n)

    def floor(self, n: int) -> None:
        if n not in self._floors:
            self._floors[n] = _flax_floor(self.model, self.steps, self.batch)
        self.jax.block_until_ready(self._floors[n](self.images[:n]))


def _linen_cnn(w: dict):
    """The plain CNN in Flax Linen (``Pool_1``: the second max-pool) with the weights ``w``."""
    import flax.linen as nn
    import jax.numpy as jnp

    class Block(nn.Module):
        features: int

        @nn.compact
        def __call__(self, x):
            return nn.relu(nn.Conv(self.features, (3, 3), padding=1)(x))

    class Pool(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.max_pool(x, (2, 2), strides=(2, 2))

    class PlainCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i, c in enumerate((32, 64, 128, 256)):
                x = Block(c)(x)
                x = Block(c)(x)
                x = Pool()(x) if i < 3 else x.mean(axis=(1, 2))
            return nn.Dense(1000)(x)

    params = {
        f"Block_{i}": {
            "Conv_0": {
                "kernel": jnp.asarray(w[f"conv{i}.weight"].transpose(2, 3, 1, 0)),
                "bias": jnp.asarray(w[f"conv{i}.bias"]),
            }
        }
        for i in range(8)
    }
    params["Dense_0"] = {"kernel": jnp.asarray(w["fc.weight"].T), "bias": jnp.asarray(w["fc.bias"])}
    return PlainCNN(), {"params": params}


def _flax_floor(model: tuple, steps: int, batch: int) -> Callable:
    """One ``jax.jit``: the layers before ``Pool_1`` once, then ``steps - 1`` forward + backward
    passes of the rest on ``N * batch`` rows in a ``lax.scan`` (input gradients only)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    module, variables = model

    def prefix(x):
        out = {}

        def stop(next_fun, args, kwargs, context):
            y = next_fun(*args, **kwargs)
            if context.module.path == ("Pool_1",):
                out["z"] = y
                raise StopIteration
            return y

        try:
            with nn.intercept_methods(stop):
                module.apply(variables, x)
        except StopIteration:
            return out["z"]

    def tail(z, x_rows):
        def swap(next_fun, args, kwargs, context):
            if context.module.path == ("Pool_1",):
                return z
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(swap):
            return module.apply(variables, x_rows)

    @jax.jit
    def run(x):
        z = jnp.repeat(prefix(x), batch, axis=0)
        x_rows = jnp.repeat(x, batch, axis=0)

        def step(carry, _):
            g = jax.grad(lambda z: jax.nn.logsumexp(tail(z, x_rows), axis=1).sum())(z + carry)
            return carry + 1e-3 * g, None

        return jax.lax.scan(step, jnp.zeros_like(z), None, length=steps - 1)[0]

    return run


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    environment(args)
    warnings.filterwarnings("ignore", message="the estimator has seen only")
    rng = np.random.default_rng(0)
    n_max = max(args.inputs)
    images = rng.standard_normal((n_max, args.size, args.size, 3)).astype(np.float32)
    data = rng.standard_normal((64, args.size, args.size, 3)).astype(np.float32)
    w = weights()
    kinds = {"torch": TorchCase, "torch-compiled": TorchCase, "flax": FlaxCase}
    kind = kinds.get(args.backend, KerasCase)
    case = kind(args, w, images, data)

    rows = []
    first_call = None
    for n in args.inputs:
        first, later = first_and_median(lambda n=n: case.analyze(n), args.repeats)
        if first_call is None:
            first_call = first
        case.floor(n)  # warm-up: its own compilation
        floor = median(lambda n=n: case.floor(n), args.repeats)
        rows.append((n, first, later / n, floor / n, later / floor))

    side = args.size // 4
    print(
        f"\n{case.name} on {case.device}, {args.threads} CPU threads, {datetime.date.today()}; "
        f"plain 8-conv CNN, {args.size} px, bottleneck after the 2nd max-pool (64 x {side} x "
        f"{side}), {args.steps} steps x {args.batch_size} noise samples, median of "
        f"{args.repeats}"
    )
    print("| backend | N | first call s | s / heatmap | floor s / heatmap | ratio |")
    print("|---|---|---|---|---|---|")
    for n, first, per, floor, ratio in rows:
        print(f"| {args.backend} | {n} | {first:.2f} | {per:.4f} | {floor:.4f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
