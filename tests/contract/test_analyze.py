"""``analyze``: heatmaps, the explanation's details, and the noise: seeds, arrays, the default."""

from __future__ import annotations

import numpy as np
import pytest

import iba
from iba import driver

from .subjects import CONFIG, draw_noise, reference_features

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")

SIZE = (8, 8)  # the inputs' H and W


def analyze(subject, explainer, x=None, **kwargs):
    x = subject.x if x is None else x
    if "target" not in kwargs and "loss_fn" not in kwargs:
        kwargs["target"] = subject.labels
    return explainer.analyze(subject.model, x, **kwargs)


def test_heatmaps_at_the_input_size(subject, base_map):
    assert isinstance(base_map, np.ndarray) and base_map.dtype == np.float64
    assert base_map.shape == (2, *SIZE)
    assert np.all(np.isfinite(base_map)) and np.all(base_map >= 0)
    assert np.all(base_map.max(axis=(1, 2)) > 0)
    assert not np.allclose(base_map[0], base_map[1])


def test_details(subject, fitted, base_map):
    ex = analyze(subject, fitted, details=True)
    config = fitted.config
    assert isinstance(ex, iba.Explanation)
    assert config.updates == CONFIG["steps"] - 1  # capacity_at="last_forward"
    n, f = 2, subject.feature_shape
    shapes = {
        "capacity": (n, *f),
        "alpha": (n, *f),
        "lam": (n, *f),
        "alphas": (config.updates + 1, n, *f),
        "losses": (config.updates, n),
        "heatmap": (n, *SIZE),
    }
    for name, shape in shapes.items():
        value = getattr(ex, name)
        assert isinstance(value, np.ndarray) and value.dtype == np.float64, name
        assert value.shape == shape, (name, value.shape)
        assert np.all(np.isfinite(value)), name
    np.testing.assert_array_equal(ex.heatmap, base_map)
    np.testing.assert_array_equal(ex.alphas[0], config.initial_alpha)
    np.testing.assert_array_equal(ex.alphas[-1], ex.alpha)
    assert not np.allclose(ex.alpha, config.initial_alpha)  # the optimisation moved alpha
    # lam, capacity and heatmap follow from alpha as the reference computes them
    np.testing.assert_allclose(
        ex.lam, iba.damping(ex.alpha, subject.layout, config.sigma), rtol=1e-5, atol=1e-7
    )
    (stats,) = fitted.statistics()
    features = subject.to_layout(reference_features(subject.x_nchw, "relu2"))
    want = iba.capacity(features, ex.lam, stats.mean, stats.std, stats.mask)
    np.testing.assert_allclose(ex.capacity, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        ex.heatmap, iba.heatmap(ex.capacity, subject.layout, input_size=SIZE), rtol=1e-12
    )


def test_batched_equals_separate_inputs(subject, fitted):
    noise = draw_noise(subject, 5)
    together = analyze(subject, fitted, noise=noise)
    for i in range(2):
        alone = analyze(
            subject,
            fitted,
            subject.rows(subject.x, i, i + 1),
            target=int(subject.labels[i]),
            noise=noise[:, i],
        )
        assert alone.shape == (1, *SIZE)
        np.testing.assert_allclose(alone[0], together[i], rtol=1e-4, atol=1e-6)


def test_the_same_noise_gives_the_same_map(subject, fitted):
    noise = draw_noise(subject, 5)
    a = analyze(subject, fitted, noise=noise)
    b = analyze(subject, fitted, noise=noise.copy())
    np.testing.assert_array_equal(a, b)
    other = analyze(subject, fitted, noise=draw_noise(subject, 6))
    assert not np.allclose(a, other)


def test_a_seed_gives_the_same_map(subject, fitted, base_map):
    a = analyze(subject, fitted, seed=3)
    b = analyze(subject, fitted, seed=np.int64(3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, base_map)  # seed 3 is not the default's seed 0
    assert not np.allclose(a, analyze(subject, fitted, seed=4))


def test_the_default_noise_is_seed_zero(subject, fitted, base_map):
    assert driver.DEFAULT_SEED == 0
    np.testing.assert_array_equal(analyze(subject, fitted, seed=0), base_map)
    np.testing.assert_array_equal(analyze(subject, fitted), base_map)  # and it is repeatable


def test_target_forms(subject, fitted):
    noise = draw_noise(subject, 5)
    want = analyze(subject, fitted, target=[3, 3], noise=noise)
    for target in (3, np.int64(3), np.array([3, 3]), (3, 3), np.array(3, np.int32)):
        np.testing.assert_array_equal(analyze(subject, fitted, target=target, noise=noise), want)
    assert not np.allclose(analyze(subject, fitted, target=[3, 4], noise=noise), want)


def test_loss_fn_equals_target(subject, fitted):
    noise = draw_noise(subject, 5)
    by_target = analyze(subject, fitted, noise=noise)
    by_loss = analyze(subject, fitted, loss_fn=subject.per_row_loss(subject.labels), noise=noise)
    np.testing.assert_allclose(by_loss, by_target, rtol=1e-5, atol=1e-7)
    # one input: a scalar loss is accepted (the mean over the noise samples)
    x, label = subject.rows(subject.x, 0, 1), int(subject.labels[0])
    one = analyze(subject, fitted, x, loss_fn=subject.scalar_loss(label), noise=noise[:, 0])
    want = analyze(subject, fitted, x, target=label, noise=noise[:, 0])
    np.testing.assert_allclose(one, want, rtol=1e-5, atol=1e-7)
