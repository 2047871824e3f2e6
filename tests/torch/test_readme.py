"""The README's PyTorch and NumPy examples run as written (``tests/readme_blocks.py``), every
Python block of the README is tagged for a session, and its install lines are the command line's."""

from __future__ import annotations

import numpy as np
import pytest

from iba.demo import runners
from tests import readme_blocks

CHAINS = readme_blocks.chains("torch", "numpy")


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_readme_example_runs(chain, tmp_path, monkeypatch):
    namespace = readme_blocks.run(CHAINS[chain], tmp_path, monkeypatch)
    if chain == "torch-efficientnet":
        assert namespace["heatmap"].shape == (224, 224) and namespace["heatmap"].max() > 0
        assert 281 <= int(namespace["target"][0]) <= 285  # chelsea: a cat class
        assert (tmp_path / "chelsea-iba.png").stat().st_size > 10_000
        assert namespace["explanation"].capacity.shape == (1, 40, 28, 28)
        assert namespace["maps"].shape == (1, 224, 224)
        assert 0 <= namespace["ratio"] <= 1
    if chain == "torch-m2ib":
        maps = namespace["maps"]
        assert maps.image_maps.shape == (2, 224, 224) and np.all(maps.image_maps.max((1, 2)) == 1)
        assert [w.text for w in maps.text_maps[1].words] == ["a", "cup", "of", "espresso"]
        assert np.all(maps.similarity > 0.05)
    if chain == "torch-text":
        assert [m.prediction for m in namespace["maps"]] == [1, 0]  # fresh, then rotten
        assert (tmp_path / "text.png").stat().st_size > 5_000


def test_every_python_block_is_tagged_for_a_session():
    sessions = {"torch", "numpy", "keras", "flax"}
    untagged = [b.line for b in readme_blocks.blocks() if b.session not in sessions]
    assert not untagged, (
        f"README.md: the python blocks at lines {untagged} are run by no test; tag each with "
        "<!-- readme-test: SESSION CHAIN --> (see tests/readme_blocks.py)"
    )


def test_the_tags_are_read():
    text = "<!-- readme-test: torch a -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
    first, second = readme_blocks.blocks(text)
    assert first == readme_blocks.Block(3, "torch", "a", "x = 1\n")
    assert second.session is None and second.line == 7
    assert readme_blocks.small("f(n=1000, n_samples=5000, steps=50)") == (
        "f(n=16, n_samples=16, steps=3)"
    )


@pytest.mark.parametrize("keras_backend", runners.KERAS_BACKENDS)
def test_the_readme_gives_the_keras_install_line_of_each_backend(keras_backend, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", keras_backend)
    line = runners.install_line("keras")
    readme = readme_blocks.README.read_text()
    assert f"| `{line}` | `KERAS_BACKEND={keras_backend} iba demo --backend keras` |" in readme


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_the_readme_gives_the_install_line_of_each_backend(backend):
    line = runners.install_line(backend)
    readme = readme_blocks.README.read_text()
    run = "iba demo" if backend == "torch" else f"iba demo --backend {backend}"
    assert f"| `{line}` | `{run}` |" in readme
