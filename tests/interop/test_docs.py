"""docs/interop.md's Python examples, run in order in one namespace as written (step counts made
small), in a temporary folder; their results are checked against the library."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_the_examples_run(tmp_path, monkeypatch):
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) == 2, "docs/interop.md: a Captum and a Quantus example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "interop_docs"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for code in blocks:
            exec(compile(re.sub(r"\bsteps=\d+", "steps=3", code), str(DOC), "exec"), namespace)
    ns = namespace
    x, labels, ib = ns["x"], ns["labels"], ns["ib"]
    expected = ib.explainer.analyze(ns["model"], x, target=labels)
    assert ns["attributions"].shape == x.shape and ns["smooth"].shape == x.shape
    np.testing.assert_allclose(ns["attributions"][:, 2].numpy(), expected, rtol=1e-5)
    assert torch.isfinite(ns["smooth"]).all()
    assert np.isfinite(ns["sparseness"]).all() and np.isfinite(ns["sensitivity"]).all()
    assert len(ns["sparseness"]) == len(ns["sensitivity"]) == 2
