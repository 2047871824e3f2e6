"""What every adapter backend shares: layout conversions of a case's inputs and of the results."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

import iba
from conformance import vectors

GRID = (4, 4)  # the tiny ViT's patch grid


def channels_last(case: vectors.Case) -> bool:
    return case.layout == "channels_first"


def estimators(case: vectors.Case, last: bool) -> list[iba.Estimator]:
    """The case's estimators, converted to channels-last if ``last`` (tokens are unchanged)."""
    if last and channels_last(case):
        return [vectors.estimator_channels_last(e) for e in case.estimators]
    return list(case.estimators)


def noise(case: vectors.Case, last: bool) -> list[np.ndarray]:
    """The case's noise ``(steps, N, B, *F)``, channels-last if ``last``."""
    if last and channels_last(case):
        return [np.moveaxis(n, 3, -1) for n in case.noise]
    return list(case.noise)


def inputs(case: vectors.Case, last: bool) -> np.ndarray:
    return vectors.to_channels_last(case.x) if last else case.x


def stages(case: vectors.Case, features, explanation: iba.Explanation, last: bool) -> dict:
    """Every stage in the reference's layout (channels-first, float64)."""

    def first(a, lead=1):
        a = np.asarray(a, np.float64)
        return np.moveaxis(a, -1, lead) if last and channels_last(case) else a

    capacity = first(explanation.capacity)
    if case.architecture == "vit":
        heatmap = iba.vit_heatmap(capacity, grid=GRID, input_size=vectors.IMAGE[1:])
    else:
        heatmap = np.asarray(explanation.heatmap, np.float64)
    return {
        "features": first(features),
        "lam": first(explanation.lam),
        "capacity": capacity,
        "alphas": first(explanation.alphas, lead=2),
        "heatmap": heatmap,
    }


def features_by_estimate(estimate: Callable, x) -> np.ndarray:
    """The features at the first target, computed by the backend's own model through the adapter:
    ``estimate(x_i)`` fits an ``iba.Estimator`` on one input given twice (an estimator needs two
    samples), whose mean is exactly that input's features."""
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(x)):
            rows.append(estimate(x[[i, i]])[0].mean)
    return np.stack(rows)
