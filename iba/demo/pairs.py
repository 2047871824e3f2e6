"""Side-by-side photo pairs with one caption each, to check where M2IB's image map goes
(docs/mathematics.md section 5; docs/m2ib.md).

Each pair puts two bundled photos (:mod:`iba.demo.photos`) side by side in one square image: each
photo's central portrait strip (twice as high as wide) fills one half. The caption names the
ImageNet concept of one half only, so a map that follows the caption puts most of its mass on
that half (``iba.evaluation.m2ib.half_share``). The photos are those whose concept the bundled
EfficientNet-Lite0 recognises in that strip (cat, espresso, missile, military uniform, palace,
daisy); the captions are paraphrases, not the prompts of the dual encoder's text head.

NumPy only (the photos are read with scikit-image, scikit-learn, matplotlib and Pillow).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from iba.demo import photos

SIZE = 224  # the pair image's side; each photo fills SIZE x SIZE // 2
HALVES = ("left", "right")


class Pair(NamedTuple):
    """Two photos side by side and a caption naming the concept of one of them."""

    left: str  # photo name (iba.demo.photos)
    right: str
    caption: str
    half: str  # "left" or "right": the half the caption names
    concept: str  # the ImageNet class the named photo shows

    @property
    def named(self) -> str:
        """The photo the caption names."""
        return self.left if self.half == "left" else self.right


# Four captions name the left half, four the right; each names its photo's ImageNet concept.
PAIRS = (
    Pair("chelsea", "coffee", "a picture of a cat", "left", "Egyptian Mau"),
    Pair("chelsea", "coffee", "a cup of espresso", "right", "espresso"),
    Pair("rocket", "grace_hopper", "a missile on its launch pad", "left", "missile"),
    Pair("rocket", "grace_hopper", "an officer in military uniform", "right", "military uniform"),
    Pair("china", "flower", "a white daisy", "right", "daisy"),
    Pair("china", "flower", "an old palace", "left", "palace"),
    Pair("flower", "coffee", "a daisy flower", "left", "daisy"),
    Pair("grace_hopper", "chelsea", "a kitten", "right", "Egyptian Mau"),
)


def _check_half(half: str) -> str:
    if half not in HALVES:
        raise ValueError(f"half must be 'left' or 'right', got {half!r}")
    return half


def strip(name: str, size: int = SIZE) -> np.ndarray:
    """Photo ``name``'s central portrait strip, resized to ``(size, size // 2, 3)`` uint8."""
    from PIL import Image

    image = photos.photo(name)
    h, w = image.shape[:2]
    width = min(w, h // 2)
    height = 2 * width
    top, left = (h - height) // 2, (w - width) // 2
    crop = image[top : top + height, left : left + width]
    resized = Image.fromarray(crop).resize((size // 2, size), Image.BILINEAR)
    return np.asarray(resized)


@functools.cache
def pair_image(left: str, right: str, size: int = SIZE) -> np.ndarray:
    """Photos ``left`` and ``right`` side by side, ``(size, size, 3)`` uint8 (read-only)."""
    if size < 2 or size % 2:
        raise ValueError(f"size must be an even number of pixels >= 2, got {size!r}")
    image = np.concatenate([strip(left, size), strip(right, size)], axis=1)
    image.setflags(write=False)
    return image


def images(pairs: Sequence[Pair] = PAIRS, size: int = SIZE) -> np.ndarray:
    """The pairs' images ``(N, size, size, 3)`` uint8."""
    return np.stack([pair_image(p.left, p.right, size) for p in pairs])


def preprocessed(pairs: Sequence[Pair] = PAIRS, size: int = SIZE) -> np.ndarray:
    """The pairs' images as EfficientNet-Lite0 takes them, ``(N, size, size, 3)`` float32,
    channels last: ``(pixels / 255 - 0.498) / 0.502`` (transpose to ``(N, 3, H, W)`` for
    PyTorch)."""
    from iba.demo.runners import preprocess

    return preprocess(images(pairs, size)).astype(np.float32)


def captions(pairs: Sequence[Pair] = PAIRS) -> list[str]:
    """The pairs' captions."""
    return [p.caption for p in pairs]


def halves(pairs: Sequence[Pair] = PAIRS) -> list[str]:
    """The half each caption names, ``'left'`` or ``'right'``."""
    return [_check_half(p.half) for p in pairs]
