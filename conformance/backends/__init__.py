"""The backends under test. Each module has ``available() -> str | None`` (why not, if not),
``devices() -> list[str]``, ``DTYPES`` and ``run(case, dtype, device) -> {stage: array}`` with
arrays in the reference's layout (channels-first, float64)."""

from __future__ import annotations

import importlib
import types

BACKENDS = {
    "numpy": "conformance.backends.numpy_reference",
}


def load(name: str) -> types.ModuleType:
    """The backend module ``name``."""
    return importlib.import_module(BACKENDS[name])
