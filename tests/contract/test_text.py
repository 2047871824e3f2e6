"""Text IBA on the bundled MiniLM sentiment model, the same on every backend: the text explainer
the command line's runner builds (``Runner.text_explainer``: ``iba_torch.text.TextIBA`` on
Hugging Face, ``iba_tf.text.TextIBA`` and ``iba_jax.text.TextIBA`` on the ports).

Cross-backend agreement of the maps is the conformance suite's real-text case; here each backend
shows the behaviour issue 13 asks of text: several texts of different lengths in one call,
padding that carries nothing, maps that do not depend on the batch, truncation with a warning,
clear errors, and the model left as it was.
"""

from __future__ import annotations

import numpy as np
import pytest

from iba import backends

from .conftest import BACKEND
from .subjects import assert_same, model_snapshot

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")

CONFIG = {"steps": 3, "batch_size": 2}
CORPUS = [
    f"{a} {b} film, {c}."
    for a in ("a", "the", "this", "one more")
    for b in ("funny", "dull", "moving", "clumsy", "bright")
    for c in ("with a great cast", "and too long", "that works", "I guess")
]  # 80 texts, about a thousand tokens
TEXTS = ["a gorgeous, witty, seductive movie.", "dull and far too long", ""]


@pytest.fixture(scope="module")
def runner_class():
    from iba.demo import runners

    engine = backends.backend(BACKEND).engine
    assert engine is not None
    return runners.runner_class(engine)


@pytest.fixture(scope="module")
def text_iba(runner_class):
    explainer = runner_class.text_explainer(3, **CONFIG)
    explainer.estimate(CORPUS, progress=False)
    return explainer


@pytest.fixture(scope="module")
def together(text_iba):
    return text_iba.explain(TEXTS)


def test_texts_of_different_lengths_give_one_map_each(text_iba, together):
    assert [m.text for m in together] == TEXTS
    first, second, empty = together
    assert first.tokens[0] == "[CLS]" and first.tokens[-1] == "[SEP]"
    assert [w.text for w in first.words] == [
        "a", "gorgeous", ",", "witty", ",", "seductive", "movie", ".",
    ]  # fmt: skip
    assert len(first.token_bits) == len(first.tokens) == 10
    assert len(second.token_bits) == 7 and empty.tokens == ("[CLS]", "[SEP]")
    assert empty.words == () and empty.word_bits.shape == (0,)
    for m in together:
        assert np.all(np.isfinite(m.token_bits)) and np.all(m.token_bits >= 0)
        np.testing.assert_allclose(m.word_bits.sum(), m.token_bits[~m.special].sum())
    # the default target is the predicted class: fresh, then rotten
    assert [m.target for m in together[:2]] == [m.prediction for m in together[:2]] == [1, 0]
    assert text_iba.labels == ("rotten", "fresh")


def test_a_text_gets_the_same_map_alone_or_next_to_longer_texts(text_iba, together):
    alone = text_iba.explain(TEXTS[1])[0]
    np.testing.assert_allclose(alone.token_bits, together[1].token_bits, rtol=1e-4, atol=1e-3)


def test_another_target_explains_another_class(text_iba, together):
    other = text_iba.explain(TEXTS[0], target=0)[0]
    assert other.target == 0
    assert not np.allclose(other.token_bits, together[0].token_bits, rtol=1e-2)


def test_special_tokens_can_be_masked(text_iba, together):
    masked = text_iba.explain(TEXTS[0], mask_special=True)[0]
    assert np.all(masked.token_bits[masked.special] == 0)
    real = ~masked.special
    np.testing.assert_allclose(
        masked.token_bits[real], together[0].token_bits[real], rtol=1e-4, atol=1e-3
    )


def test_an_over_long_text_is_truncated_with_a_warning(text_iba):
    long = " ".join(["good"] * (text_iba.max_length + 20))
    with pytest.warns(UserWarning, match=r"1 text\(s\) \(indices \[0\]\).*truncated"):
        (m,) = text_iba.explain(long)
    assert m.truncated and len(m.tokens) == text_iba.max_length


def test_the_model_is_left_as_it_was(text_iba):
    before = model_snapshot(text_iba.model)
    text_iba.explain(TEXTS[:2])
    with pytest.raises(RuntimeError, match="boom"):

        def failing(outputs):
            raise RuntimeError("boom")

        text_iba.explain(TEXTS[0], loss_fn=failing)
    assert_same(before, model_snapshot(text_iba.model))


def test_bad_input_gets_clear_errors(runner_class, text_iba):
    with pytest.raises(ValueError, match="layer=6 is out of range: the model has 6 encoder layers"):
        runner_class.text_explainer(6, **CONFIG)
    with pytest.raises(ValueError, match="layer 'encoder.layer.9' not found.*encoder layers"):
        runner_class.text_explainer("encoder.layer.9", **CONFIG)
    with pytest.raises(ValueError, match="texts is empty"):
        text_iba.explain([])
    with pytest.raises(TypeError, match=r"item\(s\) \[1\]"):
        text_iba.explain(["fine", 3])
    with pytest.raises(ValueError, match="target= or loss_fn=, not both"):
        text_iba.explain("fine", target=1, loss_fn=lambda o: o)
    with pytest.raises(ValueError, match=r"target \[2\] out of range for 2 model outputs"):
        text_iba.explain("fine", target=2)
    fresh = runner_class.text_explainer(3, **CONFIG)
    with pytest.raises(RuntimeError, match=r"call estimate\(texts\)"):
        fresh.explain("fine")
