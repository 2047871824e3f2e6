"""The Keras port of EfficientNet-Lite0 with the bundled weights: predictions on real photos, the
MBConv blocks as layers, and an IBA explanation at a block (no PyTorch involved)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import iba_tf
from iba.demo import photos
from iba.demo.runners import MEAN, STD
from iba_tf.models import MBConvBlock, efficientnet_lite0, torch_name_to_keras

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(N, H, W, 3)`` to EfficientNet-Lite's input, float32."""
    return ((np.asarray(images, np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def crop(name: str) -> np.ndarray:
    return photos.center_crop(photos.photo(name))[0]


@pytest.fixture(scope="module")
def model():
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def chelsea():
    return preprocess(crop("chelsea")[None])


def test_the_bundled_weights_recognise_a_cat_and_an_espresso(model):
    x = preprocess(np.stack([crop("chelsea"), crop("coffee")]))
    logits = np.asarray(model.predict_on_batch(x))
    assert logits.shape == (2, 1000)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    top = probabilities.argmax(-1)
    # PyTorch's model gives Egyptian cat 0.394 (tiger cat 0.328) and espresso 0.944
    assert top[0] in CATS and probabilities[0, top[0]] > 0.35, probabilities[0, top[0]]
    assert probabilities[0, list(CATS)].sum() > 0.8
    assert top[1] == ESPRESSO and probabilities[1, ESPRESSO] > 0.9, probabilities[1].max()


def test_each_mbconv_block_is_one_layer_named_after_the_torch_module(model, chelsea):
    names = [layer.name for layer in model.layers]
    blocks = [torch_name_to_keras(f"_blocks.{i}") for i in range(16)]
    assert blocks[4] == "_blocks_4"
    assert [n for n in names if n.startswith("_blocks")] == blocks
    assert all(isinstance(model.get_layer(n), MBConvBlock) for n in blocks)
    for name in ("_conv_stem", "_bn0", "_conv_head", "_bn1", "_fc"):
        assert name in names
    block = model.get_layer("_blocks_4")
    assert [layer.name for layer in block.sublayers] == [
        "_blocks_4__expand_conv",
        "_blocks_4__bn0",
        "_blocks_4__depthwise_conv",
        "_blocks_4__bn1",
        "_blocks_4__project_conv",
        "_blocks_4__bn2",
    ]
    features = keras.Model(model.inputs, block.output)([chelsea])
    assert tuple(features.shape) == (1, 28, 28, 40)
    assert model.count_params() == 4_694_024


def test_a_block_round_trips_through_its_config(model):
    block = model.get_layer("_blocks_4")
    copy = MBConvBlock.from_config(block.get_config())
    assert copy.get_config() == block.get_config()
    x = np.random.default_rng(0).standard_normal((1, 28, 28, 40)).astype(np.float32)
    copy.build(x.shape)
    copy.set_weights(block.get_weights())
    expected = keras.ops.convert_to_numpy(block(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(x)), expected, atol=1e-5)


def test_iba_explains_a_block(model, chelsea):
    explainer = iba_tf.IBA("_blocks_4", steps=3, batch_size=4)
    crops = (preprocess(batch) for batch in photos.random_crops(n=32, batch=16))
    explainer.estimate(model, crops, progress=False)
    assert explainer.estimators[0].feature_shape == (28, 28, 40)
    maps = explainer.analyze(model, chelsea, target=285, seed=0)
    assert maps.shape == (1, 224, 224)
    assert np.all(np.isfinite(maps)) and np.all(maps >= 0)
    assert maps.max() > 1.2 * maps.min(), (maps.min(), maps.max())
    assert maps.std() > 0.05 * maps.mean(), (maps.std(), maps.mean())


@pytest.mark.parametrize("weights", ["imagenet", "", 0])
def test_unknown_weights_are_refused(weights):
    with pytest.raises(ValueError, match=r"weights must be 'bundled'.* or None"):
        efficientnet_lite0(weights=weights)
