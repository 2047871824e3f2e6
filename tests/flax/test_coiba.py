"""CoIBA on a small Linen ViT: one alpha per token shared over two LayerNorms (docs/mathematics.md section 4)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import iba
from iba_jax import IBA

TARGETS = [("EncoderBlock_0", "LayerNorm_0"), ("EncoderBlock_1", "LayerNorm_0")]


def noise(config, n_inputs=2):
    """Standard-normal draws for both target layers, ``(steps, N, B, 17, 32)`` each."""
    return [
        iba.draw_noise(s, config.steps, config.batch_size, (17, 32), n_inputs=n_inputs)
        for s in (1, 2)
    ]


@pytest.fixture(scope="module")
def coiba(vit, mnist):
    explainer = IBA(TARGETS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(vit, mnist[0][:512], progress=False)
    return explainer


def test_coiba_on_a_vit(coiba, vit, mnist):
    assert coiba.config == iba.coiba_config()
    assert [e.layout for e in coiba.estimators] == ["tokens", "tokens"]
    assert [e.feature_shape for e in coiba.estimators] == [(17, 32), (17, 32)]
    x, y = mnist[2][:2], mnist[3][:2]
    explanation = coiba.analyze(vit, x, target=y, noise=noise(coiba.config), details=True)
    assert explanation.heatmap.shape == (2, 17)  # bits per token, class token first
    assert explanation.alpha.shape == (2, 17, 1)  # one alpha per token, shared
    assert np.all(np.isfinite(explanation.heatmap)) and np.all(explanation.heatmap >= 0)
    assert np.all(explanation.losses[-1] < explanation.losses[0])
    maps = iba.vit_heatmap(explanation.capacity, (4, 4), (28, 28))
    assert maps.shape == (2, 28, 28) and maps.min() == 0 and maps.max() == 1
    # the information concentrates on a few tokens
    assert np.all(explanation.heatmap.max(1) > 5 * np.median(explanation.heatmap, 1))


def test_coiba_batched_equals_separate(coiba, vit, mnist):
    """Tokens mix inside an input (attention), never across the inputs of a batch."""
    x, y = mnist[2][:2], mnist[3][:2]
    draws = noise(coiba.config)
    batched = coiba.analyze(vit, x, target=y, noise=draws)
    for i in range(2):
        single = coiba.analyze(vit, x[i : i + 1], target=int(y[i]), noise=[n[:, i] for n in draws])
        np.testing.assert_allclose(single[0], batched[i], rtol=2e-3, atol=1e-3 * batched.max())
    with pytest.raises(ValueError, match="2 noise array"):
        coiba.analyze(vit, x, target=y, noise=draws[:1])
