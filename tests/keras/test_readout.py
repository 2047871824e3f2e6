"""``iba_tf.Readout``, the Readout Bottleneck (docs/mathematics.md section 3), on the tiny CNN in
float64: the NumPy reference's values, training, save / load, errors, the model untouched."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import float64, nhwc
from keras_models import tiny_cnn

from iba import nn
from iba import readout as shared
from iba_tf import Readout

# The first losses of fit() with these weights, data, labels and seed: the same on every Keras
# backend and in Flax (tests/flax/test_readout.py).
LOSSES = [53.335, 52.752, 52.174, 52.826]


@pytest.fixture(scope="module")
def setup():
    with float64():
        net = nn.tiny_cnn(0)
        plain, _ = tiny_cnn(net, targets=())  # no IBALayer: Readout inserts one in a copy
        x = np.random.default_rng(0).standard_normal((64, 8, 8, 1))
        y = np.random.default_rng(1).integers(0, 10, 64)
        readout = Readout("relu2", ["relu3", "fc"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            readout.estimate(plain, x, progress=False)
        yield net, plain, x, y, readout


def _snapshot(model):
    return [np.array(w) for w in model.get_weights()], [layer.name for layer in model.layers]


def test_analyze_is_the_reference(setup):
    net, model, x, _, readout = setup
    assert [e.feature_shape for e in readout.estimators] == [(8, 8, 6), (4, 4, 8), (1, 1, 10)]
    readout.weights = shared.init_weights(18, 6, seed=0)
    readout.weights[4] = readout.weights[4] * 3000.0  # alpha away from 5, and clamped
    before = _snapshot(model)
    with float64():
        got = readout.analyze(model, x[:3], details=True)
    features = nn.capture(net, np.moveaxis(x[:3], -1, 1), ["relu2", "relu3", "fc"])
    estimators = [shared.to_layout(e, "channels_first") for e in readout.estimators]
    ref = shared.reference(features, estimators, readout.weights, readout.config, "channels_first",
                           (8, 8))  # fmt: skip
    np.testing.assert_allclose(got.alpha, nhwc(ref.alpha), atol=1e-10)
    np.testing.assert_allclose(got.capacity, nhwc(ref.capacity), atol=1e-10)
    np.testing.assert_allclose(got.heatmap, ref.heatmap, rtol=1e-10, atol=1e-12)
    assert ref.alpha.max() == 5.0 and ref.alpha.min() < 4.0  # clamped, and varied
    names = before[1]
    assert _snapshot(model)[1] == names and not any("iba" in n for n in names)
    for a, b in zip(before[0], _snapshot(model)[0]):
        np.testing.assert_array_equal(a, b)


def test_fit_save_load(setup, tmp_path):
    _, model, x, y, readout = setup
    readout.weights = shared.init_weights(18, 6, seed=0)
    readout.losses = []
    before = _snapshot(model)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    with float64():
        losses = readout.fit(model, batches, epochs=2, lr=1e-2, progress=False, seed=0)
        maps = readout.analyze(model, x[:2])
    assert len(losses) == 8 and readout.losses == losses
    np.testing.assert_allclose(losses[:4], LOSSES, atol=1e-3)
    assert losses[-1] < losses[0] - 1
    for a, b in zip(before[0], _snapshot(model)[0]):
        np.testing.assert_array_equal(a, b)

    path = tmp_path / "readout.npz"
    readout.save(path)
    loaded = Readout.load(path)
    assert loaded.losses == losses and repr(loaded) == repr(readout)
    with float64():
        np.testing.assert_allclose(loaded.analyze(model, x[:2]), maps, rtol=1e-12)


def test_errors(setup, tmp_path):
    _, model, x, y, readout = setup
    with pytest.raises(RuntimeError, match="call estimate"):
        Readout("relu2", ["fc"]).analyze(model, x[:1])
    with pytest.raises(TypeError, match=r"\(inputs, labels"):
        readout.fit(model, x)
    with pytest.raises(ValueError, match="class indices"):
        readout.fit(model, [(x[:4], np.zeros((4, 2), int))])
    with pytest.raises(ValueError, match="epochs"):
        readout.fit(model, [(x[:4], y[:4])], epochs=0)
    with pytest.raises(ValueError, match="layer 'relu9' not found"):
        Readout("relu2", ["relu9"]).estimate(model, x[:4])
    with pytest.raises(ValueError, match="NaN"):
        readout.analyze(model, np.full((1, 8, 8, 1), np.nan))
    with pytest.raises(ValueError, match="not a saved Readout"):
        np.savez(tmp_path / "other.npz", a=np.zeros(2))
        Readout.load(tmp_path / "other.npz")

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="Functional or Sequential"):
        Readout("relu2", ["fc"]).analyze(Sub(), x[:1])
