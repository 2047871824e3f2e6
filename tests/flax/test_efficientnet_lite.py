"""The Flax port of EfficientNet-Lite0 with the bundled weights: predictions on real photos, the
``_blocks_4`` features, and an IBA explanation there.

Its logits were checked against the PyTorch model while it was written (no PyTorch here).
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from iba.demo.photos import center_crop, photo, random_crops
from iba.demo.runners import MEAN, STD
from iba_jax import IBA
from iba_jax.models import efficientnet_lite0, flax_path

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
TARGET = flax_path("_blocks.4")


def preprocess(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images, np.float32) / 255.0 - MEAN) / STD


@pytest.fixture(scope="module")
def model():
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def photos():
    """Chelsea the cat and a cup of coffee, centre-cropped to 224x224 and preprocessed."""
    return preprocess(np.stack([center_crop(photo(name))[0] for name in ("chelsea", "coffee")]))


@pytest.fixture(scope="module")
def outputs(model, photos):
    """The logits of ``photos`` and the output of ``_blocks_4``, from one forward pass."""
    module, variables = model

    def forward(variables, x):
        return module.apply(
            variables,
            x,
            capture_intermediates=lambda m, _: m.path == (TARGET,),
            mutable=["intermediates"],
        )

    logits, state = jax.jit(forward)(variables, photos)
    return np.asarray(logits), np.asarray(state["intermediates"][TARGET]["__call__"][0])


def test_flax_path():
    assert TARGET == "_blocks_4"
    assert flax_path("_blocks.12._bn0") == "_blocks_12/_bn0"
    assert flax_path("_conv_stem") == "_conv_stem"


def test_predicts_the_photos(outputs):
    logits, _ = outputs
    assert logits.shape == (2, 1000)
    assert logits[0].argmax() in CATS
    assert logits[1].argmax() == ESPRESSO


def test_block_4_features(outputs):
    _, features = outputs
    assert features.shape == (2, 28, 28, 40)
    assert np.all(np.isfinite(features))


def test_iba_at_block_4(model, photos):
    explainer = IBA(TARGET, steps=3, batch_size=4)
    batches = (preprocess(b) for b in random_crops(n=32, batch=16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few samples for the estimator
        explainer.estimate(model, batches, n_samples=32, progress=False)
        heatmap = explainer.analyze(model, photos[:1], target=285, seed=0)
    assert heatmap.shape == (1, 224, 224)
    assert np.all(np.isfinite(heatmap)) and np.all(heatmap >= 0)
    assert heatmap.max() - heatmap.min() > 0.1


def test_weights_argument(model):
    with pytest.raises(ValueError, match="weights must be 'bundled'.*got 'imagenet'"):
        efficientnet_lite0(weights="imagenet")
    # the random initialisation, traced but not compiled (that takes 10-30 s)
    random = jax.eval_shape(lambda: efficientnet_lite0(weights=None)[1])
    assert jax.tree.map(np.shape, random) == jax.tree.map(np.shape, model[1])


@pytest.mark.parametrize(("size", "kernel", "stride"), [(9, 3, 1), (9, 3, 2), (8, 5, 2), (7, 5, 1)])
def test_the_shifted_depthwise_convolution_is_xlas_grouped_one(size, kernel, stride):
    """The CPU's depthwise convolution (a sum of strided slices) equals XLA's grouped convolution
    with ``"SAME"`` padding, odd and even sizes, on any leading axes (as ``nn.Conv``)."""
    from iba.models.efficientnet_lite import depthwise_same
    from iba_jax.models.efficientnet_lite import DepthwiseConv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, size, size, 6)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, 1, 6)).astype(np.float32)
    grouped = jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=6,
    )  # fmt: skip
    shifted = depthwise_same(x, w[:, :, 0], stride, np.pad)  # NumPy arrays
    np.testing.assert_allclose(shifted, grouped, atol=1e-5, rtol=0)
    layer = DepthwiseConv(kernel, stride)
    stacked = layer.apply({"params": {"kernel": w}}, np.stack([x, x[::-1]]))  # (2, 2, H, W, C)
    np.testing.assert_allclose(stacked[0], grouped, atol=1e-5, rtol=0)
    np.testing.assert_allclose(stacked[1], grouped[::-1], atol=1e-5, rtol=0)
