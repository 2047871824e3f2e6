"""The real-model M2IB case: every port of the bundled dual encoder explains image-caption pairs
like PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import real_pair
from conformance.tolerances import REAL_PAIR


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    reason = real_pair.available("torch")
    if reason:
        pytest.skip(f"the real-pair case needs PyTorch for its reference: {reason}")
    folder = tmp_path_factory.mktemp("real_pair")
    inputs = real_pair.make_inputs()
    np.savez(folder / "inputs.npz", **inputs)
    expected = real_pair.run_in_process("torch", folder / "inputs.npz", folder / "torch.npz")
    return folder, inputs, expected


def test_reference_is_meaningful(reference):
    _, inputs, expected = reference
    n = real_pair.N_PAIRS
    assert expected["image_maps"].shape == (n, 224, 224)
    assert np.all(expected["image_maps"].max((1, 2)) == 1.0)
    assert np.all(expected["shares"] > 0.5)  # each map follows its caption's half
    assert np.all(expected["similarity"] > 0.05) and len(expected["lengths"]) == n
    assert np.all(expected["bits"] > 0)


@pytest.mark.parametrize("backend", real_pair.PORTS)
def test_port_explains_pairs_like_pytorch(backend, reference):
    reason = real_pair.available(backend)
    if reason:
        pytest.skip(f"{backend}: {reason}")
    folder, _, expected = reference
    got = real_pair.run_in_process(backend, folder / "inputs.npz", folder / f"{backend}.npz")
    deviations = real_pair.deviations(got, expected)
    bad = {s: (d, REAL_PAIR[s]) for s, d in deviations.items() if d > REAL_PAIR[s]}
    assert not bad, f"{backend}: (deviation, bound) out of tolerance: {bad}"
