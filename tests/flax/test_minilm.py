"""The Flax port of all-MiniLM-L6-v2 with the bundled weights: the last hidden state against the
float64 NumPy forward pass, the module paths, the sentiment model and an IBA explanation at
``encoder/layer_3`` (no PyTorch involved)."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from iba.models import minilm as reference
from iba_jax import IBA
from iba_jax.models import flax_path
from iba_jax.models.minilm import minilm, minilm_sentiment, variables_from_hf
from tests import minilm_checks as checks
from tests.minilm_checks import CORPUS, TEXTS, int32

TARGET = flax_path("encoder.layer.3")


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
    return minilm_sentiment(head, weights)


def test_flax_path():
    assert TARGET == "encoder/layer_3"
    assert (
        flax_path("encoder.layer.3.attention.self.query") == "encoder/layer_3/attention/self/query"
    )


def test_the_last_hidden_state_matches_the_numpy_forward_pass(model, encoding, oracle):
    module, variables = model
    hidden = np.asarray(jax.jit(module.apply)(variables, int32(encoding)))
    assert hidden.shape == (3, 17, 384) and hidden.dtype == np.float32
    np.testing.assert_allclose(hidden, oracle, atol=1e-4, rtol=0)


def test_the_variables_are_named_after_the_hugging_face_modules(model):
    _, variables = model
    params = variables["params"]
    assert sorted(params) == ["embeddings", "encoder"]
    assert sorted(params["encoder"]) == [f"layer_{i}" for i in range(6)]
    layer = jax.tree.map(np.shape, params["encoder"]["layer_3"])
    assert layer["attention"]["self"]["query"] == {"kernel": (384, 384), "bias": (384,)}
    assert layer["attention"]["output"]["LayerNorm"] == {"scale": (384,), "bias": (384,)}
    assert layer["intermediate"]["dense"]["kernel"] == (384, 1536)
    assert params["embeddings"]["word_embeddings"]["embedding"].shape == (30522, 384)
    assert sum(np.size(a) for a in jax.tree.leaves(variables)) == 22_565_376


def test_the_sentiment_model(sentiment, head, weights, tokenizer):
    module, variables = sentiment
    encoding = tokenizer(list(TEXTS))
    logits = np.asarray(module.apply(variables, encoding.input_ids, encoding.attention_mask))
    checks.check_sentiment_logits(logits, head, weights, encoding)


def test_iba_at_an_encoder_layer(sentiment, tokenizer):
    explainer = IBA(TARGET, steps=3, batch_size=2, beta=1e-5)
    x = int32(tokenizer(list(TEXTS)))
    corpus = int32(tokenizer(list(CORPUS), length=x["input_ids"].shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 8 sentences: few samples for the estimator
        explainer.estimate(sentiment, [corpus], progress=False)
        maps = explainer.analyze(sentiment, x, target=[1, 0, 0])
    assert explainer.estimators[0].layout == "tokens"
    assert maps.shape == (3, 17)
    assert np.all(np.isfinite(maps)) and np.all(maps >= 0)


def test_bad_arguments_are_refused(model, weights):
    module, variables = model
    with pytest.raises(ValueError, match="weights must be 'bundled'.*got 'imagenet'"):
        minilm(weights="imagenet")
    broken = {k: v for k, v in weights.items() if k != "encoder.layer.1.attention.self.key.bias"}
    with pytest.raises(ValueError, match=r"missing \['encoder.layer.1.attention.self.key.bias'\]"):
        variables_from_hf(broken, module)
    with pytest.raises(ValueError, match=r"weight must be \(C, 384\)"):
        minilm_sentiment({"weight": np.zeros((2, 3)), "bias": np.zeros(2)}, weights)
    ids = np.zeros((1, 4), np.int32)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        module.apply(variables, ids, np.ones((1, 5), np.int32))
    with pytest.raises(ValueError, match="input_ids must be"):
        module.apply(variables, ids.astype(np.float32))
    # the random initialisation, traced but not compiled
    random = jax.eval_shape(lambda: minilm(weights=None)[1])
    assert jax.tree.map(np.shape, random) == jax.tree.map(np.shape, variables)


def test_the_text_explainer_finds_layers(sentiment, tokenizer):
    from iba_jax.text import TextIBA

    explainer = TextIBA(sentiment, tokenizer, layer=3)
    assert explainer.layer == "encoder/layer_3"
    assert explainer.encoder_layers() == [f"encoder/layer_{i}" for i in range(6)]
    assert TextIBA(sentiment, tokenizer, layer="encoder.layer.2").layer == "encoder/layer_2"
    assert TextIBA(sentiment, tokenizer, layer=-1).layer == "encoder/layer_5"
    assert explainer.max_length == 256  # the tokenizer's; the model reads 512 positions
    with pytest.raises(ValueError, match="layer 'pooler' not found.*encoder/layer_0"):
        TextIBA(sentiment, tokenizer, layer="pooler")
    with pytest.raises(TypeError, match="Flax Linen .module, variables. pair"):
        TextIBA(sentiment[0], tokenizer, layer=3)
