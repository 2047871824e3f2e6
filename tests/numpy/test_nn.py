import numpy as np
import pytest
from conftest import finite_difference

from iba import nn


def test_backward_of_every_layer_matches_finite_differences():
    model = nn.tiny_cnn(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 8, 8))
    weights = rng.standard_normal((2, 10))
    out, backward = model.forward(x)
    assert out.shape == (2, 10)
    numeric = finite_difference(lambda v: np.sum(model(v) * weights), x)
    np.testing.assert_allclose(backward(weights), numeric, rtol=1e-6, atol=1e-8)


def test_forward_slices_compose():
    model = nn.tiny_cnn(2)
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8))
    features = model.forward(x, stop="relu2")[0]
    assert features.shape == (3, 6, 8, 8)
    np.testing.assert_allclose(model.forward(features, start="relu2")[0], model(x))
    with pytest.raises(ValueError, match="layer 'conv9' not found; layers are: conv1, relu1"):
        model.forward(x, stop="conv9")


def test_pooling_and_cross_entropy():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(nn.MaxPool2d(2)(x)[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_allclose(nn.AvgPool2d(2)(x)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    logits = np.array([[1.0, 2.0, 3.0]])
    loss, grad = nn.cross_entropy(logits, np.array([2]))
    expected = -np.log(np.exp(3) / np.exp(logits).sum())
    assert loss[0] == pytest.approx(expected)
    numeric = finite_difference(lambda v: nn.cross_entropy(v, np.array([2]))[0].sum(), logits)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6)


def test_vit_backward_matches_finite_differences_and_names_follow_timm():
    model = nn.tiny_vit(0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 1, 8, 8))
    logits, backward = model.forward(x)
    assert logits.shape == (2, 10)
    weights = rng.standard_normal(logits.shape)
    numeric = finite_difference(lambda v: np.sum(model(v) * weights), x)
    np.testing.assert_allclose(backward(weights), numeric, rtol=1e-6, atol=1e-9)
    assert {"blocks.0.norm1", "blocks.2.mlp", "norm", "head"} <= set(model.names)
    norm1, block = nn.capture(model, x, ["blocks.1.norm1", "blocks.1"])
    assert norm1.shape == block.shape == (2, 17, 16)
    with pytest.raises(
        ValueError, match="layer 'blocks.9.norm1' not found; layers are: patch_embed"
    ):
        model.forward(x, inserts={"blocks.9.norm1": None})


def test_layer_norm_normalises():
    ln = nn.LayerNorm(np.ones(4), np.zeros(4), eps=0.0)
    y = ln(np.array([[1.0, 2.0, 3.0, 6.0]]))
    assert y.mean() == pytest.approx(0) and y.std() == pytest.approx(1)
