"""A small CNN trained on the bundled MNIST subset: heatmaps, IBACopy, neuron selection."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

import iba_tf

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


@pytest.fixture(scope="module")
def analyzer(mnist, mnist_model):
    """IBACopy of the trained Sequential after conv2 (14x14x16), statistics from 1,000 digits."""
    x_train = mnist[0]
    copy = iba_tf.IBACopy(mnist_model, "conv2", neuron_selection_mode="index", steps=10)
    copy.fit(x_train, n_samples=1000, progress=False)
    return copy


def test_more_bits_on_the_digit_than_on_the_background(mnist, analyzer):
    _, _, x_test, y_test = mnist
    x, y = x_test[:6], y_test[:6]
    maps = analyzer.analyze(x, neuron_selection=y, seed=0)
    assert maps.shape == (6, 28, 28) and np.all(np.isfinite(maps)) and np.all(maps >= 0)
    digit = x[..., 0] > 0.3
    on_digit = np.array([m[d].mean() for m, d in zip(maps, digit)])
    background = np.array([m[~d].mean() for m, d in zip(maps, digit)])
    assert np.all(on_digit > background), (on_digit, background)
    assert np.mean(on_digit / background) > 1.5


def test_ibacopy_shares_weights_and_leaves_the_original_untouched(mnist, mnist_model, analyzer):
    x = mnist[2][:16]
    before = mnist_model.predict(x, verbose=0)
    config = mnist_model.get_config()
    names = [layer.name for layer in mnist_model.layers]
    analyzer.analyze(x[:2], neuron_selection=[1, 2], seed=1)
    copy = analyzer.model
    assert copy is not mnist_model and copy.get_layer("conv2") is mnist_model.get_layer("conv2")
    assert isinstance(copy.get_layer("iba_conv2"), iba_tf.IBALayer)
    copied = {id(v) for v in copy.weights}
    assert all(id(v) in copied for v in mnist_model.weights)  # the same variables, no copies
    assert [layer.name for layer in mnist_model.layers] == names
    assert mnist_model.get_config() == config
    np.testing.assert_array_equal(mnist_model.predict(x, verbose=0), before)
    np.testing.assert_array_equal(copy.predict(x, verbose=0), before)  # identity bottleneck


def test_training_the_original_shows_in_the_copy(mnist):
    from keras_models import mnist_cnn

    x, y = mnist[0][:256], mnist[1][:256]
    keras.utils.set_random_seed(3)
    model = mnist_cnn()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    copy = iba_tf.IBACopy(model, "pool1").model
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(copy(x[:8])), ops.convert_to_numpy(model(x[:8])), rtol=1e-6
    )


def test_neuron_selection_modes(mnist, mnist_model, analyzer):
    x = mnist[2][:2]
    predicted = np.argmax(mnist_model.predict(x, verbose=0), axis=-1)
    by_index = analyzer.analyze(x, neuron_selection=predicted, seed=2)
    top = iba_tf.IBACopy(mnist_model, "conv2", neuron_selection_mode="max_activation")
    top.explainer.estimators = analyzer.estimators
    np.testing.assert_allclose(top.analyze(x, seed=2), by_index, rtol=1e-5, atol=1e-7)
    every = iba_tf.IBACopy(mnist_model, "conv2", neuron_selection_mode="all", steps=4)
    every.explainer.estimators = analyzer.estimators
    maps = every.analyze(x, seed=0)
    assert maps.shape == (2, 10, 28, 28) and np.all(np.isfinite(maps))
    assert np.abs(maps[:, 0] - maps[:, 1]).max() > 1e-4  # one map per class
    with pytest.raises(ValueError, match="neuron_selection"):
        top.analyze(x, neuron_selection=3)
    with pytest.raises(ValueError, match="needs analyze"):
        analyzer.analyze(x)
    with pytest.raises(ValueError, match="neuron_selection_mode must be one of"):
        iba_tf.IBACopy(mnist_model, "conv2", neuron_selection_mode="sum")


def test_save_and_load_estimators(tmp_path, mnist, mnist_model, analyzer):
    path = tmp_path / "stats.npz"
    analyzer.save_estimators(path)
    explainer = iba_tf.IBA("conv2")  # a name of the Sequential: explained through a copy
    explainer.load_estimators(path)
    x = mnist[2][:2]
    got = explainer.analyze(mnist_model, x, target=[3, 4], seed=5)
    want = analyzer.analyze(x, neuron_selection=[3, 4], seed=5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not any(isinstance(layer, iba_tf.IBALayer) for layer in mnist_model.layers)


def test_data_sources_and_n_samples(mnist, mnist_model):
    x, y = mnist[0][:600], mnist[1][:600]
    from_array = iba_tf.IBA("pool1").estimate(mnist_model, x, n_samples=300, progress=False)[0]

    def batches():
        for start in range(0, 600, 128):
            yield x[start : start + 128], y[start : start + 128]

    from_generator = iba_tf.IBA("pool1").estimate(mnist_model, batches(), 300, progress=False)[0]
    assert from_array.n_samples == from_generator.n_samples == 300
    np.testing.assert_allclose(from_array.mean, from_generator.mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(from_array.std, from_generator.std, rtol=1e-5, atol=1e-7)
