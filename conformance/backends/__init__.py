"""The backends under test. Each module has ``available() -> str | None`` (why not, if not),
``devices() -> list[str]`` (the devices it sees and runs on), optionally
``device_reasons() -> {device: why not}`` (a GPU it does not see: a skipped row), ``DTYPES`` and
``run(case, dtype, device) -> {stage: array}`` with arrays in the reference's layout
(channels-first, float64)."""

from __future__ import annotations

import importlib
from typing import Any

from iba import backends as registry

# The module of each backend but Keras' (one module, ``_keras``, serves its three backends); the
# names and their order come from the registry (iba.backends).
_MODULES = {
    "numpy": "numpy_reference",
    "torch": "torch_hooks",
    "flax-linen": "flax_linen",
    "flax-nnx": "flax_nnx",
}
BACKENDS = tuple(registry.conformance_names())


def load(name: str) -> Any:
    """The backend ``name``: its module, or for Keras a port of ``_keras`` to one backend."""
    if name.startswith("keras-"):
        from conformance.backends import _keras

        return _keras.port(name.removeprefix("keras-"))
    return importlib.import_module(f"conformance.backends.{_MODULES[name]}")
