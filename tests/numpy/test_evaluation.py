"""Evaluation metrics (docs/mathematics.md section 7) on hand-made models with known answers."""

import builtins
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iba
from iba import evaluation as ev


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ignore_input(batch):
    """A model whose logits do not depend on the input."""
    return np.tile([2.0, 0.0, -1.0], (len(batch), 1))


def one_tile_model(row, col, tile=4, gain=3.0, channels_first=False):
    """Logits ``[gain * mean of one tile, 0]``: the model looks at that tile only."""

    def model(batch):
        if channels_first:
            batch = np.moveaxis(batch, 1, -1)
        patch = batch[:, row * tile : (row + 1) * tile, col * tile : (col + 1) * tile]
        return np.stack([gain * patch.mean(axis=(1, 2, 3)), np.zeros(len(batch))], axis=1)

    return model


def linear_model(weights):
    """Logits ``[w . x, 0]`` for channels-last images."""

    def model(batch):
        return np.stack([np.einsum("nhwc,hwc->n", batch, weights), np.zeros(len(batch))], axis=1)

    return model


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3))


# ---------------------------------------------------------------------------- degradation


def test_removal_steps_even_grid_up_to_all_tiles():
    steps = ev.removal_steps(784, 100)  # 8x8 tiles of a 224 px image
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 784
    assert np.all(np.diff(steps) > 0)
    np.testing.assert_array_equal(ev.removal_steps(16, 100), np.arange(17))
    with pytest.raises(ValueError, match="n_points must be an integer >= 2"):
        ev.removal_steps(16, 1)


def test_degradation_ranks_the_only_relevant_tile_first(images):
    model = one_tile_model(1, 2)
    heatmaps = np.random.default_rng(1).uniform(0, 1, (3, 16, 16))
    heatmaps[:, 4:8, 8:12] = 2.0  # the tile the model looks at is the most relevant
    result = ev.degradation(model, images, heatmaps, 0, tile_size=4, n_points=100, progress=False)
    assert result.fractions.shape == (17,)  # 16 tiles: every step is recorded
    np.testing.assert_allclose(result.fractions, np.arange(17) / 16)
    np.testing.assert_allclose(result.morf, np.r_[1.0, np.zeros(16)][None].repeat(3, 0), atol=1e-12)
    np.testing.assert_allclose(result.lerf, np.r_[np.ones(16), 0.0][None].repeat(3, 0), atol=1e-12)
    # areas by the trapezoid rule: LeRF 15.5 / 16, MoRF 0.5 / 16
    np.testing.assert_allclose(result.scores, 15 / 16)
    assert result.mean == pytest.approx(15 / 16)
    # raw scores: t1 from the tile's mean, b from the image's per-channel mean filling the tile
    t1 = sigmoid(3.0 * images[:, 4:8, 8:12].mean(axis=(1, 2, 3)))
    b = sigmoid(3.0 * images.mean(axis=(1, 2)).mean(axis=1))
    np.testing.assert_allclose(result.morf_raw[:, 0], t1)
    np.testing.assert_allclose(result.morf_raw[:, 1:], b[:, None].repeat(16, 1))
    np.testing.assert_array_equal(result.targets, 0)

    reversed_ = ev.degradation(model, images, -heatmaps, 0, tile_size=4, progress=False)
    np.testing.assert_allclose(reversed_.scores, -15 / 16)


def test_degradation_channels_first_and_predicted_targets(images):
    heatmaps = np.random.default_rng(2).uniform(0, 1, (3, 16, 16))
    last = ev.degradation(one_tile_model(0, 3), images, heatmaps, tile_size=4, progress=False)
    first = ev.degradation(
        one_tile_model(0, 3, channels_first=True),
        np.moveaxis(images, -1, 1),
        heatmaps,
        tile_size=4,
        data_format="channels_first",
        batch_size=7,
        progress=False,
    )
    np.testing.assert_allclose(first.scores, last.scores)
    np.testing.assert_array_equal(last.targets, 0)  # positive tile means: class 0 wins


def test_degradation_of_a_model_that_ignores_the_input_is_zero(images):
    heatmaps = np.random.default_rng(3).uniform(0, 1, (3, 16, 16))
    with pytest.warns(RuntimeWarning, match=r"fully degraded image scores the same .* 3 image"):
        result = ev.degradation(ignore_input, images, heatmaps, 1, tile_size=8, progress=False)
    np.testing.assert_array_equal(result.scores, 0.0)
    np.testing.assert_array_equal(result.morf, 0.0)
    np.testing.assert_array_equal(result.lerf, 0.0)
    p = np.exp(0.0) / np.exp([2.0, 0.0, -1.0]).sum()
    np.testing.assert_allclose(result.morf_raw, p)  # flat raw curves: the target's probability
    assert result.mean == 0.0


