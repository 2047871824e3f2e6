"""Shared fixtures of the NumPy reference tests."""

import warnings

import numpy as np
import pytest

import iba
from iba import nn


def finite_difference(f, x, h=1e-6):
    """Central-difference gradient of the scalar function ``f`` at ``x`` (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


@pytest.fixture(scope="session")
def tiny():
    """The tiny CNN, an estimator at ``relu1`` and ``relu2`` fitted on 1,200 random inputs."""
    model = nn.tiny_cnn(0)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1200, 1, 8, 8))
    estimators = {}
    for layer in ("relu1", "relu2"):
        est = iba.Estimator(layout="channels_first")
        est.update(model.forward(data, stop=layer)[0])
        estimators[layer] = est
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1,200 samples: no warning
        stats = {k: v.statistics() for k, v in estimators.items()}
    return model, estimators, stats
