"""M2IB on a tiny random ``transformers.CLIPModel`` (``iba_torch.m2ib``, docs/mathematics.md
section 5): the float64 maps equal the independent replay (``tests/m2ib_replay.py``), the noise,
the errors, and the model left as it was."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import iba

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from iba_torch.m2ib import M2IB  # noqa: E402
from tests import m2ib_replay as rp  # noqa: E402

TEXTS = ["a photo of dogs playing", "the red sofa"]  # the second is padded in the batch
CASES = [(1, 0), (0, 1)]  # (image_layer, text_layer)
IMAGE_TOKENS, WIDTH = 17, 32


@pytest.fixture(scope="session")
def clip():
    return rp.tiny_clip()


@pytest.fixture(scope="session")
def pixels():
    return rp.images(2)


def encoded(texts=TEXTS):
    enc = rp.tokenizer()(texts, padding=True)
    return np.array(enc["input_ids"]), np.array(enc["attention_mask"])


def arrays(seed: int, mask: np.ndarray, steps: int = 10, batch: int = 10) -> tuple:
    """The documented draws of ``seed``: ``iba.draw_noise`` for every image, ``text_noise``."""
    image = iba.draw_noise(seed, steps, batch, (IMAGE_TOKENS, WIDTH))
    n = len(mask)
    return np.repeat(image[:, None], n, axis=1), iba.text.text_noise(
        seed, steps, batch, mask, WIDTH
    )


@pytest.fixture(scope="session", params=CASES, ids=lambda c: f"image{c[0]}-text{c[1]}")
def case(request, clip, pixels):
    """The library's maps of both pairs and the replay of each, on the same noise."""
    image_layer, text_layer = request.param
    ids, mask = encoded()
    noise = arrays(1, mask)
    explainer = M2IB(clip, rp.tokenizer(), image_layer=image_layer, text_layer=text_layer)
    maps = explainer.explain(pixels, TEXTS, seed=1, details=True)
    replays = []
    for i in range(2):
        k = int(mask[i].sum())
        replays.append(
            rp.replay_pair(
                clip,
                pixels[i],
                ids[i, :k],
                image_layer,
                text_layer,
                noise[0][:, i],
                noise[1][:, i, :, :k],
            )
        )
    return maps, replays, mask


def relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_maps_equal_the_replay(case):
    maps, replays, mask = case
    assert maps.image_maps.shape == (2, 32, 32) and maps.image_bits.shape == (2, 4, 4)
    for i, (image, text) in enumerate(replays):
        k = int(mask[i].sum())
        assert relative(maps.image_maps[i], image.scores) < 1e-6
        assert relative(maps.image_explanation.capacity[i], image.capacity) < 1e-6
        assert relative(maps.token_scores(i), text.scores) < 1e-6
        want_bits = iba.heatmap(text.capacity[None], "tokens")[0]
        assert len(maps.text_maps[i].token_bits) == k
        assert relative(maps.text_maps[i].token_bits, want_bits) < 1e-6
        # the maps carry information: not constant, and the optimisation moved alpha
        assert np.ptp(maps.image_maps[i]) == pytest.approx(1.0)
        assert np.ptp(maps.token_scores(i)) == pytest.approx(1.0)
    assert not np.allclose(maps.image_explanation.alpha, 5.0)


def test_token_maps_and_words(case):
    maps, _, _ = case
    first = maps.text_maps[0]
    assert first.tokens == ("<bos>", "a", "photo", "of", "dog", "##s", "play", "##ing", "<eos>")
    assert [w.text for w in first.words] == ["a", "photo", "of", "dogs", "playing"]
    np.testing.assert_allclose(first.word_bits[3], first.token_bits[4:6].sum(), rtol=1e-12)
    assert first.special.tolist() == [True] + [False] * 7 + [True]
    assert len(maps.text_maps[1].tokens) == 5  # padding removed
    assert maps.similarity.shape == (2,) and np.all(np.abs(maps.similarity) <= 1)


def test_seed_draws_are_documented_and_batch_independent(clip, pixels):
    explainer = M2IB(clip, rp.tokenizer(), image_layer=0, text_layer=0, config=small())
    together = explainer.explain(pixels, TEXTS, seed=4)
    for i in range(2):
        alone = explainer.explain(pixels[i : i + 1], TEXTS[i], seed=4)
        np.testing.assert_allclose(alone.image_maps[0], together.image_maps[i], atol=1e-12)
        np.testing.assert_allclose(
            alone.text_maps[0].token_bits, together.text_maps[i].token_bits, rtol=1e-10
        )
    other = explainer.explain(pixels, TEXTS, seed=5)
    assert not np.allclose(other.image_maps, together.image_maps)


def small(**changes) -> iba.Config:
    return iba.m2ib_config(steps=3, batch_size=2, **changes)


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grad": {k: p.grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {
            k: (dict(m._forward_hooks), dict(m._forward_pre_hooks))
            for k, m in model.named_modules()
        },
    }


def assert_same(before: dict, after: dict) -> None:
    for key in ("requires_grad", "grad", "training", "hooks"):
        assert before[key] == after[key], key
    for name, value in before["state"].items():
        assert torch.equal(value, after["state"][name]), name


