"""Bad input, drawn by hypothesis: inputs of the wrong shape, size, rank or dtype, NaN and inf,
empty batches, targets out of range or of the wrong type, noise that does not fit, estimators of
another layer. Each gets a ValueError, TypeError or RuntimeError raised by the library (not a
traceback from inside a framework) whose message names the argument, and the model is left
exactly as it was. Only invalid input is drawn: nothing here compiles an optimisation."""

from __future__ import annotations

import numpy as np
import pytest
from contract.subjects import IMAGE, N_CLASSES, assert_same, draw_noise
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import iba

from .helpers import assert_clear

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore:the estimator has seen only"),
]

FEW = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- inputs --------------------------------------------------------------------------------------


@st.composite
def bad_inputs(draw):
    """``(kind, channels-first array or None)``: an invalid batch of the subject's inputs."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.integers(1, 3))
    x = rng.standard_normal((n, *IMAGE)).astype(np.float32)
    kind = draw(
        st.sampled_from(["empty", "dtype", "non-finite", "rank", "size", "channels", "none"])
    )
    if kind == "empty":
        return kind, x[:0]
    if kind == "dtype":
        dtype = draw(st.sampled_from([np.complex64, np.complex128, object, str]))
        return kind, x.astype(dtype)
    if kind == "non-finite":
        flat = x.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return kind, x
    if kind == "rank":
        how = draw(st.sampled_from(["no batch axis", "extra axis", "flat"]))
        return kind, {"no batch axis": x[0], "extra axis": x[None], "flat": x.reshape(n, -1)}[how]
    if kind == "size":
        h, w = draw(st.tuples(st.sampled_from([4, 6, 10, 12]), st.sampled_from([4, 8, 10])))
        return kind, rng.standard_normal((n, IMAGE[0], h, w)).astype(np.float32)
    if kind == "channels":
        c = draw(st.sampled_from([2, 3, 5]))
        return kind, rng.standard_normal((n, c, *IMAGE[1:])).astype(np.float32)
    return kind, None


def as_layout(subject, x):
    """A channels-first array (any rank >= 3) in the subject's layout and array type."""
    if x is None:
        return None
    if subject.layout == "channels_last" and x.ndim >= 3:
        x = np.moveaxis(x, -3, -1)
    if x.dtype.kind in "OU":
        return x  # no framework array holds these: the user's array as it is
    return subject.inputs(np.ascontiguousarray(x))


@FEW
@given(case=bad_inputs())
def test_bad_inputs(subject, fitted, case):
    kind, x = case
    x = as_layout(subject, x)
    before = subject.snapshot(subject.model)
    with pytest.raises(Exception) as err:
        fitted.analyze(subject.model, x, target=3)
    assert_clear(err.value, "x")
    assert_same(before, subject.snapshot(subject.model))


@settings(FEW, max_examples=6)
@given(case=bad_inputs().filter(lambda case: case[0] in ("empty", "dtype", "non-finite")))
def test_bad_data_for_estimate(subject, fitted, case):
    kind, x = case
    explainer = subject.explainer(estimators=fitted.estimators)
    before = subject.snapshot(subject.model)
    with pytest.raises(Exception) as err:
        explainer.estimate(subject.model, as_layout(subject, x), progress=False)
    assert_clear(err.value, "data")
    assert explainer.estimators == fitted.estimators
    assert_same(before, subject.snapshot(subject.model))


# -- targets -------------------------------------------------------------------------------------

out_of_range = st.one_of(st.integers(N_CLASSES, 10**9), st.integers(-(10**9), -1))
bad_targets = st.one_of(
    out_of_range,
    st.tuples(out_of_range, st.integers(0, N_CLASSES - 1)).map(list),
    st.lists(st.integers(0, N_CLASSES - 1), min_size=3, max_size=5),  # not one per input
    st.lists(st.integers(0, N_CLASSES - 1), min_size=2, max_size=2).map(lambda t: [t]),
    st.floats(allow_nan=True),
    st.lists(st.floats(0, 9), min_size=2, max_size=2),
    st.booleans(),
    st.text(max_size=3),
    st.just([None, 1]),
    st.just(np.array([1.0, 2.0])),
)


@FEW
@given(target=bad_targets)
def test_bad_targets(subject, fitted, target):
    before = subject.snapshot(subject.model)
    with pytest.raises(Exception) as err:
        fitted.analyze(subject.model, subject.x, target=target)
    assert_clear(err.value, "target")
    assert_same(before, subject.snapshot(subject.model))


# -- noise ---------------------------------------------------------------------------------------


@st.composite
def bad_noise(draw):
    """Noise for the subject's two inputs that does not fit (``shape`` filled in by the test)."""
    kind = draw(
        st.sampled_from(["axis", "one input", "extra axis", "non-finite", "dtype", "count"])
    )
    return kind, draw(st.integers(0, 5)), draw(st.sampled_from([-1, 1])), draw(st.integers(0, 99))


@FEW
@given(case=bad_noise())
def test_noise_that_does_not_fit(subject, fitted, case):
    kind, axis, change, where = case
    noise = draw_noise(subject, 0)  # (steps, 2 inputs, batch, *F)
    if kind == "axis":
        shape = list(noise.shape)
        shape[axis] = max(shape[axis] + change, 0)
        assume(tuple(shape) != noise.shape)
        noise = np.zeros(shape)
    elif kind == "one input":  # (steps, batch, *F): the shape for one input
        noise = draw_noise(subject, 0, n_inputs=None)
    elif kind == "extra axis":
        noise = noise[None]
    elif kind == "non-finite":
        noise.reshape(-1)[where * 97 % noise.size] = [np.nan, np.inf][where % 2]
    elif kind == "dtype":
        noise = noise.astype([np.complex64, object, str][where % 3])
    else:
        noise = [noise] * 2  # two arrays for one target
    before = subject.snapshot(subject.model)
    with pytest.raises(Exception) as err:
        fitted.analyze(subject.model, subject.x, target=subject.labels, noise=noise)
    assert_clear(err.value, "noise")
    assert_same(before, subject.snapshot(subject.model))


# -- estimators of another layer -----------------------------------------------------------------


@st.composite
def other_layers(draw):
    """``(feature shape, layout)`` of an estimator fitted on some other layer."""
    layout = draw(st.sampled_from(["channels_first", "channels_last", "tokens"]))
    rank = 2 if layout == "tokens" else 3
    return tuple(draw(st.lists(st.integers(1, 9), min_size=rank, max_size=rank))), layout


@FEW
@given(other=other_layers())
def test_estimators_of_another_layer(subject, fitted, other):
    shape, layout = other
    assume((shape, layout) != (subject.feature_shape, subject.layout))
    est = iba.Estimator(layout=layout)
    est.update(np.random.default_rng(0).standard_normal((4, *shape)))
    explainer = subject.explainer(estimators=[est])
    before = subject.snapshot(subject.model)
    with pytest.raises(Exception) as err:
        explainer.analyze(subject.model, subject.x, target=subject.labels)
    assert_clear(err.value, "estimator")
    assert_same(before, subject.snapshot(subject.model))
