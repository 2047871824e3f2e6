"""The standard-normal prior (``Config.estimator="prior"``, M2IB: docs/mathematics.md section 5):
no estimator, ``mu = 0``, ``sigma' = 1``, no active-feature mask, on every engine."""

from __future__ import annotations

import re

import numpy as np
import pytest

import iba
from iba import driver
from iba.nn import callbacks, tiny_cnn

from .subjects import CONFIG, draw_noise, reference_features

SIZE = (8, 8)


def nchw(subject, noise: np.ndarray) -> np.ndarray:
    """Noise ``(steps, N, B, *F)`` in the subject's layout as channels-first."""
    return np.moveaxis(noise, -1, -3) if subject.layout == "channels_last" else noise


def reference(subject, config: iba.Config, noise: np.ndarray, targets=("relu2",)):
    """The NumPy reference with the prior's statistics, channels-first."""
    features = reference_features(subject.x_nchw, targets[0])
    shapes = [features.shape[1:]] + [
        reference_features(subject.x_nchw, t).shape[1:] for t in targets[1:]
    ]
    stats = [iba.Statistics(np.zeros(s), np.ones(s), np.ones(s)) for s in shapes]
    model = tiny_cnn(0)
    segments = [callbacks.segment(model, a, b) for a, b in zip(targets, targets[1:])]
    return iba.per_sample_bottleneck(
        features,
        stats if len(stats) > 1 else stats[0],
        callbacks.classification_head(model, targets[-1], subject.labels),
        [nchw(subject, n) for n in noise] if isinstance(noise, list) else nchw(subject, noise),
        config,
        layout="channels_first",
        segments=segments,
    )


def close_maps(got: np.ndarray, want: np.ndarray) -> None:
    """float32 engines against the float64 reference: maps normalised to their maximum within
    1e-3 (the conformance suite's float32 bound)."""
    scale = want.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    "config",
    [iba.m2ib_config(**CONFIG), iba.Config(estimator="prior", **CONFIG)],
    ids=["m2ib", "smoothed"],
)
def test_prior_equals_the_reference_without_estimate(subject, config):
    explainer = subject.IBA(subject.target, config=config)
    assert explainer.estimators == []
    noise = draw_noise(subject, 11)
    model = subject.fresh_model()  # carries no statistics
    ex = explainer.analyze(model, subject.x, target=subject.labels, noise=noise, details=True)
    want = reference(subject, config, noise)
    assert ex.heatmap.shape == (2, *SIZE)
    close_maps(ex.heatmap, iba.heatmap(want.capacity, "channels_first", SIZE))
    channel = -1 if subject.layout == "channels_last" else -3
    np.testing.assert_allclose(
        np.moveaxis(ex.capacity, channel, -3) if channel == -1 else ex.capacity,
        want.capacity,
        rtol=1e-3,
        atol=1e-3 * want.capacity.max(),
    )
    assert explainer.estimators == []  # analyze fitted nothing


def test_prior_ignores_estimators_and_has_no_mask(subject, fitted):
    config = iba.m2ib_config(**CONFIG)
    noise = draw_noise(subject, 3)
    prior = subject.IBA(subject.target, config=config)
    estimated = subject.IBA(subject.target, config=config, estimators=fitted.estimators)
    a = prior.analyze(subject.model, subject.x, target=subject.labels, noise=noise)
    b = estimated.analyze(subject.model, subject.x, target=subject.labels, noise=noise)
    np.testing.assert_array_equal(a, b)
    stats = driver.prior_statistics([subject.feature_shape])
    assert stats[0].mask is None and stats[0].mean.shape == subject.feature_shape
    with pytest.raises(RuntimeError, match=re.escape("standard-normal prior")):
        prior.save_estimators("unused.npz")


def test_prior_at_several_targets(subject):
    """CoIBA with the prior: engines that report every target's shape before the optimisation
    run it (and equal the reference); the others say so."""
    config = iba.m2ib_config(**CONFIG)
    explainer = subject.IBA(subject.coiba, config=config)
    noise = [draw_noise(subject, 1, shape=subject.other_shape), draw_noise(subject, 2)]
    model = subject.fresh_model()
    try:
        maps = explainer.analyze(model, subject.x, target=subject.labels, noise=noise)
    except ValueError as err:
        assert subject.name == "torch", err
        assert "cannot report the shape of its features" in str(err)
        assert repr(subject.coiba_names[1]) in str(err)
        return
    want = reference(subject, config, noise, targets=("relu1", "relu2"))
    close_maps(maps, iba.heatmap(want.capacity, "channels_first", SIZE))
