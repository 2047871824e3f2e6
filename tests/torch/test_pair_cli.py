"""``iba explain-pair`` and ``iba demo --pairs`` end to end on the bundled dual encoder
(PyTorch; ``iba.pair_cli``): what they print and write, and their argument errors."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

from iba import cli
from iba.demo import photos

FAST = ["--steps", "3", "--noise-samples", "2", "-q"]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def test_explain_pair_prints_and_draws(tmp_path):
    photo = tmp_path / "cat.png"
    Image.fromarray(np.asarray(photos.photo("chelsea"))).save(photo)
    status, out, err = run(
        ["explain-pair", str(photo), "a tabby cat", "a cup of espresso", "--out", str(tmp_path)]
        + FAST
    )
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("pair 1 'a tabby cat': cosine similarity ")
    assert lines[1].startswith("pair 2 'a cup of espresso': cosine similarity ")
    similarity = [float(line.split("cosine similarity ")[1].split(";")[0]) for line in lines[:2]]
    assert similarity[0] > similarity[1]  # the photo is of a cat, not of coffee
    assert "top words: " in lines[0] and "'cat'" in lines[0]
    with Image.open(tmp_path / "pairs.png") as figure:
        assert figure.size[0] > 800 and figure.size[1] > 400


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain-pair", "missing.png", "a cat"], "missing.png: no such file"),
        (["demo", "--pairs", "--text-layer", "9"], "--text-layer 9: out of range; MiniLM has 6"),
        (["demo", "--pairs", "--text"], "--text and --pairs are two demos"),
        (["demo", "--image-layer", "_blocks.3"], "--image-layer is for pairs: add --pairs"),
        (
            ["demo", "--pairs", "--image-layer", "_blocks.99"],
            "not found",
        ),
    ],
)
def test_argument_errors(argv, message, tmp_path):
    status, _, err = run([*argv, "--out", str(tmp_path), "-q"])
    assert status == 2
    assert message in err
