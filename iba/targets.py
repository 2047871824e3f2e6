"""Targets: the class index per input that an explanation or a baseline explains, checked once."""

from __future__ import annotations

import numpy as np


def labels(target: object, n_inputs: int) -> np.ndarray:
    """``target`` (one int, or one per input) as ``n_inputs`` int64 labels; raise if it is not."""
    detach = getattr(target, "detach", None)
    if detach is not None and hasattr(target, "cpu"):  # a torch tensor, without importing torch
        target = detach().cpu().numpy()
    values = np.asarray(target)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"target must be an int or one int per input, got {target!r}")
    if values.ndim == 0:
        values = np.full(n_inputs, int(values))
    if values.shape != (n_inputs,):
        raise ValueError(f"target has shape {values.shape}; expected one int or {n_inputs} ints")
    return values.astype(np.int64)


def check_range(values: np.ndarray, n_classes: int | None) -> None:
    """Raise if a label is negative or not below ``n_classes`` (``None``: the number is unknown)."""
    values = np.asarray(values)
    if not values.size:
        return
    shown = sorted(set(values.tolist()))
    if values.min() < 0 and n_classes is None:
        raise ValueError(f"target {shown} out of range: class indices are >= 0")
    if n_classes is not None and (values.min() < 0 or values.max() >= n_classes):
        raise ValueError(f"target {shown} out of range for {n_classes} model outputs")
