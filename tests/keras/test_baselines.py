"""``iba_tf.baselines`` on every Keras backend, in float64, against answers known in closed form.

On a linear model ``logits = sum_hwc w[h, w, c, k] x[h, w, c] + b`` the gradient is ``w``: saliency
is ``|w|`` reduced over channels, gradient x input (and integrated gradients from a zero or mean
baseline) ``sum_c w (x - x')``, SmoothGrad equals saliency, and occluding a patch drops the logit
by the patch's ``sum w x``. Grad-CAM is checked on a small conv net against its formula in NumPy.
Also: the top class as default target, batching, the layout option, the errors, and the model
left as it was.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
from conftest import float64
from keras import layers

import iba
import iba.baselines
from iba_tf import baselines

N, H, W, C, K, F = 3, 6, 6, 2, 4, 3
TOL = {"rtol": 1e-10, "atol": 1e-12}
TARGET = np.array([0, 3, 1])

# Keras' own NumPy conversions of torch tensors and of variables (not this package's)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy")


@pytest.fixture(scope="module", autouse=True)
def f64():
    """Every test of this module runs in float64 (one switch: fewer JAX compilations)."""
    with float64():
        yield


def dense(units: int, weight: np.ndarray, bias: np.ndarray, name: str) -> layers.Layer:
    """``Dense`` as ``EinsumDense`` (Keras' torch backend computes float64 ``matmul`` in float32)."""
    layer = layers.EinsumDense("bd,de->be", (units,), bias_axes="e", name=name)
    layer.build((None, weight.shape[0]))
    layer.set_weights([weight, bias])
    return layer


@pytest.fixture(scope="module")
def linear():
    """``(model, w (H, W, C, K), b)``: a Dense layer on the flattened channels-last image."""
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((H, W, C, K)), rng.standard_normal(K)
    inputs = keras.Input((H, W, C), dtype="float64")
    logits = dense(K, w.reshape(-1, K), b, "fc")(layers.Flatten()(inputs))
    return keras.Model(inputs, logits, name="linear"), w, b


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).standard_normal((N, H, W, C))


