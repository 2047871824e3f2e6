"""The papers' metric variants (docs/metrics.md) against replays of the papers' code.

Each replay is written here from the description of the papers' evaluation code (the IBA paper's
``IBA-paper-code`` scripts and CoIBA's ``insdel.py``), one loop at a time as that code runs, and
compared with the library's vectorised variant: the subset sizes for 256 tiles of 14 px on
224 px, the recorded points of the degradation grid, pixel-space deletion on a toy model whose
areas are computed by hand, the second bounding-box ratio, and occlusion with the image's
per-channel mean.
"""

from __future__ import annotations

import numpy as np
import pytest

from iba import baselines
from iba import evaluation as ev
from iba.evaluation._images import tile_grid


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def nonlinear_model(seed=0, shape=(12, 12, 3), classes=4):
    """Logits ``tanh(x . w_k) * 3``: non-linear, so every perturbed pixel matters differently."""
    w = np.random.default_rng(seed).standard_normal((*shape, classes)) / 4

    def model(batch):
        return 3 * np.tanh(np.einsum("nhwc,hwck->nk", batch, w))

    return model


def test_variant_names_and_errors():
    assert ev.VARIANTS == ("library", "iba-paper", "coiba-paper")
    x = np.zeros((1, 8, 8, 3))
    maps = np.random.default_rng(0).random((1, 8, 8))
    model = nonlinear_model(shape=(8, 8, 3))
    with pytest.raises(ValueError, match=r"degradation: unknown variant 'coiba-paper'; its .*"
                       r"library, iba-paper"):  # fmt: skip
        ev.degradation(model, x, maps, 0, variant="coiba-paper", progress=False)
    with pytest.raises(ValueError, match="sensitivity_n: unknown variant 'paper'"):
        ev.sensitivity_n(model, x, maps, 0, variant="paper", progress=False)
    with pytest.raises(ValueError, match="deletion: unknown variant 'iba-paper'"):
        ev.deletion(model, x, maps, 0, variant="iba-paper", progress=False)
    with pytest.raises(ValueError, match="subset_sizes: unknown variant"):
        ev.subset_sizes(256, variant="coiba-paper")
    with pytest.raises(ValueError, match="removal_steps: unknown variant"):
        ev.removal_steps(256, 100, variant="x")


# ---------------------------------------------------------------------------- sensitivity-n


