"""The framework-free parts of the text explainer: tokenising, truncation, grouping."""

from __future__ import annotations

import numpy as np
import pytest

from iba import text_explainer
from iba.models.minilm import Tokenizer  # the numpy session installs tokenizers and MiniLM


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


def test_encode_pads_to_the_longest_or_to_a_length(tokenizer):
    texts = ["a gorgeous, witty movie", "dull", ""]
    enc = text_explainer.encode(tokenizer, texts, max_length=256)
    assert enc.inputs["input_ids"].shape == (3, 7) and enc.mask.sum(1).tolist() == [7, 3, 2]
    assert enc.tokens[0] == ["[CLS]", "a", "gorgeous", ",", "witty", "movie", "[SEP]"]
    assert enc.word_ids[0] == [None, 0, 1, 2, 3, 4, None]
    np.testing.assert_array_equal(enc.offsets[0, 2], [2, 10])  # "gorgeous"
    np.testing.assert_array_equal(enc.special[1], [1, 0, 1, 1, 1, 1, 1])  # padding is special
    assert set(enc.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    fixed = text_explainer.encode(tokenizer, texts, max_length=256, length=12)
    assert fixed.inputs["input_ids"].shape == (3, 12)
    np.testing.assert_array_equal(fixed.inputs["input_ids"][:, :7], enc.inputs["input_ids"])
    cut = text_explainer.encode(tokenizer, texts, max_length=4)
    assert cut.tokens[0] == ["[CLS]", "a", "gorgeous", "[SEP]"]


def test_token_counts_are_untruncated(tokenizer):
    long = " ".join(["good"] * 300)
    assert text_explainer.token_counts(tokenizer, ["dull", long]) == [3, 302]
    assert text_explainer.token_counts(tokenizer.backend, ["dull"]) == [3]


def test_texts_and_tokenizers_are_checked():
    assert text_explainer.texts_of("one") == ["one"]
    with pytest.raises(ValueError, match="texts is empty"):
        text_explainer.texts_of([])
    with pytest.raises(TypeError, match=r"item\(s\) \[1\] are \['int'\]"):
        text_explainer.texts_of(["a", 1])
    with pytest.raises(TypeError, match="a string or a list of strings, got dict"):
        text_explainer.texts_of({"a": 1})
    with pytest.raises(TypeError, match="needs the model's tokenizer"):
        text_explainer.check_tokenizer(None)
    with pytest.raises(TypeError, match="Hugging Face fast tokenizer.*got function"):
        text_explainer.check_tokenizer(lambda texts: None)


def test_warn_truncated_names_the_texts():
    with pytest.warns(UserWarning, match=r"2 text\(s\) \(indices \[0, 3\]\).*maximum of 8"):
        text_explainer.warn_truncated([0, 3], 8)


class _Grouping(text_explainer.TextExplainer):
    """Only what grouping needs: a budget, the estimator rule and the padded length."""

    def __init__(self, max_tokens, per_text=False, fixed=None, step=1):
        self.max_tokens, self.max_length = max_tokens, 512
        self._per, self._fixed, self._step = per_text, fixed, step

    @property
    def _per_text(self):
        return self._per

    def fixed_length(self):
        return self._fixed

    def padded_length(self, longest):
        return -(-longest // self._step) * self._step


def test_texts_are_grouped_by_length_within_the_token_budget():
    lengths = [5, 30, 6, 7, 29]
    assert _Grouping(20)._groups(lengths) == [[0, 2], [3], [4], [1]]
    assert _Grouping(100)._groups(lengths) == [[0, 2, 3], [4, 1]]
    assert _Grouping(200)._groups(lengths) == [[0, 2, 3, 4, 1]]
    assert _Grouping(100, per_text=True)._groups(lengths) == [[0], [2], [3], [4], [1]]
    # a fixed length (Keras) counts for every text; a padded length (Flax) rounds up
    assert _Grouping(100, fixed=32)._groups(lengths) == [[0, 2, 3], [4, 1]]
    assert _Grouping(64, step=16)._groups(lengths) == [[0, 2, 3], [4, 1]]
    assert _Grouping(64, step=16).padded_length_for(29) == 32
    assert _Grouping(64).padded_length_for(29) is None
