"""The real dual encoder on PyTorch (iba_torch.dual_encoder): image features are
EfficientNet-Lite0's pooled features, the text head equals its NumPy reference, and a held-out
paraphrase ranks the matching photo first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iba.demo import photos
from iba.demo.runners import preprocess
from iba.models import dual_encoder as de
from iba_torch.dual_encoder import DualEncoder, dual_encoder


@pytest.fixture(scope="session")
def model() -> DualEncoder:
    return dual_encoder()


@pytest.fixture(scope="session")
def pixels() -> torch.Tensor:
    images = np.stack([photos.center_crop(photos.photo(n))[0] for n in ("chelsea", "coffee")])
    return torch.from_numpy(np.ascontiguousarray(preprocess(images).transpose(0, 3, 1, 2)))


def test_image_features_are_the_pooled_features(model, pixels):
    pooled = {}
    hook = model.vision_model._avg_pooling.register_forward_hook(
        lambda m, i, o: pooled.setdefault("x", o.flatten(1))
    )
    try:
        with torch.no_grad():
            logits = model.vision_model(pixels)
            features = model.get_image_features(pixel_values=pixels)
    finally:
        hook.remove()
    assert features.shape == (2, 1280)
    torch.testing.assert_close(features, pooled["x"], rtol=0, atol=0)
    fc = model.vision_model._fc
    torch.testing.assert_close(features @ fc.weight.T + fc.bias, logits, rtol=1e-5, atol=1e-5)
    # the classifier rows are W
    torch.testing.assert_close(model.classes, fc.weight, rtol=0, atol=0)


def test_the_text_head_equals_the_numpy_reference(model):
    captions = ["a picture of a tabby cat", "a cup of espresso", "a rocket"]
    tokens = model.tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = model.get_text_features(**tokens).double().numpy()
        hidden = model.text_model(**tokens).last_hidden_state.double()
    mask = tokens["attention_mask"].double()[..., None]
    mean = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    want = de.soft_retrieval(mean, model.prompts.double().numpy(), model.classes.double().numpy())
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
    # P is the normalised embeddings of the 1000 prompts "a photo of a {class}."
    assert model.prompts.shape == (1000, 384)
    np.testing.assert_allclose(model.prompts.norm(dim=1).numpy(), 1.0, atol=1e-5)
    one = model.tokenizer([de.imagenet_prompts()[281]], return_tensors="pt")
    with torch.no_grad():
        tabby = model.sentence_embeddings(**one)[0]
    torch.testing.assert_close(tabby, model.prompts[281], rtol=1e-5, atol=1e-5)


def test_a_held_out_paraphrase_ranks_its_photo_first(model, pixels):
    captions = ["a picture of a tabby cat", "a small cup of strong coffee"]
    tokens = model.tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = model.get_text_features(**tokens)
        image = model.get_image_features(pixels)
        sim = torch.nn.functional.cosine_similarity(image[:, None], text[None], dim=2)
        pair = model(pixels, **tokens)
    # rows: cat photo, espresso photo; columns: the two captions
    assert sim[0, 0] > sim[1, 0] + 0.1 and sim[1, 1] > sim[0, 1] + 0.1, sim
    torch.testing.assert_close(pair, sim.diagonal())


def test_bad_prompts_or_classes_raise(model):
    with pytest.raises(ValueError, match="one row per prompt"):
        DualEncoder(
            model.vision_model, model.text_model, model.tokenizer, np.ones((3, 4)), np.ones((2, 5))
        )
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DualEncoder(
            model.vision_model,
            model.text_model,
            model.tokenizer,
            np.ones((3, 4)),
            np.ones((3, 5)),
            0,
        )
