"""Padding to buckets: one compiled step serves every number of inputs of a bucket, and the maps
of the real inputs are those of an unpadded call."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND, float64, nhwc
from keras_models import tiny_cnn

import iba
import iba_tf
from iba import nn
from iba_tf import explainer as keras_explainer

STEPS, BATCH = 4, 3
FEATURES = (8, 8, 6)  # relu2's features, channels-last
pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")
COMPILED = BACKEND in ("tensorflow", "jax")  # torch runs the step eagerly


@pytest.fixture(scope="module")
def case():
    """The float64 tiny CNN, an estimator for it, 4 inputs and their noise."""
    rng = np.random.default_rng(0)
    with float64():
        model, _ = tiny_cnn(nn.tiny_cnn(0))
        explainer = iba_tf.IBA("iba_relu2", steps=STEPS, batch_size=BATCH, buckets=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explainer.estimate(model, nhwc(rng.standard_normal((64, 1, 8, 8))), progress=False)
    x = nhwc(rng.standard_normal((4, 1, 8, 8)))
    noise = iba.draw_noise(1, STEPS, BATCH, FEATURES, n_inputs=4)
    return model, explainer.estimators, x, noise


def make(case, buckets):
    return iba_tf.IBA(
        "iba_relu2", steps=STEPS, batch_size=BATCH, buckets=buckets, estimators=case[1]
    )


def test_bucket_sizes():
    sizes = [keras_explainer.bucket(n, (1, 32)) for n in (1, 2, 3, 5, 9, 32, 33, 70)]
    assert sizes == [1, 2, 4, 8, 16, 32, 64, 96]
    assert [keras_explainer.bucket(n, (8, 8)) for n in (1, 8, 9)] == [8, 8, 16]
    assert keras_explainer.bucket(3, None) == 3
    auto = iba_tf.IBA("iba_relu2").engine.buckets
    assert auto == (None if BACKEND == "torch" else keras_explainer.BUCKETS)
    for bad in [(0, 4), (4, 2), (1,), "pow2", (1.0, 4), (True, 4)]:
        with pytest.raises(ValueError, match="buckets must be 'auto', None"):
            iba_tf.IBA("iba_relu2", buckets=bad)


def test_padded_maps_are_the_unpadded_maps(case):
    """Three inputs padded to four give the maps, alphas and losses of an unpadded call, and
    each input's map is its map alone (the same draws)."""
    model, _, x, noise = case
    padded, plain = make(case, (1, 32)), make(case, None)
    labels = [3, 7, 1]
    with float64():
        got = padded.analyze(model, x[:3], target=labels, noise=noise[:, :3], details=True)
        want = plain.analyze(model, x[:3], target=labels, noise=noise[:, :3], details=True)
        for name in ("heatmap", "alphas", "losses", "capacity", "lam"):
            assert getattr(got, name).shape == getattr(want, name).shape, name
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-10)
        for i in range(3):
            alone = padded.analyze(model, x[i : i + 1], target=labels[i], noise=noise[:, i : i + 1])
            np.testing.assert_allclose(alone[0], got.heatmap[i], rtol=1e-10, atol=1e-12)
        # the framework's own generator: the real rows draw what they draw unpadded
        np.testing.assert_allclose(
            padded.analyze(model, x[:3], target=labels, seed=2),
            plain.analyze(model, x[:3], target=labels, seed=2),
            rtol=1e-10,
        )


@pytest.mark.skipif(not COMPILED, reason="Keras' torch backend compiles nothing")
def test_one_trace_serves_a_bucket(case):
    model, _, x, noise = case
    explainer = make(case, (4, 4))
    with float64():
        explainer.analyze(model, x[:1], target=0)
        traces, kept = explainer.engine.traces, len(explainer.engine._steps)
        assert traces >= 1
        for n in (2, 3, 4, 1):
            explainer.analyze(model, x[:n], target=[5] * n)
        assert (explainer.engine.traces, len(explainer.engine._steps)) == (traces, kept)


def test_loss_fn_messages_count_the_real_inputs(case):
    model, _, x, _ = case
    explainer = make(case, (4, 4))
    with float64():
        with pytest.raises(ValueError, match=r"shape \(9,\) for 3 input\(s\) x 3 noise samples"):
            explainer.analyze(model, x[:3], loss_fn=lambda outputs: outputs[:2, 0])
        # a scalar loss of one input: never padded
        one = explainer.analyze(
            model, x[:1], loss_fn=lambda outputs: -keras.ops.sum(outputs[:, 2]) / 3
        )
        assert one.shape == (1, 8, 8) and np.all(np.isfinite(one))


def test_loss_fn_sees_the_real_rows_only(case):
    """A loss_fn with per-input data (M2IB's similarity to each input's pair) gets the ``N * B``
    rows of the real inputs, as unpadded, and gives the unpadded maps."""
    model, _, x, noise = case
    weights = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0], [1.5, 0.5, 0.0]])  # one per input
    seen = []

    def loss_fn(outputs):
        seen.append(tuple(outputs.shape))
        rows = keras.ops.repeat(keras.ops.convert_to_tensor(weights, outputs.dtype), BATCH, 0)
        return -keras.ops.sum(outputs[:, :3] * rows, axis=1)

    with float64():
        got = make(case, (4, 4)).analyze(model, x[:3], loss_fn=loss_fn, noise=noise[:, :3])
        want = make(case, None).analyze(model, x[:3], loss_fn=loss_fn, noise=noise[:, :3])
    assert set(seen) == {(3 * BATCH, 10)}
    np.testing.assert_allclose(got, want, rtol=1e-10)
