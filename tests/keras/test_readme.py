"""The Keras examples of the README and of the pages of docs/ run as written on this session's
Keras backend (``tests/readme_blocks.py``)."""

from __future__ import annotations

import pytest

from tests import readme_blocks

CHAINS = readme_blocks.chains("keras")
DOC_CHAINS = readme_blocks.page_chains("keras")


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_readme_example_runs(chain, tmp_path, monkeypatch):
    namespace = readme_blocks.run(CHAINS[chain], tmp_path, monkeypatch)
    if chain == "keras-efficientnet":
        assert namespace["heatmap"].shape == (224, 224) and namespace["heatmap"].max() > 0
        assert 281 <= int(namespace["target"][0]) <= 285  # chelsea: a cat class
        assert namespace["maps"].shape == (1, 224, 224)
    elif chain == "keras-m2ib":
        maps = namespace["maps"]
        assert maps.image_maps.shape == (1, 224, 224) and maps.image_maps.max() == 1.0
        assert [w.text for w in maps.text_maps[0].words] == ["a", "picture", "of", "a", "cat"]
        assert maps.similarity[0] > 0.05
    elif chain == "keras-text":
        m = namespace["m"]
        assert m.prediction == 1 and m.target == 1  # fresh
        assert len(m.words) == 7 and m.word_bits.sum() > 0  # a gorgeous , witty , seductive movie
    else:
        assert namespace["heatmaps"].shape == (4, 28, 28)


@pytest.mark.parametrize("chain", sorted(DOC_CHAINS))
def test_docs_example_runs(chain, tmp_path, monkeypatch):
    """Every keras chain of a page of docs/ runs as written (found by glob: a new page needs no
    change here)."""
    path, blocks = DOC_CHAINS[chain]
    readme_blocks.run(blocks, tmp_path, monkeypatch, path=path)