@pytest.fixture(scope="module")
def conv():
    """``(model, kernel (2, 2, C, F), conv bias, fc weight (h, w, F, K))``: a stride-2 conv,
    a ReLU layer and a Dense head."""
    rng = np.random.default_rng(2)
    kernel, bias = rng.standard_normal((2, 2, C, F)), rng.standard_normal(F)
    fc = rng.standard_normal((H // 2, W // 2, F, K))
    inputs = keras.Input((H, W, C), dtype="float64")
    conv_layer = layers.Conv2D(F, 2, strides=2, name="conv")
    features = layers.ReLU(name="relu")(conv_layer(inputs))
    logits = dense(K, fc.reshape(-1, K), rng.standard_normal(K), "fc")(layers.Flatten()(features))
    conv_layer.set_weights([kernel, bias])
    return keras.Model(inputs, logits, name="conv_net"), kernel, bias, fc


def w_of(w: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``w[..., target[i]]`` for every image: ``(N, H, W, C)``."""
    return np.moveaxis(w[..., target], -1, 0)


def test_saliency_is_abs_weight(linear, x):
    model, w, _ = linear
    grads = np.abs(w_of(w, TARGET))
    np.testing.assert_allclose(baselines.saliency(model, x, TARGET), grads.max(-1), **TOL)
    np.testing.assert_allclose(
        baselines.saliency(model, x, TARGET, reduce="sum"), grads.sum(-1), **TOL
    )


def test_gradient_x_input_and_integrated_gradients(linear, x):
    model, w, _ = linear
    expected = (w_of(w, TARGET) * x).sum(-1)
    np.testing.assert_allclose(baselines.gradient_x_input(model, x, TARGET), expected, **TOL)
    for method in ("riemann_right", "gausslegendre"):
        ig = baselines.integrated_gradients(model, x, TARGET, steps=4, baseline=0.0, method=method)
        np.testing.assert_allclose(ig, expected, **TOL)  # exact for a linear model
    mean = x.mean(axis=(1, 2), keepdims=True)
    ig = baselines.integrated_gradients(model, x, TARGET, steps=3)  # the "mean" baseline
    np.testing.assert_allclose(ig, (w_of(w, TARGET) * (x - mean)).sum(-1), **TOL)


def test_smoothgrad_of_a_linear_model_is_saliency(linear, x):
    model, w, _ = linear
    expected = np.abs(w_of(w, TARGET)).max(-1)
    actual = baselines.smoothgrad(model, x, TARGET, n_samples=5, noise_level=0.5, batch_size=4)
    np.testing.assert_allclose(actual, expected, **TOL)


@pytest.mark.parametrize("patch", [2, 4])
def test_occlusion_drop_is_patch_sum(linear, x, patch):
    model, w, _ = linear
    contribution = (w_of(w, TARGET) * x).sum(-1)  # (N, H, W)
    expected = np.zeros_like(contribution)
    for top in range(0, H, patch):  # with patch=4 the last row and column of patches are smaller
        for left in range(0, W, patch):
            square = (slice(None), slice(top, top + patch), slice(left, left + patch))
            expected[square] = contribution[square].sum(axis=(1, 2), keepdims=True)
    actual = baselines.occlusion(model, x, TARGET, patch=patch, batch_size=7)
    np.testing.assert_allclose(actual, expected, **TOL)


def grad_cam_by_hand(conv, x, target, layer, relu=True):
    _, kernel, bias, fc = conv
    patches = x.reshape(N, H // 2, 2, W // 2, 2, C)
    pre = np.einsum("nhawbc,abcf->nhwf", patches, kernel) + bias
    features = np.maximum(pre, 0)
    grads = w_of(fc, target)  # d logit / d (ReLU output): (N, h, w, F)
    if layer == "conv":
        features, grads = pre, grads * (pre > 0)
    cam = (grads.mean(axis=(1, 2), keepdims=True) * features).sum(-1)
    return iba.resize(np.maximum(cam, 0) if relu else cam, (H, W))


@pytest.mark.parametrize(("layer", "relu"), [("relu", True), ("conv", False), ("conv", True)])
def test_grad_cam_by_hand(conv, x, layer, relu):
    expected = grad_cam_by_hand(conv, x, TARGET, layer, relu)
    actual = baselines.grad_cam(conv[0], x, TARGET, layer=layer, relu=relu, batch_size=2)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(actual, expected, **TOL)


def test_default_target_is_top_class(linear, conv, x):
    model, w, b = linear
    top = (x.reshape(N, -1) @ w.reshape(-1, K) + b).argmax(1)
    assert len(set(top.tolist())) > 1
    np.testing.assert_allclose(baselines.saliency(model, x), np.abs(w_of(w, top)).max(-1), **TOL)
    np.testing.assert_array_equal(
        baselines.occlusion(model, x, patch=3), baselines.occlusion(model, x, top, patch=3)
    )
    conv_top = conv[0].predict(x, verbose=0).argmax(1)
    expected = grad_cam_by_hand(conv, x, conv_top, "relu")
    np.testing.assert_allclose(baselines.grad_cam(conv[0], x, layer="relu"), expected, **TOL)


CALLS = {
    "saliency": {},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 5},
    "smoothgrad": {"n_samples": 3},
    "occlusion": {"patch": 3},
    "grad_cam": {"layer": "conv"},
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_batches_give_the_same_maps(conv, x, name):
    method, options = baselines.BASELINES[name], CALLS[name]
    one = method(conv[0], x, TARGET, batch_size=64, **options)
    np.testing.assert_allclose(method(conv[0], x, TARGET, batch_size=2, **options), one, **TOL)
    assert one.shape == (N, H, W) and one.dtype == np.float64


def test_smoothgrad_seed_is_the_noise(conv, x):
    draws = np.random.default_rng(5).standard_normal((N, 4, H, W, C))
    by_noise = baselines.smoothgrad(conv[0], x, TARGET, n_samples=4, noise=draws)
    by_seed = baselines.smoothgrad(conv[0], x, TARGET, n_samples=4, seed=5, batch_size=5)
    np.testing.assert_allclose(by_seed, by_noise, **TOL)
    assert not np.allclose(baselines.smoothgrad(conv[0], x, TARGET, n_samples=4, seed=6), by_seed)


def test_random_is_seeded(linear, x):
    a = baselines.random(linear[0], x, seed=3)
    assert a.shape == (N, H, W)
    np.testing.assert_array_equal(a, baselines.random(linear[0], x, seed=3))
    assert not np.array_equal(a, baselines.random(linear[0], x, seed=4))


def test_channels_first_layout(x):
    w = np.random.default_rng(3).standard_normal((C, H, W, K))
    inputs = keras.Input((C, H, W), dtype="float64")
    model = keras.Model(
        inputs, dense(K, w.reshape(-1, K), np.zeros(K), "fc")(layers.Flatten()(inputs))
    )
    images = np.moveaxis(x, -1, 1)
    actual = baselines.saliency(model, images, 2, layout="channels_first")
    np.testing.assert_allclose(actual, np.broadcast_to(np.abs(w[..., 2]).max(0), (N, H, W)), **TOL)
    expected = (w[None, ..., 2] * images).sum(1)
    actual = baselines.gradient_x_input(model, images, 2, layout="channels_first")
    np.testing.assert_allclose(actual, expected, **TOL)


def test_model_left_as_it_was(x):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, C), dtype="float64")
    h = layers.Conv2D(F, 3, padding="same", name="conv")(inputs)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Dropout(0.5)(layers.ReLU(name="relu")(h))
    model = keras.Model(inputs, layers.Dense(K)(layers.Flatten()(h)))
    model.get_layer("conv").trainable = False
    before = [v.copy() for v in model.get_weights()]
    flags = [(layer.trainable, [v.trainable for v in layer.weights]) for layer in model.layers]
    for name, options in CALLS.items():
        maps = baselines.BASELINES[name](model, x, TARGET, **options)
        again = baselines.BASELINES[name](model, x, TARGET, **options)
        np.testing.assert_array_equal(maps, again)  # no dropout, no BatchNorm updates
    with pytest.raises(ValueError, match="out of range"):
        baselines.grad_cam(model, x, K, layer="relu")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert flags == [
        (layer.trainable, [v.trainable for v in layer.weights]) for layer in model.layers
    ]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_bad_targets(conv, x, name):
    method, options = baselines.BASELINES[name], CALLS[name]
    with pytest.raises(ValueError, match=rf"target \[7\] out of range for {K} model outputs"):
        method(conv[0], x, 7, **options)
    with pytest.raises(ValueError, match="expected one int or 3 ints"):
        method(conv[0], x, [1, 2], **options)
    with pytest.raises(TypeError, match="one int per input"):
        method(conv[0], x, 1.5, **options)
    with pytest.raises(ValueError, match=rf"target \[-1\] out of range for {K} model outputs"):
        method(conv[0], x, -1, **options)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        method(conv[0], x, 1, batch_size=0, **options)


def test_errors(conv, linear, x):
    model = conv[0]
    with pytest.raises(ValueError, match=r"\(N, H, W, C\), got shape \(6, 6, 2\)"):
        baselines.saliency(model, x[0], 0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        baselines.saliency(model, x[0], 0, layout="channels_first")
    with pytest.raises(ValueError, match="unknown layout 'nhwc'"):
        baselines.saliency(model, x, 0, layout="nhwc")
    with pytest.raises(ValueError, match="NaN"):
        baselines.saliency(model, x * np.nan, 0)
    with pytest.raises(ValueError, match="unknown reduce 'mean'; reductions are: max, sum"):
        baselines.saliency(model, x, 0, reduce="mean")
    with pytest.raises(ValueError, match="unknown integration method 'simpson'"):
        baselines.integrated_gradients(model, x, 0, method="simpson")
    with pytest.raises(ValueError, match="unknown baseline 'zeros'"):
        baselines.integrated_gradients(model, x, 0, baseline="zeros")
    with pytest.raises(ValueError, match="noise has shape"):
        baselines.smoothgrad(model, x, 0, n_samples=2, noise=np.zeros((N, 3, H, W, C)))
    with pytest.raises(ValueError, match="larger than the 6x6 image"):
        baselines.occlusion(model, x, 0, patch=7)
    with pytest.raises(ValueError, match="layer 'conv9' not found.*layers are: conv, relu"):
        baselines.grad_cam(model, x, 0, layer="conv9")
    with pytest.raises(ValueError, match="layer 'fc'.*Grad-CAM needs a convolutional layer"):
        baselines.grad_cam(model, x, 0, layer="fc")
    with pytest.raises(TypeError, match="keras.Model"):
        baselines.saliency(lambda a: a, x, 0)


def test_grad_cam_needs_a_layer_that_splits_the_graph(x):
    inputs = keras.Input((H, W, C), dtype="float64")
    a = layers.Conv2D(C, 1, name="a")(inputs)
    skip = layers.Add(name="add")([a, inputs])
    model = keras.Model(inputs, layers.Dense(K)(layers.GlobalAveragePooling2D()(skip)))
    with pytest.raises(ValueError, match="cannot split model .* at layer 'a'.*skip connection"):
        baselines.grad_cam(model, x, 0, layer="a")
    assert baselines.grad_cam(model, x, 0, layer="add").shape == (N, H, W)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(2, 1, name="conv")
            self.fc = layers.Dense(K)

        def call(self, images):
            return self.fc(layers.Flatten()(self.conv(images)))

    subclassed = Subclassed()
    subclassed(x)
    with pytest.raises(ValueError, match="needs a Functional or Sequential model"):
        baselines.grad_cam(subclassed, x, 0, layer="conv")
    assert baselines.saliency(subclassed, x, 0).shape == (N, H, W)  # gradients need no graph


def test_smoothgrad_seed_gives_the_same_noise_in_either_layout(x):
    rng = np.random.default_rng(3)
    w1, w2 = rng.standard_normal((H, W, C, 6)), rng.standard_normal((6, K))

    def mlp(shape, first_weights, name):  # a ReLU layer: the gradient depends on the noise
        inputs = keras.Input(shape, dtype="float64")
        hidden = dense(6, first_weights.reshape(-1, 6), np.zeros(6), f"{name}1")
        h = layers.ReLU(dtype="float64")(hidden(layers.Flatten()(inputs)))
        return keras.Model(inputs, dense(K, w2, np.zeros(K), f"{name}2")(h))

    last = mlp((H, W, C), w1, "last")
    first = mlp((C, H, W), np.moveaxis(w1, 2, 0), "first")  # the same map on (C, H, W) inputs
    options = {"n_samples": 3, "noise_level": 0.5, "reduce": "sum"}
    a = baselines.smoothgrad(last, x, 1, seed=7, **options)
    b = baselines.smoothgrad(
        first, np.moveaxis(x, -1, 1), 1, layout="channels_first", seed=7, **options
    )
    np.testing.assert_allclose(a, b, **TOL)
    assert not np.allclose(a, baselines.smoothgrad(last, x, 1, seed=8, **options))


@pytest.mark.parametrize("name", sorted(iba.baselines.BASELINES))
def test_methods_are_the_shared_definitions(name):
    """The adapter's method is ``iba.baselines``' (docstring and signature), on a keras.Model, with
    the backend options: ``layout`` (every method) and ``layer`` (Grad-CAM's, required)."""
    shared, method = iba.baselines.BASELINES[name], baselines.BASELINES[name]
    assert method is getattr(baselines, name) and method.__doc__ == shared.__doc__
    signature = inspect.signature(shared)
    model, *rest = signature.parameters.values()
    keyword = inspect.Parameter.KEYWORD_ONLY
    layout = inspect.Parameter("layout", keyword, default=None, annotation="str | None")
    layer = inspect.Parameter("layer", keyword, annotation="str | keras.layers.Layer")
    if name == "grad_cam":
        rest.insert(2, layer)
    parameters = [model.replace(annotation="keras.Model"), *rest, layout]
    assert inspect.signature(method) == signature.replace(parameters=parameters)
