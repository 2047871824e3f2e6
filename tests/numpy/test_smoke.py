"""A whole optimisation on the tiny NumPy model runs and lowers the loss."""

import warnings

import numpy as np

import iba
from iba import nn


def test_optimisation_lowers_the_loss():
    model = nn.tiny_cnn(0)
    rng = np.random.default_rng(0)
    est = iba.Estimator(layout="channels_first")
    est.update(model.forward(rng.standard_normal((1200, 1, 8, 8)), stop="relu2")[0])
    config = iba.Config(relu=True)
    x = rng.standard_normal((2, 1, 8, 8))
    features = model.forward(x, stop="relu2")[0]
    noise = iba.draw_noise(0, config.steps, config.batch_size, features.shape[1:], n_inputs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = est.statistics()
    ex = iba.per_sample_bottleneck(
        features, stats, nn.classification_head(model, "relu2", np.array([3, 7])), noise, config
    )
    assert ex.losses.shape == (9, 2)
    assert np.all(ex.losses[-1] < 0.5 * ex.losses[0])
    assert ex.capacity.shape == features.shape