def test_subset_sizes_of_the_paper_for_256_tiles_of_14_px():
    """``eval_sensitivity_n.py``: ``round(exp(linspace(log(1), log(0.8 * T), 16)))``, kept as is."""
    t = (224 // 14) ** 2
    assert t == 256
    paper = [1, 1, 2, 3, 4, 6, 8, 12, 17, 24, 35, 50, 71, 101, 144, 205]
    replay = [int(np.round(np.exp(v))) for v in np.linspace(np.log(1), np.log(0.8 * t), 16)]
    assert replay == paper
    np.testing.assert_array_equal(ev.subset_sizes(t, variant="iba-paper"), paper)
    library = ev.subset_sizes(t)  # floored to 204, repeats raised
    np.testing.assert_array_equal(
        library, [1, 2, 3, 4, 5, 6, 8, 12, 17, 24, 35, 49, 70, 100, 143, 204]
    )
    # 784 tiles of 8 px: the paper repeats 2, the largest size is 627 in both
    paper_8 = ev.subset_sizes(784, variant="iba-paper")
    assert paper_8.tolist()[:4] == [1, 2, 2, 4] and paper_8[-1] == ev.subset_sizes(784)[-1] == 627


def test_sensitivity_n_paper_variant_shares_the_subsets_and_pools_like_corrcoef():
    rng = np.random.default_rng(1)
    x = np.repeat(rng.standard_normal((1, 16, 16, 2)), 3, axis=0)  # three equal images
    w = rng.standard_normal((16, 16, 2))

    def linear(batch):
        return np.stack([np.einsum("nhwc,hwc->n", batch, w), np.zeros(len(batch))], axis=1)

    attribution = (x * w).sum(-1)
    kw = {"tile_size": 1, "n_subsets": 3, "progress": False}
    paper = ev.sensitivity_n(linear, x, attribution, 0, variant="iba-paper", **kw)
    library = ev.sensitivity_n(linear, x, attribution, 0, **kw)
    # 1-px tiles of a 16 x 16 image: the 256 tiles above, the paper's sizes with the repeat
    np.testing.assert_array_equal(paper.ns, ev.subset_sizes(256, variant="iba-paper"))
    assert paper.drops.shape == (3, 16, 3)
    # one set of subsets for every image (the script draws the masks once per n)
    np.testing.assert_array_equal(paper.attribution_sums[0], paper.attribution_sums[2])
    assert not np.array_equal(library.attribution_sums[0], library.attribution_sums[2])
    # each subset removes exactly n tiles: an all-ones map sums to n
    with pytest.warns(RuntimeWarning, match="correlation is undefined"):  # a constant map
        ones = ev.sensitivity_n(linear, x[:1], np.ones((1, 16, 16)), 0, variant="iba-paper", **kw)
    np.testing.assert_array_equal(ones.attribution_sums[0], paper.ns[:, None].repeat(3, 1))
    # repeated sizes (1, 1) draw fresh subsets from their own streams
    assert paper.ns[0] == paper.ns[1]
    # gradient x input of a linear model: the drop is the attribution sum, correlation 1
    np.testing.assert_allclose(paper.drops, paper.attribution_sums, atol=1e-12)
    # pooled as the script does: np.corrcoef over all images and subsets of one n
    noisy = attribution + rng.standard_normal(attribution.shape)
    result = ev.sensitivity_n(linear, x, noisy, 0, variant="iba-paper", **kw)
    for j in range(len(result.ns)):
        a, d = result.attribution_sums[:, j].ravel(), result.drops[:, j].ravel()
        if np.ptp(a) > 0 and np.ptp(d) > 0:
            assert result.correlations[j] == pytest.approx(np.corrcoef(a, d)[0, 1], abs=1e-12)


def test_tile_grid_merges_the_remainder_like_the_papers_grid_view():
    """``GridView``: ``H // t`` rows of tiles, the last one takes the leftover pixels."""
    height, width, t = 20, 15, 6
    tiles, n = tile_grid(height, width, t, "merge")
    rows, cols = height // t, width // t
    assert n == rows * cols == 6
    expected = np.empty((height, width), int)
    for r in range(rows):
        for c in range(cols):
            rs = slice(r * t, None if r == rows - 1 else (r + 1) * t)
            cs = slice(c * t, None if c == cols - 1 else (c + 1) * t)
            expected[rs, cs] = r * cols + c
    np.testing.assert_array_equal(tiles, expected)
    split, n_split = tile_grid(height, width, t)
    assert n_split == 4 * 3 and split[-1, -1] == 11
    with pytest.raises(ValueError, match="unknown remainder 'pad'"):
        tile_grid(height, width, t, "pad")


# ---------------------------------------------------------------------------- degradation


def paper_recorded_points(n_tiles, n_steps=100):
    """``DegradationEval.eval``: remove one tile per step, keep the image after step ``s`` if
    ``s`` is in ``round(linspace(0, 1, n_steps) * n_tiles)``, after the unperturbed image."""
    parts_int = [int(p) for p in np.round(np.linspace(0, 1, n_steps) * n_tiles)]
    recorded = [0]
    for step in range(n_tiles):
        if step in parts_int:
            recorded.append(step + 1)
    return recorded


@pytest.mark.parametrize("n_tiles", [784, 256, 100, 16, 7, 1])
@pytest.mark.parametrize("n_points", [100, 20, 2])
def test_removal_steps_of_the_paper(n_tiles, n_points):
    steps = ev.removal_steps(n_tiles, n_points, variant="iba-paper")
    assert steps.tolist() == paper_recorded_points(n_tiles, n_points)


def test_removal_steps_of_the_paper_never_reach_all_tiles():
    steps = ev.removal_steps(784, 100, variant="iba-paper")  # 8 px tiles on 224 px
    assert steps[:5].tolist() == [0, 1, 9, 17, 25] and steps[-1] == 777 and len(steps) == 100
    steps = ev.removal_steps(256, 100, variant="iba-paper")  # 14 px tiles
    assert steps[:5].tolist() == [0, 1, 4, 6, 9] and steps[-1] == 254
    assert ev.removal_steps(784, 100)[-1] == 784  # the library's grid ends at all tiles


def paper_degradation(model, image, heatmap, target, tile, n_steps, reverse):
    """One curve of ``DegradationEval.eval`` (softmax of the logits, per-channel mean baseline,
    tiles ranked by their mean heatmap value in a ``GridView``), and the fully degraded score."""
    height, width, _ = image.shape
    rows, cols = height // tile, width // tile

    def tile_slice(r, c):
        return (
            slice(r * tile, None if r == rows - 1 else (r + 1) * tile),
            slice(c * tile, None if c == cols - 1 else (c + 1) * tile),
        )

    means = np.array([[heatmap[tile_slice(r, c)].mean() for c in range(cols)] for r in range(rows)])
    order = np.argsort(means.ravel() if reverse else -means.ravel(), kind="stable")
    baseline = np.broadcast_to(image.mean(axis=(0, 1)), image.shape)
    parts_int = [int(p) for p in np.round(np.linspace(0, 1, n_steps) * len(order))]
    current = image.copy()
    recorded = [image.copy()]
    for step, flat in enumerate(order):
        r, c = divmod(int(flat), cols)
        current[tile_slice(r, c)] = baseline[tile_slice(r, c)]
        if step in parts_int:
            recorded.append(current.copy())
    scores = softmax(model(np.stack(recorded)))[:, target]
    degraded = softmax(model(baseline[None].copy()))[0, target]
    return scores, degraded


def test_degradation_paper_variant_replays_the_papers_evaluation():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, 13, 13, 3))
    maps = rng.random((2, 13, 13))
    model = nonlinear_model(3, shape=(13, 13, 3))
    tile, n_steps = 3, 6  # 3 does not divide 13: 4 x 4 tiles, the last ones 4 px (merged)
    result = ev.degradation(
        model, x, maps, [1, 2], tile_size=tile, n_points=n_steps, variant="iba-paper",
        batch_size=4, progress=False,
    )  # fmt: skip
    steps = paper_recorded_points(16, n_steps)
    assert steps == [0, 1, 4, 7, 11, 14]  # round(linspace(0, 1, 6) * 16) + 1, never all 16
    np.testing.assert_allclose(result.fractions, np.array(steps) / 16)
    for i, target in enumerate([1, 2]):
        morf, b = paper_degradation(model, x[i], maps[i], target, tile, n_steps, False)
        lerf, b_lerf = paper_degradation(model, x[i], maps[i], target, tile, n_steps, True)
        assert b == pytest.approx(b_lerf)
        np.testing.assert_allclose(result.morf_raw[i], morf, rtol=1e-12)
        np.testing.assert_allclose(result.lerf_raw[i], lerf, rtol=1e-12)
        assert result.degraded[i] == pytest.approx(b, rel=1e-12)
        # normalised by the unperturbed and the fully degraded score, area over the points
        t1 = morf[0]
        x_axis = np.array(steps) / 16
        area = np.trapezoid((lerf - b) / (t1 - b) - (morf - b) / (t1 - b), x_axis)
        assert result.scores[i] == pytest.approx(area, rel=1e-10)
    library = ev.degradation(model, x, maps, [1, 2], tile_size=3, n_points=6, progress=False)
    np.testing.assert_allclose(library.degraded, library.morf_raw[:, -1])
    np.testing.assert_allclose(library.fractions[[0, -1]], [0.0, 1.0])


