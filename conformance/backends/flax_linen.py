"""Flax Linen: ``iba_jax.IBA`` through method interceptors on a ``(module, variables)`` port."""

from conformance.backends._flax import DTYPES, available, device_reasons, devices
from conformance.backends._flax import run as _run

__all__ = ["DTYPES", "available", "device_reasons", "devices", "run"]


def run(case, dtype: str, device: str) -> dict:
    return _run(case, dtype, device, "linen")
