"""``iba_torch`` equals the NumPy reference's optimisation on identical noise (float64, 1e-8)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch_models as tm

import iba
from iba import nn
from iba_torch import IBA

RTOL = 1e-8
STRATEGIES = ["auto", "fx", "expand", "plain"]


def assert_equal(explanation: iba.Explanation, reference: iba.Explanation, rtol=RTOL):
    for name in ("capacity", "alpha", "lam", "alphas", "losses"):
        got, want = getattr(explanation, name), getattr(reference, name)
        assert got.shape == want.shape, name
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=name)


def fitted(model, layers, layout, estimator_data):
    estimators = []
    for features in nn.capture(model, estimator_data, layers):
        est = iba.Estimator(layout=layout)
        est.update(features)
        estimators.append(est)
    return estimators


def statistics(estimators, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [e.statistics(config.min_std, config.active_threshold) for e in estimators]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((1200, 1, 8, 8)), rng.standard_normal((2, 1, 8, 8))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cnn_per_sample_bottleneck_equals_reference(data, strategy):
    estimator_data, x = data
    ref, model = nn.tiny_cnn(0), tm.tiny_cnn(0)
    config = iba.Config(relu=True)
    target = np.array([3, 7])
    (est,) = fitted(ref, ["relu2"], "channels_first", estimator_data)
    features = ref.forward(x, stop="relu2")[0]
    noise = iba.draw_noise(0, config.steps, config.batch_size, features.shape[1:], n_inputs=2)
    reference = iba.per_sample_bottleneck(
        features,
        statistics([est], config)[0],
        nn.classification_head(ref, "relu2", target),
        noise,
        config,
    )

    explainer = IBA("relu2", strategy=strategy, relu=True)
    explainer.estimate(model, torch.from_numpy(estimator_data), progress=False)
    np.testing.assert_allclose(explainer.estimators[0].mean, est.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(explainer.estimators[0].std, est.std, rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = explainer.analyze(
            model, torch.from_numpy(x), target=target, noise=noise, details=True
        )
    assert_equal(got, reference)
    expected_map = iba.heatmap(reference.capacity, "channels_first", (8, 8))
    np.testing.assert_allclose(got.heatmap, expected_map, rtol=RTOL, atol=1e-12)
    assert got.heatmap.shape == (2, 8, 8)
    assert explainer.last_path == ("fx" if strategy == "auto" else strategy)


@pytest.mark.parametrize("strategy", ["auto", "plain"])
def test_cnn_coiba_two_layers_equals_reference(data, strategy):
    estimator_data, x = data
    ref, model = nn.tiny_cnn(0), tm.tiny_cnn(0)
    config = iba.coiba_config(sigma=1.0)
    target = np.array([1, 4])
    layers = ["relu1", "relu2"]
    estimators = fitted(ref, layers, "channels_first", estimator_data)
    features = ref.forward(x, stop="relu1")[0]
    noise = [
        iba.draw_noise(seed, config.steps, config.batch_size, est.feature_shape, n_inputs=2)
        for seed, est in zip((1, 2), estimators)
    ]
    reference = iba.per_sample_bottleneck(
        features,
        statistics(estimators, config),
        nn.classification_head(ref, "relu2", target),
        noise,
        config,
        segments=[nn.segment(ref, "relu1", "relu2")],
    )
    explainer = IBA(layers, strategy=strategy, sigma=1.0)
    explainer.estimators = estimators
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = explainer.analyze(
            model, torch.from_numpy(x), target=target, noise=noise, details=True
        )
    assert explainer.config == config
    assert got.alpha.shape == (2, 1, 8, 8)  # shared over channels and layers
    assert_equal(got, reference)


def vit_reference(x, target, layers, estimator_data, seed=0):
    ref = nn.tiny_vit(seed, depth=2)
    config = iba.coiba_config()
    estimators = fitted(ref, layers, "tokens", estimator_data)
    features = nn.capture(ref, x, layers[:1])[0]
    noise = [
        iba.draw_noise(10 + i, config.steps, config.batch_size, e.feature_shape, n_inputs=len(x))
        for i, e in enumerate(estimators)
    ]
    reference = iba.per_sample_bottleneck(
        features,
        statistics(estimators, config),
        None,
        noise,
        config,
        layout="tokens",
        model=nn.classifier(ref, x, target, layers),
    )
    return estimators, noise, reference


@pytest.mark.parametrize("strategy", ["auto", "expand", "plain"])
def test_vit_coiba_equals_reference(data, strategy):
    estimator_data, x = data
    target = np.array([2, 5])
    layers = ["blocks.0.norm1", "blocks.1.norm1"]
    estimators, noise, reference = vit_reference(x, target, layers, estimator_data)
    model = tm.tiny_vit(0, depth=2)
    explainer = IBA(layers, strategy=strategy)
    explainer.estimate(model, torch.from_numpy(estimator_data[:300]), progress=False)
    assert explainer.estimators[0].layout == "tokens"
    explainer.estimators = estimators
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = explainer.analyze(
            model, torch.from_numpy(x), target=target, noise=noise, details=True
        )
    assert_equal(got, reference)
    assert got.heatmap.shape == (2, 17)  # bits per token, class token first
    np.testing.assert_allclose(got.heatmap, iba.heatmap(reference.capacity, "tokens"), rtol=RTOL)


def test_tuple_outputs_equal_reference(data):
    """Layers that return ``(hidden_states, None)`` (Hugging Face before transformers 5)."""
    estimator_data, x = data
    target = np.array([0, 9])
    layers = ["blocks.0", "blocks.1"]
    estimators, noise, reference = vit_reference(x, target, layers, estimator_data)
    model = tm.TupleViT(depth=2).double()
    weights = nn.tiny_vit_params(0, depth=2)
    tm.load(
        model,
        {
            k.replace("blocks.0.", "blocks.0.inner.").replace("blocks.1.", "blocks.1.inner."): v
            for k, v in weights.items()
        },
    )
    model.eval()
    explainer = IBA(layers)
    explainer.estimators = estimators
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = explainer.analyze(
            model, torch.from_numpy(x), target=target, noise=noise, details=True
        )
    assert_equal(got, reference)


def test_batch_of_inputs_equals_single_runs(data):
    estimator_data, x = data
    model = tm.tiny_cnn(0)
    explainer = IBA("relu2", relu=True)
    explainer.estimate(model, torch.from_numpy(estimator_data), progress=False)
    config = explainer.config
    noise = iba.draw_noise(3, config.steps, config.batch_size, (6, 8, 8), n_inputs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = explainer.analyze(model, torch.from_numpy(x), target=[3, 7], noise=noise)
        single = [
            explainer.analyze(model, torch.from_numpy(x[i : i + 1]), target=t, noise=noise[:, i])
            for i, t in enumerate([3, 7])
        ]
    np.testing.assert_allclose(both, np.concatenate(single), rtol=1e-10)


def test_loss_fn_equals_target(data):
    estimator_data, x = data
    model = tm.tiny_cnn(0)
    explainer = IBA(model.relu2, relu=True)
    explainer.estimate(model, torch.from_numpy(estimator_data), progress=False)
    config = explainer.config
    noise = iba.draw_noise(4, config.steps, config.batch_size, (6, 8, 8), n_inputs=2)
    labels = torch.tensor([3, 7]).repeat_interleave(config.batch_size)

    def loss_fn(outputs):
        return -outputs.log_softmax(-1).gather(1, labels[:, None])[:, 0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = explainer.analyze(model, torch.from_numpy(x), target=[3, 7], noise=noise)
        b = explainer.analyze(model, torch.from_numpy(x), loss_fn=loss_fn, noise=noise)
        scalar = explainer.analyze(
            model,
            torch.from_numpy(x[:1]),
            loss_fn=lambda out: -out.log_softmax(-1)[:, 3].mean(),
            noise=noise[:, 0],
        )
        one = explainer.analyze(model, torch.from_numpy(x[:1]), target=3, noise=noise[:, 0])
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(scalar, one, rtol=1e-12)


def test_capacity_at_final_equals_reference(data):
    estimator_data, x = data
    ref, model = nn.tiny_cnn(0), tm.tiny_cnn(0)
    config = iba.Config(capacity_at="final", steps=4, beta=3.0)
    (est,) = fitted(ref, ["conv2"], "channels_first", estimator_data)
    features = ref.forward(x[:1], stop="conv2")[0]
    noise = iba.draw_noise(5, config.steps, config.batch_size, features.shape[1:])
    reference = iba.per_sample_bottleneck(
        features,
        statistics([est], config)[0],
        nn.classification_head(ref, "conv2", 6),
        noise,
        config,
    )
    explainer = IBA("conv2", config=config)
    explainer.estimators = [est]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = explainer.analyze(model, torch.from_numpy(x[:1]), target=6, noise=noise, details=True)
    assert got.alphas.shape == (5, 1, 6, 8, 8)
    assert_equal(got, reference)


def test_float32_close_to_reference(data):
    estimator_data, x = data
    ref, model = nn.tiny_cnn(0), tm.tiny_cnn(0, dtype=torch.float32)
    config = iba.Config(relu=True)
    (est,) = fitted(ref, ["relu2"], "channels_first", estimator_data)
    features = ref.forward(x, stop="relu2")[0]
    noise = iba.draw_noise(0, config.steps, config.batch_size, features.shape[1:], n_inputs=2)
    reference = iba.per_sample_bottleneck(
        features,
        statistics([est], config)[0],
        nn.classification_head(ref, "relu2", [3, 7]),
        noise,
        config,
    )
    explainer = IBA("relu2", relu=True)
    explainer.estimators = [est]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = explainer.analyze(
            model, torch.from_numpy(x), target=[3, 7], noise=noise, details=True
        )
    np.testing.assert_allclose(got.capacity, reference.capacity, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(
        got.heatmap.sum(),
        iba.heatmap(reference.capacity, "channels_first", (8, 8)).sum(),
        rtol=1e-4,
    )


def test_torch_adam_is_the_reference_adam():
    rng = np.random.default_rng(0)
    params = rng.standard_normal(20)
    alpha = torch.tensor(params, requires_grad=True)
    from iba_torch import _math

    optimizer = _math.adam([alpha], lr=1.0)
    state = iba.adam_init(params)
    for _ in range(12):
        grad = rng.standard_normal(20) * 10 ** rng.uniform(-6, 2)
        alpha.grad = torch.tensor(grad)
        optimizer.step()
        params, state = iba.adam_update(grad, state, params, 1.0)
    np.testing.assert_allclose(alpha.detach().numpy(), params, rtol=1e-13, atol=1e-13)


def test_seed_reproduces_and_varies(data):
    estimator_data, x = data
    model = tm.tiny_cnn(0)
    explainer = IBA("relu2", relu=True, steps=3)
    explainer.estimate(model, torch.from_numpy(estimator_data), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = explainer.analyze(model, torch.from_numpy(x[:1]), target=3, seed=1)
        b = explainer.analyze(model, torch.from_numpy(x[:1]), target=3, seed=1)
        c = explainer.analyze(model, torch.from_numpy(x[:1]), target=3, seed=2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-6