def test_degradation_of_a_constant_heatmap_warns_and_scores_zero(images):
    with pytest.warns(RuntimeWarning, match="1 constant heatmap"):
        result = ev.degradation(
            one_tile_model(2, 2), images[:1], np.ones((1, 16, 16)), 0, tile_size=3, progress=False
        )  # 3 does not divide 16: partial tiles at the edges
    np.testing.assert_allclose(result.morf, result.lerf)
    assert result.scores[0] == pytest.approx(0.0)


def test_degradation_score_option_raw_records_outputs_as_returned(images):
    def probabilities(batch):
        logits = one_tile_model(1, 1)(batch)
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    heatmaps = np.random.default_rng(4).uniform(0, 1, (3, 16, 16))
    a = ev.degradation(one_tile_model(1, 1), images, heatmaps, 0, tile_size=4, progress=False)
    b = ev.degradation(probabilities, images, heatmaps, 0, tile_size=4, score="raw", progress=False)
    np.testing.assert_allclose(a.morf_raw, b.morf_raw)
    np.testing.assert_allclose(a.scores, b.scores)


def test_image_metric_errors(images):
    heatmaps = np.random.default_rng(7).uniform(0, 1, (3, 16, 16))
    model = one_tile_model(0, 0)
    with pytest.raises(ValueError, match=r"heatmaps of shape \(3, 8, 8\) do not match.*iba.resize"):
        ev.degradation(model, images, np.zeros((3, 8, 8)), progress=False)
    with pytest.raises(ValueError, match=r"images must be a batch \(N, H, W, C\)"):
        ev.deletion(model, images[0], heatmaps[0], progress=False)
    bad = heatmaps.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"heatmaps: 1 NaN"):
        ev.insertion(model, images, bad, progress=False)
    with pytest.raises(ValueError, match="unknown score 'probability'; scores are: softmax, raw"):
        ev.degradation(model, images, heatmaps, score="probability", progress=False)
    with pytest.raises(ValueError, match="unknown data_format 'NCHW'"):
        ev.degradation(model, images, heatmaps, data_format="NCHW", progress=False)
    with pytest.raises(
        ValueError, match=re.escape("target has shape (2,); expected one int or 3 ints")
    ):
        ev.degradation(model, images, heatmaps, [0, 1], progress=False)
    with pytest.raises(ValueError, match=re.escape("target [5] out of range for 2 model outputs")):
        ev.deletion(model, images, heatmaps, 5, progress=False)
    with pytest.raises(ValueError, match="tile_size 32 is larger than the 16x16 image"):
        ev.degradation(model, images, heatmaps, tile_size=32, progress=False)
    with pytest.raises(
        ValueError, match=r"must return \(n, n_classes\) outputs .* got shape \(6,\)"
    ):
        ev.deletion(lambda b: b.sum(axis=(1, 2, 3)), images, heatmaps, 0, progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ev.sensitivity_n(model, images, heatmaps, batch_size=0, progress=False)


# ---------------------------------------------------------------------------- bounding box


def test_bounding_box_exact_heatmap_scores_one():
    heatmaps = np.zeros((2, 20, 30))
    heatmaps[0, 5:10, 2:12] = 1.0  # exactly the box (x1, y1, x2, y2) = (2, 5, 12, 10)
    heatmaps[1, 0:4, 25:30] = np.arange(20).reshape(4, 5) + 1.0
    result = ev.bounding_box_ratio(heatmaps, np.array([[2, 5, 12, 10], [25, 0, 30, 4]]))
    np.testing.assert_array_equal(result.scores, [1.0, 1.0])
    assert result.mean == 1.0 and not result.skipped.any()
    np.testing.assert_allclose(result.box_fractions, [50 / 600, 20 / 600])


def test_bounding_box_random_heatmaps_score_the_box_share_on_average():
    rng = np.random.default_rng(0)
    heatmaps = rng.standard_normal((300, 16, 16))
    result = ev.bounding_box_ratio(heatmaps, np.tile([2, 3, 10, 7], (300, 1)))
    share = 32 / 256
    assert result.mean == pytest.approx(share, abs=0.02)
    with pytest.warns(RuntimeWarning, match="constant heatmap"):
        constant = ev.bounding_box_ratio(np.ones((1, 16, 16)), [[2, 3, 10, 7]])
    assert constant.scores[0] == pytest.approx(share)  # ties count fractionally


def test_bounding_box_ties_count_fractionally():
    heatmap = np.zeros((1, 4, 4))
    heatmap[0, 0, :] = 1.0  # 4 pixels tied at the top, 2 of them inside a 1x2 ... 2x2 box
    # box of 4 pixels: rows 0-1, cols 0-1; top-4 pixels are the first row: 2 inside
    assert ev.bounding_box_ratio(heatmap, [[0, 0, 2, 2]]).scores[0] == pytest.approx(0.5)
    # box of 2 pixels in row 0: the 2 highest are drawn from 4 tied pixels, half of them inside
    assert ev.bounding_box_ratio(heatmap, [[0, 0, 2, 1]]).scores[0] == pytest.approx(0.5)


def test_bounding_box_skips_large_boxes_and_unions_several_boxes():
    heatmaps = np.zeros((3, 10, 10))
    heatmaps[0, :2, :2] = heatmaps[0, 8:, 8:] = 1.0
    heatmaps[2, 0, 0] = 1.0
    boxes = [np.array([[0, 0, 2, 2], [8, 8, 10, 10]]), [0, 0, 10, 4], [0, 0, 1, 1]]
    result = ev.bounding_box_ratio(heatmaps, boxes)
    np.testing.assert_array_equal(result.skipped, [False, True, False])  # 40 % > 33 %
    assert result.scores[0] == 1.0 and np.isnan(result.scores[1]) and result.scores[2] == 1.0
    assert result.mean == 1.0
    with pytest.warns(RuntimeWarning, match="every image is skipped"):
        assert np.isnan(ev.bounding_box_ratio(heatmaps[1:2], [[0, 0, 10, 4]]).mean)


def test_bounding_box_errors():
    maps = np.random.default_rng(0).random((1, 10, 12))
    with pytest.raises(ValueError, match=r"box 0: \(3, 2, 3, 5\) is empty"):
        ev.bounding_box_ratio(maps, [[3, 2, 3, 5]])
    with pytest.raises(ValueError, match=r"box 0: \(3, 2, 13, 5\) extends outside the 12x10"):
        ev.bounding_box_ratio(maps, [[3, 2, 13, 5]])
    with pytest.raises(ValueError, match="1 heatmaps but 2 boxes"):
        ev.bounding_box_ratio(maps, [[0, 0, 1, 1], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="whole pixels"):
        ev.bounding_box_ratio(maps, [[0.5, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"heatmaps must have 3 axes"):
        ev.bounding_box_ratio(maps[0], [[0, 0, 1, 1]])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), x1=st.integers(0, 5), y1=st.integers(0, 5))
def test_bounding_box_ratio_is_a_share(seed, x1, y1):
    maps = np.random.default_rng(seed).integers(0, 3, (1, 8, 8)).astype(float)  # many ties
    score = ev.bounding_box_ratio(maps, [[x1, y1, x1 + 2, y1 + 3]]).scores[0]
    assert 0.0 <= score <= 1.0 + 1e-12


# ---------------------------------------------------------------------------- sensitivity-n


def test_subset_sizes_log_spaced_up_to_80_percent():
    ns = ev.subset_sizes(784)
    assert len(ns) == 16 and ns[0] == 1 and ns[-1] == 627 and np.all(np.diff(ns) > 0)
    assert ev.subset_sizes(256)[-1] == 204
    np.testing.assert_array_equal(ev.subset_sizes(16), np.arange(1, 13))  # fewer sizes exist


def test_sensitivity_n_of_gradient_times_input_on_a_linear_model_is_one():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 2))
    w = rng.standard_normal((8, 8, 2))
    attribution = (x * w).sum(-1)  # gradient x input, channels summed
    result = ev.sensitivity_n(
        linear_model(w), x, attribution, 0, tile_size=2, n_subsets=10, progress=False
    )
    np.testing.assert_array_equal(result.ns, np.arange(1, 13))
    np.testing.assert_allclose(result.drops, result.attribution_sums, atol=1e-12)
    np.testing.assert_allclose(result.correlations, 1.0, atol=1e-12)
    np.testing.assert_allclose(result.per_image, 1.0, atol=1e-12)
    assert result.mean == pytest.approx(1.0)
    assert result.drops.shape == (2, 12, 10)

    again = ev.sensitivity_n(
        linear_model(w), x, attribution, 0, tile_size=2, n_subsets=10, batch_size=5, progress=False
    )
    np.testing.assert_array_equal(again.drops, result.drops)  # seeded
    noise = rng.standard_normal(attribution.shape)
    random = ev.sensitivity_n(
        linear_model(w), x, noise, 0, tile_size=2, n_subsets=10, progress=False
    )
    assert np.all(random.correlations < 0.9)