# ---------------------------------------------------------------------------- bounding box


def paper_top_in_bbox(mask, heatmap):
    """``get_ration_top_in_bbox``: the rank of every pixel (0 = highest), the ones inside the box
    with a rank below the box's pixel count."""
    order = np.argsort(-heatmap.ravel(), kind="stable")
    rank = np.empty(heatmap.size, int)
    rank[order] = np.arange(heatmap.size)
    inside = mask.ravel()
    return np.count_nonzero(inside & (rank < inside.sum())) / inside.sum()


def test_bounding_box_second_ratio_is_the_share_of_the_maps_mass():
    heatmap = np.zeros((1, 4, 6))
    heatmap[0, 0, 0] = 3.0
    heatmap[0, 3, 5] = 1.0
    result = ev.bounding_box_ratio(heatmap, [[0, 0, 2, 2]])
    assert result.mass_shares[0] == pytest.approx(0.75) and result.mass_mean == pytest.approx(0.75)
    # top 4 pixels: the 3 (inside), the 1 (outside), and 2 of the 22 zeros, 3 of which are inside
    assert result.scores[0] == pytest.approx((1 + 2 * 3 / 22) / 4)

    rng = np.random.default_rng(4)
    maps = rng.random((20, 14, 14))
    boxes = np.stack([rng.integers(0, 5, 20), rng.integers(0, 5, 20)], 1)
    boxes = np.c_[boxes, boxes + rng.integers(2, 8, (20, 2))]
    result = ev.bounding_box_ratio(maps, boxes)
    masks = ev.box_mask(boxes, (14, 14))
    kept = masks.mean(axis=(1, 2)) <= 0.33  # the script keeps ratios <= 0.33
    np.testing.assert_array_equal(~result.skipped, kept)
    for i in np.flatnonzero(kept):
        assert result.scores[i] == pytest.approx(paper_top_in_bbox(masks[i], maps[i]))
        assert result.mass_shares[i] == pytest.approx((maps[i] * masks[i]).sum() / maps[i].sum())
    assert np.all(np.isnan(result.mass_shares[~kept]))
    assert result.mass_mean == pytest.approx(np.mean(result.mass_shares[kept]))


