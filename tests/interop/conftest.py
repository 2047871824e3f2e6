"""Session fixtures of the interop tests (``nox -s interop``): a small CNN built here, its data
and one estimated ``iba_torch.IBA``. Captum and Quantus are needed (the ``interop`` extra).

The CNN is float64 (so IBA's maps, Captum's attributions and Quantus' arrays compare exactly),
random (the metrics need no trained model: every check compares with the library's own maps),
and small: 3x16x16 inputs, the bottleneck after the second ReLU (8x16x16 features).

This folder is a package (``__init__.py``): its modules do not clash with other folders' when
several run in one pytest call.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")
pytest.importorskip("quantus")

from iba_torch import IBA  # noqa: E402

CONFIG = {"steps": 4, "batch_size": 3}  # small: 3 updates per analyze
LAYER = "4"  # the second ReLU of cnn()
N_DATA = 96


def cnn() -> torch.nn.Module:
    """Conv-ReLU-Conv-BatchNorm-ReLU-pool-Linear, 3x16x16 inputs, 5 classes, float64, seeded."""
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 5),
    ).double()


@pytest.fixture(scope="session")
def model():
    """The CNN, in eval mode (the tests that check state put it in train mode themselves)."""
    return cnn().eval()


@pytest.fixture(scope="session")
def data():
    """``N_DATA`` float64 estimation inputs."""
    return torch.randn(N_DATA, 3, 16, 16, generator=torch.Generator().manual_seed(1)).double()


@pytest.fixture(scope="session")
def x():
    """Four inputs to explain, and their classes."""
    inputs = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)).double()
    return inputs, torch.tensor([0, 3, 1, 4])


@pytest.fixture(scope="session")
def explainer(model, data):
    """``iba_torch.IBA`` at ``LAYER``, estimated on ``data``."""
    ib = IBA(LAYER, **CONFIG)
    with warnings.catch_warnings():  # the few-samples warning
        warnings.simplefilter("ignore")
        ib.estimate(model, data, progress=False)
    return ib


@pytest.fixture(scope="session")
def heatmaps(model, x, explainer):
    """``explainer.analyze`` of the four inputs, default noise: ``(4, 16, 16)`` float64."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return explainer.analyze(model, x[0], target=x[1])


def snapshot(model: torch.nn.Module) -> dict:
    """What an explanation must leave as it was: weights and buffers, modes, ``requires_grad``,
    gradients and hooks."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key in before["state"]:
        assert torch.equal(before["state"][key], after["state"][key]), key
    for key in ("training", "requires_grad", "hooks"):
        assert before[key] == after[key], key
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)


def pytest_collection_modifyitems(items):
    """The small estimation sets here are on purpose: no few-samples warning."""
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore:the estimator has seen only"))
