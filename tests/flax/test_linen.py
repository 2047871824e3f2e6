"""IBA on a Linen CNN trained on MNIST: heatmaps, compiled work, errors, the model untouched."""

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


def snapshot(tree):
    return [np.array(leaf) for leaf in jax.tree.leaves(tree)]


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


def test_seed_and_key_noise(linen_explainer, linen_cnn, digits):
    x, y = digits
    a = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]), seed=3)
    b = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]), seed=3)
    c = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]), seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    key = jax.random.key(7, impl="rbg")  # any jax.random key; threefry compiles slowly on CPU
    d = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]), noise=key)
    e = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]), noise=key)
    np.testing.assert_array_equal(d, e)
    # the same optimisation reached from a different noise draw: similar, not equal
    assert np.corrcoef(a.ravel(), d.ravel())[0, 1] > 0.8


def test_numpy_noise_and_loss_fn_equal_target(linen_explainer, linen_cnn, digits):
    x, y = digits
    config = linen_explainer.config
    noise = iba.draw_noise(0, config.steps, config.batch_size, (14, 14, 16), n_inputs=2)
    by_target = linen_explainer.analyze(linen_cnn, x[:2], target=y[:2], noise=noise)
    labels = jnp.repeat(jnp.asarray(y[:2]), config.batch_size)  # row i*B+b is input i

    def loss_fn(logits):
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)[:, 0]

    by_loss = linen_explainer.analyze(linen_cnn, x[:2], loss_fn=loss_fn, noise=noise)
    np.testing.assert_allclose(by_loss, by_target, rtol=1e-5, atol=1e-7)


def test_bound_module_and_string_path(linen_explainer, linen_cnn, digits):
    module, variables = linen_cnn
    x, y = digits
    expected = linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0]))
    explainer = IBA("Block_1")
    explainer.estimators = linen_explainer.estimators
    got = explainer.analyze(module.bind(variables), x[:1], target=int(y[0]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_parameters_unchanged_also_after_an_error(linen_explainer, linen_cnn, digits):
    module, variables = linen_cnn
    before = snapshot(variables)
    x, y = digits
    linen_explainer.analyze(linen_cnn, x[:2], target=y[:2])

    def broken(outputs):
        raise RuntimeError("loss failed")

    with pytest.raises(RuntimeError, match="loss failed"):
        linen_explainer.analyze(linen_cnn, x[:2], loss_fn=broken)
    for a, b in zip(before, snapshot(variables)):
        np.testing.assert_array_equal(a, b)


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


def test_estimate_stops_after_the_target(mnist):
    class Explode(nn.Module):
        @nn.compact
        def __call__(self, x):
            raise AssertionError("the forward pass went past the target")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Explode()(nn.Conv(3, (3, 3))(x))

    module = Net()
    variables = {"params": {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 3)), "bias": jnp.zeros(3)}}}
    explainer = IBA("Conv_0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate((module, variables), mnist[0][:300], n_samples=150, progress=False)
    (est,) = explainer.estimators
    assert est.n_samples == 150 and est.feature_shape == (28, 28, 3)
    assert est.layout == "channels_last"


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


def test_estimate_accepts_batches_of_tuples(linen_cnn, mnist):
    x, y = mnist[0][:200], mnist[1][:200]
    batches = [(x[i : i + 50], y[i : i + 50]) for i in range(0, 200, 50)]
    explainer = IBA(("Block_0", "Conv_0"))
    with pytest.warns(UserWarning, match="only 120 samples"):
        explainer.estimate(linen_cnn, iter(batches), n_samples=120, progress=False)
        explainer.estimators[0].statistics()
    assert explainer.estimators[0].n_samples == 120


def test_save_and_load_estimators(linen_explainer, linen_cnn, digits, tmp_path):
    x, y = digits
    path = tmp_path / "estimators.npz"
    linen_explainer.save_estimators(path)
    loaded = IBA("Block_1")
    loaded.load_estimators(path)
    np.testing.assert_array_equal(loaded.estimators[0].mean, linen_explainer.estimators[0].mean)
    np.testing.assert_array_equal(
        loaded.analyze(linen_cnn, x[:1], target=int(y[0])),
        linen_explainer.analyze(linen_cnn, x[:1], target=int(y[0])),
    )
    with pytest.raises(ValueError, match="1 estimator"):
        IBA(["Block_0", "Block_1"]).load_estimators(path)


def test_unknown_path_lists_the_module_paths(linen_cnn, mnist):
    explainer = IBA(("Block_9", "Conv_0"))
    with pytest.raises(ValueError, match="Block_9/Conv_0") as err:
        explainer.estimate(linen_cnn, mnist[0][:10], progress=False)
    message = str(err.value)
    for path in ("Block_0", "Block_0/Conv_0", "Block_1/Conv_0", "Dense_0"):
        assert path in message


def test_analyze_before_estimate(linen_cnn, digits):
    with pytest.raises(RuntimeError, match=r"estimate\(model, data\)"):
        IBA("Block_1").analyze(linen_cnn, digits[0], target=1)


def test_mismatched_shapes(linen_explainer, linen_cnn, digits, tmp_path):
    x, y = digits
    path = tmp_path / "block1.npz"
    linen_explainer.save_estimators(path)
    other = IBA("Block_0")
    other.load_estimators(path)  # fitted for Block_1: (14, 14, 16), Block_0 gives (28, 28, 8)
    with pytest.raises(ValueError, match=r"Block_0.*\(14, 14, 16\).*\(28, 28, 8\)"):
        other.analyze(linen_cnn, x[:1], target=1)
    with pytest.raises(ValueError, match=r"expected \(10, 2, 10, 14, 14, 16\)"):
        linen_explainer.analyze(linen_cnn, x[:2], target=y[:2], noise=np.zeros((10, 2, 10, 3)))
    with pytest.raises(ValueError, match="one int or 2 ints"):
        linen_explainer.analyze(linen_cnn, x[:2], target=[1, 2, 3])
    with pytest.raises(ValueError, match="out of range for 10"):
        linen_explainer.analyze(linen_cnn, x[:2], target=[1, 10])
    with pytest.raises(ValueError, match="exactly one of target"):
        linen_explainer.analyze(linen_cnn, x[:2])
    with pytest.raises(TypeError, match="nnx.Module"):
        linen_explainer.analyze(object(), x[:2], target=1)


def test_config_is_validated():
    with pytest.raises(ValueError, match="Config.beta"):
        IBA("Block_1", beta=-1)
    with pytest.raises(TypeError, match="config keywords are"):
        IBA("Block_1", betta=1)
    assert IBA(["a", "b"]).config.beta == 1.0  # CoIBA defaults for several targets
