"""The Keras port of all-MiniLM-L6-v2 with the bundled weights: the last hidden state against the
float64 NumPy forward pass, the layers' names, serialisation, the sentiment model and an IBA
explanation at an encoder layer (no PyTorch involved)."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import iba_tf
from iba.models import minilm as reference
from iba_tf.models.minilm import (
    BertLayer,
    hf_name_to_keras,
    load_hf_weights,
    minilm,
    minilm_sentiment,
)
from tests import minilm_checks as checks
from tests.minilm_checks import CORPUS, TEXTS, int32

LENGTH = 20  # the sequence length of the model IBA explains


@pytest.fixture(scope="session")
def weights():
    return reference.bundled_weights()


@pytest.fixture(scope="session")
def tokenizer():
    return reference.Tokenizer()


@pytest.fixture(scope="session")
def encoding(tokenizer):
    return tokenizer(list(TEXTS))  # padded to the longest: 17 tokens


@pytest.fixture(scope="session")
def oracle(weights, encoding):
    return reference.numpy_forward(weights, encoding.input_ids, encoding.attention_mask)


@pytest.fixture(scope="session")
def model(weights):
    return minilm(weights)


@pytest.fixture(scope="session")
def head():
    return checks.head()


@pytest.fixture(scope="session")
def sentiment(weights, head):
    return minilm_sentiment(head, weights, sequence_length=LENGTH)


def test_the_last_hidden_state_matches_the_numpy_forward_pass(model, encoding, oracle):
    hidden = keras.ops.convert_to_numpy(model(int32(encoding)))
    assert hidden.shape == (3, 17, 384) and hidden.dtype == np.float32
    np.testing.assert_allclose(hidden, oracle, atol=1e-4, rtol=0)
    as_list = model.predict_on_batch([encoding.input_ids, encoding.attention_mask])
    np.testing.assert_allclose(as_list, oracle, atol=1e-4, rtol=0)  # compiled, list inputs


def test_one_layer_per_hugging_face_module(model):
    names = [layer.name for layer in model.layers]
    layers = [hf_name_to_keras(f"encoder.layer.{i}") for i in range(6)]
    assert layers[3] == "encoder_layer_3"
    assert [n for n in names if n.startswith("encoder")] == layers
    assert {"input_ids", "attention_mask", "embeddings"} <= set(names)
    assert all(isinstance(model.get_layer(n), BertLayer) for n in layers)
    assert [sub.name for sub in model.get_layer("encoder_layer_3").sublayers] == [
        "encoder_layer_3_attention_self_query",
        "encoder_layer_3_attention_self_key",
        "encoder_layer_3_attention_self_value",
        "encoder_layer_3_attention_output_dense",
        "encoder_layer_3_attention_output_LayerNorm",
        "encoder_layer_3_intermediate_dense",
        "encoder_layer_3_output_dense",
        "encoder_layer_3_output_LayerNorm",
    ]
    assert model.get_layer("embeddings").sublayers[-1].name == "embeddings_LayerNorm"
    assert model.count_params() == 22_565_376  # BertModel without its pooler


def test_a_layer_and_the_model_round_trip_through_their_config(model):
    layer = model.get_layer("encoder_layer_3")
    copy = BertLayer.from_config(layer.get_config())
    assert copy.get_config() == layer.get_config()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 384)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
    copy.build(x.shape, mask.shape)
    copy.set_weights(layer.get_weights())
    expected = keras.ops.convert_to_numpy(layer(x, mask))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(x, mask)), expected, atol=1e-5)
    rebuilt = keras.Model.from_config(model.get_config())
    assert [w.path for w in rebuilt.weights] == [w.path for w in model.weights]


def test_a_small_model_saves_and_loads(tmp_path):
    config = reference.MiniLMConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    head = {"weight": np.ones((3, 8)), "bias": np.arange(3.0)}
    small = minilm_sentiment(head, weights=None, config=config)
    ids = np.array([[1, 5, 7, 2], [1, 9, 2, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("encoder_layer_1").config == config
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded([ids, mask])),
        keras.ops.convert_to_numpy(small([ids, mask])),
        atol=1e-6,
    )


def test_the_sentiment_model(sentiment, head, tokenizer, weights):
    encoding = tokenizer(list(TEXTS), length=LENGTH)
    logits = keras.ops.convert_to_numpy(sentiment(int32(encoding)))
    names = [layer.name for layer in sentiment.layers]
    assert names[-2:] == ["pooling", "classifier"]
    checks.check_sentiment_logits(logits, head, weights, encoding)


def test_iba_explains_an_encoder_layer(sentiment, tokenizer):
    explainer = iba_tf.IBA("encoder_layer_3", steps=3, batch_size=2, beta=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 8 sentences: few samples for the estimator
        explainer.estimate(
            sentiment, [int32(tokenizer(list(CORPUS), length=LENGTH))], progress=False
        )
    assert explainer.estimators[0].feature_shape == (LENGTH, 384)
    assert explainer.estimators[0].layout == "tokens"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = explainer.analyze(
            sentiment, int32(tokenizer(list(TEXTS), length=LENGTH)), target=[1, 0, 0]
        )
    assert maps.shape == (3, LENGTH)
    assert np.all(np.isfinite(maps)) and np.all(maps >= 0)


def test_bad_arguments_are_refused_and_leave_the_model_as_it_was(model, weights):
    with pytest.raises(ValueError, match=r"weights must be 'bundled'.* or None"):
        minilm(weights="imagenet")
    with pytest.raises(ValueError, match=r"sequence_length must be in \[1, 512\]"):
        minilm(weights, sequence_length=1000)
    before = [w.copy() for w in model.get_layer("encoder_layer_5").get_weights()]
    broken = {**weights, "encoder.layer.5.output.dense.bias": np.zeros(7, np.float32)}
    with pytest.raises(ValueError, match="'encoder.layer.5.output.dense.bias' has shape"):
        load_hf_weights(model, broken)
    for old, new in zip(before, model.get_layer("encoder_layer_5").get_weights()):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(ValueError, match=r"weight must be \(C, 384\)"):
        minilm_sentiment({"weight": np.zeros((2, 3)), "bias": np.zeros(2)}, weights)


def test_the_text_explainer_finds_layers_and_needs_a_fixed_length(sentiment, weights, tokenizer):
    from iba_tf.text import TextIBA

    assert TextIBA(sentiment, tokenizer, layer=3).layer == "encoder_layer_3"
    assert TextIBA(sentiment, tokenizer, layer="encoder.layer.2").layer == "encoder_layer_2"
    explainer = TextIBA(sentiment, tokenizer, layer="encoder_layer_5")
    assert explainer.encoder_layers() == [f"encoder_layer_{i}" for i in range(6)]
    assert explainer.max_length == LENGTH  # the model's one sequence length
    with pytest.raises(ValueError, match="layer 'pooler' not found.*encoder_layer_0"):
        TextIBA(sentiment, tokenizer, layer="pooler")
    with pytest.raises(ValueError, match="built for one sequence length"):
        TextIBA(minilm_sentiment(weights=weights), tokenizer, layer=3)
    with pytest.raises(TypeError, match="model must be a keras.Model, got str"):
        TextIBA("minilm", tokenizer, layer=3)
