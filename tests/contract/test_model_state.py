"""The model is left exactly as it was: after estimate, after analyze, and after an exception in
the loss, in the model's forward pass at a later optimisation step, or in a check of the inputs;
and the next analyze gives the same heatmaps as before."""

from __future__ import annotations

import re

import numpy as np
import pytest

from .conftest import fit
from .subjects import TRIPWIRE, assert_same, draw_noise

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


class Broken(Exception):
    pass


def test_estimate_leaves_the_model_as_it_was(subject):
    # Keras: estimate stores the statistics in the IBALayers; the same data stores the same ones
    fit(subject.explainer(), subject)
    before = subject.snapshot(subject.model)
    fit(subject.explainer(), subject)
    assert_same(before, subject.snapshot(subject.model))


def test_analyze_leaves_the_model_as_it_was(subject, fitted, base_map):
    before = subject.snapshot(subject.model)
    maps = fitted.analyze(subject.model, subject.x, target=subject.labels)
    assert_same(before, subject.snapshot(subject.model))
    np.testing.assert_array_equal(maps, base_map)


def test_an_exception_in_the_loss(subject, fitted, base_map):
    before = subject.snapshot(subject.model)

    def loss_fn(outputs):
        raise Broken("inside the loss")

    with pytest.raises(Broken, match="inside the loss"):
        fitted.analyze(subject.model, subject.x, loss_fn=loss_fn)
    assert_same(before, subject.snapshot(subject.model))
    maps = fitted.analyze(subject.model, subject.x, target=subject.labels)
    np.testing.assert_array_equal(maps, base_map)
    assert_same(before, subject.snapshot(subject.model))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": 10}, "out of range for 10 model outputs"),
        ({"target": [1, 2], "noise": np.zeros((1, 1))}, "noise of shape (1, 1) does not fit"),
    ],
    ids=["target", "noise"],
)
def test_an_error_of_the_arguments(subject, fitted, base_map, kwargs, message):
    before = subject.snapshot(subject.model)
    with pytest.raises(ValueError, match=re.escape(message)):
        fitted.analyze(subject.model, subject.x, **kwargs)
    assert_same(before, subject.snapshot(subject.model))
    maps = fitted.analyze(subject.model, subject.x, target=subject.labels)
    np.testing.assert_array_equal(maps, base_map)


def test_an_exception_in_the_forward_pass_at_a_later_step(subject, fitted):
    model = subject.trip_model
    noise = draw_noise(subject, 0)
    with TRIPWIRE.armed():
        want = fitted.analyze(model, subject.x, target=subject.labels, noise=noise)
        assert TRIPWIRE.calls == fitted.config.updates  # one forward pass per step
    before = subject.snapshot(model)
    with TRIPWIRE.armed(at=2), pytest.raises(Exception, match="tripwire: raised on call 2"):
        fitted.analyze(model, subject.x, target=subject.labels, noise=noise)
    assert TRIPWIRE.calls == 2
    assert_same(before, subject.snapshot(model))
    with TRIPWIRE.armed():
        got = fitted.analyze(model, subject.x, target=subject.labels, noise=noise)
    np.testing.assert_array_equal(got, want)
    assert_same(before, subject.snapshot(model))
    # the tripwire is not part of the computation: the model without it gives the same maps
    plain = fitted.analyze(subject.model, subject.x, target=subject.labels, noise=noise)
    np.testing.assert_allclose(got, plain, rtol=1e-6, atol=1e-8)


def test_estimate_stops_after_the_last_target(subject):
    explainer = subject.explainer()
    with TRIPWIRE.armed(forbid=True):
        (est,) = explainer.estimate(subject.trip_model, subject.data, progress=False)
        assert TRIPWIRE.calls == 0
    assert est.n_samples == len(subject.data) and est.feature_shape == subject.feature_shape
