"""M2IB on the bundled image-text dual encoder, the same on every backend: the explainer the
command line's runner builds (``Runner.m2ib_explainer``: ``iba_torch.M2IB``, ``iba_tf.M2IB``,
``iba_jax.M2IB`` through ``iba.m2ib_explainer``).

Cross-backend agreement of the maps is the conformance suite's; here each backend shows what issue
14 asks: several pairs in one call, a pair's maps independent of the batch, image maps on the
input grid, one token map per caption, and clear errors.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import iba
from iba import backends
from iba.demo import pairs

from .conftest import BACKEND
from .subjects import assert_same, model_snapshot

CONFIG = iba.m2ib_config(beta=0.3, steps=4, batch_size=2)
CHOSEN = [pairs.PAIRS[0], pairs.PAIRS[1]]  # the cat and the espresso, side by side


@pytest.fixture(scope="module")
def runner_class():
    from iba.demo import runners

    engine = backends.backend(BACKEND).engine
    assert engine is not None
    return runners.runner_class(engine)


@pytest.fixture(scope="module")
def m2ib(runner_class):
    return runner_class.m2ib_explainer("_blocks.14", 1, config=CONFIG)


@pytest.fixture(scope="module")
def images(runner_class):
    return runner_class.pair_inputs(pairs.images(CHOSEN))


@pytest.fixture(scope="module")
def together(m2ib, images):
    return m2ib.explain(images, pairs.captions(CHOSEN), seed=3)


def test_maps_of_several_pairs(together):
    maps = together
    assert maps.image_maps.shape == (2, 224, 224) and maps.image_bits.shape == (2, 7, 7)
    assert maps.image_maps.min() == 0.0 and maps.image_maps.max() == pytest.approx(1.0)
    # the caption moves the map (a little, in 4 steps; with an ignored caption: about 1e-7)
    assert np.abs(maps.image_maps[0] - maps.image_maps[1]).max() > 1e-4
    assert maps.text_maps[0].tokens == ("[CLS]", "a", "picture", "of", "a", "cat", "[SEP]")
    assert [w.text for w in maps.text_maps[1].words] == ["a", "cup", "of", "espresso"]
    assert all(np.all(m.token_bits > 0) for m in maps.text_maps)
    # the clean similarity: the cat caption matches the pair image more than chance
    assert maps.similarity.shape == (2,) and np.all(maps.similarity > 0.05)


def test_a_pair_alone_gets_its_maps_in_the_batch(m2ib, images, together):
    one = images[1:2]
    alone = m2ib.explain(one, pairs.captions(CHOSEN)[1], seed=3)
    np.testing.assert_allclose(alone.image_maps[0], together.image_maps[1], atol=1e-4)
    np.testing.assert_allclose(
        alone.text_maps[0].token_bits, together.text_maps[1].token_bits, rtol=1e-4
    )
    np.testing.assert_allclose(alone.similarity[0], together.similarity[1], atol=1e-6)


def test_errors(runner_class, m2ib, images):
    with pytest.raises(ValueError, match=re.escape("got 2 image(s) and 1 caption(s)")):
        m2ib.explain(images, "a cat")
    with pytest.raises(ValueError, match=re.escape("caption(s) 1 ('') tokenise to special")):
        m2ib.explain(images, ["a cat", ""])
    with pytest.raises(ValueError, match="not found"):
        runner_class.m2ib_explainer("_blocks.99", 1, config=CONFIG)
    with pytest.raises(ValueError, match="layer=7 is out of range"):
        runner_class.m2ib_explainer("_blocks.14", 7, config=CONFIG)


def test_both_encoders_left_as_they_were(m2ib, images):
    before = [model_snapshot(m) for m in (m2ib.image_model, m2ib.text_model)]
    m2ib.explain(images[:1], "a picture of a cat", seed=1)
    loss = m2ib.similarity_loss

    def failing(other):
        def fail(outputs):
            raise RuntimeError("a failing loss")

        return fail

    m2ib.similarity_loss = failing  # fails inside the image side's optimisation
    try:
        with pytest.raises(RuntimeError, match="a failing loss"):
            m2ib.explain(images[:1], "a picture of a cat", seed=1)
    finally:
        m2ib.similarity_loss = loss
    after = [model_snapshot(m) for m in (m2ib.image_model, m2ib.text_model)]
    for b, a in zip(before, after):
        assert_same(b, a)
