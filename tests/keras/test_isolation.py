"""While an explainer optimises, every other use of the same model runs the identity ``IBALayer``:
calls between its steps (this thread or another) and another thread's call during the explainer's
own forward pass. And an explainer keeps no model alive, while it reuses a model's compiled step."""

from __future__ import annotations

import gc
import threading
import weakref

import keras
import numpy as np
import pytest
from keras import layers, ops

import iba_tf
from iba import driver

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


class _Probe(keras.layers.Layer):
    """The identity; once armed, its next call (in the explainer's forward pass: eager, or while
    the step is traced) calls the model from another thread and keeps that thread's output."""

    armed: dict | None = None

    def call(self, x):
        job, _Probe.armed = _Probe.armed, None
        if job is not None:
            thread = threading.Thread(target=job["run"])
            thread.start()
            thread.join(timeout=120)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


def _model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = _Probe(name="probe")(iba_tf.IBALayer(name="iba")(x))
    outputs = layers.Dense(3, name="logits")(layers.Flatten(name="flatten")(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    model = _model()
    data = rng.standard_normal((32, 8, 8, 1)).astype("float32")
    explainer = iba_tf.IBA("iba", steps=4, batch_size=2)
    explainer.estimate(model, data, progress=False)
    x = data[:2]
    return model, explainer, x, ops.convert_to_numpy(model(x, training=False))


def _in_thread(fn):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(timeout=120)
    return out[0]


def test_calls_between_the_steps_see_the_identity(case, monkeypatch):
    model, explainer, x, clean = case
    seen = []
    steps = driver.steps

    def watched(n, enabled, desc="IBA analyze"):
        for i in steps(n, enabled, desc):
            if i == 1:  # the optimisation is under way
                seen.append(ops.convert_to_numpy(model(x, training=False)))
                seen.append(model.predict(x, verbose=0))
                seen.append(_in_thread(lambda: ops.convert_to_numpy(model(x, training=False))))
            yield i

    monkeypatch.setattr(driver, "steps", watched)
    maps = explainer.analyze(model, x, target=[0, 2])
    assert len(seen) == 3 and np.isfinite(maps).all()
    for out in seen:
        np.testing.assert_array_equal(out, clean)


def test_another_thread_during_the_forward_pass_sees_the_identity(case):
    """The explainer's hooks belong to its thread: another thread calling the model while the
    step's forward pass runs (between the bottleneck and the rest of the model) gets the plain
    model's output."""
    model, explainer, x, clean = case
    got: list = []
    loss = keras.ops.convert_to_tensor(np.repeat([0, 2], 2).astype("int32"))

    def per_row(outputs):  # a new loss_fn: a new step, traced (or run eagerly) in this call
        picked = ops.take_along_axis(ops.log_softmax(outputs, axis=-1), loss[:, None], axis=-1)
        return -picked[:, 0]

    _Probe.armed = {"run": lambda: got.append(ops.convert_to_numpy(model(x, training=False)))}
    try:
        explainer.analyze(model, x, loss_fn=per_row)
    finally:
        _Probe.armed = None
    assert len(got) == 1
    np.testing.assert_array_equal(got[0], clean)


def test_models_are_not_kept_but_their_step_is_reused(case):
    _, explainer, x, _ = case
    explainer = iba_tf.IBA("iba", steps=2, batch_size=2, estimators=explainer.estimators)
    model = _model()
    first = explainer.analyze(model, x, target=[0, 2])
    step = next(iter(explainer.engine._steps.values()))
    np.testing.assert_array_equal(explainer.analyze(model, x, target=[0, 2]), first)
    assert list(explainer.engine._steps.values()) == [step]  # the same compiled step
    copy = iba_tf.IBA("conv", steps=2, batch_size=2, estimators=explainer.estimators)
    copy.analyze(model, x, target=[0, 2])  # a copy with its own bottleneck (IBACopy)
    refs = [weakref.ref(model), weakref.ref(copy.model(model))]
    del model
    gc.collect()  # the model: its finalizer drops the plans and steps; then their copy
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert len(explainer.engine._plans) == len(explainer.engine._steps) == 0
    assert len(copy.engine._plans) == len(copy.engine._steps) == 0
