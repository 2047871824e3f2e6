"""Errors name the problem and what to do."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch_models as tm

import iba
from iba_torch import IBA


@pytest.fixture(scope="module")
def cnn():
    model = tm.tiny_cnn(0)
    data = torch.randn(
        1100, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    explainer = IBA("relu2", relu=True, steps=3)
    explainer.estimate(model, data, progress=False)
    return model, explainer, data


def test_unknown_layer_lists_the_available_names(cnn):
    model, _, data = cnn
    with pytest.raises(ValueError, match=r"layer 'relu9' not found.*'conv1', 'relu1', 'conv2'"):
        IBA("relu9").estimate(model, data, progress=False)
    with pytest.raises(ValueError, match="not part of the model"):
        IBA(torch.nn.ReLU()).estimate(model, data, progress=False)
    with pytest.raises(TypeError, match="dotted name"):
        IBA(3)


def test_bad_config_keyword_and_value():
    with pytest.raises(TypeError, match="IBA config keywords are: beta, steps"):
        IBA("relu2", betta=3)
    with pytest.raises(ValueError, match="Config.beta must be >= 0"):
        IBA("relu2", beta=-1)
    with pytest.raises(ValueError, match="strategy must be one of"):
        IBA("relu2", strategy="fast")


def test_analyze_before_estimate(cnn):
    model, _, data = cnn
    with pytest.raises(RuntimeError, match=r"call estimate\(model, data\) or load_estimators"):
        IBA("relu2").analyze(model, data[:1], target=0)


def test_loaded_estimator_of_another_shape(cnn, tmp_path):
    model, explainer, data = cnn
    path = tmp_path / "est.npz"
    explainer.save_estimators(path)
    other = IBA("relu3")
    other.load_estimators(path)
    with pytest.raises(
        ValueError,
        match=r"'relu3'.*fitted on features of shape \(6, 8, 8\).*\(8, 4, 4\).*estimate again",
    ):
        other.analyze(model, data[:1], target=0)
    with pytest.raises(ValueError, match="holds 1 estimator"):
        IBA(["relu1", "relu2"]).load_estimators(path)


def test_save_load_round_trip(cnn, tmp_path):
    model, explainer, data = cnn
    path = tmp_path / "est.npz"
    explainer.save_estimators(path)
    loaded = IBA("relu2", relu=True, steps=3)
    loaded.load_estimators(path)
    np.testing.assert_array_equal(loaded.estimators[0].mean, explainer.estimators[0].mean)
    assert loaded.estimators[0].n_samples == 1100
    a = explainer.analyze(model, data[:1], target=2, seed=0)
    b = loaded.analyze(model, data[:1], target=2, seed=0)
    np.testing.assert_array_equal(a, b)


def test_nan_inputs(cnn):
    model, explainer, data = cnn
    x = data[:2].clone()
    x[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite value"):
        explainer.analyze(model, x, target=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        IBA("relu2").estimate(model, x, progress=False)


def test_arguments(cnn):
    model, explainer, data = cnn
    x = data[:2]
    with pytest.raises(ValueError, match="exactly one of target="):
        explainer.analyze(model, x)
    with pytest.raises(ValueError, match="exactly one of target="):
        explainer.analyze(model, x, target=1, loss_fn=lambda o: o.sum())
    with pytest.raises(ValueError, match="noise= or seed="):
        explainer.analyze(model, x, target=1, seed=0, noise=np.zeros(1))
    with pytest.raises(ValueError, match="target has shape"):
        explainer.analyze(model, x, target=[1, 2, 3])
    with pytest.raises(ValueError, match="out of range for 10 model outputs"):
        explainer.analyze(model, x, target=10)
    with pytest.raises(TypeError, match="target must be an int"):
        explainer.analyze(model, x, target=1.5)
    with pytest.raises(ValueError, match="loss_fn must return one loss per row"):
        explainer.analyze(model, x, loss_fn=lambda o: o.sum())
    noise = iba.draw_noise(0, 3, 10, (6, 8, 8))  # for one input, given two
    with pytest.raises(ValueError, match=r"noise of shape .* expected \(3, 2, 10, 6, 8, 8\)"):
        explainer.analyze(model, x, target=1, noise=noise)
    with pytest.raises(ValueError, match="n_samples must be a positive int"):
        explainer.estimate(model, data, n_samples=0)
    fresh = IBA("relu2", relu=True)
    fresh.estimators = explainer.estimators
    with pytest.raises(RuntimeError, match="no alpha yet"):
        with fresh.restrict_flow(model):
            pass


def test_targets_out_of_order_and_twice(cnn):
    model, _, data = cnn
    with pytest.raises(ValueError, match="in the order the forward pass reaches them"):
        IBA(["relu2", "relu1"]).estimate(model, data, progress=False)
    shared = torch.nn.ReLU()
    twice = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), shared, shared).double()
    explainer = IBA(shared, steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(twice, data[:50], progress=False)
    with pytest.raises(RuntimeError, match="ran twice in one forward pass"):
        explainer.analyze(twice, data[:1], loss_fn=lambda o: o.flatten(1).sum(1))


def test_estimate_stops_after_the_last_target():
    class Stop(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the forward pass went past the last target")

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), Stop())
    explainer = IBA("1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(model, torch.randn(40, 1, 6, 6), n_samples=25, progress=False)
    assert explainer.estimators[0].n_samples == 25
    assert explainer.estimators[0].feature_shape == (2, 4, 4)
