"""Keras M2IB compiles its steps once per shapes (issue 15): the other side's embeddings are an
argument of the compiled step (``iba_tf.m2ib.similarity_loss`` is a ``functools.partial``,
lifted by ``iba_tf._backend.lift_loss``), so a new caption of the same padded length traces
nothing on the TensorFlow and JAX backends, and gives the maps of a freshly compiled step."""

from __future__ import annotations

import functools
import types

import keras
import numpy as np
import pytest
from conftest import BACKEND

import iba
from iba.models import minilm as minilm_data
from iba_tf import _backend
from iba_tf.m2ib import M2IB, _negative_cosine, similarity_loss
from iba_tf.models.minilm import MeanPooling, minilm

COMPILED = BACKEND in ("tensorflow", "jax")  # torch runs the step eagerly: traces are runs
CONFIG = iba.m2ib_config(beta=0.3, steps=3, batch_size=2)
WIDTH = 6  # the shared embedding space
LENGTH = 12  # the text encoder's fixed sequence length


@pytest.fixture(scope="module")
def encoders():
    """A tiny dual encoder: a two-convolution image encoder ``(N, 8, 8, 3) -> (N, 6)`` and a
    two-layer MiniLM of width 8 (random weights, the bundled tokenizer) ``-> (N, 6)``."""
    keras.utils.set_random_seed(0)
    pixels = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(pixels)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    image = keras.Model(pixels, keras.layers.Dense(WIDTH, name="project")(x), name="tiny_image")
    config = minilm_data.MiniLMConfig(
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=LENGTH,
    )
    encoder = minilm(None, sequence_length=LENGTH, config=config)
    ids, mask = encoder.inputs
    pooled = MeanPooling(name="pooling")(encoder.outputs[0], mask)
    text = keras.Model(
        {"input_ids": ids, "attention_mask": mask},
        keras.layers.Dense(WIDTH, name="project")(pooled),
        name="tiny_text",
    )
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    return image, text, minilm_data.Tokenizer(), images


def make_explainer(encoders) -> M2IB:
    image, text, tokenizer, _ = encoders
    return M2IB(image, text, tokenizer, image_layer="conv1", text_layer=1, config=CONFIG)


def traces(explainer: M2IB) -> tuple[int, int]:
    """The objective's traces so far: ``(image side, text side)``."""
    return explainer.image_iba.engine.traces, explainer.text.explainer.engine.traces


@pytest.fixture(scope="module")
def second(encoders):
    """A first explain, then a second with another image and caption: the maps, and the traces
    the second added."""
    explainer = make_explainer(encoders)
    images = encoders[3]
    explainer.explain(images[:1], "a picture of a cat", seed=0)
    before = traces(explainer)
    maps = explainer.explain(images[1:], "a cup of espresso", seed=0)
    after = traces(explainer)
    return maps, (after[0] - before[0], after[1] - before[1])


@pytest.mark.skipif(not COMPILED, reason="Keras' torch backend compiles nothing")
def test_a_new_caption_of_the_same_length_traces_nothing(second):
    _, added = second
    assert added == (0, 0)


def test_the_maps_equal_those_of_a_fresh_compile(encoders, second):
    maps, _ = second
    fresh = make_explainer(encoders).explain(encoders[3][1:], "a cup of espresso", seed=0)
    assert [w.text for w in maps.text_maps[0].words] == ["a", "cup", "of", "espresso"]
    np.testing.assert_allclose(maps.image_maps, fresh.image_maps, rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps.image_bits, fresh.image_bits, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        maps.text_maps[0].token_bits, fresh.text_maps[0].token_bits, rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(maps.similarity, fresh.similarity, rtol=0, atol=1e-6)


def _analyze(explainer: iba.Explainer, model, x, loss_fn) -> np.ndarray:
    return explainer.analyze(model, x, loss_fn=loss_fn, seed=0)


def test_another_function_object_traces_again(encoders):
    image, _, _, images = encoders
    explainer = M2IB.image_explainer_type("conv1", config=CONFIG)
    rng = np.random.default_rng(1)
    first, other = (rng.normal(size=(1, WIDTH)) for _ in range(2))
    _analyze(explainer, image, images[:1], similarity_loss(first))
    count = explainer.engine.traces
    again = _analyze(explainer, image, images[:1], similarity_loss(other))
    assert explainer.engine.traces == count or not COMPILED  # torch: a run per step
    # the same code as another function object: a new step (it may compute something else)
    twin = types.FunctionType(_negative_cosine.__code__, _negative_cosine.__globals__)
    twin_maps = _analyze(explainer, image, images[:1], functools.partial(twin, other))
    assert explainer.engine.traces == count + 1 or not COMPILED
    np.testing.assert_allclose(twin_maps, again, rtol=0, atol=1e-6)


def test_lift_loss_keys_a_partial_by_its_function_and_other_values():
    embeds = np.ones((2, WIDTH))
    template, arrays, key = _backend.lift_loss(functools.partial(_negative_cosine, embeds))
    assert template.func is _negative_cosine and arrays is not None
    assert keras.ops.convert_to_numpy(arrays[0][0]).shape == (2, WIDTH)
    assert key == _backend.lift_loss(functools.partial(_negative_cosine, 2 * embeds))[2]
    # an unhashable value beside the arrays, no array, or no partial: keyed by the object
    for loss_fn in (
        functools.partial(_negative_cosine, embeds, extra=[1]),
        functools.partial(_negative_cosine, 0.5),
        _negative_cosine,
    ):
        assert _backend.lift_loss(loss_fn) == (loss_fn, None, loss_fn)
