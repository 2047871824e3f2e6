"""iba_jax against the NumPy reference on a channels-last port of ``iba.nn.tiny_cnn``.

The reference runs channels-first; its noise and capacity are transposed to channels-last. In
float64 (``jax.enable_x64`` inside the test only) the results agree to 1e-8 relative.
"""

from __future__ import annotations

import warnings

import flax_models as fm
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import iba
from iba import nn as ref_nn
from iba_jax import IBA, _math

CF_TO_CL = (0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
NOISE_CF_TO_CL = (0, 1, 2, 4, 5, 3)  # (steps, N, B, C, H, W) -> (steps, N, B, H, W, C)


@pytest.fixture(scope="module")
def tiny():
    model = ref_nn.tiny_cnn(0)
    data = np.random.default_rng(0).standard_normal((1200, 1, 8, 8))
    return model, data


def reference(model, data, x, names, labels, config, seed=0):
    """The reference's explanation (channels-first) and the noise it used (channels-last)."""
    stats = []
    for name in names:
        est = iba.Estimator(layout="channels_first")
        est.update(model.forward(data, stop=name)[0])
        stats.append(est.statistics(config.min_std, config.active_threshold))
    noises = [
        iba.draw_noise(
            seed + i,
            config.steps,
            config.batch_size,
            model.forward(x[:1], stop=n)[0].shape[1:],
            n_inputs=len(x),
        )
        for i, n in enumerate(names)
    ]
    segments = [ref_nn.segment(model, a, b) for a, b in zip(names, names[1:])]
    explanation = iba.per_sample_bottleneck(
        model.forward(x, stop=names[0])[0],
        stats if len(stats) > 1 else stats[0],
        ref_nn.classification_head(model, names[-1], labels),
        noises,
        config,
        segments=segments,
    )
    return explanation, stats, [n.transpose(NOISE_CF_TO_CL) for n in noises]


def explain(port, names, config, data, x, labels, noise):
    targets = list(names) if len(names) > 1 else names[0]
    explainer = IBA(targets, config=config)
    explainer.estimate(port, data.transpose(CF_TO_CL), progress=False)
    out = explainer.analyze(
        port, x.transpose(CF_TO_CL), target=labels, noise=noise if len(names) > 1 else noise[0],
        details=True,
    )  # fmt: skip
    return explainer, out


CASES = [
    pytest.param("linen", ["relu2"], iba.Config(relu=True), id="linen-iba"),
    pytest.param("nnx", ["relu2"], iba.Config(relu=True), id="nnx-iba"),
    pytest.param("linen", ["relu1", "relu2"], iba.coiba_config(), id="linen-coiba"),
    pytest.param("nnx", ["relu1", "relu2"], iba.coiba_config(relu=True), id="nnx-coiba"),
    pytest.param("linen", ["relu2"], iba.Config(capacity_at="final", sigma=None), id="final"),
]


@pytest.mark.parametrize(("kind", "names", "config"), CASES)
def test_float64_equals_reference(tiny, kind, names, config):
    model, data = tiny
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8))
    labels = np.array([3, 7, 1])
    expected, stats, noise = reference(model, data, x, names, labels, config)
    with jax.enable_x64(True):
        port = fm.linen_tiny(model) if kind == "linen" else fm.nnx_tiny(model)
        explainer, out = explain(port, names, config, data, x, labels, noise)
    for est, s in zip(explainer.estimators, stats):
        np.testing.assert_allclose(est.mean, s.mean.transpose(1, 2, 0), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(est.std, np.asarray(s.std).transpose(1, 2, 0), rtol=1e-10)
    assert out.capacity.shape == (3, 8, 8, 6 if names[0] == "relu2" else 4)
    rtol = 1e-8
    np.testing.assert_allclose(out.capacity, expected.capacity.transpose(CF_TO_CL), rtol=rtol)
    np.testing.assert_allclose(out.alphas, expected.alphas.transpose(0, 1, 3, 4, 2), rtol=rtol)
    np.testing.assert_allclose(out.lam, expected.lam.transpose(CF_TO_CL), rtol=rtol)
    np.testing.assert_allclose(out.losses, expected.losses, rtol=rtol)
    assert out.losses.shape == (config.updates, 3)
    maps = iba.heatmap(expected.capacity, "channels_first", (8, 8))
    np.testing.assert_allclose(out.heatmap, maps, rtol=rtol, atol=1e-12 * maps.max())
    if len(names) > 1:
        assert out.alpha.shape == (3, 8, 8, 1)  # shared over channels and layers


def test_float32_agrees_with_reference(tiny):
    model, data = tiny
    x = np.random.default_rng(2).standard_normal((2, 1, 8, 8))
    labels = np.array([0, 5])
    config = iba.Config(relu=True)
    expected, _, noise = reference(model, data, x, ["relu2"], labels, config)
    port = fm.linen_tiny(model, np.float32)
    _, out = explain(port, ["relu2"], config, data, x, labels, noise)
    assert out.capacity.dtype == np.float64  # returned as float64 NumPy, computed in float32
    maps = iba.heatmap(expected.capacity, "channels_first", (8, 8))
    np.testing.assert_allclose(out.heatmap, maps, rtol=1e-3, atol=1e-4 * maps.max())
    np.testing.assert_allclose(out.losses, expected.losses, rtol=1e-4)


def test_optax_adam_is_the_reference_adam():
    rng = np.random.default_rng(0)
    params = rng.standard_normal((4, 5))
    with jax.enable_x64(True):
        opt = _math.adam(1.0)
        jparams = jnp.asarray(params)
        state, ref_state = opt.init(jparams), iba.adam_init(params)
        for _ in range(12):
            grad = rng.standard_normal((4, 5)) * 10.0 ** rng.integers(-6, 3, (4, 5))
            params, ref_state = iba.adam_update(grad, ref_state, params, 1.0)
            updates, state = opt.update(jnp.asarray(grad), state, jparams)
            jparams = optax.apply_updates(jparams, updates)
        np.testing.assert_allclose(np.asarray(jparams), params, rtol=1e-12)


def test_damping_matches_reference():
    rng = np.random.default_rng(0)
    alpha = rng.standard_normal((2, 7, 5, 3)) * 3
    with jax.enable_x64(True):
        for layout, a in (("channels_last", alpha), ("channels_first", alpha)):
            got = np.asarray(_math.damping(jnp.asarray(a), layout, 1.0))
            np.testing.assert_allclose(got, iba.damping(a, layout, 1.0), rtol=1e-13)
        tokens = alpha[..., 0]
        got = np.asarray(_math.damping(jnp.asarray(tokens), "tokens", 1.0))
        np.testing.assert_allclose(got, iba.sigmoid(tokens), rtol=1e-13)


def test_batched_equals_separate_runs(tiny):
    """One optimisation over 3 inputs gives each input the result of its own run."""
    model, data = tiny
    x = np.random.default_rng(3).standard_normal((3, 8, 8, 1))
    config = iba.Config(relu=True)
    noise = iba.draw_noise(5, config.steps, config.batch_size, (8, 8, 6), n_inputs=3)
    with jax.enable_x64(True):
        port = fm.linen_tiny(model)
        explainer = IBA("relu2", config=config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explainer.estimate(port, data.transpose(CF_TO_CL), progress=False)
        batched = explainer.analyze(port, x, target=[1, 2, 3], noise=noise)
        for i in range(3):
            single = explainer.analyze(port, x[i : i + 1], target=i + 1, noise=noise[:, i])
            np.testing.assert_allclose(single[0], batched[i], rtol=1e-10)
