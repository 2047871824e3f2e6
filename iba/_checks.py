"""Input checks shared by the reference modules."""

from __future__ import annotations

import numpy as np


def finite_array(name: str, value: object, ndim: int | None = None) -> np.ndarray:
    """``value`` as a floating-point array; raise if it holds NaN or inf or has the wrong rank."""
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name}: {bad} NaN or infinite value(s); check the input data")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    return array
