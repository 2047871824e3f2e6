"""``iba_jax.baselines`` on Linen and NNX models, in float64, against answers known in closed form.

On a linear model ``logits = sum_hwc w[h, w, c, k] x[h, w, c] + b`` the gradient is ``w``: saliency
is ``|w|`` reduced over channels, gradient x input (and integrated gradients from a zero or mean
baseline) ``sum_c w (x - x')``, SmoothGrad equals saliency, and occluding a patch drops the logit
by the patch's ``sum w x``. Grad-CAM is checked on a small conv net against its formula in NumPy.
Also: the top class as default target, batching, the errors, and the model left as it was.
"""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import iba
import iba.baselines
from iba_jax import baselines

N, H, W, C, K, F = 3, 6, 6, 2, 4, 3
TOL = {"rtol": 1e-10, "atol": 1e-12}
TARGET = np.array([0, 3, 1])


@pytest.fixture(scope="module", autouse=True)
def x64():
    """Every test of this module runs in float64."""
    with jax.enable_x64(True):
        yield


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(K, name="fc")(x.reshape(x.shape[0], -1))


class ReLU(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(x)


class ConvNet(nn.Module):
    """A stride-2 conv, a ReLU module and a Dense head."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(F, (2, 2), strides=2, padding="VALID", name="conv")(x)
        x = ReLU(name="relu")(x)
        return nn.Dense(K, name="fc")(x.reshape(x.shape[0], -1))


class NNXReLU(nnx.Module):
    def __call__(self, x):
        return nnx.relu(x)


class NNXConvNet(nnx.Module):
    def __init__(self, kernel, bias, fc, fc_bias):
        rngs = nnx.Rngs(0)
        kw = {"param_dtype": jnp.float64, "rngs": rngs}
        self.conv = nnx.Conv(C, F, (2, 2), strides=2, padding="VALID", **kw)
        self.relu = NNXReLU()
        self.fc = nnx.Linear(fc.size // K, K, **kw)
        self.conv.kernel.set_value(jnp.asarray(kernel))
        self.conv.bias.set_value(jnp.asarray(bias))
        self.fc.kernel.set_value(jnp.asarray(fc.reshape(-1, K)))
        self.fc.bias.set_value(jnp.asarray(fc_bias))

    def __call__(self, x):
        return self.fc(self.relu(self.conv(x)).reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def linear():
    """``((module, variables), w (H, W, C, K), b)``."""
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((H, W, C, K)), rng.standard_normal(K)
    params = {"fc": {"kernel": jnp.asarray(w.reshape(-1, K)), "bias": jnp.asarray(b)}}
    return (Linear(), {"params": params}), w, b


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).standard_normal((N, H, W, C))


@pytest.fixture(scope="module")
def weights():
    """``(kernel (2, 2, C, F), conv bias, fc weight (h, w, F, K), fc bias)``."""
    rng = np.random.default_rng(2)
    return (
        rng.standard_normal((2, 2, C, F)),
        rng.standard_normal(F),
        rng.standard_normal((H // 2, W // 2, F, K)),
        rng.standard_normal(K),
    )


@pytest.fixture(scope="module")
def linen_conv(weights):
    kernel, bias, fc, fc_bias = weights
    params = {
        "conv": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)},
        "fc": {"kernel": jnp.asarray(fc.reshape(-1, K)), "bias": jnp.asarray(fc_bias)},
    }
    return ConvNet(), {"params": params}


@pytest.fixture(scope="module")
def nnx_conv(weights):
    return NNXConvNet(*weights)


def w_of(w: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``w[..., target[i]]`` for every image: ``(N, H, W, C)``."""
    return np.moveaxis(w[..., target], -1, 0)


def test_linear_known_answers(linear, x):
    model, w, _ = linear
    grads = w_of(w, TARGET)
    np.testing.assert_allclose(baselines.saliency(model, x, TARGET), np.abs(grads).max(-1), **TOL)
    sums = baselines.saliency(model, x, TARGET, reduce="sum")
    np.testing.assert_allclose(sums, np.abs(grads).sum(-1), **TOL)
    expected = (grads * x).sum(-1)
    np.testing.assert_allclose(baselines.gradient_x_input(model, x, TARGET), expected, **TOL)
    for method in ("riemann_right", "gausslegendre"):
        ig = baselines.integrated_gradients(model, x, TARGET, steps=4, baseline=0.0, method=method)
        np.testing.assert_allclose(ig, expected, **TOL)  # exact for a linear model
    mean = x.mean(axis=(1, 2), keepdims=True)
    ig = baselines.integrated_gradients(model, x, TARGET, steps=3)  # the "mean" baseline
    np.testing.assert_allclose(ig, (grads * (x - mean)).sum(-1), **TOL)
    smooth = baselines.smoothgrad(model, x, TARGET, n_samples=5, noise_level=0.5, batch_size=4)
    np.testing.assert_allclose(smooth, np.abs(grads).max(-1), **TOL)


@pytest.mark.parametrize("patch", [2, 4])
def test_occlusion_drop_is_patch_sum(linear, x, patch):
    model, w, _ = linear
    contribution = (w_of(w, TARGET) * x).sum(-1)
    expected = np.zeros_like(contribution)
    for top in range(0, H, patch):  # with patch=4 the last row and column of patches are smaller
        for left in range(0, W, patch):
            square = (slice(None), slice(top, top + patch), slice(left, left + patch))
            expected[square] = contribution[square].sum(axis=(1, 2), keepdims=True)
    actual = baselines.occlusion(model, x, TARGET, patch=patch, batch_size=7)
    np.testing.assert_allclose(actual, expected, **TOL)


def test_bound_module_and_apply_kwargs(linear, x):
    (module, variables), w, _ = linear
    expected = np.abs(w_of(w, TARGET)).max(-1)
    np.testing.assert_allclose(baselines.saliency(module.bind(variables), x, TARGET), expected)
    np.testing.assert_allclose(baselines.saliency((module, variables, {}), x, TARGET), expected)


def grad_cam_by_hand(weights, x, target, layer, relu=True):
    kernel, bias, fc, _ = weights
    patches = x.reshape(N, H // 2, 2, W // 2, 2, C)
    pre = np.einsum("nhawbc,abcf->nhwf", patches, kernel) + bias
    features, grads = np.maximum(pre, 0), w_of(fc, target)  # d logit / d (ReLU output)
    if layer == "conv":
        features, grads = pre, grads * (pre > 0)
    cam = (grads.mean(axis=(1, 2), keepdims=True) * features).sum(-1)
    return iba.resize(np.maximum(cam, 0) if relu else cam, (H, W))


@pytest.mark.parametrize(("layer", "relu"), [("relu", True), ("conv", False), (("conv",), True)])
def test_linen_grad_cam_by_hand(linen_conv, weights, x, layer, relu):
    expected = grad_cam_by_hand(
        weights, x, TARGET, layer[0] if isinstance(layer, tuple) else layer, relu
    )
    actual = baselines.grad_cam(linen_conv, x, TARGET, layer=layer, relu=relu, batch_size=2)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(actual, expected, **TOL)


def test_nnx_known_answers(nnx_conv, weights, x):
    state = jax.tree.map(np.asarray, nnx.state(nnx_conv))
    for layer, relu in (("relu", True), ("conv", False)):
        expected = grad_cam_by_hand(weights, x, TARGET, layer, relu)
        actual = baselines.grad_cam(nnx_conv, x, TARGET, layer=layer, relu=relu, batch_size=2)
        np.testing.assert_allclose(actual, expected, **TOL)
    # the linear head on the ReLU output: occluding nothing changes logit by 0; saliency by hand
    kernel, bias, fc, _ = weights
    pre = np.einsum("nhawbc,abcf->nhwf", x.reshape(N, H // 2, 2, W // 2, 2, C), kernel) + bias
    up = w_of(fc, TARGET) * (pre > 0)  # d logit / d conv output, (N, h, w, F)
    grads = np.einsum("nhwf,abcf->nhawbc", up, kernel).reshape(N, H, W, C)
    np.testing.assert_allclose(
        baselines.saliency(nnx_conv, x, TARGET), np.abs(grads).max(-1), **TOL
    )
    np.testing.assert_allclose(
        baselines.gradient_x_input(nnx_conv, x, TARGET), (grads * x).sum(-1), **TOL
    )
    assert isinstance(nnx_conv.conv, nnx.Conv) and isinstance(nnx_conv.relu, NNXReLU)
    after = jax.tree.map(np.asarray, nnx.state(nnx_conv))
    assert jax.tree.all(jax.tree.map(np.array_equal, state, after))


def test_default_target_is_top_class(linear, linen_conv, weights, x):
    model, w, b = linear
    top = (x.reshape(N, -1) @ w.reshape(-1, K) + b).argmax(1)
    assert len(set(top.tolist())) > 1
    np.testing.assert_allclose(baselines.saliency(model, x), np.abs(w_of(w, top)).max(-1), **TOL)
    np.testing.assert_array_equal(
        baselines.occlusion(model, x, patch=3), baselines.occlusion(model, x, top, patch=3)
    )
    conv_top = np.asarray(linen_conv[0].apply(linen_conv[1], x)).argmax(1)
    expected = grad_cam_by_hand(weights, x, conv_top, "relu")
    np.testing.assert_allclose(baselines.grad_cam(linen_conv, x, layer="relu"), expected, **TOL)


CALLS = {
    "saliency": {},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 5},
    "smoothgrad": {"n_samples": 3},
    "occlusion": {"patch": 3},
    "grad_cam": {"layer": "conv"},
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_batches_give_the_same_maps(linen_conv, x, name):
    method, options = baselines.BASELINES[name], CALLS[name]
    one = method(linen_conv, x, TARGET, batch_size=64, **options)
    np.testing.assert_allclose(method(linen_conv, x, TARGET, batch_size=2, **options), one, **TOL)
    assert one.shape == (N, H, W) and one.dtype == np.float64


def test_smoothgrad_seed_is_the_noise(linen_conv, x):
    draws = np.random.default_rng(5).standard_normal((N, 4, H, W, C))
    by_noise = baselines.smoothgrad(linen_conv, x, TARGET, n_samples=4, noise=draws)
    by_seed = baselines.smoothgrad(linen_conv, x, TARGET, n_samples=4, seed=5, batch_size=5)
    np.testing.assert_allclose(by_seed, by_noise, **TOL)
    other = baselines.smoothgrad(linen_conv, x, TARGET, n_samples=4, seed=6)
    assert not np.allclose(other, by_seed)


def test_random_is_seeded(linear, x):
    a = baselines.random(linear[0], x, seed=3)
    assert a.shape == (N, H, W)
    np.testing.assert_array_equal(a, baselines.random(linear[0], x, seed=3))
    assert not np.array_equal(a, baselines.random(linear[0], x, seed=4))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_bad_targets(linen_conv, x, name):
    method, options = baselines.BASELINES[name], CALLS[name]
    with pytest.raises(ValueError, match=rf"target \[7\] out of range for {K} model outputs"):
        method(linen_conv, x, 7, **options)
    with pytest.raises(ValueError, match="expected one int or 3 ints"):
        method(linen_conv, x, [1, 2], **options)
    with pytest.raises(TypeError, match="one int per input"):
        method(linen_conv, x, 1.5, **options)
    with pytest.raises(ValueError, match=rf"target \[-1\] out of range for {K} model outputs"):
        method(linen_conv, x, -1, **options)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        method(linen_conv, x, 1, batch_size=0, **options)


def test_errors(linen_conv, nnx_conv, x):
    with pytest.raises(ValueError, match=r"\(N, H, W, C\), got shape \(6, 6, 2\)"):
        baselines.saliency(linen_conv, x[0], 0)
    with pytest.raises(ValueError, match="NaN"):
        baselines.saliency(linen_conv, x * np.nan, 0)
    with pytest.raises(ValueError, match="unknown reduce 'mean'; reductions are: max, sum"):
        baselines.smoothgrad(linen_conv, x, 0, reduce="mean")
    with pytest.raises(ValueError, match="unknown integration method 'simpson'"):
        baselines.integrated_gradients(linen_conv, x, 0, method="simpson")
    with pytest.raises(ValueError, match="noise has shape"):
        baselines.smoothgrad(linen_conv, x, 0, n_samples=2, noise=np.zeros((N, 3, H, W, C)))
    with pytest.raises(ValueError, match="larger than the 6x6 image"):
        baselines.occlusion(linen_conv, x, 0, patch=7)
    with pytest.raises(ValueError, match="'conv9' was not reached.*Module paths are: conv, relu"):
        baselines.grad_cam(linen_conv, x, 0, layer="conv9")
    with pytest.raises(ValueError, match="'conv9' is not a submodule.*paths are: conv, fc, relu"):
        baselines.grad_cam(nnx_conv, x, 0, layer="conv9")
    with pytest.raises(ValueError, match="layer 'fc'.*Grad-CAM needs a convolutional layer"):
        baselines.grad_cam(linen_conv, x, 0, layer="fc")
    with pytest.raises(ValueError, match="layer 'fc'.*Grad-CAM needs a convolutional layer"):
        baselines.grad_cam(nnx_conv, x, 0, layer="fc")
    assert isinstance(nnx_conv.fc, nnx.Linear)  # unwrapped after the error
    with pytest.raises(TypeError, match="must be a Flax Linen"):
        baselines.saliency(lambda a: a, x, 0)


@pytest.mark.parametrize("name", sorted(iba.baselines.BASELINES))
def test_methods_are_the_shared_definitions(name):
    """The docstring and the signature of the adapter's method are ``iba.baselines``' (Grad-CAM
    adds the backend option ``layer``, a module path)."""
    method = getattr(baselines, name)
    assert method.__doc__ == iba.baselines.BASELINES[name].__doc__
    shared = str(inspect.signature(iba.baselines.BASELINES[name]))
    shared = shared.replace("model: 'Backend'", "model: 'Any'")
    if name == "grad_cam":
        shared = shared.replace("*, relu", "*, layer: 'str | tuple', relu")
    assert str(inspect.signature(method)) == shared and baselines.BASELINES[name] is method