def test_sensitivity_n_of_a_model_that_ignores_the_input_is_undefined(images):
    with pytest.warns(RuntimeWarning, match="correlation is undefined for n"):
        result = ev.sensitivity_n(
            ignore_input, images[:1], images[:1, ..., 0], tile_size=8, n_subsets=3, progress=False
        )
    assert np.all(np.isnan(result.correlations)) and np.isnan(result.mean)
    np.testing.assert_array_equal(result.drops, 0.0)


# ---------------------------------------------------------------------------- insertion / deletion


def region_model(region):
    """Raw score: the mean of the first channel over a boolean ``(H, W)`` region."""

    def model(batch):
        return batch[:, region, 0].mean(axis=1)[:, None]

    return model


def test_auc_formula():
    assert ev.auc([1.0, 0.5, 0.0]) == pytest.approx(0.5)
    np.testing.assert_allclose(ev.auc([[1, 1, 1, 0.5, 0], [1, 0.5, 0, 0, 0]]), [0.75, 0.25])


def test_deletion_on_a_model_with_a_known_monotone_response():
    region = np.zeros((8, 8), bool)
    region[:, :4] = True
    heatmap = region[None].astype(float)
    model = region_model(region)
    x = np.ones((1, 8, 8, 1))
    good = ev.deletion(model, x, heatmap, 0, pixels_per_step=16, score="raw", progress=False)
    np.testing.assert_allclose(good.curves, [[1, 0.5, 0, 0, 0]])
    np.testing.assert_allclose(good.fractions, [0, 0.25, 0.5, 0.75, 1])
    assert good.scores[0] == pytest.approx(0.25) and good.mean == pytest.approx(0.25)
    bad = ev.deletion(model, x, 1 - heatmap, 0, pixels_per_step=16, score="raw", progress=False)
    np.testing.assert_allclose(bad.curves, [[1, 1, 1, 0.5, 0]])
    assert bad.scores[0] == pytest.approx(0.75)
    # a partial last step: 64 pixels in steps of 24 -> 3 steps, 4 points
    odd = ev.deletion(model, x, heatmap, 0, pixels_per_step=24, score="raw", progress=False)
    np.testing.assert_allclose(odd.fractions, [0, 24 / 64, 48 / 64, 1])
    np.testing.assert_allclose(odd.curves, [[1, 0.25, 0, 0]])


