import numpy as np
import pytest
from conftest import finite_difference
from hypothesis import given, settings
from hypothesis import strategies as st

import iba

LAYOUT_SHAPES = [("channels_first", (3, 5, 4)), ("channels_last", (5, 4, 3)), ("tokens", (6, 3))]


@pytest.mark.parametrize("sigma, size", [(1.0, 5), (0.5, 3), (1.5, 7), (0.2, 1), (2.0, 9)])
def test_kernel_size_rule_and_normalisation(sigma, size):
    kernel = iba.gaussian_kernel(sigma)
    assert iba.kernel_size(sigma) == size == len(kernel)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(kernel, kernel[::-1])
    kernel_2d = np.outer(kernel, kernel)
    assert kernel_2d.sum() == pytest.approx(1.0, abs=1e-15)


def _smooth_by_convolution(x, sigma):
    """Independent oracle: pad (C, H, W) with reflect and correlate with the 2-D kernel."""
    k = np.outer(iba.gaussian_kernel(sigma), iba.gaussian_kernel(sigma))
    p = (len(k) - 1) // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, k.shape, axis=(1, 2))
    return np.einsum("chwij,ij->chw", windows, k)


@pytest.mark.parametrize("hw", [(7, 9), (3, 3), (14, 14), (5, 2)])
def test_smoothing_equals_reflect_padded_convolution(hw):
    x = np.random.default_rng(0).random((2, *hw))
    expected = _smooth_by_convolution(x, 1.0)
    np.testing.assert_allclose(iba.smooth(x, 1.0, "channels_first"), expected, rtol=1e-13)
    last = iba.smooth(np.moveaxis(x, 0, -1), 1.0, "channels_last")
    np.testing.assert_allclose(np.moveaxis(last, -1, 0), expected, rtol=1e-13)
    np.testing.assert_allclose(iba.smoothing_matrix(hw[0], 1.0).sum(1), 1.0)


def test_smoothing_transpose_is_the_adjoint():
    rng = np.random.default_rng(1)
    x, y = rng.random((2, 4, 6, 5)), rng.random((2, 4, 6, 5))
    left = np.sum(iba.smooth(x, 1.0, "channels_first") * y)
    right = np.sum(x * iba.smooth(y, 1.0, "channels_first", transpose=True))
    assert left == pytest.approx(right, rel=1e-13)
    with pytest.raises(ValueError, match="token features are not smoothed"):
        iba.smooth(x[0, 0], 1.0, "tokens")


@pytest.mark.parametrize("layout, shape", LAYOUT_SHAPES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("sigma", [1.0, None])
def test_damping_gradient(layout, shape, shared, sigma):
    rng = np.random.default_rng(2)
    alpha = rng.normal(0, 2, (2, *iba.alpha_shape(shape, layout, shared)))
    weights = rng.standard_normal(alpha.shape)
    analytic = iba.damping_vjp(alpha, weights, layout, sigma)
    numeric = finite_difference(lambda a: np.sum(iba.damping(a, layout, sigma) * weights), alpha)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_capacity_gradient():
    rng = np.random.default_rng(3)
    features, mean = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4))
    std, active = rng.random((3, 4)) + 0.1, (rng.random((3, 4)) > 0.3).astype(float)
    lam, weights = rng.uniform(0.05, 0.95, (2, 3, 4)), rng.standard_normal((2, 3, 4))
    analytic = iba.capacity_vjp(features, lam, mean, std, active) * weights
    numeric = finite_difference(
        lambda x: np.sum(iba.capacity(features, x, mean, std, active) * weights), lam
    )
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_capacity_is_non_negative_and_zero_exactly_where_it_should(shape, seed):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal(shape) * 3
    mean, std = rng.standard_normal(shape), rng.random(shape) + 0.01
    lam = rng.random(shape) * 0.999
    lam.flat[0] = 0.0  # everything replaced by noise: no information
    active = (rng.random(shape) > 0.5).astype(float)
    cap = iba.capacity(features, lam, mean, std, active)
    assert np.all(cap >= 0)
    assert cap.flat[0] == 0.0
    assert np.all(cap[active == 0] == 0)
    informative = (active == 1) & (lam > 1e-3)
    assert np.all(cap[informative] > 0)


def test_capacity_is_the_kl_divergence_to_a_standard_normal():
    grid = np.linspace(-12, 12, 200001)
    for m, lam in [(0.3, 0.5), (-1.2, 0.9), (2.0, 0.1)]:
        mu_z, sd_z = lam * m, 1 - lam
        log_p = -((grid - mu_z) ** 2) / (2 * sd_z**2) - np.log(sd_z * np.sqrt(2 * np.pi))
        log_q = -(grid**2) / 2 - np.log(np.sqrt(2 * np.pi))
        kl = np.trapezoid(np.exp(log_p) * (log_p - log_q), grid)
        assert iba.capacity(np.array(m), np.array(lam), 0.0, 1.0) == pytest.approx(kl, rel=1e-6)


def test_bottleneck_output():
    features = np.array([[1.0, -2.0], [3.0, 4.0]])
    eps = np.array([[0.5, 0.5], [-1.0, 2.0]])
    lam = np.array([[1.0, 0.0], [0.5, 0.25]])
    z = iba.bottleneck(features, lam, eps, active=np.array([[1.0, 1.0], [0.0, 1.0]]))
    np.testing.assert_allclose(z, [[1.0, 0.5], [0.0, 2.5]])
    z = iba.bottleneck(features, lam, eps, relu=True)
    np.testing.assert_allclose(z, [[1.0, 0.5], [1.0, 2.5]])
    np.testing.assert_allclose(iba.noise_like(np.array([1.0, -1.0]), 2.0, 3.0), [5.0, -1.0])


def test_sigmoid_is_stable():
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    s = iba.sigmoid(x)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, [0.0, 1 / (1 + np.exp(30)), 0.5, 1 / (1 + np.exp(-30)), 1.0])


def test_alpha_shapes():
    assert iba.alpha_shape((3, 5, 4), "channels_first", shared=True) == (1, 5, 4)
    assert iba.alpha_shape((5, 4, 3), "channels_last", shared=True) == (5, 4, 1)
    assert iba.alpha_shape((6, 3), "tokens", shared=True) == (6, 1)
    assert iba.alpha_shape((6, 3), "tokens") == (6, 3)
