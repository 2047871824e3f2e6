import numpy as np
import pytest
from conftest import finite_difference

import iba
from iba import nn, text
from iba.optimize import chain, objective


def _setup(tiny, layer="relu2", n_inputs=2, seed=0):
    model, _, stats = tiny
    x = np.random.default_rng(seed + 10).standard_normal((n_inputs, 1, 8, 8))
    return model, stats[layer], model.forward(x, stop=layer)[0]


@pytest.mark.parametrize("relu, sigma", [(True, 1.0), (False, None), (False, 1.0)])
def test_objective_gradient_single_layer(tiny, relu, sigma):
    model, stats, features = _setup(tiny)
    config = iba.Config(relu=relu, sigma=sigma)
    head = nn.classification_head(model, "relu2", np.array([3, 7]))
    noise = [iba.draw_noise(1, 1, config.batch_size, features.shape[1:], n_inputs=2)[0]]
    alpha = np.random.default_rng(4).normal(2, 1.5, features.shape)
    loss, grad = objective(
        alpha, features, [stats], chain(features, head), noise, config, "channels_first"
    )
    assert loss.shape == (2,)

    def total(a):
        return objective(
            a, features, [stats], chain(features, head), noise, config, "channels_first"
        )[0].sum()

    np.testing.assert_allclose(grad, finite_difference(total, alpha), rtol=1e-5, atol=1e-8)


