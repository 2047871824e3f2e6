"""Errors name the problem and what to do: the PyTorch-specific ones (the errors every backend
shares are in tests/contract)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch_models as tm

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


def test_targets_that_are_not_modules_of_the_model(cnn):
    model, _, data = cnn
    with pytest.raises(ValueError, match="not part of the model"):
        IBA(torch.nn.ReLU()).estimate(model, data, progress=False)
    with pytest.raises(TypeError, match="dotted name"):
        IBA(3)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy must be one of"):
        IBA("relu2", strategy="fast")


def test_nan_inputs(cnn):
    model, explainer, data = cnn
    x = data[:2].clone()
    x[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite value"):
        explainer.analyze(model, x, target=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        IBA("relu2").estimate(model, x, progress=False)


def test_restrict_flow_before_analyze(cnn):
    model, explainer, _ = cnn
    fresh = IBA("relu2", relu=True)
    fresh.estimators = explainer.estimators
    with pytest.raises(RuntimeError, match="no alpha yet"):
        with fresh.restrict_flow(model):
            pass


def test_analyze_inside_restrict_flow_and_inside_analyze(cnn):
    model, explainer, data = cnn
    explainer.analyze(model, data[:1], target=0)
    with explainer.restrict_flow(model):
        with pytest.raises(RuntimeError, match=r"analyze\(\) inside restrict_flow\(\)"):
            explainer.analyze(model, data[:1], target=0)

    # what another thread's analyze() meets while this one runs its forward pass (the targets'
    # hooks active): the explainer is taken, not "inside restrict_flow()"
    last = list(model.children())[-1]
    handle = last.register_forward_hook(
        lambda module, args, out: explainer.analyze(model, data[:1], target=0)
    )
    try:
        with pytest.raises(RuntimeError, match=r"running analyze\(\) already.*one explainer"):
            explainer.analyze(model, data[:1], target=0)
    finally:
        handle.remove()
    explainer.analyze(model, data[:1], target=0)  # free again after both


def test_a_target_that_runs_twice(cnn):
    _, _, data = cnn
    shared = torch.nn.ReLU()
    twice = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), shared, shared).double()
    explainer = IBA(shared, steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(twice, data[:50], progress=False)
    with pytest.raises(RuntimeError, match="ran twice in one forward pass"):
        explainer.analyze(twice, data[:1], loss_fn=lambda o: o.flatten(1).sum(1))
