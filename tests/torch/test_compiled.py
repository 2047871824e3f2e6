"""The compiled step (``IBA(compile=...)``, ``iba_torch._compiled``) gives the eager step's heatmaps
on identical noise, is reused across calls, leaves the model as it was, and falls back to the
eager step, with its reason, where it cannot compile.

The tiny CNN runs through inductor (the default backend) in float64 and float32. CoIBA and the
token layout run through the ``"aot_eager"`` backend: the same rewritten graph, dynamo capture
and AOTAutograd backward, without inductor's C++ build, which costs about a minute per graph on
a loaded 2-core machine."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch_models as tm

import iba
from conformance.tolerances import tolerance
from iba_torch import IBA, _compiled

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")
STEPS, BATCH = 10, 4


def normalised_difference(got: np.ndarray, want: np.ndarray) -> float:
    """The conformance suite's measure of a heatmap: ``|got - want|`` over ``want``'s maximum."""
    return float(np.abs(got - want).max() / np.abs(want).max())


def fitted(model, layers, data, **fields) -> list[iba.Estimator]:
    explainer = IBA(layers, compile=False, **fields)
    explainer.estimate(model, data, progress=False)
    return explainer.estimators


def noise_for(estimators, n: int):
    draws = [
        iba.draw_noise(7 + i, STEPS, BATCH, e.feature_shape, n_inputs=n)
        for i, e in enumerate(estimators)
    ]
    return draws if len(draws) > 1 else draws[0]


def both(model, layers, x, estimators, **kwargs):
    """The explanations of the eager and the compiled step on the same noise, and the compiled
    explainer."""
    out = []
    for mode in (False, True):
        explainer = IBA(layers, compile=mode, steps=STEPS, batch_size=BATCH, sigma=1.0)
        explainer.estimators = estimators
        noise = noise_for(estimators, len(x))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(explainer.analyze(model, x, noise=noise, details=True, **kwargs))
    return out[0], out[1], explainer


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "grads": [p.grad for p in model.parameters()],
        "attributes": [sorted(vars(m)) for m in model.modules()],
    }


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(_compiled, "BACKEND", "aot_eager")


@pytest.fixture(scope="module")
def cnn_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 1, 8, 8, generator=g, dtype=torch.float64)


@pytest.mark.slow  # inductor builds C++ for each dtype: 10-25 s on 2 cores
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cnn_compiled_equals_eager(cnn_data, dtype):
    torch_dtype = getattr(torch, dtype)
    model = tm.tiny_cnn(dtype=torch_dtype).train()  # analyze runs it in eval mode
    model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
    data = cnn_data.to(torch_dtype)
    estimators = fitted(model, "relu2", data)
    before = snapshot(model)
    eager, compiled, explainer = both(model, "relu2", data[:2], estimators, target=[1, 3])
    assert explainer.last_compiled, explainer.last_compile_reason
    assert explainer.last_compile_reason.startswith("compiled (verified against the eager step")
    difference = normalised_difference(compiled.heatmap, eager.heatmap)
    if dtype == "float64":
        assert difference < 1e-10
        np.testing.assert_allclose(compiled.alphas, eager.alphas, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(compiled.losses, eager.losses, rtol=1e-9)
    else:
        assert difference < tolerance("float32", "heatmap")
    after = snapshot(model)
    for key in before:
        if key == "state":
            assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])
        elif key == "grads":
            assert all(a is b for a, b in zip(before[key], after[key]))
        else:
            assert before[key] == after[key], key

    # the next call of the same shapes reuses the checked function: no new compile, same maps
    (split,) = [split for _, split, _ in explainer.engine.paths[model].values()]
    entries = dict(_compiled._CACHE[split])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = explainer.analyze(
            model, data[:2], target=[1, 3], noise=noise_for(estimators, 2), details=True
        )
    assert explainer.last_compile_reason == "compiled (verified earlier)"
    assert _compiled._CACHE[split] == entries
    # (the first call's first step was the eager one, which checked the compiled step)
    assert normalised_difference(again.heatmap, compiled.heatmap) < (
        1e-10 if dtype == "float64" else tolerance("float32", "heatmap")
    )


def test_coiba_two_targets_compiled_equals_eager(cnn_data, aot_eager):
    model = tm.tiny_cnn()
    layers = ["relu1", "relu2"]
    estimators = fitted(model, layers, cnn_data)
    eager, compiled, explainer = both(model, layers, cnn_data[:2], estimators, target=[0, 4])
    assert explainer.last_compiled, explainer.last_compile_reason
    assert compiled.alpha.shape == (2, 1, 8, 8)  # one alpha over channels and layers
    assert normalised_difference(compiled.heatmap, eager.heatmap) < 1e-10
    np.testing.assert_allclose(compiled.losses, eager.losses, rtol=1e-9)


def test_tokens_with_a_loss_fn_compiled_equals_eager(aot_eager):
    model = tm.tiny_vit(depth=2)
    g = torch.Generator().manual_seed(1)
    data = torch.randn(48, 1, 8, 8, generator=g, dtype=torch.float64)
    estimators = fitted(model, "blocks.0.norm1", data)
    assert estimators[0].layout == "tokens"
    mask = np.ones((2, 17))
    mask[1, 12:] = 0  # the second input's last tokens are padding

    def loss_fn(logits):  # the user's loss runs eagerly on the compiled outputs
        return -logits[:, 2]

    eager, compiled, explainer = both(
        model, "blocks.0.norm1", data[:2], estimators, loss_fn=loss_fn, token_mask=mask
    )
    assert explainer.last_compiled, explainer.last_compile_reason
    assert compiled.heatmap.shape == (2, 17)
    assert np.all(compiled.capacity[1, 12:] == 0)
    assert normalised_difference(compiled.heatmap, eager.heatmap) < 1e-10


def test_a_later_target_with_its_own_hook_runs_eager(cnn_data, aot_eager):
    model = tm.tiny_cnn()
    layers = ["relu1", "relu2"]
    estimators = fitted(model, layers, cnn_data)
    handle = model.relu2.register_forward_hook(lambda m, args, out: out * 0.5)
    try:  # the eager path runs the user's hook; the compiled graph would skip it
        eager, compiled, explainer = both(model, layers, cnn_data[:2], estimators, target=[0, 4])
    finally:
        handle.remove()
    assert not explainer.last_compiled
    assert "the target 'relu2' has hooks of its own" in explainer.last_compile_reason
    np.testing.assert_array_equal(compiled.heatmap, eager.heatmap)


def _python_branch(h):
    """A Python branch on a value: a leaf for ``torch.fx``, a graph break for ``torch.compile``."""
    return h * (1.0 if float(h.sum()) > -1e9 else 2.0)


torch.fx.wrap("_python_branch")


class PythonBranch(torch.nn.Module):
    """A tail that ``torch.fx`` splits but ``torch.compile(fullgraph=True)`` refuses."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3, padding=1).double()
        self.act = torch.nn.ReLU()
        self.head = torch.nn.Linear(3 * 8 * 8, 5).double()

    def forward(self, x):
        return self.head(_python_branch(self.act(self.conv(x))).flatten(1))


