"""The Readout Bottleneck case: every backend's ``Readout.analyze`` against the NumPy reference
(``iba.readout.reference``; docs/mathematics.md section 3) on the tiny CNN, in float64.

The bottleneck sits at ``relu2`` (``(6, 8, 8)``), the readouts are ``relu3`` (``(8, 4, 4)``:
resized to 8 x 8) and ``fc`` (10 logits: expanded). Every backend gets the same readout file
(``iba.readout.save``, written here with channels-first statistics fitted by the reference on
1,200 inputs) and loads it with its own layer names; Keras and Flax convert the statistics to
channels-last. The network's weights are seeded and large enough that ``alpha`` reaches both
clamp bounds. Compared, relative to each stage's largest magnitude (``tolerances.READOUT``):
``alpha`` (clamped), ``lam``, the capacity (channels-first) and the heatmap at 8 x 8.

``python -m conformance.readout`` prints the table; each Keras backend runs in its own process
(Keras picks its backend at import): ``python -m conformance.readout BACKEND FOLDER OUT.npz``.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np

import iba
from iba import backends, nn
from iba import readout as shared

TARGETS = ("relu2", "relu3", "fc")
N_INPUTS = 2
IMAGE = (1, 8, 8)
ESTIMATOR_SAMPLES = 1200
CONFIG = iba.Config(relu=True)
STAGES = ("alpha", "lam", "capacity", "heatmap")

# conformance name -> test environment of the registry (its modules and environment)
ENVIRONMENTS = {c: b for b in backends.BACKENDS for c in (b.conformance or (b.name,))}
BACKENDS = tuple(name for name in ENVIRONMENTS if name != "numpy")


def available(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or ``None``."""
    for module in ENVIRONMENTS[backend].modules:
        if importlib.util.find_spec(module) is None:
            return f"cannot import {module}"
    return None


def weights() -> list[np.ndarray]:
    """The readout network's weights: ``iba.readout.init_weights`` (seeded), with a last layer
    large enough that ``alpha`` spans the clamp ``[-5, 5]`` and beyond."""
    w = shared.init_weights(18, 6, seed=3)
    rng = np.random.default_rng(4)
    w[4] = 4.0 * rng.standard_normal(w[4].shape)
    w[5] = rng.uniform(-2.0, 2.0, w[5].shape)
    return w


def make_inputs(folder: Path) -> dict[str, np.ndarray]:
    """Write the readout file to ``folder / "readout.npz"``; the inputs and the reference's
    stages (channels-first)."""
    model = nn.tiny_cnn(0)
    data = np.random.default_rng(100).standard_normal((ESTIMATOR_SAMPLES, *IMAGE))
    estimators = []
    for features in nn.capture(model, data, list(TARGETS)):
        est = iba.Estimator(layout="channels_first")
        est.update(shared.as_map(features, "channels_first"))
        estimators.append(est)
    shared.save(folder / "readout.npz", TARGETS, CONFIG, estimators, weights(), [], "numpy")
    x = np.random.default_rng(5).standard_normal((N_INPUTS, *IMAGE))
    features = nn.capture(model, x, list(TARGETS))
    ref = shared.reference(features, estimators, weights(), CONFIG, "channels_first", IMAGE[1:])
    return {
        "x": x,
        "alpha": ref.alpha,
        "lam": ref.lam,
        "capacity": ref.capacity,
        "heatmap": ref.heatmap,
    }


def _stages(explanation: iba.Explanation, last: bool) -> dict[str, np.ndarray]:
    def first(a):
        a = np.asarray(a, np.float64)
        return np.moveaxis(a, -1, 1) if last else a

    return {
        "alpha": first(explanation.alpha),
        "lam": first(explanation.lam),
        "capacity": first(explanation.capacity),
        "heatmap": np.asarray(explanation.heatmap, np.float64),
    }


def run(backend: str, folder: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every stage of ``backend`` (channels-first, float64) in this process."""
    from conformance import vectors

    path = folder / "readout.npz"
    weights_ = vectors.cnn_weights(nn.tiny_cnn(0))
    last = backend != "torch"
    xb = np.moveaxis(x, 1, -1) if last else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if backend == "torch":
            import torch

            from conformance.ports import torch_ports
            from iba_torch import Readout as TorchReadout

            model = torch_ports.model("cnn", weights_, torch.float64, "cpu")
            ex = TorchReadout.load(path).analyze(model, torch.as_tensor(xb), details=True)
        elif backend.startswith("keras-"):
            import keras

            from conformance.backends._keras_worker import _dtype
            from conformance.ports import keras_ports
            from iba_tf import Readout as KerasReadout

            with _dtype(keras.backend.backend(), "float64"):
                model, _, _ = keras_ports.model("cnn", weights_, ("relu2",), "float64")
                readout = KerasReadout.load(path, "iba_relu2", ["relu3", "fc"])
                ex = readout.analyze(model, xb, details=True)
        else:
            import jax

            from conformance.ports import flax_ports
            from iba_jax import Readout as FlaxReadout

            with jax.enable_x64(True), jax.default_matmul_precision("highest"):
                make = flax_ports.linen_model if backend == "flax-linen" else flax_ports.nnx_model
                model = make("cnn", weights_, np.float64)
                ex = FlaxReadout.load(path).analyze(model, xb, details=True)
    return _stages(ex, last)


def run_in_process(backend: str, folder: Path) -> dict[str, np.ndarray]:
    """:func:`run`: Keras in a fresh Python process with the backend's environment (Keras picks
    its backend at import), PyTorch and Flax in this one."""
    from conformance import real_model

    if not backend.startswith("keras-"):
        with np.load(folder / "inputs.npz") as file:
            return run(backend, folder, file["x"])

    env = ENVIRONMENTS[backend].env
    return real_model.run_module(
        "conformance.readout", env, backend, folder, folder / f"{backend}.npz"
    )


def deviations(got: dict, expected: dict) -> dict[str, float]:
    """Per stage, ``max|got - expected| / max|expected|``."""
    from conformance.compare import deviation

    return {s: deviation(got[s], expected[s], s, "float64") for s in STAGES}


def table() -> int:
    """Run every available backend against the reference and print the deviations."""
    import tempfile

    from conformance.tolerances import READOUT

    folder = Path(tempfile.mkdtemp(prefix="iba-readout-"))
    expected = make_inputs(folder)
    np.savez(folder / "inputs.npz", **expected)
    print(f"{'backend':<18}" + "".join(f"{s:>11}" for s in STAGES) + "  result")
    ok = True
    for backend in BACKENDS:
        if available(backend):
            print(f"{backend:<18}  skipped: {available(backend)}")
            continue
        dev = deviations(run_in_process(backend, folder), expected)
        good = all(d <= READOUT for d in dev.values())
        ok &= good
        cells = "".join(f"{dev[s]:>11.1e}" for s in STAGES)
        print(f"{backend:<18}{cells}  {'ok' if good else 'OUT OF TOLERANCE'}")
    print(f"bound: {READOUT} relative to each stage's largest magnitude")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if not argv:
        return table()
    backend, folder, out = argv
    with np.load(Path(folder) / "inputs.npz") as file:
        x = file["x"]
    np.savez(out, **run(backend, Path(folder), x))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
