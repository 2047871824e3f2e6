"""``iba.text`` (token masks, the information term over real tokens, shared-position estimators,
per-text noise, words from wordpieces, ``TokenMap``) and ``iba.models.sentiment_head``."""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import pytest

import iba
from iba import text
from iba.models import sentiment_head as sh


def test_token_mask_keeps_or_drops_special_tokens():
    attention = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    special = np.array([[1, 0, 0, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(text.token_mask(attention), attention)
    np.testing.assert_array_equal(
        text.token_mask(attention, special, keep_special=False),
        [[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]],
    )
    with pytest.raises(ValueError, match="special_tokens_mask"):
        text.token_mask(attention, keep_special=False)
    with pytest.raises(ValueError, match="0 \\(padding\\) and 1"):
        text.token_mask(attention * 2)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        text.token_mask(attention[0])


def test_information_term_is_the_mean_over_real_tokens():
    rng = np.random.default_rng(0)
    cap = rng.random((2, 5, 3))
    ones = np.ones((2, 5))
    np.testing.assert_allclose(text.information_term(cap, ones), cap.reshape(2, -1).mean(1))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], float)
    np.testing.assert_allclose(text.information_term(cap, mask)[0], cap[0, :3].mean())
    # an empty input gets 0, not NaN
    assert text.information_term(cap, np.zeros((2, 5)))[0] == 0.0
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        text.information_term(cap, np.ones((2, 4)))


def test_information_term_does_not_see_padding_or_the_batch():
    """A text alone, or padded next to a longer one with anything at its padding: one value."""
    rng = np.random.default_rng(1)
    short = rng.random((1, 3, 4))
    batch = rng.random((2, 7, 4)) * 100  # the padding of row 0 holds large values
    batch[0, :3] = short[0]
    mask = np.zeros((2, 7))
    mask[0, :3], mask[1] = 1, 1
    alone = text.information_term(short, np.ones((1, 3)))
    np.testing.assert_allclose(text.information_term(batch, mask)[0], alone[0], rtol=1e-15)
    masked = text.masked_capacity(batch, mask)
    assert (masked[0, 3:] == 0).all() and (masked[1] == batch[1]).all()


def _position_estimator(rng, n=50, dim=4):
    est = iba.Estimator(layout="tokens")
    est.update(rng.normal(size=(n, 1, dim)) * [1, 2, 3, 0] + 1.0)
    return est


def test_tile_positions_repeats_one_positions_statistics():
    est = _position_estimator(np.random.default_rng(2))
    tiled = text.tile_positions(est, 6)
    assert tiled.feature_shape == (6, 4) and tiled.layout == "tokens"
    assert tiled.n_samples == est.n_samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer than 1,000 samples
        one, many = est.statistics(), tiled.statistics()
    for a, b in zip(one, many):
        np.testing.assert_array_equal(np.broadcast_to(a, b.shape), b)
    # the channel that never varies (times 0, plus 1) is floored, never 0
    assert (many.std[:, 3] == 0.01).all()


def test_tile_positions_refuses_other_estimators():
    per_position = iba.Estimator(layout="tokens")
    per_position.update(np.ones((3, 5, 4)))
    with pytest.raises(ValueError, match=r"\(1, D\)"):
        text.tile_positions(per_position, 5)
    with pytest.raises(TypeError, match="iba.Estimator"):
        text.tile_positions("est.npz", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_tokens"):
        text.tile_positions(_position_estimator(np.random.default_rng(0)), 0)


def test_text_noise_depends_on_each_texts_own_length_only():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    noise = text.text_noise(7, 3, 2, mask, 5)
    assert noise.shape == (3, 2, 2, 4, 5)
    assert (noise[:, 0, :, 2:] == 0).all()
    alone = text.text_noise(7, 3, 2, np.ones((1, 2)), 5)
    np.testing.assert_array_equal(noise[:, 0, :, :2], alone[:, 0])
    expected = np.random.default_rng(7).standard_normal((3, 2, 4, 5))
    np.testing.assert_array_equal(noise[:, 1], expected)
    # left padding: the real tokens get the same draws, in order
    left = text.text_noise(7, 3, 2, np.array([[0, 0, 1, 1]]), 5)
    np.testing.assert_array_equal(left[:, 0, :, 2:], alone[:, 0])
    assert (left[:, 0, :, :2] == 0).all()


def test_merge_wordpieces_joins_runs_of_one_word_id():
    # "[CLS] the over ##long film , sadly [SEP] [PAD]"
    sentence = "the overlong film, sadly"
    word_ids = [None, 0, 1, 1, 2, 3, 4, None, None]
    offsets = [(0, 0), (0, 3), (4, 8), (8, 12), (13, 17), (17, 18), (19, 24), (0, 0), (0, 0)]
    words = text.merge_wordpieces(word_ids, offsets, sentence)
    assert [w.text for w in words] == ["the", "overlong", "film", ",", "sadly"]
    assert words[1] == text.Word("overlong", 4, 12, 2, 4)
    values = np.arange(9.0)
    np.testing.assert_array_equal(text.word_sums(values, words), [1, 2 + 3, 4, 5, 6])
    assert text.merge_wordpieces([None, None], [(0, 0), (0, 0)], "") == []
    assert text.merge_wordpieces([], [], "") == []
    with pytest.raises(ValueError, match="word ids"):
        text.merge_wordpieces([0, 1], [(0, 1)], "ab")


def test_merge_wordpieces_restarts_after_a_special_token():
    """Pairs of sequences restart the word ids: a special token between them splits the words."""
    words = text.merge_wordpieces(
        [None, 0, None, 0, None], [(0, 0), (0, 2), (0, 0), (3, 5), (0, 0)], "ab cd"
    )
    assert [(w.text, w.first, w.stop) for w in words] == [("ab", 1, 2), ("cd", 3, 4)]


def test_token_map_builds_words_prediction_and_masks_special_tokens():
    sentence = "so overlong"
    args = (
        sentence,
        ["[CLS]", "so", "over", "##long", "[SEP]"],
        [None, 0, 1, 1, None],
        [(0, 0), (0, 2), (3, 7), (7, 11), (0, 0)],
        [4.0, 1.0, 2.0, 3.0, 5.0],
        [True, False, False, False, True],
    )
    kept = text.token_map(*args, target=1, logits=[0.0, np.log(3.0)])
    assert kept.words[1].text == "overlong" and kept.word_spans == [(0, 2), (3, 11)]
    np.testing.assert_array_equal(kept.word_bits, [1.0, 5.0])
    assert kept.total_bits == 15.0 and kept.target == 1 and kept.prediction == 1
    np.testing.assert_allclose(kept.probabilities, [0.25, 0.75])
    assert kept.top_words(1) == [("overlong", 5.0)]
    np.testing.assert_allclose(kept.normalized(), [0.0, 1.0])
    masked = text.token_map(*args, mask_special=True)
    np.testing.assert_array_equal(masked.token_bits, [0, 1, 2, 3, 0])
    np.testing.assert_array_equal(masked.word_bits, kept.word_bits)
    assert masked.prediction is None and masked.probabilities is None
    assert "overlong(5.0)" in str(kept)
    with pytest.raises(ValueError, match="different lengths"):
        text.token_map(sentence, ["[CLS]"], [None], [(0, 0)], [1.0, 2.0], [True])


def test_token_map_of_an_empty_text_has_no_words():
    m = text.token_map("", ["[CLS]", "[SEP]"], [None, None], [(0, 0)] * 2, [1.0, 2.0], [1, 1])
    assert m.words == () and m.word_bits.shape == (0,) and m.normalized().shape == (0,)
    assert m.top_words() == []


# -- the sentiment head --------------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_complete():
    a, b = sh.split(12752), sh.split(12752)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert (len(a.test), len(a.validation), len(a.train)) == (2000, 1000, 9752)
    joined = np.concatenate(a)
    np.testing.assert_array_equal(np.sort(joined), np.arange(12752))
    with pytest.raises(ValueError, match="at least 2 for training"):
        sh.split(10, n_test=5, n_validation=4)


def _problem(seed=0, n=400, d=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def test_fit_logistic_reaches_the_optimum_and_repeats_bit_for_bit():
    x, y = _problem()
    w, b = sh.fit_logistic(x, y, l2=1e-2)
    w2, b2 = sh.fit_logistic(x, y, l2=1e-2)
    assert w.tobytes() == w2.tobytes() and b == b2
    p = 1 / (1 + np.exp(-(x @ w + b)))
    grad_w = x.T @ (p - y) / len(y) + 1e-2 * w
    assert np.abs(grad_w).max() < 1e-9 and abs((p - y).mean()) < 1e-9
    # the optimum: any small step raises the loss
    base = sh.logistic_loss(x, y, w, b, 1e-2)
    for step in np.eye(len(w)) * 1e-3:
        assert sh.logistic_loss(x, y, w + step, b, 1e-2) > base
    assert sh.accuracy(x, y, w, b) > 0.85


def test_fit_logistic_refuses_bad_input():
    x, y = _problem()
    with pytest.raises(ValueError, match="l2 must be > 0"):
        sh.fit_logistic(x, y, 0.0)
    with pytest.raises(ValueError, match="labels 0 and 1"):
        sh.fit_logistic(x, y * 2, 1e-2)
    with pytest.raises(ValueError, match=r"\(n, D\)"):
        sh.fit_logistic(x, y[:-1], 1e-2)


def test_select_l2_and_head_arrays():
    x, y = _problem(1)
    l2, score = sh.select_l2(x[:300], y[:300], x[300:], y[300:], grid=(1e-3, 1e-1, 10.0))
    assert l2 in (1e-3, 1e-1, 10.0) and 0.8 < score <= 1
    w, b = sh.fit_logistic(x, y, l2)
    weight, bias = sh.head_arrays(w, b)
    logits = x @ weight.T + bias
    softmax = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    np.testing.assert_allclose(softmax, 1 / (1 + np.exp(-(x @ w + b))), rtol=1e-12)


def test_head_bytes_are_reproducible_and_load_without_pickle(tmp_path):
    arrays = {"weight": np.ones((2, 3)), "bias": np.zeros(2), "labels": np.array(sh.LABELS)}
    assert sh.head_bytes(arrays) == sh.head_bytes(dict(reversed(arrays.items())))
    digest = sh.write_head(tmp_path / "h.npz", arrays)
    assert digest == hashlib.sha256((tmp_path / "h.npz").read_bytes()).hexdigest()
    with np.load(io.BytesIO(sh.head_bytes(arrays)), allow_pickle=False) as data:
        np.testing.assert_array_equal(data["weight"], arrays["weight"])
    assert sh.read_metadata(tmp_path / "h.npz") == {"labels": ("rotten", "fresh")}


def test_the_shipped_head_and_its_metadata():
    with np.load(sh.HEAD_FILE, allow_pickle=False) as data:
        weight, bias = data["weight"], data["bias"]
    assert weight.shape == (2, 384) and bias.shape == (2,)
    np.testing.assert_array_equal(weight[0], -weight[1])  # two logits of one logistic model
    meta = sh.read_metadata()
    assert meta["labels"] == sh.LABELS and meta["split_seed"] == sh.SPLIT_SEED
    assert meta["n_test"] == sh.N_TEST and meta["n_train"] == 12752 - sh.N_TEST
    assert meta["l2"] in sh.L2_GRID
    assert 0.74 < meta["test_accuracy"] < 0.80  # measured on the 2,000 held-out snippets
    assert len(meta["embeddings_sha256"]) == 64
