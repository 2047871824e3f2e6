"""Estimators saved, loaded, passed to the constructor or set: the same heatmaps."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import iba

from .subjects import N_DATA

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


def assert_same_estimator(a: iba.Estimator, b: iba.Estimator) -> None:
    assert (a.layout, a.feature_shape, a.n_samples) == (b.layout, b.feature_shape, b.n_samples)
    for key, value in a.to_arrays().items():
        np.testing.assert_array_equal(b.to_arrays()[key], value, err_msg=key)


def analyze(subject, explainer):
    return explainer.analyze(subject.model, subject.x, target=subject.labels)


def test_save_then_load(subject, fitted, base_map, tmp_path):
    path = tmp_path / "estimators.npz"
    fitted.save_estimators(path)
    loaded = subject.explainer()
    returned = loaded.load_estimators(path)
    (est,) = loaded.estimators
    assert_same_estimator(fitted.estimators[0], est)
    assert_same_estimator(est, returned[0])
    assert est.n_samples == N_DATA
    np.testing.assert_array_equal(analyze(subject, loaded), base_map)
    # a path given to the constructor, as a string or a path
    for where in (path, os.fspath(path)):
        explainer = subject.explainer(estimators=where)
        assert_same_estimator(fitted.estimators[0], explainer.estimators[0])
    np.testing.assert_array_equal(analyze(subject, explainer), base_map)


def test_a_file_of_another_number_of_targets(subject, fitted, tmp_path):
    path = tmp_path / "one.npz"
    fitted.save_estimators(path)
    message = (
        f"{os.fspath(path)} holds 1 estimator(s), this explainer has 2 target(s): "
        f"{subject.coiba_names}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        subject.explainer(subject.coiba).load_estimators(path)
    with pytest.raises(ValueError, match=re.escape(message)):
        subject.explainer(subject.coiba, estimators=path)


def test_estimators_argument_and_setter(subject, fitted, base_map):
    (est,) = fitted.estimators
    given = subject.explainer(estimators=[est])
    np.testing.assert_array_equal(analyze(subject, given), base_map)
    explainer = subject.explainer()
    explainer.estimators = est  # one estimator for one target
    assert len(explainer.estimators) == 1 and explainer.estimators[0] is est
    np.testing.assert_array_equal(analyze(subject, explainer), base_map)
    # the property is a copy: changing the list changes nothing
    explainer.estimators.clear()
    assert len(explainer.estimators) == 1
