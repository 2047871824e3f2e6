"""The backends under test. Each module has ``available() -> str | None`` (why not, if not),
``devices() -> list[str]`` (the devices it sees and runs on), optionally
``device_reasons() -> {device: why not}`` (a GPU it does not see: a skipped row), ``DTYPES`` and
``run(case, dtype, device) -> {stage: array}`` with arrays in the reference's layout
(channels-first, float64)."""

from __future__ import annotations

import importlib
import types

from iba import backends as registry

# The module of each backend; the names and their order come from the registry (iba.backends).
_MODULES = {
    "numpy": "numpy_reference",
    "torch": "torch_hooks",
    "keras-tensorflow": "keras_tensorflow",
    "keras-jax": "keras_jax",
    "keras-torch": "keras_torch",
    "flax-linen": "flax_linen",
    "flax-nnx": "flax_nnx",
}
BACKENDS = {name: f"conformance.backends.{_MODULES[name]}" for name in registry.conformance_names()}


def load(name: str) -> types.ModuleType:
    """The backend module ``name``."""
    return importlib.import_module(BACKENDS[name])
