"""The framework-free MiniLM: config, safetensors reader, tokenizer, float64 forward pass and head.

The pinned values were computed with Hugging Face's ``BertModel`` in float64 on the same weights
(the forward pass matched it to 1e-13 at every position, padding included) while this was
written; no PyTorch here.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from iba.models import minilm

TEXTS = (
    "A truly wonderful film.",
    "The plot was dull, predictable and far too long for its own good.",
    "Meh.",
)


@pytest.fixture(scope="session")
def weights():
    return minilm.bundled_weights()


@pytest.fixture(scope="session")
def tokenizer():
    return minilm.Tokenizer()


@pytest.fixture(scope="session")
def encoding(tokenizer):
    return tokenizer(list(TEXTS))


@pytest.fixture(scope="session")
def states(weights, encoding):
    """The embeddings' and the 6 layers' outputs on the 3 sentences (float64)."""
    return minilm.numpy_forward(
        weights, encoding.input_ids, encoding.attention_mask, hidden_states=True
    )


def test_config_is_all_minilm_l6_v2():
    config = minilm.read_config()
    assert config == minilm.MiniLMConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        384,
        6,
        12,
    )
    assert (config.intermediate_size, config.layer_norm_eps, config.head_size) == (1536, 1e-12, 32)


def test_config_refuses_what_the_ports_do_not_implement():
    with pytest.raises(ValueError, match="hidden_act 'relu' is not supported"):
        minilm.MiniLMConfig.from_dict({"hidden_act": "relu"})
    with pytest.raises(ValueError, match="position_embedding_type 'relative_key'"):
        minilm.MiniLMConfig.from_dict({"position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        minilm.MiniLMConfig.from_dict({"hidden_size": 100})


def test_the_safetensors_reader_gives_every_tensor_its_shape(weights):
    shapes = minilm.parameter_shapes()
    assert len(shapes) == 5 + 6 * 16
    assert set(weights) == set(shapes) | set(minilm.UNUSED)
    for name, shape in shapes.items():
        assert weights[name].shape == shape, name
        assert weights[name].dtype == np.float32
    assert weights["encoder.layer.3.intermediate.dense.weight"].shape == (1536, 384)
    ids = weights["embeddings.position_ids"]
    assert ids.dtype == np.int64 and ids.shape == (1, 512)
    np.testing.assert_array_equal(ids[0], np.arange(512))
    assert weights["embeddings.word_embeddings.weight"].flags.writeable
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert total == 22_565_376


def _write_safetensors(path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_the_safetensors_reader_on_a_small_file(tmp_path):
    floats = np.arange(6, dtype="<f4").reshape(2, 3)
    longs = np.array([-1, 2**40], dtype="<i8")
    bf16 = (np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16).astype("<u2")
    blobs = [floats.tobytes(), longs.tobytes(), bf16.tobytes(), np.float16([0.5]).tobytes()]
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, kind, shape, blob in zip(
        ("f", "l", "b", "h"), ("F32", "I64", "BF16", "F16"), ([2, 3], [2], [2], []), blobs
    ):
        header[name] = {"dtype": kind, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    path = tmp_path / "small.safetensors"
    _write_safetensors(path, header, b"".join(blobs))
    tensors = minilm.read_safetensors(path)
    assert sorted(tensors) == ["b", "f", "h", "l"]
    np.testing.assert_array_equal(tensors["f"], floats)
    np.testing.assert_array_equal(tensors["l"], longs)
    np.testing.assert_array_equal(tensors["b"], np.array([1.5, -2.0], np.float32))
    assert tensors["b"].dtype == np.float32
    assert tensors["h"].shape == () and tensors["h"] == 0.5


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x01\x02", "shorter than 8 bytes"),
        (struct.pack("<Q", 10**6) + b"{}", "header of 1000000 bytes"),
        (struct.pack("<Q", 3) + b"{x}", "bad JSON header"),
    ],
)
def test_the_safetensors_reader_refuses_other_files(tmp_path, content, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        minilm.read_safetensors(path)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, "do not fit it"),
        ({"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}, "unsupported dtype 'C64'"),
        ({"dtype": "F32", "shape": [2]}, "malformed header entry"),
    ],
)
def test_the_safetensors_reader_refuses_bad_entries(tmp_path, entry, match):
    path = tmp_path / "bad.safetensors"
    _write_safetensors(path, {"t": entry}, bytes(8))
    with pytest.raises(ValueError, match=match):
        minilm.read_safetensors(path)


def test_the_tokenizer_pads_to_the_longest_text(encoding):
    assert encoding.input_ids.shape == encoding.attention_mask.shape == (3, 17)
    assert encoding.input_ids.dtype == np.int64
    assert encoding.tokens[1][:6] == ["[CLS]", "the", "plot", "was", "dull", ","]
    assert encoding.tokens[2] == ["[CLS]", "me", "##h", ".", "[SEP]"] + ["[PAD]"] * 12
    assert encoding.word_ids[2][:5] == [None, 0, 0, 1, None]
    np.testing.assert_array_equal(encoding.attention_mask.sum(1), [7, 17, 5])
    np.testing.assert_array_equal(encoding.special_tokens_mask[2], [1, 0, 0, 0] + [1] * 13)
    np.testing.assert_array_equal(encoding.input_ids[2, :5], [101, 2033, 2232, 1012, 102])
    assert set(encoding.inputs) == {"input_ids", "attention_mask"}


def test_the_tokenizer_pads_to_a_fixed_length_and_truncates_with_a_warning(tokenizer):
    fixed = tokenizer(["Short.", "Also short."], length=12)
    assert fixed.input_ids.shape == (2, 12)
    with pytest.warns(UserWarning, match=r"1 text\(s\) \(indices \[1\]\) have more than 6 tokens"):
        cut = tokenizer(["Tiny.", "This sentence is certainly too long."], length=6)
    assert cut.tokens[1] == ["[CLS]", "this", "sentence", "is", "certainly", "[SEP]"]
    short = minilm.Tokenizer(max_length=5)
    with pytest.warns(UserWarning, match="truncated to 5"):
        assert short(TEXTS[1]).input_ids.shape == (1, 5)
    assert tokenizer.token_id("[MASK]") == 103 and tokenizer.pad_id == 0


def test_the_tokenizer_refuses_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="texts is empty"):
        tokenizer([])
    with pytest.raises(TypeError, match="texts must be strings, got int"):
        tokenizer(["fine", 3])
    with pytest.raises(ValueError, match=r"max_length must be in \[2, 512\]"):
        minilm.Tokenizer(max_length=1000)
    with pytest.raises(ValueError, match=r"length must be in \[2, 512\]"):
        tokenizer("text", length=1)
    with pytest.raises(KeyError, match="not in the vocabulary"):
        tokenizer.token_id("[NOPE]")


def test_gelu_is_exact():
    np.testing.assert_allclose(minilm.gelu(np.array([1.0, -1.0])), [0.8413447461, -0.1586552539])


def test_the_forward_pass_matches_hugging_face(states, encoding):
    assert len(states) == 7
    last = states[-1]
    assert last.shape == (3, 17, 384) and last.dtype == np.float64
    # Hugging Face's BertModel in float64, same weights
    np.testing.assert_allclose(
        last[0, 0, :4], [-0.0958594462, -0.1500705925, 0.1845038112, -0.2027185290], atol=1e-9
    )
    np.testing.assert_allclose(
        last[1, 5, :4], [-0.2394552809, -0.1018054741, 0.0723836366, 0.2219532141], atol=1e-9
    )
    np.testing.assert_allclose(  # a padded position of "Meh."
        last[2, 4, :4], [-0.5782415051, 0.0722830176, -0.6635808226, -0.6396985464], atol=1e-9
    )
    pooled = minilm.mean_pooling(last, encoding.attention_mask)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(
        pooled[0, :3], [-0.0650247724, 0.0531617375, 0.0168816862], atol=1e-9
    )
    np.testing.assert_allclose(pooled[0] @ pooled[1], 0.3369236786, atol=1e-9)


def test_the_forward_pass_is_deterministic_and_ignores_padding(weights, states, encoding):
    again = minilm.numpy_forward(weights, encoding.input_ids, encoding.attention_mask)
    np.testing.assert_array_equal(again, states[-1])
    alone = minilm.numpy_forward(weights, encoding.input_ids[2:, :5])  # "Meh." without padding
    np.testing.assert_allclose(alone[0], states[-1][2, :5], atol=1e-12)


def test_the_forward_pass_refuses_bad_inputs(weights):
    ids = np.array([[101, 2033, 102]])
    with pytest.raises(ValueError, match=r"must lie in \[0, 30522\)"):
        minilm.numpy_forward(weights, ids + 30522)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        minilm.numpy_forward(weights, ids, np.ones((1, 4)))
    with pytest.raises(ValueError, match="0 \\(padding\\) and 1"):
        minilm.numpy_forward(weights, ids, np.full((1, 3), 2))
    with pytest.raises(ValueError, match="an \\(N, T\\) integer array"):
        minilm.numpy_forward(weights, ids.astype(float))
    with pytest.raises(ValueError, match="longer than the model's 512 positions"):
        minilm.numpy_forward(weights, np.zeros((1, 513), int))


def test_bad_weights_are_named(weights):
    ids = np.array([[101, 102]])
    missing = {k: v for k, v in weights.items() if k != "encoder.layer.2.output.dense.bias"}
    with pytest.raises(ValueError, match=r"missing \['encoder.layer.2.output.dense.bias'\]"):
        minilm.numpy_forward(missing, ids)
    wrong = {**weights, "embeddings.LayerNorm.bias": np.zeros(5)}
    with pytest.raises(ValueError, match="'embeddings.LayerNorm.bias' has shape \\(5,\\)"):
        minilm.numpy_forward(wrong, ids)
    with pytest.raises(TypeError, match="weights must be a dict"):
        minilm.check_weights([1, 2])


def test_read_head(tmp_path):
    rng = np.random.default_rng(0)
    head = {"weight": rng.standard_normal((2, 384)), "bias": np.array([0.5, -0.5])}
    path = tmp_path / "head.npz"
    np.savez(path, **head)
    for given in (head, path, str(path)):
        weight, bias = minilm.read_head(given)
        np.testing.assert_array_equal(weight, head["weight"])
        np.testing.assert_array_equal(bias, head["bias"])
    with pytest.raises(ValueError, match=r"weight must be \(C, 384\) and bias \(C,\)"):
        minilm.read_head({"weight": np.zeros((2, 10)), "bias": np.zeros(2)})
    with pytest.raises(ValueError, match=r"must hold arrays 'weight' and 'bias', has \['w'\]"):
        minilm.read_head({"w": np.zeros((2, 384))})
    with pytest.raises(ValueError, match="NaN or infinite"):
        minilm.read_head({"weight": np.full((2, 384), np.nan), "bias": np.zeros(2)})
    with pytest.raises(TypeError, match="head must be 'bundled'"):
        minilm.read_head(3)


def test_the_bundled_head_reads_the_sentiment(states, encoding):
    if not minilm.SENTIMENT_HEAD.exists():
        with pytest.raises(FileNotFoundError, match="no bundled sentiment head"):
            minilm.read_head()
        return
    weight, bias = minilm.read_head()
    assert weight.shape == (2, 384) and bias.shape == (2,)
    logits = minilm.mean_pooling(states[-1], encoding.attention_mask) @ weight.T + bias
    np.testing.assert_array_equal(logits.argmax(1), [1, 0, 0])  # fresh, rotten, rotten
