"""Clear errors of the Keras adapter's own: IBACopy and subclassed models (the errors every backend
shares, and the model left as it was after an exception, are in tests/contract)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

import iba_tf


def test_ibacopy_of_an_unknown_layer_lists_the_names():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            iba_tf.IBALayer(name="iba"),
            layers.Flatten(name="flatten"),
            layers.Dense(3, name="logits"),
        ]
    )
    with pytest.raises(ValueError, match="layer 'conv9' not found.*layers are: conv, iba, flatten"):
        iba_tf.IBACopy(model, "conv9")


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
