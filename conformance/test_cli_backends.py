"""``iba demo`` gives the same maps on every backend: the command line itself, run in its own
process per backend (PyTorch, Keras on TensorFlow, JAX and torch, Flax), with its defaults for the
estimator file (fitted once, by the first backend, and shared) and the noise (``--seed``'s draws,
transposed for the channels-last ports); the maps must agree within the real-model bounds of
``tolerances.REAL_MODEL`` (normalised to their maximum: largest and mean absolute difference).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance import real_model
from conformance.tolerances import REAL_MODEL

PHOTOS = ("chelsea", "coffee", "quokka")  # iba.demo.photos.EXPLAINED
ARGS = ("--samples", "100", "--steps", "10")
ESTIMATOR = "efficientnet-lite0__blocks_4_100.npz"


def demo(backend: str, cache: Path, out: Path) -> dict[str, np.ndarray]:
    """``python -m iba demo`` on ``backend`` (a conformance name); its maps by photo."""
    engine, env, _ = real_model.BACKENDS[backend]
    command = [sys.executable, "-m", "iba", "demo", "--backend", engine, "--out", str(out), *ARGS]
    done = subprocess.run(
        command, cwd=real_model.ROOT, env=dict(os.environ, IBA_CACHE=str(cache), **env),
        capture_output=True, text=True, timeout=real_model.TIMEOUT,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"iba demo --backend {engine} ({backend}) failed:\n{done.stderr[-3000:]}"
        )
    assert f"estimator: loaded from {cache / ESTIMATOR}" in done.stdout or backend == "torch"
    return {name: np.load(out / f"{name}.npy") for name in PHOTOS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """PyTorch's maps; its run fits the estimator file the other backends load."""
    reason = real_model.available("torch")
    if reason:
        pytest.skip(f"the command line's reference runs on PyTorch: {reason}")
    cache = tmp_path_factory.mktemp("cache")
    maps = demo("torch", cache, tmp_path_factory.mktemp("torch"))
    assert [p.name for p in cache.iterdir()] == [ESTIMATOR]
    return cache, maps


@pytest.mark.parametrize("backend", real_model.PORTS)
def test_iba_demo_gives_pytorchs_maps(backend, reference, tmp_path):
    reason = real_model.available(backend)
    if reason:
        pytest.skip(f"{backend}: {reason}")
    cache, expected = reference
    got = demo(backend, cache, tmp_path / "out")
    for name in PHOTOS:
        a, b = (m / m.max() for m in (got[name], expected[name]))
        largest, mean = float(np.abs(a - b).max()), float(np.abs(a - b).mean())
        assert largest <= REAL_MODEL["heatmap"], (backend, name, largest)
        assert mean <= REAL_MODEL["heatmap_mean"], (backend, name, mean)