def test_insertion_restores_pixels_into_the_blurred_image():
    region = np.zeros((8, 8), bool)
    region[:, :4] = True
    model = region_model(region)
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1))
    heatmap = np.broadcast_to(region.astype(float), (2, 8, 8))
    result = ev.insertion(model, x, heatmap, 0, pixels_per_step=16, score="raw", progress=False)
    blurred = ev.gaussian_blur(x)
    expected_1 = np.where(np.arange(8)[:, None] < 4, x[..., 0], blurred[..., 0])[:, region].mean(1)
    np.testing.assert_allclose(result.curves[:, 0], blurred[:, region, 0].mean(1))
    np.testing.assert_allclose(result.curves[:, 1], expected_1)  # ties: row-major order
    np.testing.assert_allclose(result.curves[:, 2:], x[:, region, 0].mean(1)[:, None].repeat(3, 1))
    np.testing.assert_allclose(result.scores, ev.auc(result.curves))


def test_insertion_deletion_channels_first_softmax_and_targets(images):
    heatmaps = np.random.default_rng(5).uniform(0, 1, (3, 16, 16))
    model = one_tile_model(1, 1)
    last = ev.insertion(model, images, heatmaps, pixels_per_step=40, progress=False)
    first = ev.insertion(
        one_tile_model(1, 1, channels_first=True),
        np.moveaxis(images, -1, 1),
        heatmaps,
        pixels_per_step=40,
        data_format="channels_first",
        progress=False,
    )
    np.testing.assert_allclose(first.curves, last.curves)
    assert last.curves.shape == (3, 8)  # ceil(256 / 40) = 7 steps
    np.testing.assert_allclose(last.curves[:, -1], sigmoid(3 * images[:, 4:8, 4:8].mean((1, 2, 3))))


