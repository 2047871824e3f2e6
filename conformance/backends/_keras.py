"""The Keras backends: ``iba_tf.IBA`` on Keras ports of the CNN and the ViT, on TensorFlow, JAX
and torch. Keras picks its backend at import, so each Keras backend runs in one subprocess (with
``KERAS_BACKEND`` set) that computes every case, dtype and device once and returns the stages in
an ``.npz``; the result is cached for the rest of this process."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile
import types

import numpy as np

from conformance import vectors

DTYPES = ("float64", "float32")
FRAMEWORK = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 900  # seconds for one Keras backend's whole subprocess


def available(backend: str) -> str | None:
    for module in ("keras", "iba_tf", FRAMEWORK[backend]):
        if importlib.util.find_spec(module) is None:
            return f"cannot import {module}"
    return None


@functools.cache
def devices(backend: str) -> tuple[str, ...]:
    """``cpu``, and ``gpu`` where the backend's framework sees one."""
    if backend == "torch":
        import torch

        gpu = torch.cuda.is_available()
    elif backend == "jax":
        import jax

        try:
            gpu = bool(jax.devices("gpu"))
        except RuntimeError:
            gpu = False
    else:
        import tensorflow as tf

        gpu = bool(tf.config.list_physical_devices("GPU"))
    if backend == "torch":  # Keras' torch backend runs on its default device only
        return ("gpu",) if gpu else ("cpu",)
    return ("cpu", "gpu") if gpu else ("cpu",)


def device_reasons(backend: str) -> dict[str, str]:
    if "gpu" in devices(backend):
        if backend == "torch":
            return {
                "cpu": "Keras' torch backend runs on CUDA here; keras.device('cpu') fails to "
                "create IBALayer's int32 weights"
            }
        return {}
    check = {
        "torch": "torch.cuda.is_available() is False",
        "jax": "jax.devices('gpu') finds none",
        "tensorflow": "tf.config.list_physical_devices('GPU') is empty",
    }[backend]
    return {"gpu": f"no GPU: {check}"}


_RUNNING: dict[str, tuple] = {}


def prefetch(backend: str) -> None:
    """Start the backend's subprocess now (it runs beside the other backends); idempotent."""
    if backend in _RUNNING:
        return
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    tmp = tempfile.TemporaryDirectory()
    out = os.path.join(tmp.name, "stages.npz")
    log = open(os.path.join(tmp.name, "log.txt"), "w+")  # noqa: SIM115 (closed in results)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance.backends._keras_worker", out, *devices(backend)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _RUNNING[backend] = (proc, tmp, out, log)
    atexit.register(_stop, proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()


@functools.cache
def results(backend: str) -> dict[str, np.ndarray]:
    """Every stage of every case, dtype and device, from the backend's one subprocess."""
    prefetch(backend)
    proc, tmp, out, log = _RUNNING[backend]
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        if proc.returncode != 0 or not os.path.exists(out):
            log.seek(0)
            tail = log.read()[-3000:]
            raise RuntimeError(
                f"KERAS_BACKEND={backend} subprocess failed ({proc.returncode}):\n{tail}"
            )
        with np.load(out) as data:
            return {k: data[k] for k in data.files}
    finally:
        log.close()
        tmp.cleanup()


def run(case: vectors.Case, dtype: str, device: str, backend: str) -> dict:
    arrays = results(backend)
    key = f"{case.name}|{dtype}|{device}"
    if f"{key}|error" in arrays:
        raise RuntimeError(f"KERAS_BACKEND={backend}:\n{arrays[f'{key}|error']}")
    prefix = f"{key}|"
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def port(backend: str) -> types.SimpleNamespace:
    """Keras on ``backend`` with the interface of a backend module (``conformance.backends``)."""
    return types.SimpleNamespace(
        DTYPES=DTYPES,
        available=functools.partial(available, backend),
        devices=lambda: list(devices(backend)),
        device_reasons=functools.partial(device_reasons, backend),
        run=lambda case, dtype, device: run(case, dtype, device, backend),
        prefetch=functools.partial(prefetch, backend),
    )
