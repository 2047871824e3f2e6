"""The real-model case: every port of EfficientNet-Lite0 explains like the PyTorch original."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import real_model
from conformance.tolerances import REAL_MODEL


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    reason = real_model.available("torch")
    if reason:
        pytest.skip(f"the real-model case needs PyTorch for its reference: {reason}")
    folder = tmp_path_factory.mktemp("real_model")
    inputs = real_model.make_inputs()
    np.savez(folder / "inputs.npz", **inputs)
    expected = real_model.run_in_process("torch", folder / "inputs.npz", folder / "torch.npz")
    return folder, inputs, expected


def test_reference_is_meaningful(reference):
    _, inputs, expected = reference
    assert set(inputs["targets"].tolist()) <= set(range(1000))
    assert 281 <= inputs["targets"][0] <= 285  # chelsea: a cat class
    assert expected["features"].shape == (2, 40, 28, 28)
    heat = expected["heatmap"]
    assert heat.shape == (2, 224, 224) and (heat >= 0).all() and (heat.max(axis=(1, 2)) > 0).all()


@pytest.mark.parametrize("backend", real_model.PORTS)
def test_port_matches_pytorch(backend, reference):
    reason = real_model.available(backend)
    if reason:
        pytest.skip(f"{backend}: {reason}")
    folder, _, expected = reference
    got = real_model.run_in_process(backend, folder / "inputs.npz", folder / f"{backend}.npz")
    deviations = real_model.deviations(got, expected)
    bad = {s: (d, REAL_MODEL[s]) for s, d in deviations.items() if d > REAL_MODEL[s]}
    assert not bad, f"{backend}: (deviation, bound) out of tolerance: {bad}"