def test_gaussian_blur_is_the_reflect_padded_convolution():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 30, 27, 2))
    kernel = ev.gaussian_kernel_1d(51, 50.0)
    assert kernel.shape == (51,) and kernel.sum() == pytest.approx(1.0)
    assert kernel[25] / kernel[0] == pytest.approx(np.exp(25**2 / (2 * 50**2)))
    padded = np.pad(image[0], ((25, 25), (25, 25), (0, 0)), mode="reflect")
    kernel_2d = np.outer(kernel, kernel)
    direct = np.empty_like(image[0])
    for i in range(30):
        for j in range(27):
            direct[i, j] = np.einsum("hwc,hw->c", padded[i : i + 51, j : j + 51], kernel_2d)
    np.testing.assert_allclose(ev.gaussian_blur(image)[0], direct, atol=1e-12)
    np.testing.assert_allclose(ev.gaussian_blur(np.full((1, 5, 6, 3), 2.0)), 2.0)  # pad > size
    # the same construction as iba.smoothing for the bottleneck's own kernel
    np.testing.assert_allclose(
        ev.convolution_matrix(9, iba.gaussian_kernel(1.0)), iba.smoothing_matrix(9, 1.0)
    )


# ---------------------------------------------------------------------------- M2IB


def halves_embedding(batch):
    """Channels-last images to 2-d embeddings: the sums of the left and the right half."""
    w = batch.shape[2] // 2
    return np.stack([batch[:, :, :w].sum((1, 2, 3)), batch[:, :, w:].sum((1, 2, 3))], axis=1)


def test_confidence_drop_and_increase():
    x = np.ones((2, 4, 4, 3))
    other = np.array([1.0, 0.0])  # the text is about the left half
    left = np.zeros((2, 4, 4))
    left[:, :, :2] = 1.0
    kept = ev.confidence_drop_increase(halves_embedding, x, left, other, progress=False)
    np.testing.assert_allclose(kept.before, 1 / np.sqrt(2))
    np.testing.assert_allclose(kept.after, 1.0)
    assert kept.drop == 0.0 and kept.increase == 100.0
    lost = ev.confidence_drop_increase(halves_embedding, x, 1 - left, other, progress=False)
    np.testing.assert_allclose(lost.after, 0.0, atol=1e-12)
    assert lost.drop == pytest.approx(1 / np.sqrt(2)) and lost.increase == 0.0
    mixed = ev.confidence_drop_increase(
        halves_embedding,
        x,
        np.stack([left[0], 1 - left[0]]),
        np.tile(other, (2, 1)),
        progress=False,
    )
    assert mixed.drop == pytest.approx(1 / np.sqrt(2) / 2) and mixed.increase == 50.0
    first = ev.confidence_drop_increase(
        lambda b: halves_embedding(np.moveaxis(b, 1, -1)),
        np.moveaxis(x, -1, 1),
        left,
        other,
        data_format="channels_first",
        batch_size=1,
        progress=False,
    )
    np.testing.assert_allclose(first.after, kept.after)


def test_confidence_on_token_embeddings_and_errors():
    tokens = np.zeros((1, 3, 2))
    tokens[0, 0] = [1.0, 0.0]
    tokens[0, 1] = [0.0, 1.0]
    tokens[0, 2] = [1.0, 1.0]

    def embed(batch):
        return batch.sum(axis=1)

    result = ev.confidence_drop_increase(
        embed, tokens, np.array([[1.0, 0.0, 0.0]]), np.array([[1.0, 0.0]]), data_format="tokens"
    )
    np.testing.assert_allclose([result.before[0], result.after[0]], [2 / np.sqrt(8), 1.0])
    with pytest.raises(ValueError, match=r"maps must lie in \[0, 1\].*iba.normalize"):
        ev.confidence_drop_increase(
            embed, tokens, np.full((1, 3), 2.0), [1.0, 0.0], data_format="tokens"
        )
    with pytest.raises(ValueError, match=r"maps of shape \(1, 4\) do not match the inputs"):
        ev.confidence_drop_increase(
            embed, tokens, np.ones((1, 4)), [1.0, 0.0], data_format="tokens"
        )
    with pytest.raises(ValueError, match="2-dim embeddings but other_embeddings are 3-dim"):
        ev.confidence_drop_increase(
            embed, tokens, np.ones((1, 3)), [1.0, 0, 0], data_format="tokens"
        )


