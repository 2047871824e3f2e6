"""Deviation of a backend's stages from the reference's."""

from __future__ import annotations

import numpy as np

from conformance.tolerances import STAGES, tolerance


def deviation(got: np.ndarray, expected: np.ndarray, stage: str, dtype: str) -> float:
    """float64: ``max|got - expected| / max|expected|``; float32 heatmaps: both normalised to their
    maximum, ``max|got - expected|``; other float32 stages as for float64."""
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"{stage}: shape {got.shape}, the reference has {expected.shape}")
    if dtype == "float32" and stage == "heatmap":
        axes = tuple(range(1, got.ndim))
        got = got / np.nanmax(got, axis=axes, keepdims=True)
        expected = expected / np.nanmax(expected, axis=axes, keepdims=True)
        return float(np.nanmax(np.abs(got - expected)))
    scale = max(float(np.nanmax(np.abs(expected))), 1e-300)
    return float(np.nanmax(np.abs(got - expected)) / scale)


def compare(got: dict, expected: dict, dtype: str) -> dict[str, tuple[float, bool]]:
    """Per stage: the deviation and whether it is within tolerance (ungated stages pass)."""
    result = {}
    for stage in STAGES:
        if stage not in got:
            continue
        dev = deviation(got[stage], expected[stage], stage, dtype)
        bound = tolerance(dtype, stage)
        result[stage] = (dev, bound is None or dev <= bound)
    return result
