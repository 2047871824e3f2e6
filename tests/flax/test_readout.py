"""``iba_jax.Readout``, the Readout Bottleneck (docs/mathematics.md section 3), on Linen and NNX
ports of the tiny CNN in float64: the NumPy reference's values, training, save / load, errors,
the model untouched (``tests/readout_checks.py``, shared with Keras)."""

from __future__ import annotations

import functools
import warnings

import jax
import numpy as np
import pytest

from conformance import vectors
from conformance.ports import flax_ports
from iba import nn
from iba_jax import Readout
from tests import readout_checks as checks

x64 = functools.partial(jax.enable_x64, True)


@pytest.fixture(scope="module", params=["linen", "nnx"])
def setup(request):
    with jax.enable_x64(True):
        weights = vectors.cnn_weights(nn.tiny_cnn(0))
        make = flax_ports.linen_model if request.param == "linen" else flax_ports.nnx_model
        model = make("cnn", weights, np.float64)
        x, _ = checks.data()
        readout = Readout(checks.LAYERS[0], checks.LAYERS[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            readout.estimate(model, x, progress=False)
        yield model, readout


def _snapshot(model):
    if isinstance(model, tuple):
        return [np.array(a) for a in jax.tree.leaves(model[1])]
    from flax import nnx

    return [np.array(a) for a in jax.tree.leaves(nnx.state(model))] + [sorted(vars(model))]


def _unchanged(model):
    """A check that ``model`` keeps its variables (and, NNX, its attributes)."""
    before = _snapshot(model)

    def assert_same(after):
        got = _snapshot(after)
        assert len(got) == len(before)
        for u, v in zip(before, got):
            if isinstance(u, np.ndarray):
                np.testing.assert_array_equal(u, v)
            else:
                assert u == v

    return assert_same


def test_analyze_is_the_reference(setup):
    model, readout = setup
    x, _ = checks.data()
    checks.check_reference(readout, model, x, x64, _unchanged(model))


def test_fit_save_load(setup, tmp_path):
    model, readout = setup
    checks.check_fit_save_load(readout, model, tmp_path, x64, _unchanged(model))


def test_errors(setup, tmp_path):
    model, readout = setup
    checks.check_errors(readout, model, tmp_path)
    with pytest.raises(ValueError, match="in the order the forward pass"):
        Readout("fc", ["relu3"]).estimate(model, checks.data()[0][:4], progress=False)
