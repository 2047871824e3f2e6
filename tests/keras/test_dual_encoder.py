"""The Keras port of the real dual encoder (iba_tf.models.dual_encoder): its image and text
embeddings equal the PyTorch model's (tests/data/dual_encoder_torch.npz, written by
scripts/dual_encoder_reference.py) within float32 tolerance."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from iba.demo import photos
from iba.demo.runners import preprocess
from iba_tf.models.dual_encoder import DEFAULT_SEQUENCE_LENGTH, SoftRetrieval, dual_encoder

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "dual_encoder_torch.npz"


@pytest.fixture(scope="session")
def reference():
    with np.load(REFERENCE) as file:
        return {k: file[k] for k in file.files}


@pytest.fixture(scope="session")
def dual():
    return dual_encoder()


def test_image_features_equal_pytorch(dual, reference):
    images = np.stack([photos.center_crop(photos.photo(str(n)))[0] for n in reference["photos"]])
    got = np.asarray(dual.image_model.predict_on_batch(preprocess(images)))
    assert got.shape == (2, 1280)
    want = reference["image_features"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the layers keep the names of iba_tf.models.efficientnet_lite0
    assert dual.image_model.get_layer("_blocks_14") is not None


def test_text_features_equal_pytorch(dual, reference):
    captions = [str(c) for c in reference["captions"]]
    enc = dual.tokenizer(captions, length=DEFAULT_SEQUENCE_LENGTH)
    inputs = {k: v.astype(np.int32) for k, v in enc.inputs.items()}
    got = np.asarray(dual.text_model.predict_on_batch(inputs))
    assert got.shape == (2, 1280)
    want = reference["text_features"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    head = dual.text_model.get_layer("retrieval")
    assert isinstance(head, SoftRetrieval) and not head.trainable_weights
    prompts = keras.ops.convert_to_numpy(head.prompts)
    np.testing.assert_allclose(prompts[::50], reference["prompts_every_50"], atol=2e-5)
    # real similarity: each caption is closest to its own photo
    image = reference["image_features"]
    sim = (image / np.linalg.norm(image, axis=1, keepdims=True)) @ (
        got / np.linalg.norm(got, axis=1, keepdims=True)
    ).T
    assert sim[0, 0] > sim[1, 0] and sim[1, 1] > sim[0, 1], sim
