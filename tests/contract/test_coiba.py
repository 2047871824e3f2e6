"""CoIBA: several targets share one ``alpha`` over channels and layers."""

from __future__ import annotations

import re

import numpy as np
import pytest

import iba

from .subjects import CONFIG, draw_noise

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


def test_configs_of_one_and_of_several_targets(subject, coiba):
    assert subject.IBA(subject.coiba).config == iba.coiba_config()
    assert subject.IBA(subject.target).config == iba.Config()
    assert coiba.config == iba.coiba_config(**CONFIG)
    assert coiba.config.beta == 1.0 and coiba.config.sigma is None


def test_estimators_per_target_and_no_mask(subject, coiba, fitted):
    first, second = coiba.estimators
    assert (first.feature_shape, second.feature_shape) == (
        subject.other_shape,
        subject.feature_shape,
    )
    assert first.layout == second.layout == subject.layout
    np.testing.assert_allclose(second.mean, fitted.estimators[0].mean, rtol=1e-12)
    assert [s.mask for s in coiba.statistics()] == [None, None]  # CoIBA masks nothing
    (single,) = fitted.statistics()
    np.testing.assert_array_equal(single.mask, fitted.estimators[0].active())


def test_alpha_is_shared_over_channels(subject, coiba):
    ex = coiba.analyze(subject.model, subject.x, target=subject.labels, details=True)
    shared = iba.alpha_shape(subject.other_shape, subject.layout, shared=True)
    channel = 0 if subject.layout == "channels_first" else 2
    assert shared[channel] == 1
    assert ex.alpha.shape == (2, *shared)
    assert ex.alphas.shape == (coiba.config.updates + 1, 2, *shared)
    assert ex.capacity.shape == (2, *subject.other_shape)  # the first target's
    assert ex.heatmap.shape == (2, 8, 8)
    assert np.all(np.isfinite(ex.heatmap)) and np.all(ex.heatmap >= 0)
    assert np.all(ex.heatmap.max(axis=(1, 2)) > 0)


def test_noise_per_target(subject, coiba):
    def run(noise):
        return coiba.analyze(subject.model, subject.x, target=subject.labels, noise=noise)

    noise = [draw_noise(subject, 1, shape=subject.other_shape), draw_noise(subject, 2)]
    a = run(noise)
    np.testing.assert_array_equal(run(tuple(noise)), a)
    # the second target's noise is used too
    assert not np.allclose(run([noise[0], draw_noise(subject, 3)]), a)
    for wrong in ([noise[0]], noise[0], [*noise, noise[1]]):
        count = len(wrong) if isinstance(wrong, list) else 1
        message = f"2 target(s) need 2 noise array(s), got {count}"
        with pytest.raises(ValueError, match=re.escape(message)):
            run(wrong)
