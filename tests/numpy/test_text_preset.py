"""The text-IBA authors' arithmetic (``iba.text_config()``) in the NumPy reference, against an
independent float64 replay of their code (``tests/text_iba_replay.py``; docs/mathematics.md
section 6)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import iba
from iba.bottleneck import clamped_bottleneck, noise_scale, noise_scale_vjp
from tests import text_iba_replay as rp

B = 10  # the authors' batch of noise samples
RTOL = 1e-6


@pytest.fixture(scope="module")
def token_model():
    """The replay's token model: weights, three sentences, their labels, features and inputs."""
    w = rp.weights()
    x = rp.sentences(3)
    return {
        "w": w,
        "labels": np.array([0, 2, 1]),
        "features": rp.features(w, x),  # at the bottleneck (enc2's output)
        "layer_input": rp.layer_input(w, x),  # enc1's output: the authors' estimator location
        "corpus": rp.features(w, rp.sentences(40, seed=2)),
    }


def noise_for(n_inputs: int, seed: int = 5) -> np.ndarray:
    return iba.draw_noise(seed, 10, B, (rp.T, rp.D), n_inputs=n_inputs)


def estimator(points: np.ndarray) -> iba.Estimator:
    est = iba.Estimator(layout="tokens")
    est.update(points)
    return est


def reference(model, inputs, stats, noise, config) -> iba.Explanation:
    """``iba.per_sample_bottleneck`` on the token model's features of ``inputs``."""
    return iba.per_sample_bottleneck(
        model["features"][inputs],
        stats,
        rp.head_callback(model["w"], model["labels"][inputs]),
        noise,
        config,
        layout="tokens",
    )


def assert_close(actual, expected, rtol=RTOL):
    """Relative to the largest magnitude (near-zero capacities are compared at that scale)."""
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# -- the preset and its fields -------------------------------------------------------------------


def test_text_config_is_the_authors_arithmetic():
    c = iba.text_config()
    assert (c.beta, c.sigma, c.ddof, c.min_std, c.min_m2) == (1e-5, None, 0, 0.0, 1e-5)
    assert (c.active_threshold, c.log_var_clamp, c.estimator) == (None, 10.0, "corpus")
    # what their IBAInterpreter defaults to (main.py: beta 1e-5, lr 1, 10 steps; batch 10, alpha 5)
    assert (c.steps, c.lr, c.batch_size, c.initial_alpha) == (10, 1.0, 10, 5.0)
    assert c.capacity_at == "last_forward" and c.updates == 9 and c.min_samples == 1
    assert iba.text_config(estimator="sentence").estimator == "sentence"
    assert iba.text_config(beta=2e-5).beta == 2e-5


