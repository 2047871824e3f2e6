"""``iba.interop.quantus.explain_func`` inside Quantus 0.6 metrics, on the small CNN.

What is checked against something known: the explain_func's output is the library's heatmap
with a channel axis; ``Sparseness`` scores the Gini index of exactly that map (computed here);
``MaxSensitivity`` with one known perturbation scores ``||a(x + d) - a(x)|| / ||a(x)||`` of the
library's maps, and 0 for no perturbation (IBA's noise is seeded), where a random explain_func
scores far from it. The helpers' shape rules and errors are checked on shapes alone.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import quantus
import torch

from iba.interop import channel_axis, framework_of, input_shaped
from iba.interop.common import backend_of_explainer
from iba.interop.quantus import explain_func

from .conftest import CONFIG, LAYER, assert_same, cnn, snapshot


@pytest.fixture(scope="session")
def batch(x):
    """The inputs and classes as Quantus hands them over: NumPy."""
    return x[0].numpy(), x[1].numpy()


RANDOM = np.random.default_rng(0)


def random_explain_func(model, inputs, targets, **kwargs):
    """A new uniform random map on every call, shaped as ours."""
    return RANDOM.uniform(size=(len(inputs), 1, *inputs.shape[2:]))


def gini(a: np.ndarray) -> np.ndarray:
    """The Gini index of each row of ``a`` (n values, sorted ascending)."""
    a = np.sort(a.reshape(len(a), -1), axis=1)
    n = a.shape[1]
    rank = np.arange(1, n + 1)
    return ((2 * rank - n - 1) * a).sum(1) / (n * a.sum(1))


def test_explain_func_is_the_heatmap_with_a_channel_axis(model, batch, explainer, heatmaps):
    inputs, labels = batch
    a = explain_func(model, inputs, labels, explainer=explainer)
    assert isinstance(a, np.ndarray) and a.shape == (4, 1, 16, 16) and a.dtype == np.float64
    np.testing.assert_array_equal(a[:, 0], heatmaps)
    # Quantus' own shape checks accept it
    assert quantus.helpers.utils.expand_attribution_channel(a, inputs).shape == a.shape
    quantus.helpers.asserts.assert_attributions(x_batch=inputs, a_batch=a)


def test_layer_and_data_fit_the_same_explainer(model, data, batch, heatmaps):
    """Fitting per call (layer=, data=): the engine of the model's framework from the registry,
    estimated on the same data, gives the same map."""
    inputs, labels = batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = explain_func(model, inputs, labels, layer=LAYER, data=data.numpy(), **CONFIG)
    np.testing.assert_array_equal(a[:, 0], heatmaps)


def test_sparseness_scores_the_gini_index_of_the_map(model, batch, explainer, heatmaps):
    inputs, labels = batch
    metric = quantus.Sparseness(normalise=False, abs=False, disable_warnings=True)
    scores = metric(
        model=model, x_batch=inputs, y_batch=labels, explain_func=explain_func,
        explain_func_kwargs={"explainer": explainer},
    )  # fmt: skip
    scores = np.asarray(scores)
    assert scores.shape == (4,) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores, gini(heatmaps + 1e-7), rtol=1e-10)  # Quantus adds 1e-7
    random_scores = np.asarray(
        metric(
            model=model,
            x_batch=inputs,
            y_batch=labels,
            explain_func=random_explain_func,
            explain_func_kwargs={},
        )  # fmt: skip
    )
    # uniform noise has a Gini index near 1/3; the scores differ from IBA's
    assert np.abs(random_scores - 1 / 3).max() < 0.05
    assert np.abs(random_scores - scores).min() > 1e-3


def test_max_sensitivity_of_one_known_perturbation(model, batch, explainer, heatmaps):
    inputs, labels = batch
    shift = 0.1 * np.random.default_rng(3).standard_normal(inputs.shape)

    def perturb(arr, indices, shift, **bounds):  # Quantus passes its noise bounds too
        return arr + shift.reshape(arr.shape)

    def metric(delta, func=explain_func, kwargs=None):
        sensitivity = quantus.MaxSensitivity(
            nr_samples=1, perturb_func=perturb, perturb_func_kwargs={"shift": delta},
            disable_warnings=True,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Quantus warns when a perturbation changes nothing
            scores = sensitivity(
                model=model, x_batch=inputs, y_batch=labels, explain_func=func,
                explain_func_kwargs={"explainer": explainer} if kwargs is None else kwargs,
            )  # fmt: skip
        return np.asarray(scores)

    scores = metric(shift)
    moved = explainer.analyze(model, inputs + shift, target=labels)
    expected = np.linalg.norm((moved - heatmaps).reshape(4, -1), axis=1) / np.linalg.norm(
        heatmaps.reshape(4, -1), axis=1
    )
    assert np.isfinite(scores).all() and (scores > 0).all()
    np.testing.assert_allclose(scores, expected, rtol=1e-10)
    # no perturbation: the seeded explain_func gives the same map, sensitivity 0
    np.testing.assert_array_equal(metric(np.zeros_like(shift)), np.zeros(4))
    # a random explain_func is far from both
    random_scores = metric(np.zeros_like(shift), random_explain_func, {})
    assert (random_scores > 0.3).all() and (random_scores > 10 * scores).all()


def test_model_left_as_it_was(data, batch):
    model = cnn().train()
    model[2].weight.grad = torch.ones_like(model[2].weight)
    before = snapshot(model)
    inputs, labels = batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explain_func(model, inputs[:1], labels[:1], layer=LAYER, data=data[:16], **CONFIG)
    assert_same(before, snapshot(model))
    with pytest.raises(ValueError, match="out of range"):
        explain_func(model, inputs[:1], np.array([7]), layer=LAYER, data=data[:16], **CONFIG)
    assert_same(before, snapshot(model))


# -- errors ---------------------------------------------------------------------------------------


def test_errors(model, data, batch, explainer):
    inputs, labels = batch
    with pytest.raises(ValueError, match="pass explainer= .* or layer= .* with data="):
        explain_func(model, inputs, labels)
    with pytest.raises(ValueError, match="not both: got explainer= and data=, layer="):
        explain_func(model, inputs, labels, explainer=explainer, layer=LAYER, data=data)
    with pytest.raises(ValueError, match="layer= needs data="):
        explain_func(model, inputs, labels, layer=LAYER)
    with pytest.raises(TypeError, match="unknown keyword argument.* method: besides explainer="):
        explain_func(model, inputs, labels, explainer=explainer, method="IBA")
    with pytest.raises(TypeError, match="explainer must be an IBA explainer"):
        explain_func(model, inputs, labels, explainer="relu")
    with pytest.raises(TypeError, match="cannot tell the framework of the model: got function"):
        explain_func(lambda t: t, inputs, labels, layer=LAYER, data=data)
    with pytest.raises(ValueError, match="targets is None"):
        explain_func(model, inputs, None, explainer=explainer)
    with pytest.raises(TypeError, match="inputs is None"):
        explain_func(model, None, labels, explainer=explainer)
    with pytest.raises(ValueError, match="pass a batch of inputs"):
        explain_func(model, inputs[0, 0, 0], labels, explainer=explainer)
    with pytest.raises(ValueError, match="inputs holds 768 NaN"):
        explain_func(model, np.full_like(inputs[:1], np.nan), labels[:1], explainer=explainer)
    with pytest.raises(ValueError, match="the model could not run on x"):
        explain_func(model, inputs[:, :2], labels, explainer=explainer)


def test_an_explainer_of_another_framework_is_refused(model, batch):
    """An ``iba_tf`` explainer with a PyTorch model (a stand-in class: Keras is not installed
    here; the registry's entry points name the adapters)."""
    import iba

    fake = type("IBA", (iba.driver.Explainer,), {"__module__": "iba_tf.explainer"})("relu")
    assert backend_of_explainer(fake) == "keras"
    inputs, labels = batch
    with pytest.raises(TypeError, match=r"iba_tf.IBA \(the keras backend\) .* use iba_torch.IBA"):
        explain_func(model, inputs, labels, explainer=fake)


def test_framework_of():
    def made(module):
        return type("Model", (), {"__module__": module})()

    assert framework_of(torch.nn.Linear(2, 2)) == "torch"
    assert framework_of(made("keras.src.models.functional")) == "keras"
    assert framework_of(made("flax.nnx.module")) == "jax"
    assert framework_of((made("flax.linen.module"), {"params": {}})) == "jax"
    assert framework_of(types.SimpleNamespace()) is None
    assert framework_of(()) is None


def test_channel_axis_and_input_shaped():
    m = np.arange(2 * 4 * 5, dtype=float).reshape(2, 4, 5)
    assert input_shaped(m, (2, 3, 4, 5)).shape == (2, 1, 4, 5)
    assert input_shaped(m, (2, 4, 5, 3)).shape == (2, 4, 5, 1)
    np.testing.assert_array_equal(input_shaped(m, (2, 4, 5))[:, :], m)  # token-like: as it is
    assert channel_axis((2, 4, 4, 4), (2, 4, 4), "channels_first") == 1
    assert channel_axis((2, 4, 4, 4), (2, 4, 4), "channels_last") == 3
    with pytest.raises(ValueError, match="channel axis can be axis 1 or the last"):
        channel_axis((2, 4, 4, 4), (2, 4, 4))
    with pytest.raises(ValueError, match=r"do not fit inputs of shape \(2, 3, 8, 8\)"):
        channel_axis((2, 3, 8, 8), (2, 4, 4))
    with pytest.raises(ValueError, match="one heatmap per input"):
        channel_axis((3, 3, 4, 5), (2, 4, 5))


def test_channel_first_decides_for_square_inputs():
    """``(N, 16, 16, 16)`` inputs: the channel axis follows ``channel_first``, by default the
    estimated features' layout; the prior has none: it must be said."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(16, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 16 * 4, 3),
    ).double()  # fmt: skip
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 16))
    kwargs = {"layer": "1", "estimator": "prior", **CONFIG}
    with pytest.raises(ValueError, match=r"\(2, 16, 16, 16\): the channel axis can be axis 1 or"):
        explain_func(model, x, np.array([0, 1]), **kwargs)
    first = explain_func(model, x, np.array([0, 1]), channel_first=True, **kwargs)
    last = explain_func(model, x, np.array([0, 1]), channel_first=False, **kwargs)
    assert first.shape == (2, 1, 16, 16) and last.shape == (2, 16, 16, 1)
    np.testing.assert_array_equal(first[:, 0], last[..., 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimated = explain_func(model, x, np.array([0, 1]), layer="1", data=x, **CONFIG)
    assert estimated.shape == (2, 1, 16, 16)  # PyTorch's features are channels-first
