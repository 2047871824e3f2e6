"""The backends under test. Each module has ``available() -> str | None`` (why not, if not),
``devices() -> list[str]`` (the devices it sees and runs on), optionally
``device_reasons() -> {device: why not}`` (a GPU it does not see: a skipped row), ``DTYPES`` and
``run(case, dtype, device) -> {stage: array}`` with arrays in the reference's layout
(channels-first, float64)."""

from __future__ import annotations

import importlib
import types

BACKENDS = {
    "numpy": "conformance.backends.numpy_reference",
    "torch": "conformance.backends.torch_hooks",
    "keras-tensorflow": "conformance.backends.keras_tensorflow",
    "keras-jax": "conformance.backends.keras_jax",
    "keras-torch": "conformance.backends.keras_torch",
    "flax-linen": "conformance.backends.flax_linen",
    "flax-nnx": "conformance.backends.flax_nnx",
}


def load(name: str) -> types.ModuleType:
    """The backend module ``name``."""
    return importlib.import_module(BACKENDS[name])