def test_bounding_box_mass_share_is_nan_for_signed_or_zero_maps():
    maps = np.ones((3, 6, 6))
    maps[0, 0, 0] = -1.0  # a signed map
    maps[1] = 0.0  # zero total
    with pytest.warns(RuntimeWarning, match="constant heatmap"):
        result = ev.bounding_box_ratio(maps, np.tile([0, 0, 2, 2], (3, 1)))
    assert np.isnan(result.mass_shares[0]) and np.isnan(result.mass_shares[1])
    assert (
        result.mass_shares[2] == pytest.approx(4 / 36) and result.mass_mean == result.mass_shares[2]
    )
    assert not np.isnan(result.scores).any()


# ---------------------------------------------------------------------------- insertion / deletion


def test_deletion_in_pixel_space_differs_from_input_space_by_hand():
    """Pixels 1 (one channel, 2 x 2), ``preprocess(x) = 4 x - 2``, score = mean of the input.

    Pixel space (CoIBA): each deleted pixel goes 1 -> 0, its input 2 -> -2: scores
    2, 1, 0, -1, -2, AUC = (0 - 1 + 1) / 4 = 0. Input space (the library on the preprocessed
    image): each input goes 2 -> 0: scores 2, 1.5, 1, 0.5, 0, AUC = (5 - 1 - 0) / 4 = 1.
    """
    pixels = np.ones((1, 2, 2, 1))

    def preprocess(batch):
        return 4 * batch - 2

    def mean_score(batch):
        return batch.mean(axis=(1, 2, 3))[:, None]

    heatmap = np.array([[[4.0, 3.0], [2.0, 1.0]]])
    kw = {"pixels_per_step": 1, "score": "raw", "progress": False}
    paper = ev.deletion(
        mean_score, pixels, heatmap, 0, preprocess=preprocess, variant="coiba-paper", **kw
    )
    np.testing.assert_allclose(paper.curves[0], [2, 1, 0, -1, -2])
    assert paper.scores[0] == pytest.approx(0.0, abs=1e-12)
    library = ev.deletion(mean_score, preprocess(pixels), heatmap, 0, **kw)
    np.testing.assert_allclose(library.curves[0], [2, 1.5, 1, 0.5, 0])
    assert library.scores[0] == pytest.approx(1.0)
    # preprocess without the variant name is the same computation
    same = ev.deletion(mean_score, pixels, heatmap, 0, preprocess=preprocess, **kw)
    np.testing.assert_array_equal(same.curves, paper.curves)


def reflect_blur(image, size, sigma):
    """2-D convolution with the outer-product Gaussian on a reflect-padded ``(H, W, C)`` image
    (kornia's ``gaussian_blur2d`` with its default ``reflect`` border)."""
    k = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    k = np.outer(k, k) / np.outer(k, k).sum()
    pad = size // 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.zeros_like(image)
    for dy in range(size):
        for dx in range(size):
            out += k[dy, dx] * padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
    return out


def coiba_causal_metric(model, preprocess, image, heatmap, target, mode, step, blur):
    """``CausalMetric.evaluate`` for one image: score ``softmax(model(norm(start)))``, then copy
    the next ``step`` pixels (in decreasing saliency) from ``finish`` into ``start``."""
    hw = heatmap.size
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = image.copy(), np.zeros_like(image)
    else:
        start, finish = blur(image), image.copy()
    order = np.argsort(-heatmap.ravel(), kind="stable")
    scores = []
    for i in range(n_steps + 1):
        scores.append(softmax(model(preprocess(start[None])))[0, target])
        coords = order[step * i : step * (i + 1)]
        flat_start = start.reshape(hw, -1)
        flat_start[coords] = finish.reshape(hw, -1)[coords]
    scores = np.array(scores)
    return scores, (scores.sum() - scores[0] / 2 - scores[-1] / 2) / (len(scores) - 1)


