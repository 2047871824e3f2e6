"""Quantus' ``explain_func`` (``iba.interop.quantus``) on every backend: NumPy in, the heatmap
with a channel axis where the inputs have theirs out, the model left as it was; the engine of the
model's framework found through the registry. Quantus itself is not needed (``nox -s interop``
runs it with PyTorch models)."""

from __future__ import annotations

import warnings

import numpy as np

from iba.interop import framework_of
from iba.interop.quantus import explain_func

from .subjects import CONFIG, assert_same

ENGINES = {"torch": "torch", "keras": "keras", "flax": "jax"}  # subject prefix -> engine


def _numpy(subject):
    """The subject's inputs as Quantus gives them: NumPy, in the model's layout."""
    return subject.to_layout(subject.x_nchw), subject.to_layout(subject.data_nchw)


def _with_channel(subject, maps):
    return maps[:, None] if subject.layout == "channels_first" else maps[..., None]


def test_explain_func_is_the_heatmap_with_a_channel_axis(subject, fitted, base_map):
    x, _ = _numpy(subject)
    before = subject.snapshot(subject.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = explain_func(subject.model, x, subject.labels, explainer=fitted)
    assert isinstance(a, np.ndarray) and a.dtype == np.float64
    np.testing.assert_array_equal(a, _with_channel(subject, np.asarray(base_map)))
    assert_same(before, subject.snapshot(subject.model))


def test_explain_func_fits_the_engine_of_the_models_framework(subject, base_map):
    x, data = _numpy(subject)
    assert framework_of(subject.model) == ENGINES[subject.name.split("-")[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = explain_func(
            subject.model, x, subject.labels, layer=subject.target, data=data, **CONFIG
        )
    np.testing.assert_allclose(a, _with_channel(subject, np.asarray(base_map)), rtol=1e-6)
