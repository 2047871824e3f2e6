"""Bounding-box ratio (docs/mathematics.md section 7.2; Schulz et al., ICLR 2020, section 4).

With ``n`` the number of pixels inside the object's box, the score is the fraction of the ``n``
highest-scored heatmap pixels that lie inside the box. Pixels tied with the ``n``-th highest value
count fractionally (the expected score under a random order of the ties), so the score does not
depend on pixel order: a constant heatmap scores the box's share of the image, the random baseline.
Images whose box covers more than ``max_box_fraction`` (33 %) of the image are skipped: their
score is NaN, ``skipped`` marks them and the mean is over the others. Paper (ImageNet,
ResNet-50): IBA 0.606, random 0.167.

The paper's script also reports a second ratio, returned as ``mass_shares``: the share of the
map's total value inside the box, ``sum(map * box) / sum(map)`` (docs/metrics.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from iba._checks import finite_array
from iba.evaluation._images import warn_constant

MAX_BOX_FRACTION = 0.33
"""Boxes covering more of the image than this are skipped (the paper's 33 %)."""


class BoundingBoxResult(NamedTuple):
    """Per-image bounding-box ratios."""

    scores: np.ndarray
    """``(N,)`` share of the top-``n`` pixels inside the box; NaN where skipped."""
    mean: float
    """Mean over the images not skipped (NaN if all are skipped)."""
    skipped: np.ndarray
    """``(N,)`` boolean: the box covers more than ``max_box_fraction`` of the image."""
    box_fractions: np.ndarray
    """``(N,)`` share of the image inside the box (the random heatmap's expected score)."""
    mass_shares: np.ndarray
    """``(N,)`` share of the map's total inside the box, ``sum(map * box) / sum(map)`` (the IBA
    paper's second ratio); NaN where skipped or where it is undefined (a map with a negative
    value or a zero total)."""
    mass_mean: float
    """Mean of ``mass_shares`` over the images where it is defined (NaN if it is nowhere)."""


def box_mask(boxes: np.ndarray | Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """``(N, H, W)`` boolean masks from one or more ``(x1, y1, x2, y2)`` boxes per image.

    ``boxes`` is ``(N, 4)`` or a sequence of ``(4,)`` / ``(m, 4)`` arrays (the union of the ``m``
    boxes). A box covers the pixels ``x1 <= x < x2``, ``y1 <= y < y2`` (``heatmap[y1:y2, x1:x2]``)
    and must lie inside the ``H x W`` image and be non-empty.
    """
    height, width = size
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    for i, image_boxes in enumerate(boxes):
        array = np.asarray(image_boxes)
        if not np.issubdtype(array.dtype, np.integer):
            if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
                raise ValueError(f"box {i}: coordinates must be whole pixels, got {array.tolist()}")
            array = array.astype(np.int64)
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[1] != 4 or len(array) == 0:
            raise ValueError(
                f"box {i}: expected (x1, y1, x2, y2) or (m, 4), got shape {array.shape}"
            )
        for x1, y1, x2, y2 in array.tolist():
            if x2 <= x1 or y2 <= y1:
                raise ValueError(
                    f"box {i}: ({x1}, {y1}, {x2}, {y2}) is empty (need x1 < x2, y1 < y2)"
                )
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                raise ValueError(
                    f"box {i}: ({x1}, {y1}, {x2}, {y2}) extends outside the {width}x{height} "
                    "(W x H) image"
                )
            masks[i, y1:y2, x1:x2] = True
    return masks


def top_n_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the ``mask.sum()`` highest pixels of ``heatmap`` in ``mask`` (ties fractional)."""
    values = heatmap.ravel()
    inside = mask.ravel()
    n = int(inside.sum())
    threshold = np.partition(values, values.size - n)[values.size - n]  # the n-th highest value
    above = values > threshold
    tied = values == threshold
    share_of_ties = (n - above.sum()) * np.count_nonzero(inside & tied) / np.count_nonzero(tied)
    return float((np.count_nonzero(inside & above) + share_of_ties) / n)


def mass_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """``sum(heatmap * mask) / sum(heatmap)``; NaN unless the map is >= 0 with a positive total."""
    total = float(heatmap.sum())
    if np.any(heatmap < 0) or not total > 0:
        return float("nan")
    return float(heatmap[mask].sum()) / total


def bounding_box_ratio(
    heatmaps: np.ndarray,
    boxes: np.ndarray | Sequence[np.ndarray],
    *,
    max_box_fraction: float = MAX_BOX_FRACTION,
) -> BoundingBoxResult:
    """Bounding-box ratio: share of the top-``n`` heatmap pixels inside the ``n``-pixel box.

    Args:
        heatmaps: ``(N, H, W)`` at the image size.
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels, upper bounds exclusive, or a
            sequence of ``(m, 4)`` arrays per image (their union); see :func:`box_mask`.
        max_box_fraction: images whose box covers more than this share of the image (the
            paper's 0.33) are skipped: their ``scores`` and ``mass_shares`` are NaN, ``skipped``
            marks them and both means leave them out. Pass ``1.0`` to keep every image.

    Returns:
        :class:`BoundingBoxResult`; skipped images score NaN and are left out of the mean. Its
        ``mass_shares`` are the paper's second ratio, the share of the map's total inside the box,
        defined for maps without negative values and with a positive total (NaN otherwise, without
        a warning: signed maps such as Gradient x Input have no such share; shift or clip them).

    Raises ``ValueError`` for empty boxes, boxes outside the image, heatmaps with NaN, and a
    number of boxes that differs from the number of heatmaps. Constant heatmaps warn
    (``RuntimeWarning``): they score the box's share, the random baseline. A warning also says
    when every image is skipped.
    """
    maps = finite_array("heatmaps", heatmaps, ndim=3)
    if len(boxes) != len(maps):
        raise ValueError(f"{len(maps)} heatmaps but {len(boxes)} boxes; need one entry per heatmap")
    masks = box_mask(boxes, maps.shape[1:])
    box_fractions = masks.mean(axis=(1, 2))
    skipped = box_fractions > max_box_fraction
    warn_constant(maps[~skipped], "bounding_box_ratio", "they score the box's share of the image")
    scores = np.full(len(maps), np.nan)
    shares = np.full(len(maps), np.nan)
    for i in np.flatnonzero(~skipped):
        scores[i] = top_n_share(maps[i], masks[i])
        shares[i] = mass_share(maps[i], masks[i])
    if skipped.all():
        warnings.warn(
            f"bounding_box_ratio: all {len(maps)} boxes cover more than {max_box_fraction:.0%} of "
            "the image; every image is skipped and the mean is NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        mean = float("nan")
    else:
        mean = float(np.mean(scores[~skipped]))
    defined = ~np.isnan(shares)
    mass_mean = float(np.mean(shares[defined])) if defined.any() else float("nan")
    return BoundingBoxResult(scores, mean, skipped, box_fractions, shares, mass_mean)
