"""IBA on a Linen CNN trained on MNIST: heatmaps, jax.random keys, bound modules, compiled work,
apply kwargs, nested paths. What every backend shares (errors, seeds, estimators, the model left
untouched) is in tests/contract, on Linen and on NNX."""

from __future__ import annotations

import re
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import iba
from iba_jax import IBA


@pytest.fixture(scope="module")
def digits(mnist):
    _, _, test_x, test_y = mnist
    return test_x[:4], test_y[:4]


def test_heatmaps_show_the_digit(linen_explainer, linen_cnn, digits):
    x, y = digits
    explanation = linen_explainer.analyze(linen_cnn, x, target=y, seed=0, details=True)
    maps = explanation.heatmap
    assert maps.shape == (4, 28, 28)
    assert np.all(np.isfinite(maps)) and np.all(maps >= 0)
    assert explanation.capacity.shape == (4, 14, 14, 16)
    assert explanation.alphas.shape == (10, 4, 14, 14, 16)  # initial + 9 updates
    np.testing.assert_array_equal(explanation.alphas[0], 5.0)
    assert explanation.losses.shape == (9, 4)
    assert np.all(explanation.losses[-1] < explanation.losses[0])  # the optimisation works
    # bits are where the digits are: the centre, not the blank frame of every MNIST image
    frame = np.ones((28, 28), bool)
    frame[4:-4, 4:-4] = False
    centre = maps[:, 7:-7, 7:-7].mean(axis=(1, 2))
    assert np.all(centre > 1.2 * maps[:, frame].mean(1))
    # the total number of bits is about preserved by the resize
    total = iba.to_bits(np.nansum(explanation.capacity, axis=(1, 2, 3)))
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), total, rtol=0.05)


def test_key_noise(linen_explainer, linen_cnn, digits):
    x, y = digits
    a = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]), seed=3)
    key = jax.random.key(7, impl="rbg")  # any jax.random key; threefry compiles slowly on CPU
    d = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]), noise=key)
    e = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]), noise=key)
    np.testing.assert_array_equal(d, e)
    # the same optimisation reached from a different noise draw: similar, not equal
    assert np.corrcoef(a.ravel(), d.ravel())[0, 1] > 0.8


def test_bound_module_and_string_path(linen_explainer, linen_cnn, digits):
    module, variables = linen_cnn
    x, y = digits
    expected = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]))
    explainer = IBA("Block_1")
    explainer.estimators = linen_explainer.estimators
    got = explainer.analyze(module.bind(variables), x[:1], target=int(y[0]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_pre_target_layers_leave_the_loop(linen_explainer, linen_cnn, digits):
    """XLA drops the layers before the target from the per-step work: every convolution runs
    on the N inputs once (the features), none on the N * B noised rows."""
    x, y = digits
    hlo = linen_explainer.lower(linen_cnn, x[:2], target=y[:2]).compile().as_text()
    convs = re.findall(r"= f32\[(\d+),[\d,]*\]\S* convolution\(", hlo)
    assert convs, "no convolution in the compiled optimisation"
    assert set(convs) == {"2"}  # both blocks on the 2 inputs; nothing on 2 * 10 rows
    assert "f32[20,28,28,1]" not in hlo  # the repeated input is dead code
    assert re.search(r"f32\[20,10\]", hlo)  # the head does run on the noised rows


def test_apply_kwargs_and_outputs_without_classes(digits):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, scale=1.0, pair=False):
            y = nn.Conv(2, (3, 3), use_bias=False)(x * scale)
            return (y.mean(axis=(1, 2)), y) if pair else y.mean(axis=(1, 2))

    module = Net()
    variables = {"params": {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 2))}}}
    x = digits[0]
    one, two = IBA("Conv_0"), IBA("Conv_0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one.estimate((module, variables), x, progress=False)
        two.estimate((module, variables, {"scale": 2.0}), x, progress=False)
    np.testing.assert_allclose(two.estimators[0].mean, 2 * one.estimators[0].mean, rtol=1e-6)
    with pytest.raises(ValueError, match="pass loss_fn"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two.analyze((module, variables, {"pair": True}), x[:1], target=0)


def test_unknown_path_lists_the_module_paths(linen_cnn, mnist):
    explainer = IBA(("Block_9", "Conv_0"))
    with pytest.raises(ValueError, match="Block_9/Conv_0") as err:
        explainer.estimate(linen_cnn, mnist[0][:10], progress=False)
    message = str(err.value)
    for path in ("Block_0", "Block_0/Conv_0", "Block_1/Conv_0", "Dense_0"):
        assert path in message


def test_a_model_of_another_kind(linen_explainer, digits):
    with pytest.raises(TypeError, match="nnx.Module"):
        linen_explainer.analyze(object(), digits[0][:2], target=1)