def test_model_left_as_it_was(pixels):
    model = rp.tiny_clip(seed=1)
    model.train()
    model.logit_scale.requires_grad_(False)
    hook = model.text_model.encoder.layers[0].register_forward_hook(lambda m, a, o: None)
    before = snapshot(model)
    explainer = M2IB(model, rp.tokenizer(), image_layer=1, text_layer=0, config=small())
    explainer.explain(pixels, TEXTS)
    assert_same(before, snapshot(model))

    def failing(other):
        def loss(outputs):
            raise RuntimeError("a failing loss")

        return loss

    explainer.similarity_loss = failing  # fails inside the optimisation, hooks in place
    with pytest.raises(RuntimeError, match="a failing loss"):
        explainer.explain(pixels, TEXTS)
    assert_same(before, snapshot(model))
    hook.remove()


def test_errors(clip, pixels):
    tok = rp.tokenizer()
    explainer = M2IB(clip, tok, image_layer=0, text_layer=0, config=small())
    with pytest.raises(ValueError, match=re.escape("got 2 image(s) and 3 caption(s)")):
        explainer.explain(pixels, [*TEXTS, "a cat"])
    with pytest.raises(ValueError, match=re.escape("caption(s) 1 ('') tokenise to special")):
        explainer.explain(pixels, ["a dog", ""])
    with pytest.raises(ValueError, match="images must be a batch of pixel values"):
        explainer.explain(pixels[0], TEXTS[0])
    with pytest.raises(TypeError, match="pass a CLIPProcessor"):
        explainer.explain([[1.0]], TEXTS[0])
    with pytest.raises(ValueError, match="images holds 3072 NaN"):
        explainer.explain(np.full((1, 3, 32, 32), np.nan), TEXTS[0])
    with pytest.raises(ValueError, match="image_layer: layer=9 is out of range: the model has 2"):
        M2IB(clip, tok, text_layer=0)
    with pytest.raises(ValueError, match="text_layer: layer 'encoder.layers.7' not found"):
        M2IB(clip, tok, image_layer=0, text_layer="encoder.layers.7")
    with pytest.raises(TypeError, match="M2IB needs an image-text dual encoder"):
        M2IB(torch.nn.Linear(2, 2), tok)
    with pytest.raises(TypeError, match="needs the model's tokenizer"):
        M2IB(clip, image_layer=0, text_layer=0)
    with pytest.raises(ValueError, match="standard-normal prior"):
        M2IB(clip, tok, image_layer=0, text_layer=0, config=iba.text_config(estimator="sentence"))
    corpus = M2IB(clip, tok, image_layer=0, text_layer=0, config=small(estimator="corpus"))
    with pytest.raises(RuntimeError, match="no statistics yet for the image and text side"):
        corpus.explain(pixels, TEXTS)
    with pytest.raises(ValueError, match="runs with the standard-normal prior"):
        explainer.estimate(texts=TEXTS)
    with pytest.raises(ValueError, match="exceeds the model's maximum of 16"):
        M2IB(clip, tok, image_layer=0, text_layer=0, max_length=40)


def test_layers_by_name_and_module(clip):
    tok = rp.tokenizer()
    by_name = M2IB(clip, tok, image_layer="vision_model.encoder.layers.1", text_layer="layers.0")
    module = M2IB(clip, tok, image_layer=clip.vision_model.encoder.layers[1], text_layer=-2)
    for explainer in (by_name, module):
        assert explainer.image_layer == "vision_model.encoder.layers.1"
        assert explainer.text_layer == "text_model.encoder.layers.0"


def test_long_captions_are_truncated_with_a_warning(clip, pixels):
    explainer = M2IB(clip, rp.tokenizer(), image_layer=0, text_layer=0, config=small())
    long = " ".join(["dog"] * 30)
    with pytest.warns(UserWarning, match="truncated to the model's maximum of 16"):
        maps = explainer.explain(pixels[:1], long)
    assert maps.text_maps[0].truncated and len(maps.text_maps[0].tokens) == 16


@pytest.mark.filterwarnings("ignore:the estimator has seen only")
def test_the_dataset_estimated_variant(clip, pixels):
    tok = rp.tokenizer()
    config = small(estimator="corpus")
    explainer = M2IB(clip, tok, image_layer=1, text_layer=0, config=config)
    corpus = ["a dog on a sofa", "two cats", "a red car on the road", "the sea at night"] * 3
    batches = [torch.as_tensor(rp.images(4, seed=s)) for s in range(3)]
    image_est, text_est = explainer.estimate(images=batches, texts=corpus, progress=False)
    assert image_est.n_samples == 12 and image_est.feature_shape == (IMAGE_TOKENS, WIDTH)
    assert text_est.feature_shape == (1, WIDTH) and text_est.n_samples > 40  # real tokens
    fitted = explainer.explain(pixels, TEXTS, seed=2)
    prior = M2IB(clip, tok, image_layer=1, text_layer=0, config=small()).explain(
        pixels, TEXTS, seed=2
    )
    assert fitted.image_maps.shape == prior.image_maps.shape
    assert not np.allclose(fitted.image_maps, prior.image_maps, atol=1e-3)
    assert not np.allclose(fitted.text_maps[0].token_bits, prior.text_maps[0].token_bits)
    # the statistics travel: a new explainer given them gives the same maps
    again = M2IB(
        clip,
        tok,
        image_layer=1,
        text_layer=0,
        config=config,
        image_estimator=image_est,
        text_estimator=text_est,
    ).explain(pixels, TEXTS, seed=2)
    np.testing.assert_array_equal(again.image_maps, fitted.image_maps)