def test_a_model_that_cannot_compile_runs_eager(cnn_data, aot_eager):
    torch.manual_seed(0)
    model = PythonBranch()
    estimators = fitted(model, "act", cnn_data)
    eager, compiled, explainer = both(model, "act", cnn_data[:2], estimators, target=[0, 1])
    assert (explainer.last_path, explainer.last_compiled) == ("fx", False)
    assert explainer.last_compile_reason.startswith("torch.compile failed")
    np.testing.assert_array_equal(compiled.heatmap, eager.heatmap)


def test_other_paths_and_auto_run_eager(cnn_data):
    model = tm.tiny_cnn()
    estimators = fitted(model, "relu2", cnn_data)
    explainer = IBA("relu2", strategy="plain", compile=True, steps=2, batch_size=2)
    explainer.estimators = estimators
    explainer.analyze(model, cnn_data[:1], target=1)
    assert not explainer.last_compiled
    assert "needs the fx split" in explainer.last_compile_reason
    explainer.strategy, explainer.compile = "auto", "auto"  # the compile costs more than it saves
    explainer.analyze(model, cnn_data[:1], target=1)
    assert (explainer.last_path, explainer.last_compiled) == ("fx", False)
    assert explainer.last_compile_reason.startswith("compile='auto' stays eager on cpu")


@pytest.mark.parametrize("value", ["yes", "eager", None, 1.5])
def test_the_option_is_checked(value):
    with pytest.raises(ValueError, match=r"compile must be 'auto', True or False, got"):
        IBA("relu2", compile=value)
    explainer = IBA("relu2")
    with pytest.raises(ValueError, match="compile must be"):
        explainer.compile = value
    assert explainer.compile == "auto"