# ---------------------------------------------------------------------------- text


def count_model(token_ids):
    """Logits ``[count of token 7 - 1.5, 0]``: positive while at least two 7s remain."""
    return np.stack([(token_ids == 7).sum(1) - 1.5, np.zeros(len(token_ids))], axis=1)


def test_text_degradation_replaces_the_top_tokens():
    ids = np.array([[101, 7, 3, 7, 4, 5, 7, 6, 8, 102]])
    maps = (ids == 7).astype(float) + 0.01 * np.arange(10)  # the 7s first
    result = ev.text_degradation(count_model, ids, maps, replacement_id=0, progress=False)
    np.testing.assert_allclose(result.fractions, np.r_[0.0, np.arange(1, 10) / 10])
    np.testing.assert_array_equal(result.n_deleted, [np.arange(10)])
    left = np.maximum(3 - np.arange(10), 0)
    np.testing.assert_allclose(result.probabilities[0], sigmoid(left - 1.5))
    np.testing.assert_array_equal(result.correct[0], left >= 2)
    np.testing.assert_allclose(result.accuracy, (left >= 2).astype(float))
    np.testing.assert_allclose(result.mean, result.probabilities[0])
    np.testing.assert_array_equal(result.targets, [0])


def test_text_degradation_remove_mode_and_deletable_tokens():
    ids = np.array([[101, 7, 3, 7, 102, 0], [101, 4, 7, 7, 7, 102]])
    maps = np.array([[9.0, 1, 0, 1, 9, 9], [9.0, 0, 1, 1, 1, 9]])
    deletable = np.array([[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]], bool)  # no specials, no padding
    seen = []

    def model(batch):
        seen.append(batch.copy())
        return count_model(batch)

    result = ev.text_degradation(
        model, ids, maps, 0, fractions=(0.5,), mode="remove", pad_id=0, deletable=deletable,
        progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(result.n_deleted, [[0, 2], [0, 2]])  # floor(0.5 * L + 0.5)
    inputs = np.concatenate(seen)
    np.testing.assert_array_equal(inputs[1], [101, 3, 102, 0, 0, 0])  # 7s gone, shifted, padded
    np.testing.assert_array_equal(inputs[3], [101, 4, 7, 102, 0, 0])  # ties: first positions
    np.testing.assert_array_equal(result.correct, [[True, False], [True, False]])
    with pytest.raises(ValueError, match="mode='replace' needs replacement_id"):
        ev.text_degradation(count_model, ids, maps, progress=False)
    with pytest.raises(ValueError, match=r"token_maps of shape \(2, 5\) do not match token_ids"):
        ev.text_degradation(count_model, ids, maps[:, :5], replacement_id=0, progress=False)
    with pytest.raises(ValueError, match=r"fractions must be .* in \(0, 1\]"):
        ev.text_degradation(count_model, ids, maps, replacement_id=0, fractions=(0, 0.5))


# ---------------------------------------------------------------------------- progress, imports


def test_progress_bar_on_and_off_give_the_same_result(images, capsys):
    heatmaps = np.random.default_rng(6).uniform(0, 1, (3, 16, 16))
    quiet = ev.deletion(one_tile_model(1, 1), images, heatmaps, pixels_per_step=64, progress=False)
    assert capsys.readouterr().err == ""
    shown = ev.deletion(one_tile_model(1, 1), images, heatmaps, pixels_per_step=64, progress=True)
    np.testing.assert_array_equal(shown.curves, quiet.curves)
    pytest.importorskip("tqdm")
    assert "deletion" in capsys.readouterr().err


def test_progress_without_tqdm_is_a_no_op(images, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError("no tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ev.deletion(
            one_tile_model(1, 1), images, images[..., 0], 0, pixels_per_step=128, progress=True
        )
    assert result.curves.shape == (3, 3)
    assert capsys.readouterr().err == ""


def test_import_evaluation_imports_numpy_only():
    banned = ("torch", "tensorflow", "jax", "scipy", "skimage", "matplotlib", "tqdm")
    code = f"import sys, iba.evaluation; print(','.join(m for m in {banned!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
