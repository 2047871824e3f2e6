"""The Readout Bottleneck (docs/mathematics.md section 3) on every backend: with the same network
weights, ``Readout.analyze`` gives the NumPy reference's heatmap (``iba.readout.reference``), and
neither ``analyze`` nor ``fit`` changes the model. The network's weights are the conformance
case's (``conformance.readout.weights``: ``alpha`` reaches both clamp bounds)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conformance.readout import weights
from iba import readout as shared

from .conftest import BACKEND
from .subjects import assert_same, images, reference_features

# the readout layers of the tiny CNN (relu3: 8 x 4 x 4, resized; fc: 10 logits, expanded)
READOUTS = ["relu3", "fc"]


def _readout_class():
    if BACKEND == "torch":
        from iba_torch import Readout
    elif BACKEND.startswith("keras-"):
        from iba_tf import Readout
    else:
        from iba_jax import Readout
    return Readout


@pytest.fixture(scope="module")
def readout(subject):
    made = _readout_class()(subject.target, READOUTS, relu=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made.estimate(subject.model, subject.data, progress=False)
    made.weights = weights()
    return made


def test_readout_heatmap_is_the_references(subject, readout):
    before = subject.snapshot(subject.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = readout.analyze(subject.model, subject.x, details=True)
    assert_same(before, subject.snapshot(subject.model))
    _, x, _ = images()
    features = [reference_features(x, name) for name in ("relu2", *READOUTS)]
    estimators = [shared.to_layout(e, "channels_first") for e in readout.estimators]
    ref = shared.reference(
        features, estimators, weights(), readout.config, "channels_first", x.shape[2:]
    )
    assert ref.alpha.max() == 5.0 and (np.abs(ref.alpha) < 5.0).mean() > 0.2  # clamped, varied
    assert got.heatmap.shape == (2, 8, 8)
    scale = np.abs(ref.heatmap).max()
    np.testing.assert_allclose(got.heatmap, ref.heatmap, atol=1e-4 * scale)  # float32 models
    alpha = subject.to_layout(ref.alpha) if subject.layout == "channels_last" else ref.alpha
    np.testing.assert_allclose(got.alpha, alpha, atol=1e-4 * 5)


def test_readout_fit_leaves_the_model(subject, readout):
    data = subject.data  # in the backend's layout
    labels = np.random.default_rng(1).integers(0, 10, len(data))
    batches = [(data[i : i + 16], labels[i : i + 16]) for i in range(0, len(data), 16)]
    before = subject.snapshot(subject.model)
    start = [w.copy() for w in readout.weights]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        losses = readout.fit(subject.model, batches, epochs=1, lr=1e-2, progress=False, seed=0)
    assert_same(before, subject.snapshot(subject.model))
    assert len(losses) == 4 and np.all(np.isfinite(losses))
    assert any(np.abs(a - b).max() > 0 for a, b in zip(readout.weights, start))
    readout.weights = weights()  # for the other tests of this subject
