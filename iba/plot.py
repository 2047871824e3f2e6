"""Matplotlib helpers for heatmaps (optional extra ``iba[plot]``; ``import iba`` does not load it).

>>> fig = iba.plot.explanation(image, heatmap, title="Egyptian cat")  # doctest: +SKIP
>>> fig.savefig("cat.png")                                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure
except ImportError as err:  # pragma: no cover - exercised only without matplotlib
    raise ImportError(
        "iba.plot needs matplotlib: pip install 'iba[plot]' (or pip install matplotlib)"
    ) from err


def _as_display(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)  # channels-first to channels-last
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def overlay(
    ax,
    image: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.55,
    cmap: str = "jet",
    colorbar: bool = True,
    label: str = "bits",
):
    """Draw ``heatmap`` over ``image`` on ``ax``, with a colour bar labelled ``label``."""
    image = _as_display(image)
    heatmap = np.asarray(heatmap)
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap of shape {heatmap.shape} does not match image {image.shape[:2]}")
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    mappable = ax.imshow(heatmap, cmap=cmap, alpha=alpha)
    ax.set_axis_off()
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04, label=label)
    return mappable


def explanation(
    image: np.ndarray, heatmap: np.ndarray, title: str | None = None, label: str = "bits"
) -> Figure:
    """A figure with the photo and the heatmap over it (colour bar in ``label``)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
    left.imshow(_as_display(image), cmap="gray" if np.ndim(image) == 2 else None)
    left.set_axis_off()
    left.set_title("input")
    overlay(right, image, heatmap, label=label)
    right.set_title(f"information (total {np.nansum(heatmap):.1f} {label})")
    if title:
        fig.suptitle(title)
    return fig


def grid(
    images: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    columns: int = 4,
    label: str = "bits",
) -> Figure:
    """Several explanations, one overlay per cell."""
    if len(images) != len(heatmaps):
        raise ValueError(f"{len(images)} images but {len(heatmaps)} heatmaps")
    rows = -(-len(images) // columns)
    cols = min(columns, len(images))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False, layout="constrained"
    )
    for i, ax in enumerate(axes.flat):
        if i >= len(images):
            ax.set_axis_off()
            continue
        overlay(ax, images[i], heatmaps[i], label=label)
        if titles:
            ax.set_title(titles[i])
    return fig
