"""The same bad input gives the same error, with the same message, on every backend."""

from __future__ import annotations

import re

import numpy as np
import pytest

import iba

from .subjects import CONFIG, N_CLASSES, assert_same, draw_noise

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


def escape(message: str) -> str:
    return re.escape(message)


def test_analyze_before_estimate(subject):
    message = (
        "no feature statistics yet: call estimate(model, data) or load_estimators(path) "
        "before analyze()"
    )
    with pytest.raises(RuntimeError, match=escape(message)):
        subject.explainer().analyze(subject.fresh_model(), subject.x, target=0)
    with pytest.raises(RuntimeError, match=escape(message)):
        subject.explainer().save_estimators("never-written.npz")


def test_exactly_one_of_target_and_loss_fn(subject, fitted):
    message = "pass exactly one of target= (class index per input) or loss_fn="
    with pytest.raises(ValueError, match=escape(message)):
        fitted.analyze(subject.model, subject.x)
    with pytest.raises(ValueError, match=escape(message)):
        fitted.analyze(
            subject.model, subject.x, target=1, loss_fn=subject.per_row_loss(subject.labels)
        )
    with pytest.raises(TypeError, match=escape("loss_fn must be callable, got int")):
        fitted.analyze(subject.model, subject.x, loss_fn=3)


def test_noise_or_seed(subject, fitted):
    def run(**kwargs):
        return fitted.analyze(subject.model, subject.x, target=subject.labels, **kwargs)

    with pytest.raises(ValueError, match=escape("pass noise= or seed=, not both")):
        run(noise=draw_noise(subject, 0), seed=1)
    with pytest.raises(ValueError, match=escape("seed must be an int >= 0 or None, got -1")):
        run(seed=-1)
    with pytest.raises(TypeError, match=escape("seed must be an int or None, got 1.5")):
        run(seed=1.5)
    with pytest.raises(TypeError, match=escape("seed must be an int or None, got True")):
        run(seed=True)


@pytest.mark.parametrize(
    "target, error, message",
    [
        ([1, 2, 3], ValueError, "target has shape (3,); expected one int or 2 ints"),
        ([[1, 2]], ValueError, "target has shape (1, 2); expected one int or 2 ints"),
        (1.5, TypeError, "target must be an int or one int per input, got 1.5"),
        (True, TypeError, "target must be an int or one int per input, got True"),
        ([1.0, 2.0], TypeError, "target must be an int or one int per input, got [1.0, 2.0]"),
        ("3", TypeError, "target must be an int or one int per input, got '3'"),
        (N_CLASSES, ValueError, f"target [10] out of range for {N_CLASSES} model outputs"),
        ([1, -1], ValueError, f"target [-1, 1] out of range for {N_CLASSES} model outputs"),
    ],
)
def test_bad_targets(subject, fitted, target, error, message):
    with pytest.raises(error, match=escape(message)):
        fitted.analyze(subject.model, subject.x, target=target)


def test_noise_of_the_wrong_shape(subject, fitted):
    steps, batch, f = CONFIG["steps"], CONFIG["batch_size"], subject.feature_shape
    wrong = draw_noise(subject, 0, shape=subject.other_shape)
    message = (
        f"noise of shape {wrong.shape} does not fit 2 input(s) with features {f}: expected "
        f"{(steps, 2, batch, *f)} (steps, inputs, batch_size, *F); draw it with "
        f"iba.draw_noise(seed, {steps}, {batch}, {f}, n_inputs=2)"
    )
    with pytest.raises(ValueError, match=escape(message)):
        fitted.analyze(subject.model, subject.x, target=subject.labels, noise=wrong)
    one_input = draw_noise(subject, 0, n_inputs=None)  # (steps, B, *F): for one input only
    with pytest.raises(ValueError, match=escape(f"noise of shape {one_input.shape} does not")):
        fitted.analyze(subject.model, subject.x, target=subject.labels, noise=one_input)
    nan = draw_noise(subject, 0)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=escape("noise holds NaN or infinite values")):
        fitted.analyze(subject.model, subject.x, target=subject.labels, noise=nan)
    with pytest.raises(ValueError, match=escape("1 target(s) need 1 noise array(s), got 2")):
        fitted.analyze(
            subject.model, subject.x, target=subject.labels, noise=[draw_noise(subject, 0)] * 2
        )


