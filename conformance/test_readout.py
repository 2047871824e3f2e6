"""The Readout Bottleneck case: every backend's ``Readout.analyze`` gives the NumPy reference's
``alpha``, ``lam``, capacity and heatmap in float64 (``conformance/readout.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import readout
from conformance.tolerances import READOUT
from iba.readout import ALPHA_BOUND


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readout")
    expected = readout.make_inputs(folder)
    np.savez(folder / "inputs.npz", **expected)
    return folder, expected


def test_reference_is_meaningful(reference):
    _, expected = reference
    alpha = expected["alpha"]
    assert alpha.shape == (readout.N_INPUTS, 6, 8, 8)
    # the clamp is exercised at both bounds, and alpha varies in between
    assert alpha.min() == -ALPHA_BOUND and alpha.max() == ALPHA_BOUND
    assert 0.05 < np.mean(np.abs(alpha) < ALPHA_BOUND) < 0.95
    heat = expected["heatmap"]
    assert heat.shape == (readout.N_INPUTS, 8, 8) and (heat >= 0).all() and heat.max() > 0


@pytest.mark.parametrize("backend", readout.BACKENDS)
def test_backend_matches_reference(backend, reference):
    reason = readout.available(backend)
    if reason:
        pytest.skip(f"{backend}: {reason}")
    folder, expected = reference
    deviations = readout.deviations(readout.run_in_process(backend, folder), expected)
    bad = {s: d for s, d in deviations.items() if not d <= READOUT}
    assert not bad, f"{backend}: stages beyond {READOUT} (relative): {bad}"
