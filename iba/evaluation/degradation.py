"""Degradation: MoRF / LeRF tile removal (docs/mathematics.md section 7; Schulz et al., ICLR 2020, after
Ancona et al., ICLR 2018).

The image is cut into ``tile_size`` x ``tile_size`` tiles, ranked by the mean heatmap value inside
each tile (a stable sort: equal tiles are removed in row-major order). MoRF removes the most
relevant tile first, LeRF the least relevant first. A removed tile takes the unperturbed image's
per-channel mean, fixed for the whole curve (Quantus instead recomputes one scalar mean on the
perturbed image, which gives different curves). The target's score is recorded on the unperturbed
image and after ``k`` tiles for ``k`` on an even grid of about ``n_points`` points up to all tiles,
the fully degraded image included (the paper's code never records it). Each curve is normalised
per image as ``(s - b) / (t1 - b)`` (``t1``: unperturbed score, ``b``: fully degraded score, the
same image for both orders); the score is the area between the LeRF and the MoRF curve over the
removed fraction in ``[0, 1]`` (trapezoid rule). Paper (ImageNet, ResNet-50, 8x8 tiles): IBA 0.573,
Grad-CAM 0.536, Saliency 0.287, random 0.000.

``variant="iba-paper"`` records the paper's grid instead (:func:`removal_steps`) and merges the
leftover pixels into the last tiles as the paper's ``GridView`` does (docs/metrics.md).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from iba.evaluation._batching import (
    Model,
    check_batch_size,
    check_score,
    evaluate_jobs,
)
from iba.evaluation._images import (
    check_heatmaps,
    check_images,
    tile_grid,
    tile_means,
    to_model,
    warn_constant,
)
from iba.evaluation._variants import check_variant

DEGRADATION_VARIANTS = ("library", "iba-paper")
"""``"library"``: an even grid up to all tiles; ``"iba-paper"``: the paper's recorded grid."""

FLAT_TOLERANCE = 1e-12
"""``|t1 - b|`` at or below this counts as a model whose score does not change (see
:func:`degradation`)."""


class DegradationResult(NamedTuple):
    """Per-image degradation scores and curves (``K`` recorded points)."""

    scores: np.ndarray
    """``(N,)`` area between the normalised LeRF and MoRF curves."""
    mean: float
    """Mean of ``scores``."""
    fractions: np.ndarray
    """``(K,)`` removed fraction of the tiles, from ``0`` to ``1`` (to ``< 1`` on the IBA paper's
    grid)."""
    morf: np.ndarray
    """``(N, K)`` normalised MoRF curves ``(s - b) / (t1 - b)``."""
    lerf: np.ndarray
    """``(N, K)`` normalised LeRF curves."""
    morf_raw: np.ndarray
    """``(N, K)`` target scores under MoRF, before normalisation."""
    lerf_raw: np.ndarray
    """``(N, K)`` target scores under LeRF, before normalisation."""
    targets: np.ndarray
    """``(N,)`` the classes scored."""
    degraded: np.ndarray
    """``(N,)`` target score ``b`` of the fully degraded image (every tile removed), which
    normalises the curves; the last point of ``morf_raw`` in the library variant."""


def removal_steps(n_tiles: int, n_points: int, variant: str = "library") -> np.ndarray:
    """Numbers of removed tiles at which the score is recorded (docs/mathematics.md section 7.1).

    ``"library"``: ``n_points`` on an even grid from 0 to ``n_tiles``, both included; rounded and
    deduplicated, so fewer points are recorded if ``n_tiles + 1 < n_points``.

    ``"iba-paper"``: the points the IBA paper's code records. It removes one tile per step and
    records the image after step ``s`` (``s + 1`` tiles removed) for ``s`` in
    ``round(linspace(0, 1, n_points) * n_tiles)``, after the unperturbed image; the last ``s``
    (``n_tiles``) is never reached, so the fully degraded image is not on the curve: for 784
    tiles and 100 points, ``0, 1, 9, 17, 25, ..., 777``.
    """
    check_variant(variant, "removal_steps", DEGRADATION_VARIANTS)
    if int(n_points) != n_points or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
    if variant == "library":
        return np.unique(np.round(np.linspace(0, n_tiles, int(n_points))).astype(np.int64))
    after_step = np.round(np.linspace(0, 1, int(n_points)) * n_tiles).astype(np.int64)
    return np.r_[0, np.unique(after_step[after_step < n_tiles]) + 1].astype(np.int64)