def test_objective_gradient_coiba_two_layers(tiny):
    model, _, stats = tiny
    x = np.random.default_rng(5).standard_normal((2, 1, 8, 8))
    features = model.forward(x, stop="relu1")[0]
    config = iba.coiba_config(sigma=1.0)
    head = nn.classification_head(model, "relu2", np.array([1, 2]))
    segments = [nn.segment(model, "relu1", "relu2")]
    noise = [
        iba.draw_noise(2, 1, config.batch_size, (4, 8, 8), n_inputs=2)[0],
        iba.draw_noise(3, 1, config.batch_size, (6, 8, 8), n_inputs=2)[0],
    ]
    layers = [stats["relu1"], stats["relu2"]]
    alpha = np.random.default_rng(6).normal(1, 1.5, (2, 1, 8, 8))
    run = chain(features, head, segments)
    _, grad = objective(alpha, features, layers, run, noise, config, "channels_first")

    def total(a):
        return objective(a, features, layers, run, noise, config, "channels_first")[0].sum()

    np.testing.assert_allclose(grad, finite_difference(total, alpha), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "layout, shape, shared",
    [("channels_last", (4, 5, 3), False), ("tokens", (6, 4), False), ("tokens", (6, 4), True)],
)
def test_objective_gradient_other_layouts(layout, shape, shared):
    rng = np.random.default_rng(7)
    weights = rng.standard_normal(shape)

    def head(z):  # a smooth model loss: mean over noise samples of sum(tanh(Z) * W)
        loss = (np.tanh(z) * weights).reshape(*z.shape[:2], -1).sum(-1).mean(1)
        return loss, (1 - np.tanh(z) ** 2) * weights / z.shape[1]

    est = iba.Estimator(layout=layout)
    est.update(rng.standard_normal((50, *shape)) + 1)
    stats = iba.Statistics(est.mean, est.std, np.ones(shape))
    features = rng.standard_normal((3, *shape))
    config = iba.Config(batch_size=4)
    noise = [rng.standard_normal((3, 4, *shape))]
    alpha = rng.normal(1, 1.5, (3, *iba.alpha_shape(shape, layout, shared)))
    _, grad = objective(alpha, features, [stats], chain(features, head), noise, config, layout)
    numeric = finite_difference(
        lambda a: objective(a, features, [stats], chain(features, head), noise, config, layout)[
            0
        ].sum(),
        alpha,
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_whole_optimisation_reproduces_itself_and_batches_like_separate_runs(tiny):
    model, stats, features = _setup(tiny, n_inputs=3)
    config = iba.Config(relu=True)
    targets = np.array([0, 4, 9])
    noise = iba.draw_noise(11, config.steps, config.batch_size, features.shape[1:], n_inputs=3)
    together = iba.per_sample_bottleneck(
        features, stats, nn.classification_head(model, "relu2", targets), noise, config
    )
    assert together.alphas.shape == (10, 3, 6, 8, 8) and together.losses.shape == (9, 3)
    np.testing.assert_array_equal(together.alphas[0], 5.0)
    assert np.all(together.losses[-1] < together.losses[0])
    for i in range(3):
        alone = iba.per_sample_bottleneck(
            features[i : i + 1],
            stats,
            nn.classification_head(model, "relu2", targets[i]),
            noise[:, i],
            config,
        )
        np.testing.assert_allclose(alone.capacity[0], together.capacity[i], rtol=1e-12)
        np.testing.assert_allclose(alone.losses[:, 0], together.losses[:, i], rtol=1e-12)


def test_each_update_is_adam_on_the_analytic_gradient(tiny):
    model, stats, features = _setup(tiny, n_inputs=1)
    config = iba.Config(steps=4, relu=True)
    head = nn.classification_head(model, "relu2", 5)
    noise = iba.draw_noise(3, 4, 10, features.shape[1:], n_inputs=1)
    ex = iba.per_sample_bottleneck(features, stats, head, noise, config)
    state = iba.adam_init(ex.alphas[0])
    for step in range(config.updates):
        loss, grad = objective(
            ex.alphas[step],
            features,
            [stats],
            chain(features, head),
            [noise[step]],
            config,
            "channels_first",
        )
        assert loss == pytest.approx(ex.losses[step])
        alpha, state = iba.adam_update(grad, state, ex.alphas[step], config.lr)
        np.testing.assert_allclose(alpha, ex.alphas[step + 1], rtol=1e-14)
    lam = iba.damping(ex.alphas[-1], "channels_first", 1.0)
    np.testing.assert_allclose(
        ex.capacity, iba.capacity(features, lam, stats.mean, stats.std, stats.active)
    )


def test_capacity_at_final_takes_one_more_update(tiny):
    model, stats, features = _setup(tiny, n_inputs=1)
    head = nn.classification_head(model, "relu2", 5)
    noise = iba.draw_noise(3, 10, 10, features.shape[1:])
    last = iba.per_sample_bottleneck(features, stats, head, noise, iba.Config())
    final = iba.per_sample_bottleneck(features, stats, head, noise, iba.Config(capacity_at="final"))
    np.testing.assert_array_equal(final.alphas[:10], last.alphas)
    assert final.alphas.shape[0] == 11
    assert not np.allclose(final.capacity, last.capacity)


def test_adam_matches_the_textbook_form():
    rng = np.random.default_rng(8)
    params = rng.standard_normal(5)
    state = iba.adam_init(params)
    m = v = np.zeros(5)
    expected = params.copy()
    for t in range(1, 6):
        grad = rng.standard_normal(5)
        params, state = iba.adam_update(grad, state, params, lr=0.5)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        expected = expected - 0.5 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(params, expected, rtol=1e-12)


def test_bad_input_is_rejected_clearly(tiny):
    model, stats, features = _setup(tiny, n_inputs=1)
    head = nn.classification_head(model, "relu2", 5)
    noise = iba.draw_noise(3, 10, 10, features.shape[1:])
    bad = features.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="features: 1 NaN"):
        iba.per_sample_bottleneck(bad, stats, head, noise)
    with pytest.raises(ValueError, match=r"noise of shape \(10, 10, 6, 8, 8\) does not fit 2"):
        iba.per_sample_bottleneck(np.concatenate([features] * 2), stats, head, noise)
    with pytest.raises(ValueError, match="estimator was fitted for another layer"):
        iba.per_sample_bottleneck(features[:, :4], stats, head, noise[:, :, :4])
    with pytest.raises(ValueError, match="2 target layers need 1 segments"):
        iba.per_sample_bottleneck(features, [stats, stats], head, [noise, noise])


@pytest.mark.parametrize("targets", [["relu2"], ["relu1", "relu2"]])
def test_model_callback_from_the_input_equals_the_chain(tiny, targets):
    net, _, stats = tiny
    x = np.random.default_rng(9).standard_normal((2, 1, 8, 8))
    features = net.forward(x, stop=targets[0])[0]
    config = iba.Config(relu=True, steps=4) if len(targets) == 1 else iba.coiba_config(steps=4)
    noise = [
        iba.draw_noise(i, 4, 10, stats[t].mean.shape, n_inputs=2) for i, t in enumerate(targets)
    ]
    layers = [stats[t] for t in targets]
    segments = [nn.segment(net, *targets)] if len(targets) == 2 else []
    head = nn.classification_head(net, targets[-1], np.array([2, 8]))
    by_chain = iba.per_sample_bottleneck(features, layers, head, noise, config, segments=segments)
    by_model = iba.per_sample_bottleneck(
        features, layers, None, noise, config, model=nn.classifier(net, x, [2, 8], targets)
    )
    np.testing.assert_allclose(by_model.alphas, by_chain.alphas, rtol=1e-12)
    np.testing.assert_allclose(by_model.capacity, by_chain.capacity, rtol=1e-12)
    with pytest.raises(ValueError, match="not both"):
        iba.per_sample_bottleneck(features, layers, head, noise, config, model=lambda layers: 0)


