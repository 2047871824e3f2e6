"""IBALayer: identity until an explanation runs, a switch that works in compiled predict, complete
config, .keras round trip, inert in training; Sequential, Functional and subclassed models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import BACKEND
from keras import layers, ops

import iba
import iba_tf

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


def small_cnn(bottleneck=None, seed=1):
    keras.utils.set_random_seed(seed)
    stack = [keras.Input((8, 8, 1)), layers.Conv2D(4, 3, padding="same", activation="relu")]
    stack += [bottleneck] if bottleneck is not None else []
    stack += [layers.Dropout(0.3), layers.Flatten(), layers.Dense(3)]
    return keras.Sequential(stack)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((96, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 96)


def test_identity_and_switch_in_compiled_predict(data):
    x, _ = data
    layer = iba_tf.IBALayer(name="iba")
    model = small_cnn(layer)
    before = model.predict(x, verbose=0)
    features = model.layers[0](x)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(features)), ops.convert_to_numpy(features)
    )
    layer.bottleneck_on.assign(1)  # the compiled predict function reads the variable
    on = model.predict(x, verbose=0)
    again = model.predict(x, verbose=0)
    assert np.abs(on - before).max() > 1e-3
    assert np.abs(again - on).max() > 1e-4  # fresh noise on every call
    layer.bottleneck_on.assign(0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


def test_config_is_complete():
    layer = iba_tf.IBALayer(
        "channels_first", sigma=None, relu=True, min_std=0.1, active_threshold=0.2,
        initial_alpha=3.0, seed=7, name="b",
    )  # fmt: skip
    config = layer.get_config()
    for key in ("data_format", "sigma", "relu", "min_std", "active_threshold", "initial_alpha"):
        assert key in config
    again = iba_tf.IBALayer.from_config(config)
    assert again.get_config() == config
    assert keras.saving.get_registered_object("iba_tf>IBALayer") is iba_tf.IBALayer
    with pytest.raises(ValueError, match="data_format"):
        iba_tf.IBALayer("nchw")
    with pytest.raises(ValueError, match="min_std"):
        iba_tf.IBALayer(min_std=0)


def test_keras_round_trip(tmp_path, data):
    x, _ = data
    model = small_cnn(iba_tf.IBALayer(relu=True, name="iba"))
    explainer = iba_tf.IBA("iba", steps=3)
    explainer.estimate(model, x, progress=False)
    want = explainer.analyze(model, x[:2], target=[0, 2], seed=3)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    layer = loaded.get_layer("iba")
    assert isinstance(layer, iba_tf.IBALayer) and layer.relu
    est, stored = layer.estimator(), explainer.estimators[0]
    assert est.n_samples == 96 and est.feature_shape == (8, 8, 4)
    np.testing.assert_allclose(est.mean, stored.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(est.std, stored.std, rtol=1e-5, atol=1e-7)
    # statistics come from the saved weights: no estimate() needed
    fresh = iba_tf.IBA("iba", steps=3)
    got = fresh.analyze(loaded, x[:2], target=[0, 2], seed=3)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_inert_during_training(data):
    """fit with and without the layer gives identical weights for the same seed."""
    x, y = data
    weights = []
    for bottleneck in (None, iba_tf.IBALayer()):
        model = small_cnn(bottleneck)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        keras.utils.set_random_seed(2)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        weights.append([ops.convert_to_numpy(w) for w in model.trainable_weights])
    assert len(weights[0]) == len(weights[1]) == 4
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


class Subclassed(keras.Model):
    def __init__(self, conv, bottleneck, dense):
        super().__init__()
        self.conv, self.bottleneck, self.dense = conv, bottleneck, dense
        self.flatten = layers.Flatten()

    def call(self, x):
        return self.dense(self.flatten(self.bottleneck(self.conv(x))))


def test_sequential_functional_subclassed_agree(data):
    """The same layers in three kinds of model give the same heatmaps on the same noise; the
    subclassed one runs the whole model on the noised copies (no graph to cut)."""
    x, _ = data
    keras.utils.set_random_seed(4)
    conv = layers.Conv2D(4, 3, padding="same", activation="relu")
    bottleneck = iba_tf.IBALayer(name="iba")
    dense = layers.Dense(3)
    sequential = keras.Sequential(
        [keras.Input((8, 8, 1)), conv, bottleneck, layers.Flatten(), dense]
    )
    inputs = keras.Input((8, 8, 1))
    functional = keras.Model(inputs, dense(layers.Flatten()(bottleneck(conv(inputs)))))
    subclassed = Subclassed(conv, bottleneck, dense)
    subclassed(x[:1])
    explainer = iba_tf.IBA(bottleneck, steps=4, batch_size=3)
    explainer.estimate(sequential, x, progress=False)
    noise = iba.draw_noise(0, 4, 3, (8, 8, 4), n_inputs=2)
    maps = []
    for model in (sequential, functional, subclassed):
        maps.append(explainer.analyze(model, x[:2], target=[1, 2], noise=noise))
    assert explainer.engine.plan(subclassed).head is None
    assert explainer.engine.plan(functional).head is not None
    assert maps[0].shape == (2, 8, 8)
    np.testing.assert_allclose(maps[1], maps[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps[2], maps[0], rtol=1e-5, atol=1e-6)


def test_token_features_from_a_generator():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6, 4))
    h = layers.Dense(8, activation="relu")(inputs)
    h = iba_tf.IBALayer(name="tokens_iba")(h)
    model = keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling1D()(h)))
    rng = np.random.default_rng(1)

    def batches():
        for _ in range(5):
            yield rng.standard_normal((250, 6, 4)).astype("float32"), np.zeros(250)

    explainer = iba_tf.IBA("tokens_iba", steps=5)
    (est,) = explainer.estimate(model, batches(), progress=False)
    assert est.n_samples == 1250 and est.layout == "tokens"
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    ex = explainer.analyze(model, x, target=1, details=True)
    assert ex.heatmap.shape == (3, 6) and ex.alpha.shape == (3, 6, 8)
    np.testing.assert_allclose(ex.heatmap, iba.heatmap(ex.capacity, "tokens"))
    assert np.all(ex.losses[-1] < ex.losses[0])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data needs TensorFlow")
def test_estimate_from_tf_data(data):
    import tensorflow as tf

    x, y = data
    model = small_cnn(iba_tf.IBALayer(name="iba"))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    a = iba_tf.IBA("iba").estimate(model, dataset, n_samples=80, progress=False)[0]
    b = iba_tf.IBA("iba").estimate(model, x[:80], progress=False)[0]
    assert a.n_samples == b.n_samples == 80
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6, atol=1e-7)
