"""``estimate``: the statistics of the target's features, whatever the form of the data."""

from __future__ import annotations

import re

import numpy as np
import pytest

from .conftest import fit
from .subjects import N_DATA, reference_features

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


def arrays(est):
    return {k: v for k, v in est.to_arrays().items() if k not in ("format_version", "layout")}


def test_estimators_hold_the_statistics_of_the_target_features(subject, fitted):
    (est,) = fitted.estimators
    assert est.feature_shape == subject.feature_shape
    assert est.layout == subject.layout
    assert est.n_samples == N_DATA
    features = subject.to_layout(reference_features(subject.data_nchw, "relu2"))
    np.testing.assert_allclose(est.mean, features.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.std, features.std(0, ddof=1), rtol=1e-4, atol=1e-5)
    # float32 features may differ from the float64 reference in the sign of a value near zero
    assert np.abs(est.nonzero_fraction - (features > 0).mean(0)).max() <= 1 / N_DATA


def test_n_samples_truncates(subject):
    explainer = subject.explainer()
    (est,) = fit(explainer, subject, n_samples=np.int64(50))
    assert est.n_samples == 50
    head = subject.explainer()
    (want,) = head.estimate(subject.model, subject.rows(subject.data, 0, 50), progress=False)
    np.testing.assert_allclose(est.mean, want.mean, rtol=1e-12)
    np.testing.assert_allclose(est.std, want.std, rtol=1e-12)


def test_n_samples_must_be_a_positive_int(subject):
    explainer = subject.explainer()
    model, data = subject.model, subject.data
    with pytest.raises(TypeError, match=re.escape("n_samples must be an int or None, got True")):
        explainer.estimate(model, data, n_samples=True, progress=False)
    with pytest.raises(TypeError, match=re.escape("n_samples must be an int or None, got 2.5")):
        explainer.estimate(model, data, n_samples=2.5, progress=False)
    with pytest.raises(
        ValueError, match=re.escape("n_samples must be a positive int or None, got 0")
    ):
        explainer.estimate(model, data, n_samples=0, progress=False)
    assert explainer.estimators == []


def test_data_of_another_kind(subject):
    message = "data must be an array of inputs or an iterable of batches, got {}"
    for data in (3, {"x": subject.data}):
        with pytest.raises(TypeError, match=re.escape(message.format(type(data).__name__))):
            subject.explainer().estimate(subject.model, data, progress=False)


def test_one_sample_is_not_enough(subject):
    message = (
        "estimate() saw 1 sample(s) in data; the statistics need at least 2 "
        "(the IBA paper used 5,000-10,000)"
    )
    explainer = subject.explainer()
    with pytest.raises(ValueError, match=re.escape(message)):
        explainer.estimate(subject.model, subject.rows(subject.data, 0, 1), progress=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        explainer.estimate(subject.model, subject.data, n_samples=1, progress=False)
    assert explainer.estimators == []


def test_batches_of_tuples_equal_the_array(subject, fitted):
    def batches():
        for start in range(0, N_DATA, 16):
            yield subject.rows(subject.data, start, start + 16), np.zeros(16, np.int64)

    explainer = subject.explainer()
    (est,) = fit_batches(explainer, subject, batches())
    (want,) = fitted.estimators
    assert est.n_samples == N_DATA and est.feature_shape == want.feature_shape
    np.testing.assert_allclose(est.mean, want.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(est.std, want.std, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(est.nonzero_fraction, want.nonzero_fraction)
    # n_samples stops in the middle of a batch
    (part,) = fit_batches(subject.explainer(), subject, batches(), n_samples=40)
    (head,) = fit_batches(subject.explainer(), subject, [subject.rows(subject.data, 0, 40)])
    assert part.n_samples == head.n_samples == 40
    np.testing.assert_allclose(part.mean, head.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(part.std, head.std, rtol=1e-10, atol=1e-12)


def fit_batches(explainer, subject, batches, **kwargs):
    return explainer.estimate(subject.model, batches, progress=False, **kwargs)


def test_estimating_twice_gives_identical_statistics(subject, fitted):
    explainer = subject.explainer()
    (first,) = fit(explainer, subject)
    (second,) = fit(explainer, subject)
    for a, b in ((first, second), (first, fitted.estimators[0])):
        for key, value in arrays(a).items():
            np.testing.assert_array_equal(arrays(b)[key], value, err_msg=key)