def _area(curves: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.sum((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(x), axis=1)


def degradation(
    model: Model,
    images: np.ndarray,
    heatmaps: np.ndarray,
    targets: int | np.ndarray | None = None,
    *,
    tile_size: int = 8,
    n_points: int = 100,
    score: str = "softmax",
    data_format: str = "channels_last",
    batch_size: int = 64,
    progress: bool = True,
    variant: str = "library",
) -> DegradationResult:
    """Degradation test: area between the LeRF and MoRF curves (IBA paper, section 4).

    Args:
        model: callable from a batch of images (in ``data_format``) to outputs
            ``(n, n_classes)``.
        images: ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``data_format="channels_first"``.
        heatmaps: ``(N, H, W)`` at the image size (resize with ``iba.resize`` first).
        targets: the class per image (an int is used for all); ``None`` takes the model's top
            class on the unperturbed image.
        tile_size: tile edge in pixels (the paper uses 8 and 14); partial tiles at the right and
            bottom edge if it does not divide the image.
        n_points: recorded points per curve, from nothing to all tiles removed.
        score: ``"softmax"`` (the model returns logits; the target's softmax probability is
            recorded, as in the paper) or ``"raw"`` (the target's output as returned, e.g. for a
            model that already returns probabilities).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        batch_size: perturbed images per model call (on a CPU, small batches of 8 to 16 are often
            fastest: EfficientNet-Lite0 on 2 cores runs a third faster at 8 than at 64).
        progress: show a tqdm progress bar (if tqdm is installed).
        variant: ``"library"`` (default) or ``"iba-paper"``: the paper's code's recorded points
            (:func:`removal_steps`; the fully degraded image, scored on its own, still gives
            ``b``) and tiles that merge the leftover pixels into the last row / column where
            ``tile_size`` does not divide the image. The area is taken over the recorded
            points, which end before all tiles are removed (docs/metrics.md).

    Returns:
        :class:`DegradationResult` with the per-image ``scores``, their ``mean`` and the curves.

    If the fully degraded image scores the same as the unperturbed one (``|t1 - b| <=
    FLAT_TOLERANCE``, e.g. a model that ignores its input), the normalisation is undefined: that
    image's normalised curves are set to 0, its score is 0 (it counts in the mean) and a
    ``RuntimeWarning`` names it. Constant heatmaps warn too (both orders remove the tiles in
    row-major order, so their score is 0).
    """
    check_variant(variant, "degradation", DEGRADATION_VARIANTS)
    check_score(score)
    batch_size = check_batch_size(batch_size)
    x = check_images(images, data_format)
    n, height, width, _ = x.shape
    maps = check_heatmaps(heatmaps, (n, height, width))
    remainder = "split" if variant == "library" else "merge"
    tiles, n_tiles = tile_grid(height, width, tile_size, remainder)
    steps = removal_steps(n_tiles, n_points, variant)
    constant = warn_constant(
        maps, "degradation", "MoRF and LeRF are the same curve and the score is 0"
    )

    relevance = tile_means(maps, tiles, n_tiles)
    relevance[constant] = 0.0  # exactly tied, whatever the rounding of partial tiles
    ranks = np.empty((n, 2, n_tiles), dtype=np.int64)  # the step at which each tile goes
    for i in range(n):
        for o, order in enumerate(
            (np.argsort(-relevance[i], kind="stable"), np.argsort(relevance[i], kind="stable"))
        ):
            ranks[i, o, order] = np.arange(n_tiles)
    fill = x.mean(axis=(1, 2), dtype=np.float64).astype(x.dtype)  # (N, C) per-channel means

    # One model input per (image, order, removed tiles): MoRF at every recorded point and at all
    # tiles (b), LeRF where it differs from MoRF (neither nothing nor everything removed).
    morf_k = np.union1d(steps, [n_tiles])
    lerf_k = steps[(steps > 0) & (steps < n_tiles)]
    per_image = len(morf_k) + len(lerf_k)
    job_k = np.tile(np.r_[morf_k, lerf_k], n)
    job_order = np.tile(np.r_[np.zeros(len(morf_k), np.int64), np.ones(len(lerf_k), np.int64)], n)
    job_image = np.repeat(np.arange(n), per_image)

    def build(index: np.ndarray) -> np.ndarray:
        img = job_image[index]
        removed = (ranks[img, job_order[index]] < job_k[index][:, None])[:, tiles]
        batch = x[img]
        np.copyto(batch, fill[img][:, None, None, :], where=removed[..., None])
        return to_model(batch, data_format)

    target, values = evaluate_jobs(
        model, x, lambda images: to_model(images, data_format), targets, job_image, build, score,
        batch_size, "degradation", progress,
    )  # fmt: skip

    values = values.reshape(n, per_image)
    morf_values, lerf_values = values[:, : len(morf_k)], values[:, len(morf_k) :]
    morf_raw = morf_values[:, np.searchsorted(morf_k, steps)]
    lerf_raw = morf_raw.copy()  # nothing or everything removed: the same image in both orders
    lerf_raw[:, (steps > 0) & (steps < n_tiles)] = lerf_values
    degraded = morf_values[:, -1]

    t1, b = morf_raw[:, :1], degraded[:, None]
    flat = np.abs(t1 - b)[:, 0] <= FLAT_TOLERANCE
    if flat.any():
        which = np.flatnonzero(flat)
        warnings.warn(
            f"degradation: the fully degraded image scores the same as the unperturbed one for "
            f"{len(which)} image(s) (indices {which[:10].tolist()}"
            f"{'...' if len(which) > 10 else ''}"
            "); the normalisation (s - b) / (t1 - b) is undefined, their curves are set to 0 and "
            "their score to 0",
            RuntimeWarning,
            stacklevel=2,
        )
    denominator = np.where(flat[:, None], 1.0, t1 - b)
    morf = np.where(flat[:, None], 0.0, (morf_raw - b) / denominator)
    lerf = np.where(flat[:, None], 0.0, (lerf_raw - b) / denominator)
    fractions = steps / n_tiles
    scores = _area(lerf, fractions) - _area(morf, fractions)
    return DegradationResult(
        scores, float(scores.mean()), fractions, morf, lerf, morf_raw, lerf_raw, target, degraded
    )
