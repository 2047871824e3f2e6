"""The Keras sessions' environment: the backend named by KERAS_BACKEND computes the reference's sigmoid."""

import os

import keras
import numpy as np

import iba


def test_keras_backend_and_sigmoid():
    assert keras.backend.backend() == os.environ.get("KERAS_BACKEND", "tensorflow")
    x = np.linspace(-30, 30, 101).astype("float32")
    got = keras.ops.convert_to_numpy(keras.ops.sigmoid(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got, iba.sigmoid(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
