"""The model is left exactly as it was: weights, requires_grad, train/eval mode, hooks, grads.

The PyTorch-specific cases: batch norm and dropout in training mode, each strategy, restrict_flow,
devices and dtypes. tests/contract checks the same after estimate, after an exception in the loss
and after one in the forward pass at a later step, on every backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch_models as tm

from iba_torch import IBA, _model


class Net(torch.nn.Module):
    """A CNN with dropout and batch norm, whose modes matter."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.act = torch.nn.ReLU()
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.drop(self.act(self.bn(self.conv(x)))).flatten(1))


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grad": {
            k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()
        },
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {
            k: (
                list(m._forward_hooks),
                list(m._forward_pre_hooks),
                list(m._backward_hooks),
                list(getattr(m, "_backward_pre_hooks", {})),
            )
            for k, m in model.named_modules()
        },
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    for k, g in before["grad"].items():
        other = after["grad"][k]
        assert (g is None and other is None) or torch.equal(g, other), k


@pytest.fixture
def prepared():
    torch.manual_seed(0)
    model = Net().double()
    model.train()  # a model in training mode, with mixed flags, a grad and a user hook
    model.fc.weight.requires_grad_(False)
    model.conv.weight.grad = torch.ones_like(model.conv.weight)
    seen = []
    model.act.register_forward_hook(lambda m, a, o: seen.append(o.shape[0]))
    data = torch.randn(300, 1, 8, 8, dtype=torch.float64)
    explainer = IBA("act", relu=True, steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(model, data, progress=False)
    return model, explainer, data, seen


@pytest.mark.parametrize("strategy", ["auto", "plain"])
def test_analyze_leaves_the_model_as_it_was(prepared, strategy):
    model, explainer, data, seen = prepared
    explainer.strategy = strategy
    before = snapshot(model)
    modes = []

    def loss_fn(outputs):
        modes.append([m.training for m in model.modules()])
        return -outputs.log_softmax(-1)[:, 1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = explainer.analyze(model, data[:2], loss_fn=loss_fn, seed=0)
    assert maps.shape == (2, 8, 8) and np.isfinite(maps).all()
    assert modes and not any(any(m) for m in modes)  # analysis ran in eval mode
    assert_same(before, snapshot(model))
    assert seen  # the user's hook stayed and ran


def test_exception_in_loss_on_the_plain_path(prepared):
    """The plain path (tests/contract: the default one); no hook outlives the exception."""
    model, explainer, data, _ = prepared
    explainer.strategy = "plain"
    before = snapshot(model)

    def failing(outputs):
        raise KeyError("boom inside the loss")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KeyError, match="boom"):
            explainer.analyze(model, data[:1], loss_fn=failing)
    assert_same(before, snapshot(model))
    assert explainer.engine.handles == []
    # the explainer still works afterwards
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert explainer.analyze(model, data[:1], target=0, seed=0).shape == (1, 8, 8)
    assert_same(before, snapshot(model))


def test_restrict_flow_and_remove_hooks(prepared):
    model, explainer, data, _ = prepared
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.analyze(model, data[:1], target=0, seed=0)
        before = snapshot(model)
        with torch.no_grad():
            clean = model(data[:1])
            with explainer.restrict_flow(model, seed=0) as lam:
                assert lam.shape == (1, 4, 8, 8)
                noised = model(data[:1])
                noised_again = model(data[:1])
                assert len(model.act._forward_hooks) == len(before["hooks"]["act"][0]) + 1
            after = model(data[:1])
    assert not torch.allclose(clean, noised)
    assert not torch.equal(noised, noised_again)  # fresh noise on every call
    assert torch.equal(clean, after)
    assert_same(before, snapshot(model))

    # alpha = +inf passes everything: the model's own outputs
    with torch.no_grad(), explainer.restrict_flow(model, alpha=torch.full((1, 4, 8, 8), 40.0)):
        np.testing.assert_allclose(model(data[:1]), clean, rtol=1e-6, atol=1e-6)

    # remove_hooks() cleans up a block that was never closed
    block = explainer.restrict_flow(model)
    block.__enter__()
    assert len(model.act._forward_hooks) == len(before["hooks"]["act"][0]) + 1
    explainer.remove_hooks()
    assert_same(before, snapshot(model))


def test_cuda_or_cpu_device_and_float32(prepared):
    model, explainer, data, _ = prepared
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.float().to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = explainer.analyze(model, data[:2], target=[0, 1], seed=0, details=True)
    assert maps.capacity.dtype == np.float64 and maps.heatmap.shape == (2, 8, 8)
    assert explainer.alpha.dtype == torch.float32 and explainer.alpha.device.type == device


def test_fx_split_of_a_model_that_reads_its_batch_size():
    """EfficientNet's pattern: ``bs = x.size(0)`` ... ``x.view(bs, -1)``, and a skip connection
    that crosses the cut; the expand path fails there and falls back to the plain one."""
    torch.manual_seed(0)
    model = tm.BatchSizeCNN().double().eval()
    data = torch.randn(300, 1, 8, 8, dtype=torch.float64)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    results = {}
    for strategy in ("auto", "expand", "plain"):
        explainer = IBA("act", strategy=strategy, relu=True, steps=4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explainer.estimate(model, data, progress=False)
            results[strategy] = explainer.analyze(model, x, target=[1, 2], seed=3)
        results[strategy + "-path"] = explainer.last_path
    assert results["auto-path"] == "fx"
    assert results["expand-path"] == "plain"  # verified and refused
    np.testing.assert_allclose(results["auto"], results["plain"], rtol=1e-10)
    np.testing.assert_allclose(results["expand"], results["plain"], rtol=1e-10)


class TwoConvs(torch.nn.Module):
    """Two convolutions (4 input channels in the second: its kernel's strides show the layout)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(4, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.conv2(self.act(self.conv1(x))).mean((2, 3)))


@pytest.mark.parametrize("fails", [False, True])
def test_float32_convolutions_run_channels_last_and_get_their_own_weights_back(fails):
    """On the CPU in float32 the convolutions run channels-last during estimate and analyze
    (docs/performance.md), and every weight is its very tensor again afterwards: the same
    storage, strides and values, also after an exception in the loss."""
    torch.manual_seed(0)
    model = TwoConvs()
    layouts = []
    model.conv2.register_forward_pre_hook(
        lambda m, args: layouts.append(
            (m.weight.is_contiguous(), m.weight.is_contiguous(memory_format=torch.channels_last))
        )
    )
    before = {k: (t.data_ptr(), t.stride(), t.clone()) for k, t in model.state_dict().items()}
    explainer = IBA("act", steps=2, batch_size=2)
    data = torch.randn(40, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(model, data, progress=False)

    def loss_fn(outputs):
        raise ValueError("the user's loss failed")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 40 samples for the statistics
        if fails:
            with pytest.raises(ValueError, match="the user's loss failed"):
                explainer.analyze(model, data[:2], loss_fn=loss_fn)
        else:
            maps = explainer.analyze(model, data[:2], target=0, progress=False)
            assert maps.shape == (2, 8, 8) and np.all(np.isfinite(maps))
    assert layouts and all(layout == (False, True) for layout in layouts), layouts
    after = model.state_dict()
    for k, (ptr, stride, values) in before.items():
        assert after[k].data_ptr() == ptr and after[k].stride() == stride, k
        assert torch.equal(after[k], values), k
    layouts.clear()
    model(data[:1])  # the user's own call: the default layout, as before
    assert layouts == [(True, False)]


def test_float64_and_models_without_convolutions_keep_their_layout():
    model = TwoConvs().double()
    with _model.channels_last(model) as changed:
        assert not changed and model.conv2.weight.is_contiguous()
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with _model.channels_last(mlp) as changed:
        assert not changed
