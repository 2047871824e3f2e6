"""Clear errors, and the model left exactly as it was, also after an exception in the loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

import iba
import iba_tf

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            iba_tf.IBALayer(name="iba"),
            layers.Flatten(name="flatten"),
            layers.Dense(3, name="logits"),
        ]
    )
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 1)).astype("float32")
    return model, x


def test_unknown_layer_lists_the_names(setup):
    model, x = setup
    with pytest.raises(ValueError, match="layer 'conv9' not found.*layers are: conv, iba, flatten"):
        iba_tf.IBA("conv9").estimate(model, x, progress=False)
    with pytest.raises(ValueError, match="not found.*layers are: conv"):
        iba_tf.IBACopy(model, "conv9")


def test_analyze_before_estimation(setup):
    model, x = setup
    with pytest.raises(RuntimeError, match=r"call estimate\(model, data\) or load_estimators"):
        iba_tf.IBA("iba").analyze(model, x[:1], target=0)


def test_loaded_statistics_of_another_shape(tmp_path, setup):
    model, x = setup
    other = iba.Estimator(layout="channels_last")
    other.update(np.random.default_rng(1).standard_normal((10, 4, 4, 4)))
    path = tmp_path / "other.npz"
    iba.save_estimators(path, [other])
    explainer = iba_tf.IBA("iba")
    explainer.load_estimators(path)
    with pytest.raises(ValueError, match=r"target 'iba'.*\(4, 4, 4\).*\(8, 8, 4\).*estimate again"):
        explainer.analyze(model, x[:1], target=0)
    with pytest.raises(ValueError, match="holds 1 estimator"):
        iba_tf.IBA(["conv", "iba"]).load_estimators(path)


def test_argument_errors(setup):
    model, x = setup
    explainer = iba_tf.IBA("iba", steps=2)
    explainer.estimate(model, x, progress=False)
    with pytest.raises(ValueError, match="exactly one of target"):
        explainer.analyze(model, x[:1])
    with pytest.raises(ValueError, match="exactly one of target"):
        explainer.analyze(model, x[:1], target=0, loss_fn=lambda out: out[:, 0])
    with pytest.raises(ValueError, match=r"expected \(2, 1, 10, 8, 8, 4\).*iba.draw_noise"):
        explainer.analyze(model, x[:1], target=0, noise=np.zeros((2, 10, 4, 4, 4)))
    with pytest.raises(ValueError, match="out of range for 3 model outputs"):
        explainer.analyze(model, x[:1], target=7)
    with pytest.raises(TypeError, match="config keywords are"):
        iba_tf.IBA("iba", betta=1)
    with pytest.raises(ValueError, match="noise= or seed="):
        explainer.analyze(model, x[:1], target=0, seed=1, noise=np.zeros(1))


class Broken(Exception):
    pass


def test_model_left_as_it_was_after_an_exception_in_the_loss(setup):
    model, x = setup
    layer = model.get_layer("iba")
    explainer = iba_tf.IBA("iba", steps=3)
    explainer.estimate(model, x, progress=False)
    before = [ops.convert_to_numpy(w).copy() for w in model.weights]
    trainable = [w.trainable for w in model.weights]
    predictions = model.predict(x, verbose=0)

    def loss_fn(outputs):
        raise Broken("inside the loss")

    with pytest.raises(Broken):
        explainer.analyze(model, x[:2], loss_fn=loss_fn)
    assert layer._hook is None and int(ops.convert_to_numpy(layer.bottleneck_on.value)) == 0
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(ops.convert_to_numpy(w), b)
    assert [w.trainable for w in model.weights] == trainable
    np.testing.assert_array_equal(model.predict(x, verbose=0), predictions)
    # a user loss: one value per row (N * B rows), or a scalar for one input
    maps = explainer.analyze(model, x[:2], loss_fn=lambda out: -out[:, 1])
    assert maps.shape == (2, 8, 8)
    one = explainer.analyze(model, x[:1], loss_fn=lambda out: -ops.mean(out[:, 1]))
    assert one.shape == (1, 8, 8)


class Plain(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(2, 3, name="conv")
        self.dense = layers.Dense(2)

    def call(self, x):
        return self.dense(ops.mean(self.conv(x), axis=(1, 2)))


def test_subclassed_model_without_ibalayer():
    model = Plain()
    model(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="not an IBALayer: add iba_tf.IBALayer"):
        iba_tf.IBA("conv").estimate(model, np.zeros((4, 8, 8, 1), "float32"), progress=False)
    with pytest.raises(TypeError, match="Functional or Sequential"):
        iba_tf.IBACopy(model, "conv")
