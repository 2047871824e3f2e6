"""Sensitivity-n (docs/mathematics.md section 7.3; Ancona et al., "Towards better understanding of
gradient-based attribution methods for deep neural networks", ICLR 2018).

For ``n_values`` log-spaced subset sizes ``n`` up to ``max_fraction`` (80 %) of the tiles, draw
``n_subsets`` random tile subsets per image, set each subset to ``baseline`` (zero) and record the
drop of the target's logit. One Pearson correlation per ``n`` between the drops and the sums of the
attribution over the removed pixels, pooled over all images and subsets. A perfect linear
attribution (gradient x input of a linear model) correlates 1 for every ``n``. Quantus'
SensitivityN is a different, cumulative metric.

``variant="iba-paper"`` follows the IBA paper's script instead: its subset sizes (repeats kept),
one set of subsets shared by all images, and the leftover pixels merged into the last tiles
(docs/metrics.md).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from iba.evaluation._batching import (
    Model,
    check_batch_size,
    check_score,
    evaluate,
    progress_bar,
    resolve_targets,
)
from iba.evaluation._images import check_heatmaps, check_images, tile_grid, tile_sums, to_model
from iba.evaluation._variants import check_variant

SENSITIVITY_VARIANTS = ("library", "iba-paper")
"""``"library"``: distinct sizes, subsets drawn per image; ``"iba-paper"``: the paper's script."""


class SensitivityNResult(NamedTuple):
    """Sensitivity-n: one pooled correlation per subset size."""

    ns: np.ndarray
    """``(J,)`` subset sizes, in tiles (repeats possible in the IBA paper's variant)."""
    correlations: np.ndarray
    """``(J,)`` Pearson correlation per ``n``, pooled over images and subsets (NaN if undefined)."""
    mean: float
    """Mean of ``correlations`` over ``n`` (NaN if any is NaN)."""
    per_image: np.ndarray
    """``(N, J)`` correlation over each image's own subsets (NaN where undefined, no warning)."""
    drops: np.ndarray
    """``(N, J, S)`` drop of the target score, unperturbed minus perturbed."""
    attribution_sums: np.ndarray
    """``(N, J, S)`` sum of the attribution over the removed pixels."""
    targets: np.ndarray
    """``(N,)`` the classes scored."""


