"""``iba_jax.Readout``, the Readout Bottleneck (docs/mathematics.md section 3), on Linen and NNX
ports of the tiny CNN in float64: the NumPy reference's values, training, save / load, errors,
the model untouched."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from conformance import vectors
from conformance.ports import flax_ports
from iba import nn
from iba import readout as shared
from iba_jax import Readout

# The first losses of fit() with these weights, data, labels and seed: the same as on every Keras
# backend (tests/keras/test_readout.py).
LOSSES = [53.335, 52.752, 52.174, 52.826]


@pytest.fixture(scope="module", params=["linen", "nnx"])
def setup(request):
    with jax.enable_x64(True):
        weights = vectors.cnn_weights(nn.tiny_cnn(0))
        make = flax_ports.linen_model if request.param == "linen" else flax_ports.nnx_model
        model = make("cnn", weights, np.float64)
        x = np.random.default_rng(0).standard_normal((64, 8, 8, 1))
        y = np.random.default_rng(1).integers(0, 10, 64)
        readout = Readout("relu2", ["relu3", "fc"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            readout.estimate(model, x, progress=False)
        yield model, x, y, readout


def _snapshot(model):
    if isinstance(model, tuple):
        return [np.array(a) for a in jax.tree.leaves(model[1])]
    from flax import nnx

    return [np.array(a) for a in jax.tree.leaves(nnx.state(model))] + [sorted(vars(model))]


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if isinstance(u, np.ndarray):
            np.testing.assert_array_equal(u, v)
        else:
            assert u == v


def test_analyze_is_the_reference(setup):
    model, x, _, readout = setup
    assert [e.feature_shape for e in readout.estimators] == [(8, 8, 6), (4, 4, 8), (1, 1, 10)]
    readout.weights = shared.init_weights(18, 6, seed=0)
    readout.weights[4] = readout.weights[4] * 3000.0  # alpha away from 5, and clamped
    before = _snapshot(model)
    with jax.enable_x64(True):
        got = readout.analyze(model, x[:3], details=True)
    _same(before, _snapshot(model))
    features = nn.capture(nn.tiny_cnn(0), np.moveaxis(x[:3], -1, 1), ["relu2", "relu3", "fc"])
    estimators = [shared.to_layout(e, "channels_first") for e in readout.estimators]
    ref = shared.reference(features, estimators, readout.weights, readout.config, "channels_first",
                           (8, 8))  # fmt: skip
    np.testing.assert_allclose(got.alpha, np.moveaxis(ref.alpha, 1, -1), atol=1e-10)
    np.testing.assert_allclose(got.capacity, np.moveaxis(ref.capacity, 1, -1), atol=1e-10)
    np.testing.assert_allclose(got.heatmap, ref.heatmap, rtol=1e-10, atol=1e-12)
    assert ref.alpha.max() == 5.0 and ref.alpha.min() < 4.0  # clamped, and varied


def test_fit_save_load(setup, tmp_path):
    model, x, y, readout = setup
    readout.weights = shared.init_weights(18, 6, seed=0)
    readout.losses = []
    before = _snapshot(model)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    with jax.enable_x64(True):
        losses = readout.fit(model, batches, epochs=2, lr=1e-2, progress=False, seed=0)
        maps = readout.analyze(model, x[:2])
    _same(before, _snapshot(model))
    assert len(losses) == 8 and readout.losses == losses
    np.testing.assert_allclose(losses[:4], LOSSES, atol=1e-3)
    assert losses[-1] < losses[0] - 1

    path = tmp_path / "readout.npz"
    readout.save(path)
    loaded = Readout.load(path)
    assert loaded.losses == losses and repr(loaded) == repr(readout)
    with jax.enable_x64(True):
        np.testing.assert_allclose(loaded.analyze(model, x[:2]), maps, rtol=1e-12)


def test_errors(setup, tmp_path):
    model, x, y, readout = setup
    with pytest.raises(RuntimeError, match="call estimate"):
        Readout("relu2", ["fc"]).analyze(model, x[:1])
    with pytest.raises(TypeError, match=r"\(inputs, labels"):
        readout.fit(model, x)
    with pytest.raises(ValueError, match="class indices"):
        readout.fit(model, [(x[:4], np.zeros((4, 2), int))])
    with pytest.raises(ValueError, match="lr"):
        readout.fit(model, [(x[:4], y[:4])], lr=-1)
    with pytest.raises(ValueError, match="relu9"):
        Readout("relu2", ["relu9"]).estimate(model, x[:4], progress=False)
    with pytest.raises(ValueError, match="NaN"):
        readout.analyze(model, np.full((1, 8, 8, 1), np.nan))
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a saved Readout"):
        Readout.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="in the order the forward pass"):
        Readout("fc", ["relu3"]).estimate(model, x[:4], progress=False)
