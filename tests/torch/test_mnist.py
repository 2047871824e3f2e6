"""On a trained MNIST CNN, the digit's pixels receive more bits than the empty background."""

from __future__ import annotations

import numpy as np
import torch

from iba_torch import IBA


def test_digit_pixels_get_more_bits_than_background(mnist, mnist_cnn, mnist_explainer):
    _, _, tx, ty = mnist
    x, y = tx[:8], ty[:8]
    explanation = mnist_explainer.analyze(mnist_cnn, x, target=y, seed=0, details=True)
    maps = explanation.heatmap
    assert maps.shape == (8, 28, 28)
    assert np.all(maps >= 0) and np.all(np.isfinite(maps))
    images = x[:, 0].numpy()
    digit = images > 0.5
    near = torch.nn.functional.max_pool2d(torch.as_tensor(images > 0).float(), 7, 1, 3) > 0
    background = ~near.numpy()  # empty pixels at least 4 pixels away from the digit
    ratios = [maps[i][digit[i]].mean() / maps[i][background[i]].mean() for i in range(8)]
    assert min(ratios) > 1.5, ratios
    assert np.median(ratios) > 2.5, ratios
    # the optimisation lowered the loss of every input
    assert np.all(explanation.losses[-1] < explanation.losses[0])
    assert mnist_explainer.last_path == "fx"


def test_batch_equals_single_calls_on_mnist(mnist, mnist_cnn, mnist_explainer):
    _, _, tx, ty = mnist
    import iba

    config = mnist_explainer.config
    noise = iba.draw_noise(7, config.steps, config.batch_size, (32, 14, 14), n_inputs=3)
    both = mnist_explainer.analyze(mnist_cnn, tx[:3], target=ty[:3], noise=noise)
    for i in range(3):
        one = mnist_explainer.analyze(mnist_cnn, tx[i : i + 1], target=ty[i], noise=noise[:, i])
        np.testing.assert_allclose(one[0], both[i], rtol=2e-4, atol=1e-6)


def test_restricted_flow_is_between_the_clean_and_the_closed_model(
    mnist, mnist_cnn, mnist_explainer
):
    _, _, tx, ty = mnist
    x, y = tx[8:12], ty[8:12]
    mnist_explainer.analyze(mnist_cnn, x, target=y, seed=1)
    rows, labels = x.repeat_interleave(20, dim=0), y.repeat_interleave(20)  # input-major

    def loss(alpha=None):
        with torch.no_grad(), mnist_explainer.restrict_flow(mnist_cnn, alpha=alpha, seed=0):
            return torch.nn.functional.cross_entropy(mnist_cnn(rows), labels).item()

    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(mnist_cnn(rows), labels).item()
    closed = loss(torch.full_like(mnist_explainer.alpha, -10.0))  # nothing passes
    assert clean < loss() < closed


def test_estimate_from_a_generator_with_n_samples(mnist, mnist_cnn, tmp_path):
    x, y, _, _ = mnist
    explainer = IBA(mnist_cnn.features[4], relu=True)
    batches = ((x[i : i + 300], y[i : i + 300]) for i in range(0, 3000, 300))
    explainer.estimate(mnist_cnn, batches, n_samples=1000, progress=True)
    est = explainer.estimators[0]
    assert est.n_samples == 1000 and est.feature_shape == (32, 14, 14)
    with torch.no_grad():
        features = mnist_cnn.features[:5](x[:1000]).double().numpy()
    np.testing.assert_allclose(est.mean, features.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.std, features.std(0, ddof=1), rtol=1e-4, atol=1e-5)
