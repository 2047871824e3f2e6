"""``iba_tf.Readout``, the Readout Bottleneck (docs/mathematics.md section 3), on the tiny CNN in
float64: the NumPy reference's values, training, save / load, errors, the model untouched
(``tests/readout_checks.py``, shared with Flax)."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import float64
from keras_models import tiny_cnn

from iba import nn
from iba_tf import Readout
from tests import readout_checks as checks


@pytest.fixture(scope="module")
def setup():
    with float64():
        plain, _ = tiny_cnn(nn.tiny_cnn(0), targets=())  # no IBALayer: Readout inserts one
        x, _ = checks.data()
        readout = Readout(checks.LAYERS[0], checks.LAYERS[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            readout.estimate(plain, x, progress=False)
        yield plain, readout


def _snapshot(model):
    return [np.array(w) for w in model.get_weights()], [layer.name for layer in model.layers]


def _unchanged(model):
    """A check that ``model`` keeps its weights and layers (no IBALayer left in it)."""
    weights, names = _snapshot(model)
    assert not any("iba" in n for n in names)

    def assert_same(after):
        got_weights, got_names = _snapshot(after)
        assert got_names == names
        for a, b in zip(weights, got_weights):
            np.testing.assert_array_equal(a, b)

    return assert_same


def test_analyze_is_the_reference(setup):
    model, readout = setup
    x, _ = checks.data()
    checks.check_reference(readout, model, x, float64, _unchanged(model))


def test_fit_save_load(setup, tmp_path):
    model, readout = setup
    checks.check_fit_save_load(readout, model, tmp_path, float64, _unchanged(model))


def test_errors(setup, tmp_path):
    model, readout = setup
    checks.check_errors(readout, model, tmp_path)
    with pytest.raises(ValueError, match="layer 'relu9' not found"):
        Readout("relu2", ["relu9"]).estimate(model, checks.data()[0][:4])

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="Functional or Sequential"):
        Readout("relu2", ["fc"]).analyze(Sub(), checks.data()[0][:1])
