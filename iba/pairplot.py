"""Figures of M2IB explanations (docs/mathematics.md section 5): each image-caption pair as the
image, its map over it and the caption's words shaded by bits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from iba import textplot
from iba.m2ib import PairMaps


def save_png(
    images: np.ndarray,
    maps: PairMaps,
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    dpi: float = 110,
) -> Path:
    """Write one row per pair: the photo, M2IB's image map over it, and the caption's words
    shaded by bits (one scale for every caption); returns the path.

    Args:
        images: the pairs' photos ``(N, H, W, 3)`` uint8 (the maps' size).
        maps: their M2IB explanation.
        path: the PNG to write.
        titles: one line above each row (default: the caption and the similarity).
        dpi: pixels per inch.
    """
    images = np.asarray(images)
    n = len(maps)
    if images.ndim != 4 or len(images) != n or images.shape[1:3] != maps.image_maps.shape[1:]:
        raise ValueError(
            f"images {images.shape} do not match the maps {maps.image_maps.shape}: give the "
            "pairs' photos (N, H, W, 3) at the maps' size"
        )
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} pairs")
    textplot._matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from iba import plot

    fig = Figure(figsize=(11.0, 3.0 * n), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    vmax = textplot.scale_max(list(maps.text_maps))
    axes = fig.subplots(n, 3, squeeze=False, width_ratios=(1, 1, 1.6))
    for i, (photo, heat, words) in enumerate(axes):
        photo.imshow(images[i])
        photo.set_axis_off()
        caption = maps.text_maps[i].text
        title = (
            titles[i]
            if titles is not None
            else f"{caption!r}: cosine similarity {maps.similarity[i]:.3f}"
        )
        photo.set_title(title, loc="left", fontsize=10)
        plot.overlay(heat, images[i], maps.image_maps[i], label="M2IB (normalised)")
        textplot.plot_token_map(maps.text_maps[i], ax=words, vmax=vmax)
        words.set_axis_off()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def describe(maps: PairMaps, index: int, words: int = 3) -> str:
    """One line for pair ``index``: the similarity and the caption's top words in bits."""
    token_map = maps.text_maps[index]
    top = ", ".join(f"{w!r} {b:.1f}" for w, b in token_map.top_words(words))
    return f"cosine similarity {maps.similarity[index]:.3f}; top words: {top or '(none)'} bits"
