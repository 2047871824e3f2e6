"""The attribution baselines of ``iba_torch.baselines`` against Captum, on a small CNN in float64.

Captum is the reference for every method but ``random``; SmoothGrad is compared with Captum's
``NoiseTunnel`` on the same standard-normal draws (Captum draws them from the global generator,
which the test seeds and replays). Also checked: the model is left as it was, and the errors.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict

import numpy as np
import pytest
import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

import iba.baselines
from iba_torch import baselines

N, C, H, W, CLASSES = 3, 3, 16, 16, 5
TOL = {"rtol": 1e-9, "atol": 1e-12}
F32_TOL = {"rtol": 1e-7, "atol": 1e-12}  # Captum's Occlusion returns float32 maps
IG_TOL = {"rtol": 1e-6, "atol": 1e-10}  # Captum's Riemann alphas are float32 (torch.linspace)


def small_cnn(seed: int = 0) -> nn.Module:
    """Conv-BN-ReLU, pool, conv-ReLU, dropout, linear head: eval mode matters (BN, dropout)."""
    torch.manual_seed(seed)
    features = nn.Sequential(
        OrderedDict(
            [
                ("0", nn.Conv2d(C, 6, 3, padding=1)),
                ("1", nn.BatchNorm2d(6)),
                ("2", nn.ReLU()),
                ("3", nn.MaxPool2d(2)),
                ("4", nn.Conv2d(6, 8, 3, padding=1)),
                ("5", nn.ReLU()),
            ]
        )
    )
    model = nn.Sequential(
        OrderedDict(
            features=features,
            flatten=nn.Flatten(),
            dropout=nn.Dropout(0.5),
            fc=nn.Linear(8 * (H // 2) * (W // 2), CLASSES),
        )
    ).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        bn = model.features[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def x():
    images = torch.randn(
        N, C, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return 2 * (images - low) / (high - low) - 1  # every image spans [-1, 1]: one noise std


TARGET = torch.tensor([0, 3, 4])


def close(actual: np.ndarray, expected: torch.Tensor, **tol) -> None:
    expected = expected.detach().numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **(tol or TOL))


@pytest.mark.parametrize("reduce", ["max", "sum"])
def test_saliency(model, x, reduce):
    expected = Saliency(model).attribute(x.clone().requires_grad_(), target=TARGET, abs=True)
    expected = expected.amax(1) if reduce == "max" else expected.sum(1)
    close(baselines.saliency(model, x, TARGET, reduce=reduce, batch_size=2), expected)


def test_gradient_x_input(model, x):
    expected = InputXGradient(model).attribute(x.clone().requires_grad_(), target=TARGET).sum(1)
    close(baselines.gradient_x_input(model, x, TARGET), expected)


@pytest.mark.parametrize("method", ["riemann_right", "riemann_trapezoid", "gausslegendre"])
def test_integrated_gradients(model, x, method):
    mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)  # the "mean" baseline, per channel
    expected = IntegratedGradients(model).attribute(
        x, baselines=mean, target=TARGET, n_steps=50, method=method
    )
    actual = baselines.integrated_gradients(model, x, TARGET, method=method, batch_size=32)
    close(actual, expected.sum(1), **IG_TOL)


def test_integrated_gradients_baseline_and_batches(model, x):
    expected = IntegratedGradients(model).attribute(
        x, baselines=0.5, target=TARGET, n_steps=20, method="riemann_right"
    )
    for batch_size in (7, 60):
        actual = baselines.integrated_gradients(
            model, x, TARGET, steps=20, baseline=0.5, batch_size=batch_size
        )
        close(actual, expected.sum(1), **IG_TOL)


@pytest.mark.parametrize("reduce", ["max", "sum"])
def test_smoothgrad_matches_captum_noise(model, x, reduce):
    samples = 16
    std = 0.15 * 2.0  # noise_level * (max - min); every image spans [-1, 1]
    torch.manual_seed(123)
    expected = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=samples, stdevs=std, target=TARGET
    )
    expected = expected.amax(1) if reduce == "max" else expected.sum(1)
    # Captum draws torch.normal(0, std) of shape (N * samples, C, H, W) in float32, input-major:
    # replay the same draws from the same seed.
    torch.manual_seed(123)
    draws = torch.randn(N * samples, C, H, W).reshape(N, samples, C, H, W)
    actual = baselines.smoothgrad(
        model, x, TARGET, noise=draws, reduce=reduce, n_samples=samples, batch_size=40
    )
    # Captum scales the float32 draws in float32: differences at float32 precision.
    close(actual, expected, rtol=1e-5, atol=1e-7)


def test_smoothgrad_seed_is_the_noise(model, x):
    # the same draws as Keras and Flax get for seed 5: drawn channels-last, moved channels-first
    draws = np.random.default_rng(5).standard_normal((N, 10, H, W, C))
    by_noise = baselines.smoothgrad(model, x, TARGET, n_samples=10, noise=np.moveaxis(draws, -1, 2))
    by_seed = baselines.smoothgrad(model, x, TARGET, n_samples=10, seed=5, batch_size=7)
    np.testing.assert_allclose(by_seed, by_noise, **TOL)
    other = baselines.smoothgrad(model, x, TARGET, n_samples=10, seed=6)
    assert not np.allclose(other, by_seed)


def test_smoothgrad_manual(model, x):
    """The formula written out for one image: mean |grad| over the noisy copies, max over C."""
    draws = torch.randn(
        1, 4, C, H, W, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    image = x[:1]
    std = 0.15 * float(image.max() - image.min())
    grads = []
    for k in range(4):
        noisy = (image + std * draws[0, k]).requires_grad_(True)
        model(noisy)[0, 3].backward()
        grads.append(noisy.grad.abs())
    model.zero_grad(set_to_none=True)
    expected = torch.stack(grads).mean(0).amax(1)
    close(baselines.smoothgrad(model, image, 3, n_samples=4, noise=draws), expected)


@pytest.mark.parametrize("patch", [4, 8])
def test_occlusion(model, x, patch):
    window = (C, patch, patch)
    expected = Occlusion(model).attribute(
        x, sliding_window_shapes=window, strides=window, baselines=0.0, target=TARGET
    )
    assert torch.equal(expected, expected[:, :1].expand_as(expected))  # one value per pixel
    actual = baselines.occlusion(model, x, TARGET, patch=patch, batch_size=5)
    close(actual, expected[:, 0], **F32_TOL)


def test_occlusion_partial_patches(model, x):
    """Patches that do not divide the image: Captum leaves the last pixels at 0, we cover them."""
    window = (C, 6, 6)
    expected = Occlusion(model).attribute(
        x, sliding_window_shapes=window, strides=window, baselines=0.0, target=TARGET
    )[:, 0]
    actual = baselines.occlusion(model, x, TARGET, patch=6)
    close(actual[:, :12, :12], expected[:, :12, :12], **F32_TOL)
    assert np.all(actual[:, 12:, :] != 0)


@pytest.mark.parametrize("patch", [4, 8])
def test_occlusion_with_the_per_channel_mean(model, x, patch):
    """The papers' setting (docs/metrics.md): Captum's occlusion, window = stride, each image's
    per-channel mean as the baseline."""
    window = (C, patch, patch)
    mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    expected = Occlusion(model).attribute(
        x, sliding_window_shapes=window, strides=window, baselines=mean, target=TARGET
    )
    actual = baselines.occlusion(model, x, TARGET, patch=patch, baseline="mean", batch_size=5)
    close(actual, expected[:, 0], **F32_TOL)
    assert not np.allclose(actual, baselines.occlusion(model, x, TARGET, patch=patch))


@pytest.mark.parametrize("layer", ["features.5", "module", "features.4"])
def test_grad_cam(model, x, layer):
    module = model.features[5] if layer == "module" else model.get_submodule(layer)
    cam = LayerGradCam(model, module).attribute(x, target=TARGET, relu_attributions=True)
    expected = LayerAttribution.interpolate(cam, (H, W), interpolate_mode="bilinear")[:, 0]
    given = module if layer == "module" else layer
    close(baselines.grad_cam(model, x, TARGET, layer=given, batch_size=2), expected)


def test_grad_cam_signed(model, x):
    cam = LayerGradCam(model, model.features[4]).attribute(x, target=TARGET)
    expected = LayerAttribution.interpolate(cam, (H, W), interpolate_mode="bilinear")[:, 0]
    close(baselines.grad_cam(model, x, TARGET, layer="features.4", relu=False), expected)


def test_random_is_seeded(model, x):
    a = baselines.random(model, x, seed=3)
    assert a.shape == (N, H, W)
    np.testing.assert_array_equal(a, baselines.random(model, x, seed=3))
    assert not np.array_equal(a, baselines.random(model, x, seed=4))


def test_default_target_is_top_class(model, x):
    top = model(x).argmax(1)
    for name in ("saliency", "gradient_x_input", "occlusion"):
        method = baselines.BASELINES[name]
        np.testing.assert_array_equal(method(model, x), method(model, x, top))
    np.testing.assert_array_equal(
        baselines.grad_cam(model, x, layer="features.5"),
        baselines.grad_cam(model, x, top, layer="features.5"),
    )


def test_numpy_input_and_int_target(model, x):
    expected = baselines.saliency(model, x, torch.tensor([2, 2, 2]))
    np.testing.assert_array_equal(baselines.saliency(model, x.numpy(), 2), expected)


CALLS = {
    "random": {},
    "saliency": {},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"n_samples": 3},
    "occlusion": {"patch": 8},
    "grad_cam": {"layer": "features.4"},
}


def _state(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
        [p.grad for p in model.parameters()],
        [len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()],
    )


def _same(a, b) -> None:
    assert a[0] == b[0] and a[1] == b[1] and a[4] == b[4]
    assert a[2].keys() == b[2].keys() and all(torch.equal(a[2][k], b[2][k]) for k in a[2])
    assert all(g is None for g in b[3])


@pytest.mark.parametrize("name", sorted(CALLS))
def test_model_state_preserved(x, name):
    model = small_cnn().train()
    model.features[0].weight.requires_grad_(False)
    model.features[1].eval()  # a mixed state must come back as it was
    before = _state(model)
    eval_maps = baselines.BASELINES[name](small_cnn().eval(), x, TARGET, **CALLS[name])
    maps = baselines.BASELINES[name](model, x, TARGET, **CALLS[name])
    _same(before, _state(model))
    np.testing.assert_allclose(maps, eval_maps, **TOL)  # computed in eval mode
    with pytest.raises(ValueError, match="out of range"):
        if name == "random":
            raise ValueError("out of range")  # random never calls the model
        baselines.BASELINES[name](model, x, CLASSES, **CALLS[name])
    _same(before, _state(model))


@pytest.mark.parametrize("name", [n for n in sorted(CALLS) if n != "random"])
def test_bad_targets(model, x, name):
    method, options = baselines.BASELINES[name], CALLS[name]
    with pytest.raises(ValueError, match=r"target \[7\] out of range for 5 model outputs"):
        method(model, x, 7, **options)
    with pytest.raises(ValueError, match="expected one int or 3 ints"):
        method(model, x, [1, 2], **options)
    with pytest.raises(TypeError, match="one int per input"):
        method(model, x, 1.5, **options)
    with pytest.raises(ValueError, match=r"target \[-1\] out of range for 5 model outputs"):
        method(model, x, -1, **options)


def test_errors(model, x):
    with pytest.raises(ValueError, match=r"layer 'conv9' not found.*'features.4'"):
        baselines.grad_cam(model, x, 0, layer="conv9")
    with pytest.raises(ValueError, match="Grad-CAM needs a convolutional layer"):
        baselines.grad_cam(model, x, 0, layer="fc")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        baselines.saliency(model, x[0], 0)
    with pytest.raises(ValueError, match="NaN"):
        baselines.saliency(model, x * float("nan"), 0)
    with pytest.raises(ValueError, match="unknown reduce"):
        baselines.saliency(model, x, 0, reduce="mean")
    with pytest.raises(ValueError, match="unknown integration method"):
        baselines.integrated_gradients(model, x, 0, method="simpson")
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.integrated_gradients(model, x, 0, baseline="zeros")
    with pytest.raises(ValueError, match="noise has shape"):
        baselines.smoothgrad(model, x, 0, n_samples=2, noise=torch.zeros(N, 3, C, H, W))
    with pytest.raises(ValueError, match="larger than the 16x16 image"):
        baselines.occlusion(model, x, 0, patch=32)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        baselines.saliency(lambda a: a, x, 0)


@pytest.mark.parametrize("name", sorted(iba.baselines.BASELINES))
def test_methods_are_the_shared_definitions(name):
    """Each method is ``iba.baselines``' with its docstring and signature: ``model`` a Module,
    and Grad-CAM's required ``layer``, the backend option, first of its keyword arguments."""
    shared, method = iba.baselines.BASELINES[name], getattr(baselines, name)
    assert baselines.BASELINES[name] is method and method.__doc__ == shared.__doc__
    model, *options = inspect.signature(method).parameters.values()
    if name == "grad_cam":
        layer = options.pop(2)
        assert (layer.name, layer.default, layer.kind) == ("layer", layer.empty, layer.KEYWORD_ONLY)
        with pytest.raises(TypeError, match="missing a required argument: 'layer'"):
            method(small_cnn(), torch.zeros(1, C, H, W), 0)
    assert [model.annotation, *options] == [
        "torch.nn.Module",
        *list(inspect.signature(shared).parameters.values())[1:],
    ]