def subset_sizes(
    n_tiles: int, n_values: int = 16, max_fraction: float = 0.8, variant: str = "library"
) -> np.ndarray:
    """``n_values`` log-spaced subset sizes up to ``max_fraction`` of the tiles (section 7.3).

    ``"library"``: from 1 to ``floor(max_fraction * n_tiles)``, rounded, then made strictly
    increasing by raising repeats (1, 2, 2, 4 becomes 1, 2, 3, 4); if fewer distinct sizes exist,
    all of ``1 .. floor(max_fraction * n_tiles)`` are used.

    ``"iba-paper"``: the IBA paper's script, ``round(exp(linspace(log 1, log(max_fraction *
    n_tiles), n_values)))``: the largest size is rounded, not floored (205 of 256 tiles, where
    the library stops at 204), and repeated sizes are kept: for 256 tiles ``1, 1, 2, 3, 4, 6, 8,
    12, 17, 24, 35, 50, 71, 101, 144, 205`` (the library: ``1, 2, 3, 4, 5, 6, 8, 12, 17, 24, 35,
    49, 70, 100, 143, 204``).
    """
    check_variant(variant, "subset_sizes", SENSITIVITY_VARIANTS)
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    if int(n_values) != n_values or n_values < 1:
        raise ValueError(f"n_values must be a positive integer, got {n_values!r}")
    if variant == "iba-paper":
        top = np.log(max_fraction * n_tiles)
        return np.round(np.exp(np.linspace(0.0, top, int(n_values)))).astype(np.int64)
    largest = max(1, int(np.floor(max_fraction * n_tiles)))
    ns = np.round(np.geomspace(1, largest, int(n_values))).astype(np.int64)
    for j in range(1, len(ns)):
        ns[j] = max(ns[j], ns[j - 1] + 1)
    return ns[ns <= largest]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D samples; NaN if either is constant (to 1e-12 relative)."""
    for v in (a, b):
        if np.ptp(v) <= 1e-12 * np.abs(v).max():
            return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def random_subsets(rng: np.random.Generator, n_tiles: int, n: int, n_subsets: int) -> np.ndarray:
    """``(n_subsets, n_tiles)`` boolean masks of ``n`` uniformly random tiles each."""
    keys = rng.random((n_subsets, n_tiles))
    threshold = np.partition(keys, n - 1, axis=1)[:, n - 1 : n]
    return keys <= threshold


def sensitivity_n(
    model: Model,
    images: np.ndarray,
    attributions: np.ndarray,
    targets: int | np.ndarray | None = None,
    *,
    tile_size: int = 8,
    n_values: int = 16,
    max_fraction: float = 0.8,
    n_subsets: int = 100,
    baseline: float = 0.0,
    seed: int = 0,
    score: str = "raw",
    data_format: str = "channels_last",
    batch_size: int = 64,
    progress: bool = True,
    variant: str = "library",
) -> SensitivityNResult:
    """Sensitivity-n: correlation of the output drop with the attribution of removed tiles.

    Args:
        model: callable from a batch of images (in ``data_format``) to logits ``(n, n_classes)``.
        images: ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``data_format="channels_first"``.
        attributions: ``(N, H, W)`` per-pixel attributions (channels summed), at the image size.
        targets: the class per image (an int is used for all); ``None`` takes the model's top
            class on the unperturbed image.
        tile_size: tile edge in pixels; ``1`` removes single pixels.
        n_values: number of subset sizes ``n`` (log-spaced, see :func:`subset_sizes`).
        max_fraction: the largest ``n`` is this share of the tiles.
        n_subsets: random subsets per ``n`` and image.
        baseline: the value removed pixels take (all channels), in the model's input space.
        seed: seeds the subsets; image ``i`` draws from its own stream of
            ``SeedSequence(seed).spawn(N)``, so its subsets do not depend on the other images.
        score: ``"raw"`` (default: the model returns logits and the target logit is used, as in
            the paper) or ``"softmax"`` (the target's softmax probability).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        batch_size: perturbed images per model call.
        progress: show a tqdm progress bar (if tqdm is installed).
        variant: ``"library"`` (default) or ``"iba-paper"``: the paper's script's subset sizes
            (:func:`subset_sizes`, repeats kept), one set of ``n_subsets`` subsets per size
            shared by every image (size ``j`` draws from ``SeedSequence(seed).spawn(J)[j]``, so
            repeated sizes get fresh subsets), and the leftover pixels merged into the last
            tiles where ``tile_size`` does not divide the image (docs/metrics.md).

    Returns:
        :class:`SensitivityNResult` with one pooled correlation per ``n`` and their mean.

    A correlation is NaN, with a ``RuntimeWarning``, where the drops or the attribution sums are
    all equal (a model that ignores its input, or a constant attribution).
    """
    check_variant(variant, "sensitivity_n", SENSITIVITY_VARIANTS)
    check_score(score)
    batch_size = check_batch_size(batch_size)
    if int(n_subsets) != n_subsets or n_subsets < 2:
        raise ValueError(f"n_subsets must be an integer >= 2, got {n_subsets!r}")
    x = check_images(images, data_format)
    n_images, height, width, _ = x.shape
    maps = check_heatmaps(attributions, (n_images, height, width), "attributions")
    paper = variant == "iba-paper"
    tiles, n_tiles = tile_grid(height, width, tile_size, "merge" if paper else "split")
    ns = subset_sizes(n_tiles, n_values, max_fraction, variant)
    tile_attribution = tile_sums(maps, tiles, n_tiles)
    fill = np.asarray(baseline, dtype=x.dtype)

    def draw(streams: list[np.random.SeedSequence]) -> np.ndarray:
        """``(J * S, n_tiles)`` subsets: size ``j`` from ``streams[j]`` or all from one."""
        rngs = [np.random.default_rng(s) for s in streams]
        rngs = rngs if len(rngs) == len(ns) else rngs * len(ns)
        masks = [random_subsets(r, n_tiles, int(n), n_subsets) for r, n in zip(rngs, ns)]
        return np.stack(masks).reshape(-1, n_tiles)

    if paper:  # one set of subsets for every image
        shared = draw(np.random.SeedSequence(seed).spawn(len(ns)))
    else:
        streams = np.random.SeedSequence(seed).spawn(n_images)

    n_jobs = 1 + len(ns) * n_subsets  # the unperturbed image, then every subset
    drops = np.empty((n_images, len(ns), n_subsets))
    sums = np.empty((n_images, len(ns), n_subsets))
    total = n_images * n_jobs + (n_images if targets is None else 0)
    with progress_bar(total, "sensitivity-n", progress) as bar:
        target = resolve_targets(
            model, targets, lambda i: to_model(x[i], data_format), n_images, batch_size, bar
        )
        for i in range(n_images):
            subsets = shared if paper else draw([streams[i]])  # (J * S, n_tiles)
            sums[i] = (subsets @ tile_attribution[i]).reshape(len(ns), n_subsets)

            def build(index: np.ndarray, i: int = i, subsets: np.ndarray = subsets) -> np.ndarray:
                removed = np.zeros((len(index), height, width), dtype=bool)
                perturbed = index > 0
                removed[perturbed] = subsets[index[perturbed] - 1][:, tiles]
                batch = np.repeat(x[i : i + 1], len(index), axis=0)
                np.copyto(batch, fill, where=removed[..., None])
                return to_model(batch, data_format)

            values = evaluate(
                model, n_jobs, build, np.full(n_jobs, target[i]), score, batch_size, bar
            )
            drops[i] = (values[0] - values[1:]).reshape(len(ns), n_subsets)

    correlations = np.array(
        [pearson(drops[:, j].ravel(), sums[:, j].ravel()) for j in range(len(ns))]
    )
    if np.isnan(correlations).any():
        warnings.warn(
            f"sensitivity_n: the correlation is undefined for n = "
            f"{ns[np.isnan(correlations)].tolist()}: the output drops or the attribution sums are "
            "all equal (a model that ignores its input, or a constant attribution); set to NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    per_image = np.array(
        [[pearson(drops[i, j], sums[i, j]) for j in range(len(ns))] for i in range(n_images)]
    )
    return SensitivityNResult(
        ns, correlations, float(correlations.mean()), per_image, drops, sums, target
    )
