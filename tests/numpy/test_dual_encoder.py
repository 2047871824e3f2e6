"""The real dual encoder's framework-free parts (iba.models.dual_encoder): the prompts read from
the open-clip-torch wheel's file, the soft-retrieval head's reference; the side-by-side pairs
(iba.demo.pairs) and their localisation score (iba.evaluation.m2ib.half_share)."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from iba.demo import pairs
from iba.evaluation.m2ib import half_share
from iba.models import dual_encoder as de


def test_the_class_names_and_templates_are_parsed_from_the_file():
    names = de.imagenet_classnames()
    assert len(names) == 1000 and len(set(names)) > 990  # two "missile"s, two "crane"s
    assert names[281] == "tabby cat" and names[967] == "espresso" and names[0] == "tench"
    templates = de.imagenet_templates()
    assert len(templates) == 80 and de.TEMPLATE in templates
    assert "itap of a {}." in de.imagenet_templates("SIMPLE_IMAGENET_TEMPLATES")
    prompts = de.imagenet_prompts()
    assert len(prompts) == 1000 and prompts[281] == "a photo of a tabby cat."
    with pytest.raises(ValueError, match="unknown template set 'NOPE'"):
        de.imagenet_templates("NOPE")
    with pytest.raises(ValueError, match="one '{}'"):
        de.imagenet_prompts("a photo")


def test_a_missing_wheel_names_the_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps open-clip-torch"):
        de.metadata_path()


def test_soft_retrieval_is_the_softmax_weighted_mean_of_the_class_rows():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((3, 4)) * 5  # not normalised: the head normalises it
    p = de.normalize_rows(rng.standard_normal((6, 4)))
    w = rng.standard_normal((6, 5))
    got = de.soft_retrieval(e, p, w, temperature=0.05)
    for i in range(3):
        unit = e[i] / np.sqrt((e[i] ** 2).sum())
        scores = np.array([unit @ p[k] for k in range(6)]) / 0.05
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        np.testing.assert_allclose(got[i], sum(weights[k] * w[k] for k in range(6)), rtol=1e-12)
    # a caption equal to one prompt at a low temperature retrieves that class's row
    np.testing.assert_allclose(de.soft_retrieval(p[2:3] * 3, p, w, 1e-4)[0], w[2], atol=1e-9)
    with pytest.raises(ValueError, match="do not fit"):
        de.soft_retrieval(e, p[:, :3], w)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        de.soft_retrieval(e, p, w, 0.0)


def test_the_pairs_name_one_half_each():
    assert len(pairs.PAIRS) == 8
    assert sorted(pairs.halves()) == ["left"] * 4 + ["right"] * 4
    for pair in pairs.PAIRS:
        assert pair.left != pair.right and pair.concept in de.imagenet_classnames()
        assert pair.named == (pair.left if pair.half == "left" else pair.right)
    assert len(set(pairs.captions())) == 8


def test_half_share():
    maps = np.zeros((3, 2, 4))
    maps[0, :, :2] = 1.0  # all on the left
    maps[1, 0, 3] = 2.0  # all on the right
    maps[2] = 1.0  # even
    np.testing.assert_allclose(half_share(maps, ["left", "left", "right"]), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(half_share(maps[:1], "right"), [0.0])
    odd = np.zeros((1, 1, 3))
    odd[0, 0, 1] = 1.0  # the middle column counts half on each side
    np.testing.assert_allclose(half_share(odd, ["left"]), [0.5])
    with pytest.raises(ValueError, match="'left' or 'right'"):
        half_share(maps, ["left", "up", "right"])
    with pytest.raises(ValueError, match="one per map"):
        half_share(maps, ["left"])
    with pytest.raises(ValueError, match="no mass"):
        half_share(np.zeros((1, 2, 2)), ["left"])
    with pytest.raises(ValueError, match="non-negative"):
        half_share(-maps, ["left"] * 3)
