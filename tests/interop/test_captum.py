"""``iba_torch.captum.IBA``: Captum's attribution API around ``iba_torch.IBA``.

The attribution is ``iba_torch.IBA``'s heatmap on every channel, exactly (float64 model);
``NoiseTunnel`` averages the heatmaps of the noisy copies it draws (reproduced here from the same
global-generator draws); ``visualize_image_attr`` shows the heatmap; bad arguments raise naming
the problem and leave the model as it was.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from captum.attr import Attribution, NoiseTunnel
from captum.attr import visualization as viz

import iba
from iba_torch import IBA as TorchIBA
from iba_torch.captum import IBA

from .conftest import CONFIG, LAYER, assert_same, cnn, snapshot

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[2]  # the repository: the subprocess imports its source


@pytest.fixture(scope="session")
def ib(model, explainer):
    return IBA(model, explainer=explainer)


def test_it_is_a_captum_attribution(ib, explainer):
    assert isinstance(ib, Attribution)
    assert ib.explainer is explainer
    assert not ib.has_convergence_delta() and not ib.multiplies_by_inputs
    assert IBA.get_name() == "I B A"  # Captum's readable name of the class


def test_attribution_is_the_heatmap_on_every_channel(ib, model, x, explainer, heatmaps):
    inputs, labels = x
    attr = ib.attribute(inputs, target=labels)
    assert attr.shape == inputs.shape and attr.dtype == torch.float64
    for c in range(inputs.shape[1]):
        np.testing.assert_array_equal(attr[:, c].numpy(), heatmaps)
    assert float(attr.min()) >= 0.0 and float(attr.max()) > 0.0  # bits
    # the same with a list or an int target, and a 1-tuple of inputs gives a 1-tuple
    np.testing.assert_array_equal(ib.attribute(inputs, target=labels.tolist()).numpy(), attr)
    (one,) = ib.attribute((inputs[:1],), target=int(labels[0]))
    alone = explainer.analyze(model, inputs[:1], target=int(labels[0]))  # its own noise draws
    np.testing.assert_array_equal(one[:, 1].numpy(), alone)


def test_seed_is_the_explainers(ib, model, x, explainer):
    inputs, labels = x
    attr = ib.attribute(inputs[:2], target=labels[:2], seed=5)
    expected = explainer.analyze(model, inputs[:2], target=labels[:2], seed=5)
    np.testing.assert_array_equal(attr[:, 0].numpy(), expected)
    assert not np.array_equal(attr[:, 0].numpy(), ib.attribute(inputs[:2], target=labels[:2])[:, 0])


def test_float32_inputs_give_float32_attributions(model, data, x):
    model32 = cnn().eval().float()
    ib32 = IBA(model32, LAYER, data=data.float(), **CONFIG)
    inputs, labels = x
    attr = ib32.attribute(inputs[:2].float(), target=labels[:2])
    assert attr.dtype == torch.float32 and attr.shape == (2, 3, 16, 16)
    expected = ib32.explainer.analyze(model32, inputs[:2].float(), target=labels[:2])
    np.testing.assert_allclose(attr[:, 2].numpy(), expected, rtol=1e-6)


def test_fitting_from_data_equals_the_fitted_explainer(model, data, x, heatmaps):
    """``IBA(model, layer, data=...)`` fits the same estimator as ``iba_torch.IBA.estimate``
    (a module object as the layer, as Captum's layer methods take it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ib = IBA(model, model[4], data=data, **CONFIG)
    assert isinstance(ib.explainer, TorchIBA) and ib.explainer.estimators[0].n_samples == len(data)
    inputs, labels = x
    np.testing.assert_array_equal(ib.attribute(inputs, target=labels)[:, 1].numpy(), heatmaps)


def test_noise_tunnel_averages_the_heatmaps_of_noisy_copies(ib, model, x, explainer):
    inputs, labels = x[0][:2], x[1][:2]
    k, stdev = 3, 0.2
    torch.manual_seed(7)
    smooth = NoiseTunnel(ib).attribute(inputs, target=labels, nt_samples=k, stdevs=stdev)
    assert smooth.shape == inputs.shape
    # Captum's draws: torch.normal(0, std) of shape (N * k, C, H, W) in float32 from the global
    # generator, the copies input-major.
    torch.manual_seed(7)
    noise = torch.normal(0, torch.tensor(stdev).repeat((2 * k, *inputs.shape[1:])))
    noisy = inputs.repeat_interleave(k, dim=0) + noise
    maps = explainer.analyze(model, noisy, target=labels.repeat_interleave(k))
    expected = maps.reshape(2, k, 16, 16).mean(axis=1)
    for c in range(3):
        np.testing.assert_allclose(smooth[:, c].numpy(), expected, rtol=1e-12, atol=1e-12)
    # the noise changes the map: it is not the plain heatmap
    plain = explainer.analyze(model, inputs, target=labels)
    assert np.abs(smooth[:, 0].numpy() - plain).max() > 1e-3
    # smoothgrad_sq: the mean of the squared maps
    torch.manual_seed(7)
    squared = NoiseTunnel(ib).attribute(
        inputs, target=labels, nt_samples=k, stdevs=stdev, nt_type="smoothgrad_sq"
    )
    np.testing.assert_allclose(
        squared[:, 0].numpy(), (maps**2).reshape(2, k, 16, 16).mean(axis=1), rtol=1e-12
    )


def test_visualize_image_attr_shows_the_heatmap(ib, x):
    inputs, labels = x
    attr = ib.attribute(inputs[:1], target=labels[:1])
    heatmap = attr[0, 0].numpy()
    image = attr[0].permute(1, 2, 0).numpy()  # (H, W, C), as Captum's visualisation takes
    original = inputs[0].permute(1, 2, 0).numpy()
    original = (original - original.min()) / (original.max() - original.min())
    fig, axis = viz.visualize_image_attr(
        image, original, method="heat_map", sign="absolute_value", outlier_perc=0,
        use_pyplot=False,
    )  # fmt: skip
    shown = np.asarray(axis.images[-1].get_array())
    # the channels summed and scaled by the largest: the heatmap over its maximum
    np.testing.assert_allclose(shown, heatmap / heatmap.max(), rtol=1e-12)
    blended, _ = viz.visualize_image_attr(
        image, original, method="blended_heat_map", sign="absolute_value", use_pyplot=False
    )
    assert fig is not None and blended is not None
    matplotlib.pyplot.close("all")


def test_model_left_as_it_was(data, x):
    """A model in train mode, with a frozen weight, a gradient and a user's hook."""
    model = cnn().train()
    model[0].weight.requires_grad_(False)
    model[2].weight.grad = torch.ones_like(model[2].weight)
    model[1].register_forward_hook(lambda module, args, output: None)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ib = IBA(model, LAYER, data=data[:16], **CONFIG)
    assert_same(before, snapshot(model))
    inputs, labels = x
    torch.manual_seed(0)
    NoiseTunnel(ib).attribute(inputs[:1], target=labels[:1], nt_samples=2, stdevs=0.1)
    assert_same(before, snapshot(model))
    with pytest.raises(ValueError, match="out of range"):
        ib.attribute(inputs[:1], target=9)
    assert_same(before, snapshot(model))


# -- errors ---------------------------------------------------------------------------------------


def test_construction_errors(model, data, explainer):
    with pytest.raises(TypeError, match="forward_func must be the model, a torch.nn.Module"):
        IBA(lambda t: model(t), LAYER, data=data)
    with pytest.raises(ValueError, match="pass explainer= .* or layer= .* with data="):
        IBA(model)
    with pytest.raises(ValueError, match="layer= needs data="):
        IBA(model, LAYER)
    with pytest.raises(ValueError, match="not both: got explainer= and layer="):
        IBA(model, LAYER, explainer=explainer)
    with pytest.raises(ValueError, match="not both: got explainer= and beta="):
        IBA(model, explainer=explainer, beta=3.0)
    with pytest.raises(ValueError, match="layer 'nope' not found in the model; layers are"):
        IBA(model, "nope", data=data)
    not_torch = iba.driver.Explainer  # the driver's class is no PyTorch explainer
    with pytest.raises(TypeError, match="explainer must be a iba_torch.IBA, got iba.Explainer"):
        IBA(model, explainer=not_torch("x", estimators=None))
    # the standard-normal prior needs no data
    assert IBA(model, LAYER, estimator="prior").explainer.config.estimator == "prior"


def test_attribute_errors(ib, x):
    inputs, labels = x
    with pytest.raises(ValueError, match="pass target="):
        ib.attribute(inputs)
    with pytest.raises(TypeError, match="tuple targets index a multi-dimensional"):
        ib.attribute(inputs[:1], target=(0, 1))
    with pytest.raises(TypeError, match="tuple targets"):
        ib.attribute(inputs[:2], target=[(0, 1), (1, 0)])
    with pytest.raises(TypeError, match="pass class indices"):
        ib.attribute(inputs[:1], target=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="additional_forward_args is not supported"):
        ib.attribute(inputs[:1], target=0, additional_forward_args=(1,))
    with pytest.raises(TypeError, match="models of one input, got a tuple of 2"):
        ib.attribute((inputs, inputs), target=labels)
    with pytest.raises(ValueError, match="target has shape"):
        ib.attribute(inputs, target=[0, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        ib.attribute(torch.full_like(inputs[:1], float("nan")), target=0)


def test_captum_stays_optional():
    """``import iba_torch`` does not import Captum; without Captum the class is a plain one that
    attributes alike."""
    code = (
        "import sys\n"
        "import iba_torch\n"
        "assert 'captum' not in sys.modules, 'import iba_torch imported captum'\n"
        "sys.modules['captum'] = None  # as if it were not installed\n"
        "import torch\n"
        "from iba_torch import captum as adapter\n"
        "assert not adapter.HAVE_CAPTUM and adapter.IBA.__mro__[1] is object\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),\n"
        "    torch.nn.Flatten(), torch.nn.Linear(32, 3)).double()\n"
        "ib = adapter.IBA(model, '1', estimator='prior', steps=2, batch_size=2)\n"
        "x = torch.randn(2, 1, 4, 4, dtype=torch.float64)\n"
        "a = ib.attribute(x, target=[0, 2])\n"
        "h = ib.explainer.analyze(model, x, target=[0, 2])\n"
        "assert a.shape == x.shape and (a[:, 0].numpy() == h).all()\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
