"""The real-model text case: every port of MiniLM explains texts like PyTorch's transformers."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import real_text
from conformance.tolerances import REAL_TEXT


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    reason = real_text.available("torch")
    if reason:
        pytest.skip(f"the real-text case needs PyTorch for its reference: {reason}")
    folder = tmp_path_factory.mktemp("real_text")
    inputs = real_text.make_inputs()
    np.savez(folder / "inputs.npz", **inputs)
    expected = real_text.run_in_process("torch", folder / "inputs.npz", folder / "torch.npz")
    return folder, inputs, expected


def test_reference_is_meaningful(reference):
    _, inputs, expected = reference
    assert inputs["targets"][:2].tolist() == [1, 0]  # fresh, rotten
    assert expected["lengths"].tolist()[-1] == 4  # "meh": [CLS] me ##h [SEP]
    assert len(expected["bits"]) == expected["lengths"].sum()
    assert np.all(expected["bits"] >= 0) and np.all(np.isfinite(expected["bits"]))
    np.testing.assert_array_equal(expected["predictions"], inputs["targets"])


@pytest.mark.parametrize("backend", real_text.PORTS)
def test_port_explains_texts_like_pytorch(backend, reference):
    reason = real_text.available(backend)
    if reason:
        pytest.skip(f"{backend}: {reason}")
    folder, _, expected = reference
    got = real_text.run_in_process(backend, folder / "inputs.npz", folder / f"{backend}.npz")
    np.testing.assert_array_equal(got["predictions"], expected["predictions"])
    deviations = real_text.deviations(got, expected)
    bad = {s: (d, REAL_TEXT[s]) for s, d in deviations.items() if d > REAL_TEXT[s]}
    assert not bad, f"{backend}: (deviation, bound) out of tolerance: {bad}"
