"""Compile time and steady-state seconds per input of ``iba_jax.IBA.analyze``, beside ``iba_torch``
on the same architecture and weights (the plain 8-conv CNN of ``benchmarks/torch_analyze.py``).

    python benchmarks/jax_analyze.py [--size 32] [--threads 2] [--repeats 3] [--no-torch]

- ``trace+lower s`` / ``compile s``: ``IBA.lower(...)`` and ``.compile()`` of the whole
  optimisation (10 steps x 10 noise samples, Adam) for ``N`` inputs: paid once per input shape.
- ``s / input``: median wall time of ``analyze`` (heatmaps returned as NumPy) divided by ``N``,
  for ``N`` = 1, 8 and 32 inputs in one call.
- ``floor s / input``: the unavoidable work in JAX, jitted: the layers before the target once,
  then 9 forward + backward passes of the layers after it on the ``N * 10`` rows (input
  gradients only).
- ``convs on N / N*B rows``: convolutions in the compiled optimisation by batch size. The layers
  before the target appear only on ``N`` rows (computed once): XLA removed them from the loop.
- ``jax vs torch``: max relative difference of the heatmaps on identical noise (float32).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import warnings

STEPS, BATCH = 10, 10


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32, help="input height and width in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inputs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch adapter")
    return parser.parse_args()


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None:  # before jax starts: the CPU thread count
    os.environ.setdefault(
        "XLA_FLAGS",
        f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={ARGS.threads}",
    )

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import iba  # noqa: E402
from iba_jax import IBA  # noqa: E402

CHANNELS = (32, 64, 128, 256)


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
    """torch_analyze.py's plain CNN, channels-last; ``Pool_1`` is torch's ``"9"``."""

    @nn.compact
    def __call__(self, x):
        for i, c in enumerate(CHANNELS):
            x = Block(c)(x)
            x = Block(c)(x)
            x = Pool()(x) if i < 3 else x.mean(axis=(1, 2))
        return nn.Dense(1000)(x)


def torch_cnn():
    import torch

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
    return torch.nn.Sequential(*layers).eval()


def weights_from_torch(model) -> dict:
    """The torch model's weights as Linen variables (kernels ``(kh, kw, in, out)``)."""
    convs = [m for m in model if m.__class__.__name__ == "Conv2d"]
    params = {}
    for i, conv in enumerate(convs):
        params[f"Block_{i}"] = {
            "Conv_0": {
                "kernel": jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0)),
                "bias": jnp.asarray(conv.bias.detach().numpy()),
            }
        }
    fc = model[-1]
    params["Dense_0"] = {
        "kernel": jnp.asarray(fc.weight.detach().numpy().T),
        "bias": jnp.asarray(fc.bias.detach().numpy()),
    }
    return {"params": params}


def random_weights() -> dict:
    x = jnp.zeros((1, 32, 32, 3))
    return PlainCNN().init(jax.random.key(0, impl="rbg"), x)


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_fn(variables, n_rows: int):
    """Prefix once on N rows, then 9 forward+backward passes of the tail on N * B rows."""
    module = PlainCNN()

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

    def tail(z, x_rep):
        def swap(next_fun, args, kwargs, context):
            if context.module.path == ("Pool_1",):
                return z
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(swap):
            return module.apply(variables, x_rep)

    @jax.jit
    def run(x):
        features = prefix(x)
        x_rep = jnp.repeat(x, BATCH, axis=0)
        z = jnp.repeat(features, BATCH, axis=0)

        def step(carry, _):
            g = jax.grad(lambda z: jax.nn.logsumexp(tail(z, x_rep), axis=1).sum())(z + carry)
            return carry + 1e-3 * g, None

        return jax.lax.scan(step, jnp.zeros_like(z), None, length=STEPS - 1)[0]

    return run


def main() -> None:
    args = ARGS
    size = args.size
    rng = np.random.default_rng(0)
    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch

            from iba_torch import IBA as TorchIBA

            torch.set_num_threads(args.threads)
        except ImportError as err:
            print(f"iba_torch not available ({err}); JAX only", file=sys.stderr)
            use_torch = False
    if use_torch:
        tmodel = torch_cnn()
        variables = weights_from_torch(tmodel)
    else:
        variables = random_weights()
    model = (PlainCNN(), variables)
    n_max = max(args.inputs)
    images = rng.standard_normal((n_max, size, size, 3)).astype(np.float32)
    data = rng.standard_normal((64, size, size, 3)).astype(np.float32)
    labels = np.asarray(PlainCNN().apply(variables, images).argmax(-1))

    explainer = IBA("Pool_1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(model, data, progress=False)
        if use_torch:
            texplainer = TorchIBA("9")
            texplainer.estimate(
                tmodel, torch.from_numpy(data.transpose(0, 3, 1, 2)), progress=False
            )

    rows = []
    for n in args.inputs:
        x, y = images[:n], labels[:n]
        start = time.perf_counter()
        lowered = explainer.lower(model, x, target=y)
        t_lower = time.perf_counter() - start
        start = time.perf_counter()
        compiled = lowered.compile()
        t_compile = time.perf_counter() - start
        convs = re.findall(r"= f32\[(\d+),[\d,]*\]\S* convolution\(", compiled.as_text())
        on_n, on_nb = convs.count(str(n)), convs.count(str(n * BATCH))
        t_jax = median_time(lambda x=x, y=y: explainer.analyze(model, x, target=y), args.repeats)
        floor = floor_fn(variables, n)
        t_floor = median_time(lambda x=x, f=floor: jax.block_until_ready(f(x)), args.repeats)
        t_torch = diff = float("nan")
        if use_torch:
            tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            t_torch = median_time(
                lambda tx=tx, y=y: texplainer.analyze(tmodel, tx, target=y.tolist()), args.repeats
            )
            shape = explainer.estimators[0].feature_shape  # (h, w, c)
            noise = iba.draw_noise(0, STEPS, BATCH, (shape[2], shape[0], shape[1]), n_inputs=n)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = texplainer.analyze(tmodel, tx, target=y.tolist(), noise=noise)
                got = explainer.analyze(model, x, target=y, noise=noise.transpose(0, 1, 2, 4, 5, 3))
            diff = float(np.abs(got - ref).max() / np.abs(ref).max())
        rows.append((n, t_lower, t_compile, t_jax / n, t_floor / n, t_torch / n))
        rows[-1] += (f"{on_n} / {on_nb}", diff)

    print(
        f"\njax {jax.__version__} ({jax.default_backend()}), {args.threads} threads, "
        f"plain CNN @ Pool_1 (torch '9'), {size} px, features "
        f"{explainer.estimators[0].feature_shape}, {STEPS} steps x {BATCH} samples"
    )
    print(
        "| N | trace+lower s | compile s | jax s / input | floor s / input "
        "| torch s / input | torch / jax | convs on N / N*B rows | jax vs torch (rel.) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, tl, tc, tj, tf, tt, convs, diff in rows:
        print(
            f"| {n} | {tl:.2f} | {tc:.2f} | {tj:.4f} | {tf:.4f} | {tt:.4f} "
            f"| {tt / tj:.2f} | {convs} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
