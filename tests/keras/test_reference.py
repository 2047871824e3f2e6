"""Every Keras backend against the NumPy reference on identical noise (float64: 1e-8 relative)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import float64, nhwc, reference_statistics
from keras_models import tiny_cnn, tiny_vit

import iba
import iba_tf
from iba import nn

RTOL = 1e-8


@pytest.fixture(scope="module", autouse=True)
def f64():
    """Every test of this module runs in float64 (one switch: fewer JAX compilations)."""
    with float64():
        yield


@pytest.fixture(scope="module")
def cnn():
    """The tiny CNN with an IBALayer after relu1 and after relu2 (each identity unless targeted)."""
    net = nn.tiny_cnn(0)
    return (net, *tiny_cnn(net, targets=("relu1", "relu2")))


def assert_close(got, want, rtol=RTOL):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= rtol * scale, np.abs(got - want).max() / scale


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_iba_equals_reference(cnn, tiny_data, data_format):
    tiny_net = cnn[0]
    data, x = tiny_data
    config = iba.Config(relu=True)
    (stats,) = reference_statistics(tiny_net, data, ["relu2"])
    features = tiny_net.forward(x, stop="relu2")[0]
    noise = iba.draw_noise(0, config.steps, config.batch_size, features.shape[1:], n_inputs=2)
    head = nn.classification_head(tiny_net, "relu2", np.array([3, 7]))
    want = iba.per_sample_bottleneck(features, stats, head, noise, config)

    if data_format == "channels_last":
        _, model, layers = cnn
    else:
        model, layers = tiny_cnn(tiny_net, data_format=data_format)
    explainer = iba_tf.IBA(layers["relu2"], relu=True)
    explainer.estimate(model, nhwc(data), progress=False)
    last = data_format == "channels_last"
    got = explainer.analyze(
        model, nhwc(x), target=[3, 7], noise=nhwc(noise) if last else noise, details=True
    )
    convert = nhwc if last else (lambda a: a)
    assert_close(got.capacity, convert(want.capacity))
    assert_close(got.alphas, convert(want.alphas))
    assert_close(got.lam, convert(want.lam))
    assert_close(got.losses, want.losses)
    assert_close(got.heatmap, iba.heatmap(want.capacity, "channels_first", (8, 8)))
    assert got.heatmap.shape == (2, 8, 8)


def test_estimator_equals_reference(cnn, tiny_data):
    data, _ = tiny_data
    tiny_net, model, layers = cnn
    (est,) = iba_tf.IBA(layers["relu2"]).estimate(model, nhwc(data), progress=False)
    want = iba.Estimator(layout="channels_first")
    want.update(tiny_net.forward(data, stop="relu2")[0])
    assert est.n_samples == 1200 and est.layout == "channels_last"
    assert_close(est.mean, nhwc(want.mean), 1e-12)
    assert_close(est.std, nhwc(want.std), 1e-12)
    np.testing.assert_array_equal(est.nonzero_fraction, nhwc(want.nonzero_fraction))


def test_capacity_after_all_updates_and_single_input(cnn, tiny_data):
    data, x = tiny_data
    tiny_net, model, layers = cnn
    config = iba.Config(capacity_at="final", steps=4, batch_size=3)
    (stats,) = reference_statistics(tiny_net, data, ["relu2"])
    features = tiny_net.forward(x[:1], stop="relu2")[0]
    noise = iba.draw_noise(5, config.steps, config.batch_size, features.shape[1:])  # (S, B, *F)
    head = nn.classification_head(tiny_net, "relu2", 4)
    want = iba.per_sample_bottleneck(features, stats, head, noise, config)
    explainer = iba_tf.IBA(layers["relu2"], config=config)
    explainer.estimate(model, nhwc(data), progress=False)
    got = explainer.analyze(model, nhwc(x[:1]), target=4, noise=nhwc(noise), details=True)
    assert got.alphas.shape == (5, 1, 8, 8, 6)
    assert_close(got.capacity, nhwc(want.capacity))


def test_coiba_equals_reference_with_segments(cnn, tiny_data):
    """CoIBA on relu1 and relu2: one alpha (H, W, 1) shared over channels and both layers."""
    data, x = tiny_data
    tiny_net, model, layers = cnn
    targets = ["relu1", "relu2"]
    config = iba.coiba_config(sigma=1.0)
    stats = reference_statistics(tiny_net, data, targets)
    features = tiny_net.forward(x, stop="relu1")[0]
    noise = [
        iba.draw_noise(i, config.steps, config.batch_size, s.mean.shape, n_inputs=2)
        for i, s in enumerate(stats)
    ]
    head = nn.classification_head(tiny_net, "relu2", np.array([1, 5]))
    segments = [nn.segment(tiny_net, "relu1", "relu2")]
    want = iba.per_sample_bottleneck(features, stats, head, noise, config, segments=segments)

    explainer = iba_tf.IBA([layers[t] for t in targets], sigma=1.0)
    assert explainer.config == config
    explainer.estimate(model, nhwc(data), progress=False)
    got = explainer.analyze(
        model, nhwc(x), target=[1, 5], noise=[nhwc(n) for n in noise], details=True
    )
    assert got.alpha.shape == (2, 8, 8, 1)
    assert_close(got.alphas, nhwc(want.alphas))
    assert_close(got.capacity, nhwc(want.capacity))
    assert_close(got.losses, want.losses)


def test_coiba_on_a_vit_equals_reference():
    """CoIBA on blocks.0.norm1 and blocks.1.norm1 of a ViT: the residual stream runs past both
    bottlenecks, so the whole model runs on the noised copies."""
    vit = nn.tiny_vit(1, depth=2)
    targets = ["blocks.0.norm1", "blocks.1.norm1"]
    rng = np.random.default_rng(12)
    data, x = rng.standard_normal((64, 1, 8, 8)), rng.standard_normal((2, 1, 8, 8))
    stats = []
    for feats in nn.capture(vit, data, targets):
        est = iba.Estimator(layout="tokens")
        est.update(feats)
        stats.append(iba.Statistics(est.mean, np.maximum(est.std, 0.01), est.active()))
    config = iba.coiba_config(batch_size=3, steps=6)
    noise = [iba.draw_noise(i, config.steps, 3, (17, 16), n_inputs=2) for i in range(2)]
    features = nn.capture(vit, x, targets[:1])[0]
    run = nn.classifier(vit, x, [1, 4], targets)
    want = iba.per_sample_bottleneck(
        features, stats, None, noise, config, layout="tokens", model=run
    )

    model, layers = tiny_vit(vit, tuple(targets))
    np.testing.assert_allclose(
        np.asarray(model.predict(nhwc(x), verbose=0)), vit(x), rtol=1e-10, atol=1e-12
    )
    explainer = iba_tf.IBA([layers[t] for t in targets], batch_size=3, steps=6)
    with pytest.warns(UserWarning, match="only 64 samples"):
        explainer.estimate(model, nhwc(data), progress=False)
        got = explainer.analyze(model, nhwc(x), target=[1, 4], noise=noise, details=True)
    # no cut: the residual stream passes the layers
    assert explainer.engine.plan(model).head is None
    assert got.alpha.shape == (2, 17, 1) and got.heatmap.shape == (2, 17)
    assert_close(got.alphas, want.alphas)
    assert_close(got.capacity, want.capacity)
    assert_close(got.heatmap, iba.heatmap(want.capacity, "tokens"))
    maps = iba.vit_heatmap(got.capacity, grid=(4, 4), input_size=(8, 8))
    assert maps.shape == (2, 8, 8) and maps.max() == 1.0
