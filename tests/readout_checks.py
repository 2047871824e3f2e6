"""What the Keras and Flax tests of the Readout Bottleneck (docs/mathematics.md section 3) check
on the tiny CNN in float64 with channels-last features: ``analyze`` gives the NumPy reference's
values, ``fit`` gives the same first losses on every backend and leaves the model, ``save`` /
``load`` give the same heatmaps, and bad input gets its error. Imported as
``tests.readout_checks`` (pytest's ``pythonpath``); each backend's test passes its model, its
precision block (``x64()``) and its model comparison (``assert_same``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iba import nn
from iba import readout as shared

# The first losses of fit() with the weights of start_weights(), the data of data(), labels and
# seed 0: the same on every Keras backend and in Flax (Linen and NNX).
LOSSES = [53.335, 52.752, 52.174, 52.826]
LAYERS = ["relu2", "relu3", "fc"]  # the bottleneck, then the readouts


def data() -> tuple[np.ndarray, np.ndarray]:
    """64 inputs ``(8, 8, 1)`` (channels-last) and their labels."""
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 1))
    y = np.random.default_rng(1).integers(0, 10, 64)
    return x, y


def start_weights() -> list[np.ndarray]:
    """The seeded network of 18 readout channels to the bottleneck's 6."""
    return shared.init_weights(18, 6, seed=0)


def check_reference(
    readout: Any,
    model: Any,
    x: np.ndarray,
    x64: Callable[[], AbstractContextManager],
    assert_same: Callable[[Any], None],
) -> None:
    """With a last layer large enough for the clamp, ``analyze`` on 3 inputs gives the reference's
    ``alpha``, capacity and heatmap (``iba.readout.reference``), and leaves the model."""
    assert [e.feature_shape for e in readout.estimators] == [(8, 8, 6), (4, 4, 8), (1, 1, 10)]
    readout.weights = start_weights()
    readout.weights[4] = readout.weights[4] * 3000.0  # alpha away from 5, and clamped
    with x64():
        got = readout.analyze(model, x[:3], details=True)
    assert_same(model)
    features = nn.capture(nn.tiny_cnn(0), np.moveaxis(x[:3], -1, 1), LAYERS)
    estimators = [shared.to_layout(e, "channels_first") for e in readout.estimators]
    ref = shared.reference(
        features, estimators, readout.weights, readout.config, "channels_first", (8, 8)
    )
    np.testing.assert_allclose(got.alpha, np.moveaxis(ref.alpha, 1, -1), atol=1e-10)
    np.testing.assert_allclose(got.capacity, np.moveaxis(ref.capacity, 1, -1), atol=1e-10)
    np.testing.assert_allclose(got.heatmap, ref.heatmap, rtol=1e-10, atol=1e-12)
    assert ref.alpha.max() == 5.0 and ref.alpha.min() < 4.0  # clamped, and varied


def check_fit_save_load(
    readout: Any,
    model: Any,
    tmp_path: Path,
    x64: Callable[[], AbstractContextManager],
    assert_same: Callable[[Any], None],
) -> None:
    """Two epochs of 4 batches: the known first losses, a falling loss, the model unchanged; the
    saved and loaded readout gives the same heatmaps and ``repr``."""
    x, y = data()
    readout.weights = start_weights()
    readout.losses = []
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    with x64():
        losses = readout.fit(model, batches, epochs=2, lr=1e-2, progress=False, seed=0)
        maps = readout.analyze(model, x[:2])
    assert_same(model)
    assert len(losses) == 8 and readout.losses == losses
    np.testing.assert_allclose(losses[:4], LOSSES, atol=1e-3)
    assert losses[-1] < losses[0] - 1

    path = tmp_path / "readout.npz"
    readout.save(path)
    loaded = type(readout).load(path)
    assert loaded.losses == losses and repr(loaded) == repr(readout)
    with x64():
        np.testing.assert_allclose(loaded.analyze(model, x[:2]), maps, rtol=1e-12)


def check_errors(readout: Any, model: Any, tmp_path: Path) -> None:
    """The errors every adapter shares: before ``estimate``, bad batches, labels, ``epochs`` and
    ``lr``, an unknown layer, NaN inputs, a file that is no readout."""
    x, y = data()
    Readout = type(readout)
    with pytest.raises(RuntimeError, match="call estimate"):
        Readout("relu2", ["fc"]).analyze(model, x[:1])
    with pytest.raises(TypeError, match=r"\(inputs, labels"):
        readout.fit(model, x)
    with pytest.raises(ValueError, match="class indices"):
        readout.fit(model, [(x[:4], np.zeros((4, 2), int))])
    with pytest.raises(ValueError, match="epochs"):
        readout.fit(model, [(x[:4], y[:4])], epochs=0)
    with pytest.raises(ValueError, match="lr"):
        readout.fit(model, [(x[:4], y[:4])], lr=-1)
    with pytest.raises(ValueError, match="relu9"):
        Readout("relu2", ["relu9"]).estimate(model, x[:4], progress=False)
    with pytest.raises(ValueError, match="NaN"):
        readout.analyze(model, np.full((1, 8, 8, 1), np.nan))
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a saved Readout"):
        Readout.load(tmp_path / "other.npz")
