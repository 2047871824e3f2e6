"""``iba demo --backend keras`` end to end: the Keras port of EfficientNet-Lite0 on this session's
Keras backend, the bundled photos, figures and heatmaps written, the same map from the same
command, the estimator file shared with the other backends, the layer list, a quiet start and a
user's model (``tests/demo_checks.py``)."""

from __future__ import annotations

from tests.demo_checks import DemoTests

USERS_MODEL = """
import keras


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    h = keras.layers.Conv2D(8, 3, strides=4, activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(pooled))
"""


class TestKerasDemo(DemoTests):
    BACKEND, USERS_MODEL, USERS_TOP = "keras", USERS_MODEL, "conv, pool, head"
