"""docs/interop.md's Python examples (tagged ``<!-- readme-test: interop examples -->``), run in
order in one namespace as written (step counts made small), in a temporary folder; their results
are checked against the library. ``interop`` chains of other pages of docs/ run here too."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from tests import readme_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"


def test_the_examples_run(tmp_path, monkeypatch):
    (blocks,) = readme_blocks.chains("interop", path=DOC).values()
    assert len(blocks) == 2, "docs/interop.md: a Captum and a Quantus example"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ns = readme_blocks.run(blocks, tmp_path, monkeypatch, path=DOC)
    x, labels, ib = ns["x"], ns["labels"], ns["ib"]
    expected = ib.explainer.analyze(ns["model"], x, target=labels)
    assert ns["attributions"].shape == x.shape and ns["smooth"].shape == x.shape
    np.testing.assert_allclose(ns["attributions"][:, 2].numpy(), expected, rtol=1e-5)
    assert torch.isfinite(ns["smooth"]).all()
    assert np.isfinite(ns["sparseness"]).all() and np.isfinite(ns["sensitivity"]).all()
    assert len(ns["sparseness"]) == len(ns["sensitivity"]) == 2


def test_the_interop_examples_of_other_pages_run(tmp_path, monkeypatch):
    """Every ``interop`` chain of another page of docs/ (found by glob) runs as written."""
    for key, (path, blocks) in readme_blocks.page_chains("interop").items():
        if not key.startswith(f"{DOC.name}:"):
            folder = tmp_path / key.replace(":", "-")
            folder.mkdir()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                readme_blocks.run(blocks, folder, monkeypatch, path=path)
