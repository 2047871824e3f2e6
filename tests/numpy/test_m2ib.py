"""``iba.m2ib`` (M2IB's loss, maps, checks and result; docs/mathematics.md section 5) and the
standard-normal prior's preset ``iba.m2ib_config``."""

from __future__ import annotations

import re

import numpy as np
import pytest

import iba
from iba import driver, m2ib, text


def test_m2ib_config_is_the_authors():
    c = iba.m2ib_config()
    assert (c.beta, c.lr, c.steps, c.batch_size, c.initial_alpha) == (0.1, 1.0, 10, 10, 5.0)
    assert c.sigma is None and c.estimator == "prior" and c.active_threshold is None
    assert c.capacity_at == "last_forward"  # the capacity of the last forward pass, as theirs
    assert iba.m2ib_config(beta=1.0).beta == 1.0
    assert iba.Config(estimator="prior").estimator == "prior"
    with pytest.raises(ValueError, match=re.escape("('corpus', 'sentence', 'prior')")):
        iba.Config(estimator="normal")


def test_prior_statistics():
    stats = driver.prior_statistics([(3, 4), (2, 5, 5)])
    assert [s.mean.shape for s in stats] == [(3, 4), (2, 5, 5)]
    for s in stats:
        np.testing.assert_array_equal(s.mean, 0.0)
        np.testing.assert_array_equal(s.std, 1.0)
        assert s.mask is None and s.mean.dtype == np.float64
    # with mu = 0 and std' = 1 the capacity is the spec's formula of section 5
    rng = np.random.default_rng(0)
    r, lam = rng.standard_normal((3, 4)), rng.random((3, 4))
    v = (1 - lam) ** 2
    want = -0.5 * (1 + np.log(v) - (lam * r) ** 2 - v)
    np.testing.assert_allclose(iba.capacity(r, lam, stats[0].mean, stats[0].std), want)


def test_cosine_similarity():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    want = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]
    np.testing.assert_allclose(m2ib.cosine_similarity(a, b), want, rtol=1e-12)
    np.testing.assert_allclose(m2ib.cosine_similarity(a, 3 * a), 1.0)
    np.testing.assert_array_equal(m2ib.cosine_similarity(np.zeros((1, 6)), b[:1]), 0.0)
    tiny = np.full((1, 2), 1e-4)  # |a| |b| = 2e-8 < eps: the floor
    np.testing.assert_allclose(m2ib.cosine_similarity(tiny, tiny), 2e-8 / m2ib.COSINE_EPS)
    with pytest.raises(ValueError, match="two \\(R, P\\) arrays"):
        m2ib.cosine_similarity(a, b[:2])


def test_similarity_loss_pairs_each_row_with_its_pair():
    rng = np.random.default_rng(2)
    other = rng.standard_normal((2, 5))
    rows = rng.standard_normal((6, 5))  # 2 pairs x 3 noise samples, input-major
    loss = m2ib.similarity_loss(rows, other)
    want = [
        -m2ib.cosine_similarity(rows[r : r + 1], other[r // 3 : r // 3 + 1])[0] for r in range(6)
    ]
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    np.testing.assert_array_equal(m2ib.pair_rows(other, 6), np.repeat(other, 3, axis=0))
    with pytest.raises(ValueError, match="5 noised rows do not split into the 2 pair"):
        m2ib.similarity_loss(rows[:5], other)


def test_pair_loss():
    rng = np.random.default_rng(3)
    cap = rng.random((2, 4, 3))
    other = rng.standard_normal((2, 5))
    rows = rng.standard_normal((4, 5))
    cos = -m2ib.similarity_loss(rows, other).reshape(2, 2).mean(1)
    np.testing.assert_allclose(
        m2ib.pair_loss(cap, rows, other, 0.1), 0.1 * cap.reshape(2, -1).mean(1) - cos
    )
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    got = m2ib.pair_loss(cap, rows, other, 0.1, token_mask=mask)
    np.testing.assert_allclose(got[0], 0.1 * cap[0, :2].mean() - cos[0])
    np.testing.assert_allclose(got[1], 0.1 * cap[1].mean() - cos[1])


def test_image_map_drops_the_class_token_and_normalises():
    rng = np.random.default_rng(4)
    cap = rng.random((2, 17, 8))
    maps = m2ib.image_map(cap, (32, 24))
    assert maps.shape == (2, 32, 24)
    grid = cap.sum(-1)[:, 1:].reshape(2, 4, 4)
    resized = iba.resize(grid, (32, 24))
    low = resized.min(axis=(1, 2), keepdims=True)
    want = (resized - low) / (resized.max(axis=(1, 2), keepdims=True) - low)
    np.testing.assert_allclose(maps, want, atol=1e-12)
    np.testing.assert_allclose(m2ib.patch_bits(cap), grid / np.log(2), rtol=1e-12)
    cap[:, 0] = 1e6  # the class token plays no part
    np.testing.assert_allclose(m2ib.image_map(cap, (32, 24)), maps, atol=1e-12)
    with pytest.raises(ValueError, match="18 image tokens are not 1 class token"):
        m2ib.image_map(rng.random((1, 18, 8)), (32, 32))
    with pytest.raises(ValueError, match=r"\(N, T, D\)"):
        m2ib.image_map(rng.random((17, 8)), (32, 32))
    assert m2ib.patch_grid(50) == (7, 7) and m2ib.patch_grid(197) == (14, 14)


def test_token_scores_are_min_max():
    np.testing.assert_allclose(m2ib.token_scores([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(m2ib.token_scores([1.0, 1.0]), [0.0, 0.0])
    assert m2ib.token_scores([]).shape == (0,)
    with pytest.raises(ValueError, match=r"\(T,\)"):
        m2ib.token_scores(np.ones((2, 2)))


def test_checks():
    assert m2ib.check_pairs(3, 3) == 3
    with pytest.raises(ValueError, match=re.escape("got 2 image(s) and 1 caption(s)")):
        m2ib.check_pairs(2, 1)
    with pytest.raises(ValueError, match="holds no image"):
        m2ib.check_pairs(0, 0)
    attention = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    special = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [1, 0, 0, 1]])
    with pytest.raises(ValueError, match=re.escape("caption(s) 1 ('') tokenise to special")):
        m2ib.check_captions(["a dog", "", "the red sofa"], attention, special)
    m2ib.check_captions(["a", "b"], attention[[0, 2]], special[[0, 2]])


def test_pair_maps_token_scores():
    bits = np.array([3.0, 1.0, 2.0])
    tm = text.token_map(
        "a dog",
        ["<bos>", "a", "dog"],
        [None, 0, 1],
        [(0, 0), (0, 1), (2, 5)],
        bits,
        [True, False, False],
    )
    maps = m2ib.PairMaps(np.zeros((1, 2, 2)), np.zeros((1, 1, 1)), (tm,), np.zeros(1))
    assert len(maps) == 1
    np.testing.assert_allclose(maps.token_scores(0), [1.0, 0.0, 0.5])
    assert [w.text for w in tm.words] == ["a", "dog"]