def test_coiba_on_a_vit_with_residual_streams():
    """CoIBA on blocks.0.norm1 and blocks.1.norm1: the gradient passes the residual stream."""
    vit = nn.tiny_vit(1, depth=2)
    rng = np.random.default_rng(12)
    targets = ["blocks.0.norm1", "blocks.1.norm1"]
    stats = []
    for feats in nn.capture(vit, rng.standard_normal((64, 1, 8, 8)), targets):
        est = iba.Estimator(layout="tokens")
        est.update(feats)
        stats.append(
            iba.Statistics(est.mean, np.maximum(est.std, 0.01), np.ones(est.feature_shape))
        )
    x = rng.standard_normal((2, 1, 8, 8))
    features = nn.capture(vit, x, targets[:1])[0]
    config = iba.coiba_config(batch_size=3)
    run = nn.classifier(vit, x, [1, 4], targets)
    noise = [rng.standard_normal((2, 3, 17, 16)) for _ in targets]
    alpha = rng.normal(1, 1.5, (2, 17, 1))
    _, grad = objective(alpha, features, stats, run, noise, config, "tokens")
    numeric = finite_difference(
        lambda a: objective(a, features, stats, run, noise, config, "tokens")[0].sum(), alpha
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
    noise = [iba.draw_noise(i, 10, 3, (17, 16), n_inputs=2) for i in range(2)]
    ex = iba.per_sample_bottleneck(features, stats, None, noise, config, layout="tokens", model=run)
    assert ex.alpha.shape == (2, 17, 1)
    assert np.all(ex.losses[-1] < ex.losses[0])
    maps = iba.vit_heatmap(ex.capacity, grid=(4, 4), input_size=(8, 8))
    assert maps.shape == (2, 8, 8) and maps.max() == 1.0


def test_objective_with_a_token_mask_takes_the_information_over_real_tokens():
    """With a token mask the information term is ``iba.text.information_term`` and the gradient
    still matches finite differences; an all-ones mask is the plain mean."""
    rng = np.random.default_rng(11)
    shape, layout = (6, 4), "tokens"
    weights = rng.standard_normal(shape)

    def head(z):
        loss = (np.tanh(z) * weights).reshape(*z.shape[:2], -1).sum(-1).mean(1)
        return loss, (1 - np.tanh(z) ** 2) * weights / z.shape[1]

    est = iba.Estimator(layout=layout)
    est.update(rng.standard_normal((50, *shape)) + 1)
    stats = iba.Statistics(est.mean, est.std, np.ones(shape))
    features = rng.standard_normal((3, *shape))
    config = iba.Config(batch_size=4, beta=3.0)
    noise = [rng.standard_normal((3, 4, *shape))]
    alpha = rng.normal(1, 1.5, (3, 6, 1))
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], float)

    def run(a, m):
        return objective(a, features, [stats], chain(features, head), noise, config, layout, m)

    loss, grad = run(alpha, mask)
    plain, _ = run(alpha, None)
    lam = iba.damping(alpha, layout, config.sigma)
    cap = iba.capacity(features, lam, stats.mean, stats.std)
    model_loss = plain - config.beta * cap.reshape(3, -1).mean(1)
    np.testing.assert_allclose(
        loss, model_loss + config.beta * text.information_term(cap, mask), rtol=1e-12
    )
    np.testing.assert_allclose(loss[0], plain[0], rtol=1e-12)  # no padding: the plain mean
    numeric = finite_difference(lambda a: run(a, mask)[0].sum(), alpha)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)

    out = iba.per_sample_bottleneck(
        features, stats, head, [rng.standard_normal((config.steps, 3, 4, *shape))], config, layout,
        token_mask=mask,
    )  # fmt: skip
    assert np.all(out.capacity[mask == 0] == 0) and np.all(out.capacity[mask == 1] > 0)
    with pytest.raises(ValueError, match=r"token mask of shape \(3, 5\)"):
        iba.per_sample_bottleneck(
            features,
            stats,
            head,
            [np.repeat(noise[0][None], config.steps, 0)],
            config,
            layout,
            token_mask=mask[:, :5],
        )
