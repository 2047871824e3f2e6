"""``analyze(..., token_mask=)`` on the JAX engine (docs/mathematics.md section 6.3).

A tiny Linen token model whose target is its first layer, so that the features are known in
NumPy: the information term of every step equals ``iba.text.information_term`` of the
reference's capacity, padding gets no capacity, another mask of the same shape runs the same
compiled function, and a bad mask gets the driver's ``ValueError``.
"""

from __future__ import annotations

import flax.linen as nn
import flax_models as fm
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import iba
from iba import nn as ref_nn
from iba.text import information_term
from iba_jax import IBA, _cache

T, F, D = 5, 4, 6  # tokens, input features, features at the target
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], np.float64)
OTHER = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], np.float64)
BETA = 10.0

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


class TokenNet(nn.Module):
    """``(N, T, F)`` -> logits; the target ``embed`` is ``x @ kernel + bias``, ``(N, T, D)``."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(D, name="embed", param_dtype=x.dtype)(x)
        return nn.Dense(3, name="head", param_dtype=x.dtype)(nn.relu(h).mean(1))


def zero_loss(outputs):
    """No model loss: each step's loss is ``beta`` times the information term alone."""
    return jnp.zeros(outputs.shape[0], outputs.dtype)


class TraceCount:
    """JAX traces (``jax.monitoring`` events) while the block runs."""

    def __enter__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, seconds, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            self.count += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def token_model(x64):
    """``(module, variables)``, estimation data and two inputs, in float64."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((64, T, F))
    module = TokenNet()
    variables = module.init(jax.random.key(0), jnp.asarray(data[:1]))
    return (module, variables), data, data[:2]


@pytest.fixture(scope="module")
def explainer(token_model):
    model, data, _ = token_model
    explainer = IBA("embed", beta=BETA, steps=4, batch_size=2)
    explainer.estimate(model, data, progress=False)
    return explainer


def features_of(model, x) -> np.ndarray:
    params = model[1]["params"]["embed"]
    return x @ np.asarray(params["kernel"]) + np.asarray(params["bias"])


def test_the_information_term_is_the_mean_over_real_tokens(token_model, explainer):
    model, _, x = token_model
    ex = explainer.analyze(model, x, loss_fn=zero_loss, token_mask=MASK, details=True)
    with explainer.planned(model, x, loss_fn=zero_loss, token_mask=MASK) as (_, plan):
        (stats,) = plan.stats
    features = features_of(model, x)
    for step, loss in enumerate(ex.losses):  # losses[k] is taken at alphas[k]
        lam = iba.damping(ex.alphas[step], "tokens", None)
        cap = iba.capacity(features, lam, stats.mean, stats.std, stats.mask)
        np.testing.assert_allclose(loss, BETA * information_term(cap, MASK), rtol=1e-9)
    cap = iba.capacity(features, ex.lam, stats.mean, stats.std, stats.mask)
    np.testing.assert_allclose(ex.capacity, cap * MASK[:, :, None], rtol=1e-9, atol=1e-12)
    assert np.all(ex.capacity[MASK == 0] == 0.0)  # exactly none at padding
    assert np.all(ex.heatmap[MASK == 0] == 0.0) and np.all(ex.heatmap[MASK == 1] > 0)


def test_a_mask_of_ones_changes_nothing(token_model, explainer):
    model, _, x = token_model
    plain = explainer.analyze(model, x, target=[0, 1], details=True)
    ones = explainer.analyze(model, x, target=[0, 1], token_mask=np.ones_like(MASK), details=True)
    np.testing.assert_allclose(ones.capacity, plain.capacity, rtol=1e-12)
    np.testing.assert_allclose(ones.losses, plain.losses, rtol=1e-12)


def test_another_mask_of_the_same_shape_compiles_nothing(token_model, explainer):
    model, _, x = token_model
    first = explainer.analyze(model, x, target=[0, 1], token_mask=MASK)
    kept = len(_cache._CACHE)
    with TraceCount() as traces:
        second = explainer.analyze(model, x, target=[0, 1], token_mask=OTHER)
    assert traces.count == 0 and len(_cache._CACHE) == kept
    assert not np.allclose(first, second)
    assert np.all(second[OTHER == 0] == 0.0)


@pytest.mark.parametrize(
    "mask, message",
    [
        (MASK[:, :4], r"token_mask of shape \(2, 4\) does not fit 2 input\(s\) of 5 tokens"),
        (MASK[:1], r"token_mask of shape \(1, 5\)"),
        (MASK * 0.5, "token_mask must hold 0 .padding. and 1"),
    ],
)
def test_a_bad_mask_is_refused(token_model, explainer, mask, message):
    model, _, x = token_model
    before = jax.tree.map(np.array, model[1])
    with pytest.raises(ValueError, match=message):
        explainer.analyze(model, x, target=[0, 1], token_mask=mask)
    jax.tree.map(np.testing.assert_array_equal, model[1], before)


def test_a_mask_for_image_features_is_refused(x64):
    model = fm.linen_tiny(ref_nn.tiny_cnn(0))
    data = np.random.default_rng(0).standard_normal((16, 8, 8, 1))
    explainer = IBA("relu2", steps=2, batch_size=2)
    explainer.estimate(model, data, progress=False)
    with pytest.raises(ValueError, match="token_mask is for token features"):
        explainer.analyze(model, data[:2], target=[0, 1], token_mask=np.ones((2, 8)))