def test_defaults_keep_the_project_rule():
    c = iba.Config()
    assert (c.ddof, c.min_m2, c.log_var_clamp, c.estimator) == (1, 0.0, None, "corpus")
    assert c.min_samples == 2


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"ddof": 2}, "Config.ddof must be 0 or 1, got 2"),
        ({"ddof": True}, "Config.ddof must be 0 or 1, got True"),
        ({"min_m2": -1.0}, "Config.min_m2 must be >= 0"),
        ({"min_std": 0.0}, "min_std must be > 0, got 0.0 (it may be 0 only with min_m2 > 0"),
        ({"min_std": -0.1, "min_m2": 1e-5}, "Config.min_std must be > 0"),
        ({"log_var_clamp": 0.0}, "Config.log_var_clamp must be > 0 or None"),
        ({"log_var_clamp": "10"}, "Config.log_var_clamp must be a number"),
        ({"estimator": "text"}, "Config.estimator must be one of ('corpus', 'sentence', "),
        ({"estimator": "sentence"}, "set ddof=0 (and min_m2 > 0)"),
        ({"active_threshold": -0.5}, "active_threshold must be in [0, 1) or None"),
    ],
)
def test_bad_values_name_the_field(changes, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        iba.Config(**changes)


# -- the estimator -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7])
def test_statistics_follow_the_authors_estimator(n):
    points = np.random.default_rng(n).normal(0, 0.01, (n, 4, 3))
    points[:, 0, 0] = 0.25  # a constant element: the floor on S decides its deviation
    est = estimator(points)
    mean, std = rp.authors_estimator(points)
    stats = est.statistics_for(iba.text_config(), warn=False)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(stats.std, std, rtol=1e-12)
    np.testing.assert_array_equal(stats.active, np.ones((4, 3)))  # no mask
    assert stats.std[0, 0] == pytest.approx(np.sqrt(1e-5 / n))  # the floor is on S, not on var


def test_the_project_rule_is_unchanged():
    points = np.random.default_rng(0).normal(0, 1, (30, 4, 3)) * (np.arange(3) > 0)
    est = estimator(points)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = est.statistics(0.01, 0.01)
        new = est.statistics_for(iba.Config())
    mean, std, active = rp.project_statistics(points)
    for got, want in zip(old, (mean, std, active)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)


def test_one_sample_needs_ddof_zero():
    est = estimator(np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="at least 2 are needed"):
        est.statistics()
    stats = est.statistics(0.0, None, ddof=0, min_m2=1e-5, warn=False)
    np.testing.assert_allclose(stats.std, np.sqrt(1e-5))
    with pytest.raises(ValueError, match="ddof must be 0 or 1"):
        est.statistics(ddof=3)


def test_the_few_samples_warning_can_be_silenced():
    est = estimator(np.ones((3, 2, 3)))
    with pytest.warns(UserWarning, match="seen only 3 samples"):
        est.statistics()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.statistics(warn=False)


# -- the clamped sampling ------------------------------------------------------------------------


def test_the_clamp_acts_on_the_noise_only():
    rng = np.random.default_rng(0)
    alpha = rng.normal(4, 3, (5, 4))
    alpha[0, 0] = 5.0  # the initial alpha: 1 - lam = 0.00669 < exp(-5) = 0.00674, clamped
    lam = iba.sigmoid(alpha)
    r, n = rng.normal(0, 1, (2, 5, 4))
    mean, std = rng.normal(0, 1, (5, 4)), rng.uniform(0.5, 2, (5, 4))
    features = r * std + mean
    z = clamped_bottleneck(features, lam, mean, std * n, 10.0)
    # the authors' _sample_t, then denormalised
    log_var = np.log((1 - lam) ** 2)
    want = (lam * r + np.exp(np.clip(log_var, -10, 10) / 2) * n) * std + mean
    np.testing.assert_allclose(z, want, rtol=1e-12, atol=1e-12)
    assert noise_scale(lam, 10.0)[0, 0] == pytest.approx(np.exp(-5))
    # without the clamp it is the bottleneck of section 2.3
    plain = clamped_bottleneck(features, lam, mean, std * n, None)
    np.testing.assert_allclose(plain, iba.bottleneck(features, lam, std * n + mean), rtol=1e-12)
    # the clamp passes no gradient, as torch.clamp
    grad = noise_scale_vjp(lam, np.ones_like(lam), 10.0)
    np.testing.assert_array_equal(grad, np.where(1 - lam >= np.exp(-5), -1.0, 0.0))


# -- the whole optimisation ----------------------------------------------------------------------


def test_the_replay_gradient_is_the_derivative(token_model):
    """The replay's hand-written chain rule against central differences (both clamp branches)."""
    w, feats = token_model["w"], token_model["features"][0]
    mean, std = rp.authors_estimator(token_model["layer_input"][:1])
    alpha = np.random.default_rng(1).normal(4, 2, feats.shape)
    eps = noise_for(1)[0, 0]
    assert (alpha > 5.01).any() and (alpha < 4.99).any()
    grad = rp.first_gradient(w, feats, mean, std, eps, 0, alpha)
    numeric = np.zeros_like(alpha)
    h = 1e-6
    for idx in np.ndindex(alpha.shape):
        up, down = alpha.copy(), alpha.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (
            rp.loss_of_alpha(w, feats, mean, std, eps, 0, up)
            - rp.loss_of_alpha(w, feats, mean, std, eps, 0, down)
        ) / (2 * h)
    assert_close(grad, numeric, rtol=1e-6)


def test_the_authors_pipeline_gives_their_token_map(token_model):
    """Their estimator (the sentence alone, at the bottlenecked layer's input) and the preset."""
    noise = noise_for(1)
    mean, std = rp.authors_estimator(token_model["layer_input"][:1])
    want = rp.run_bottleneck(
        token_model["w"], token_model["features"][0], mean, std, noise[:, 0], 0
    )
    est = estimator(token_model["layer_input"][:1])
    config = iba.text_config()
    ex = reference(token_model, [0], est.statistics_for(config, warn=False), noise, config)
    assert_close(ex.capacity[0], want["capacity"])
    np.testing.assert_allclose(ex.alphas[:, 0], want["alphas"][: config.updates + 1], rtol=RTOL)
    token_map = iba.normalize(iba.heatmap(ex.capacity, "tokens", None))
    np.testing.assert_allclose(token_map[0], want["map"], rtol=RTOL, atol=RTOL)
    # the heatmap is in bits; the authors' map is in nats: min-max removes the factor ln 2
    np.testing.assert_allclose(
        iba.heatmap(ex.capacity, "tokens", None)[0] * np.log(2), want["capacity"].sum(1), rtol=RTOL
    )


def test_the_preset_with_a_corpus_estimator(token_model):
    """The authors' Estimator fed the corpus point by point (``ddof=0``, the floor on S)."""
    corpus = token_model["corpus"]
    mean, std = rp.authors_estimator(corpus)
    noise = noise_for(2, seed=6)
    config = iba.text_config()
    ex = reference(
        token_model, [1, 2], estimator(corpus).statistics_for(config, warn=False), noise, config
    )
    for i, k in enumerate([1, 2]):
        want = rp.run_bottleneck(
            token_model["w"],
            token_model["features"][k],
            mean,
            std,
            noise[:, i],
            int(token_model["labels"][k]),
        )
        assert_close(ex.capacity[i], want["capacity"])


def test_the_sentence_estimator_at_the_bottleneck(token_model):
    """``estimator="sentence"``: fitted on the input's own features at the target (one point)."""
    noise = noise_for(1, seed=7)
    feats = token_model["features"][:1]
    mean, std = rp.authors_estimator(feats)
    want = rp.run_bottleneck(token_model["w"], feats[0], mean, std, noise[:, 0], 0)
    config = iba.text_config(estimator="sentence")
    ex = reference(
        token_model, [0], estimator(feats).statistics_for(config, warn=False), noise, config
    )
    assert_close(ex.capacity[0], want["capacity"])


def test_without_the_preset_the_project_convention_holds(token_model):
    """The default ``Config`` (corpus estimator with ddof=1 and min_std, the active mask, no
    clamp, beta = 10, smoothing ignored for tokens) is a different computation."""
    corpus = token_model["corpus"]
    corpus = corpus * (np.arange(rp.D) != 0)  # a dead channel: the mask matters
    noise = noise_for(1, seed=8)
    config = iba.Config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = estimator(corpus).statistics_for(config)
    ex = reference(token_model, [0], stats, noise, config)
    mean, std, active = rp.project_statistics(corpus)
    assert active[:, 0].sum() == 0
    feats, w = token_model["features"][0], token_model["w"]
    own = rp.run_bottleneck(
        w, feats, mean, std, noise[:, 0], 0, beta=10.0, clamp=False, active=active
    )
    assert_close(ex.capacity[0], own["capacity"])
    authors_mean, authors_std = rp.authors_estimator(corpus)
    theirs = rp.run_bottleneck(w, feats, authors_mean, authors_std, noise[:, 0], 0, beta=10.0)
    assert not np.allclose(ex.capacity[0], theirs["capacity"], rtol=1e-2)