def test_estimators_of_another_layer(subject, fitted):
    (name,) = subject.names
    other = iba.Estimator(layout=subject.layout)
    other.update(np.random.default_rng(0).standard_normal((4, *subject.other_shape)))
    explainer = subject.explainer(estimators=[other])
    message = (
        f"target {name!r}: estimator was fitted on features of shape {subject.other_shape}, but "
        f"the layer produces {subject.feature_shape}: estimate again for this layer"
    )
    with pytest.raises(ValueError, match=escape(message)):
        explainer.analyze(subject.model, subject.x, target=subject.labels)
    # the right shape in another layout
    flipped = iba.Estimator(layout=subject.other_layout)
    flipped.update(np.random.default_rng(0).standard_normal((4, *subject.feature_shape)))
    explainer.estimators = [flipped]
    message = (
        f"target {name!r}: estimator has layout {subject.other_layout!r}, the layer has "
        f"{subject.layout!r}"
    )
    with pytest.raises(ValueError, match=escape(message)):
        explainer.analyze(subject.model, subject.x, target=subject.labels)


def test_estimators_one_per_target(subject, fitted):
    (est,) = fitted.estimators
    message = (
        f"2 estimator(s) for 1 target(s): {subject.names}; give one per target, in the targets' "
        "order"
    )
    with pytest.raises(ValueError, match=escape(message)):
        subject.explainer(estimators=[est, est])
    explainer = subject.explainer()
    with pytest.raises(ValueError, match=escape(message)):
        explainer.estimators = [est, est]
    message = (
        f"1 estimator(s) for 2 target(s): {subject.coiba_names}; give one per target, in the "
        "targets' order"
    )
    with pytest.raises(ValueError, match=escape(message)):
        subject.explainer(subject.coiba, estimators=[est])
    with pytest.raises(
        TypeError, match=escape("estimators must be iba.Estimator objects, got str")
    ):
        explainer.estimators = ["relu2"]
    assert explainer.estimators == []


def test_config_arguments(subject):
    with pytest.raises(
        TypeError, match=escape("pass either config= or Config fields, not both (got ['beta'])")
    ):
        subject.IBA(subject.target, config=iba.Config(), beta=1.0)
    known = ", ".join(iba.Config.__dataclass_fields__)
    message = f"got an unexpected keyword argument 'betta'; IBA config keywords are: {known}"
    with pytest.raises(TypeError, match=escape(message)):
        subject.IBA(subject.target, betta=3)
    with pytest.raises(ValueError, match=escape("Config.beta must be >= 0, got -1")):
        subject.IBA(subject.target, beta=-1)
    with pytest.raises(TypeError, match=escape("config must be an iba.Config, got dict")):
        subject.IBA(subject.target, config={"beta": 1.0})
    config = iba.Config(beta=3.0, steps=4)
    assert subject.IBA(subject.target, config=config).config is config


def test_unknown_layer_names_the_layer_and_the_known_ones(subject, fitted):
    before = subject.snapshot(subject.model)
    with pytest.raises(ValueError) as estimating:
        subject.IBA(subject.unknown).estimate(subject.model, subject.data, progress=False)
    explainer = subject.IBA(subject.unknown, estimators=fitted.estimators)
    with pytest.raises(ValueError) as analyzing:
        explainer.analyze(subject.model, subject.x, target=subject.labels)
    for err in (estimating, analyzing):
        message = str(err.value)
        assert repr(subject.unknown) in message
        for name in subject.known:
            assert name in message
    assert_same(before, subject.snapshot(subject.model))


def test_targets_in_the_order_of_the_forward_pass(subject):
    explainer = subject.explainer(list(reversed(subject.coiba)))
    with pytest.raises(ValueError, match="in the order the forward pass reaches them"):
        explainer.estimate(subject.model, subject.data, progress=False)


def test_loss_fn_of_the_wrong_size(subject, fitted):
    rows = 2 * CONFIG["batch_size"]
    message = (
        f"loss_fn must return one loss per row, shape ({rows},) for 2 input(s) x "
        f"{CONFIG['batch_size']} noise samples, or a scalar for one input; got shape (2,)"
    )
    with pytest.raises(ValueError, match=escape(message)):
        fitted.analyze(subject.model, subject.x, loss_fn=subject.rows_loss(2))
    message = message.replace("got shape (2,)", "got shape ()")
    with pytest.raises(ValueError, match=escape(message)):
        fitted.analyze(subject.model, subject.x, loss_fn=subject.scalar_loss(1))


def test_inputs_with_nan(subject, fitted):
    x = np.array(subject.x_nchw)
    x[1, 0, 3, 3] = np.nan
    x = subject.inputs(subject.to_layout(x))
    message = "NaN or infinite value(s); check the input data"
    with pytest.raises(ValueError, match=escape(message)):
        fitted.analyze(subject.model, x, target=subject.labels)
    with pytest.raises(ValueError, match=escape(message)):
        subject.explainer().estimate(subject.model, x, progress=False)


def test_no_inputs(subject, fitted):
    with pytest.raises(ValueError, match=escape("x holds no inputs")):
        fitted.analyze(subject.model, subject.rows(subject.x, 0, 0), target=subject.labels[:0])
