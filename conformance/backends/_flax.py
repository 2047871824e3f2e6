"""The Flax backends (Linen and NNX): the ports of ``conformance.ports.flax_ports`` explained by
``iba_jax.IBA`` in float64 (``jax.enable_x64``) and float32 (matmul precision ``"highest"``: no
TF32 on GPUs), on every device JAX sees."""

from __future__ import annotations

import contextlib
import functools
import warnings

import numpy as np

from conformance import vectors
from conformance.backends import _common

DTYPES = ("float64", "float32")


def available() -> str | None:
    try:
        import flax  # noqa: F401
        import jax  # noqa: F401

        import iba_jax  # noqa: F401
    except ImportError as err:
        return f"cannot import: {err}"
    return None


def devices() -> list[str]:
    return [d for d, _ in _devices()]


def device_reasons() -> dict[str, str]:
    """Devices that are not there, with the reason (shown as skipped rows)."""
    return {} if "gpu" in devices() else {"gpu": "no GPU visible to JAX (jax.devices('gpu'))"}


@functools.cache
def _devices() -> tuple:
    import jax

    found = [("cpu", jax.devices("cpu")[0])]
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if gpus:
        found.append(("gpu", gpus[0]))
    return tuple(found)


@contextlib.contextmanager
def _context(dtype: str, device: str):
    import jax

    with contextlib.ExitStack() as stack:
        stack.enter_context(jax.enable_x64(dtype == "float64"))
        stack.enter_context(jax.default_matmul_precision("highest"))
        stack.enter_context(jax.default_device(dict(_devices())[device]))
        yield


def run(case: vectors.Case, dtype: str, device: str, api: str) -> dict:
    from conformance.ports import flax_ports
    from iba_jax import IBA

    np_dtype = np.dtype(dtype)
    if api == "linen":
        to_path = flax_ports.flax_target
    else:
        to_path = flax_ports.nnx_target
    paths = [to_path(t) for t in case.targets]
    targets = paths if len(paths) > 1 else paths[0]
    with _context(dtype, device):
        make = flax_ports.linen_model if api == "linen" else flax_ports.nnx_model
        model = make(case.architecture, case.weights, np_dtype)
        x = _common.inputs(case, last=True).astype(np_dtype)
        features = _common.features_by_estimate(
            lambda xi: IBA(paths[0]).estimate(model, xi, progress=False), x
        )
        explainer = IBA(targets, config=case.config)
        explainer.estimators = _common.estimators(case, last=True)
        noise = _common.noise(case, last=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explanation = explainer.analyze(
                model,
                x,
                target=case.target,
                noise=noise if len(noise) > 1 else noise[0],
                details=True,
                token_mask=case.token_mask,
            )
    return _common.stages(case, features, explanation, last=True)