@pytest.mark.parametrize("mode", ["del", "ins"])
def test_insertion_deletion_coiba_variant_replays_causal_metric(mode):
    rng = np.random.default_rng(5)
    pixels = rng.random((2, 12, 12, 3))
    maps = rng.random((2, 12, 12))
    model = nonlinear_model(6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def preprocess(batch):  # a normalisation, then a non-linear squash: not affine
        return np.tanh((batch - mean) / std)

    step, size, sigma = 10, 5, 2.0
    kw = {"pixels_per_step": step, "variant": "coiba-paper", "preprocess": preprocess}
    if mode == "del":
        result = ev.deletion(model, pixels, maps, [0, 3], progress=False, **kw)
    else:
        result = ev.insertion(
            model, pixels, maps, [0, 3], blur_kernel_size=size, blur_sigma=sigma, progress=False,
            **kw,
        )  # fmt: skip
    for i, target in enumerate([0, 3]):
        curve, area = coiba_causal_metric(
            model, preprocess, pixels[i], maps[i], target, mode, step,
            lambda im: reflect_blur(im, size, sigma),
        )  # fmt: skip
        np.testing.assert_allclose(result.curves[i], curve, rtol=1e-12)
        assert result.scores[i] == pytest.approx(area, rel=1e-12)


def test_insertion_is_the_same_in_pixel_space_for_an_affine_preprocessing():
    rng = np.random.default_rng(7)
    pixels = rng.random((2, 12, 12, 3))
    maps = rng.random((2, 12, 12))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def normalise(batch):
        return (batch - mean) / std

    model = nonlinear_model(8)
    kw = {"pixels_per_step": 16, "blur_kernel_size": 7, "blur_sigma": 3.0, "progress": False}
    paper = ev.insertion(model, pixels, maps, 1, preprocess=normalise, variant="coiba-paper", **kw)
    library = ev.insertion(model, normalise(pixels), maps, 1, **kw)
    np.testing.assert_allclose(paper.curves, library.curves, rtol=1e-10)
    deleted = ev.deletion(model, pixels, maps, 1, preprocess=normalise, pixels_per_step=16,
                          progress=False)  # fmt: skip
    assert not np.allclose(
        deleted.curves, ev.deletion(model, normalise(pixels), maps, 1, pixels_per_step=16,
                                    progress=False).curves
    )  # fmt: skip


def test_coiba_variant_needs_the_preprocessing():
    x = np.random.default_rng(0).random((1, 8, 8, 3))
    maps = x[..., 0]
    model = nonlinear_model(shape=(8, 8, 3))
    with pytest.raises(ValueError, match=r"deletion: variant='coiba-paper' .* needs the model's "
                       r"preprocessing: pass the images in pixel space"):  # fmt: skip
        ev.deletion(model, x, maps, variant="coiba-paper", progress=False)
    with pytest.raises(ValueError, match="insertion: variant='coiba-paper'"):
        ev.insertion(model, x, maps, variant="coiba-paper", progress=False)
    with pytest.raises(TypeError, match="insertion: preprocess must be a function"):
        ev.insertion(model, x, maps, preprocess="imagenet", progress=False)


# ---------------------------------------------------------------------------- occlusion


def paper_occlusion(logits, image, target, size):
    """The IBA paper's ``Occlusion``: window = stride = ``size``, each window set to the image's
    per-channel mean (``Mean()``), drop of the target logit, nearest upsampling of the grid."""
    rows, cols = image.shape[:2]
    rsteps, csteps = 1 + (rows - size) // size, 1 + (cols - size) // size
    baseline = np.broadcast_to(image.mean(axis=(0, 1)), image.shape)
    initial = logits(image[None])[0, target]
    grid = np.zeros((rsteps, csteps))
    for r in range(rsteps):
        for c in range(csteps):
            occluded = image.copy()
            window = (slice(r * size, (r + 1) * size), slice(c * size, (c + 1) * size))
            occluded[window] = baseline[window]
            grid[r, c] += initial - logits(occluded[None])[0, target]
    return np.repeat(np.repeat(grid, size, 0), size, 1)  # nearest, when size divides the image


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_occlusion_with_the_images_per_channel_mean(layout):
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, (2, 12, 12, 3))
    logits = nonlinear_model(10)
    if layout == "channels_first":
        model = baselines.NumpyBackend(
            lambda b: logits(np.moveaxis(b, 1, -1)), layout="channels_first"
        )
        given = np.moveaxis(x, -1, 1)
    else:
        model, given = baselines.NumpyBackend(logits), x
    maps = baselines.occlusion(model, given, [2, 0], patch=4, baseline="mean", batch_size=5)
    for i, target in enumerate([2, 0]):
        np.testing.assert_allclose(maps[i], paper_occlusion(logits, x[i], target, 4), rtol=1e-12)
    zero = baselines.occlusion(model, given, [2, 0], patch=4)
    assert not np.allclose(zero, maps)
    with pytest.raises(ValueError, match="baseline must be a number or 'mean'"):
        baselines.occlusion(model, given, 0, baseline="median")
