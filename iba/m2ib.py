"""M2IB, framework-free: what every adapter's image-text explainer shares (Wang et al., NeurIPS
2023; docs/mathematics.md section 5).

A dual encoder (CLIP) maps an image and a caption to embeddings of one space. M2IB explains a pair
without labels, with two independent optimisations, each a Per-Sample Bottleneck after one layer
of one encoder under the standard-normal prior (``iba.m2ib_config``): the bottlenecked side's
embedding is recomputed on every step, the other side's is fixed, and the model loss is minus
their cosine similarity. This module holds:

- the loss: :func:`cosine_similarity` and :func:`similarity_loss` (one loss per noised row,
  input-major, against the row's pair), :func:`pair_loss` (the per-input objective);
- the maps: :func:`image_map` (channel sum per token, class token dropped, patch grid, bilinear
  resize, min-max) and :func:`token_scores` (channel sum per token, min-max); the words of a
  caption come from ``iba.text.merge_wordpieces`` through ``iba.text.token_map``;
- the checks: :func:`check_pairs` (as many captions as images), :func:`check_captions` (every
  caption has a token that is not a special token);
- :class:`PairMaps`, the result of explaining a batch of pairs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from iba.heatmap import channel_sum, heatmap, normalize, to_bits, vit_heatmap
from iba.text import TokenMap, information_term

COSINE_EPS = 1e-6  # floor of |a| * |b| in the cosine (the authors' CosineSimilarity(eps=1e-6))


# -- the loss ------------------------------------------------------------------------------------


def cosine_similarity(a: Any, b: Any, eps: float = COSINE_EPS) -> np.ndarray:
    """Row-wise ``a . b / max(|a| |b|, eps)`` of ``(R, P)`` arrays: ``(R,)`` float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"cosine_similarity needs two (R, P) arrays, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, eps)


def pair_rows(other: Any, rows: int) -> np.ndarray:
    """The fixed embeddings ``(N, P)`` of the other side, each repeated for its pair's noised rows
    (``rows = N * B``, input-major: rows ``i*B .. i*B+B-1`` belong to pair ``i``)."""
    other = np.asarray(other, np.float64)
    n = other.shape[0]
    if other.ndim != 2 or n < 1 or rows % n:
        raise ValueError(
            f"{rows} noised rows do not split into the {n} pair(s) of embeddings {other.shape}: "
            "expected N * batch_size rows, input-major"
        )
    return np.repeat(other, rows // n, axis=0)


def similarity_loss(embeddings: Any, other: Any, eps: float = COSINE_EPS) -> np.ndarray:
    """The model loss of M2IB per noised row, ``(N * B,)``: minus the cosine of each row's
    bottlenecked embedding ``(N * B, P)`` with its pair's fixed embedding (``other``, ``(N, P)``).
    The driver averages it over each input's ``B`` rows."""
    embeddings = np.asarray(embeddings, np.float64)
    return -cosine_similarity(embeddings, pair_rows(other, embeddings.shape[0]), eps)


def pair_loss(
    capacity: Any,
    embeddings: Any,
    other: Any,
    beta: float,
    token_mask: Any = None,
) -> np.ndarray:
    """M2IB's objective per pair ``(N,)``: ``beta * mean(capacity) - mean_B cos(e, e_other)``.

    Args:
        capacity: per-element capacity in nats at the bottleneck, ``(N, T, D)``.
        embeddings: the bottlenecked side's embeddings of the ``N * B`` noised rows.
        other: the other side's fixed embeddings ``(N, P)``.
        beta: the weight of the information term.
        token_mask: ``(N, T)``, 1 at real tokens: the mean runs over their elements only
            (padded captions, docs/mathematics.md section 6.3).
    """
    capacity = np.asarray(capacity, np.float64)
    n = capacity.shape[0]
    if token_mask is None:
        information = capacity.reshape(n, -1).mean(1)
    else:
        information = information_term(capacity, token_mask)
    model = similarity_loss(embeddings, other).reshape(n, -1).mean(1)
    return beta * information + model


# -- maps ----------------------------------------------------------------------------------------


def patch_grid(n_tokens: int, n_prefix_tokens: int = 1) -> tuple[int, int]:
    """The square patch grid of a ViT's ``n_tokens`` tokens after ``n_prefix_tokens`` class
    tokens (50 tokens: 7 x 7), or a clear error."""
    patches = int(n_tokens) - int(n_prefix_tokens)
    side = math.isqrt(max(patches, 0))
    if patches < 1 or side * side != patches:
        raise ValueError(
            f"{n_tokens} image tokens are not {n_prefix_tokens} class token(s) plus a square "
            "grid of patches: choose a layer of the vision transformer's encoder"
        )
    return side, side


def image_map(
    capacity: Any, input_size: tuple[int, int], layout: str = "tokens", n_prefix_tokens: int = 1
) -> np.ndarray:
    """M2IB's image map ``(N, H, W)`` in ``[0, 1]`` from the capacity at the image bottleneck.

    ``tokens`` (a vision transformer, ``(N, T, D)``): summed over channels, the class token
    dropped, reshaped to the patch grid, resized bilinearly to ``input_size`` and min-max
    normalised per image (``iba.vit_heatmap``), as the authors. A convolutional layer
    (``channels_first`` / ``channels_last``): IBA's heatmap (docs/mathematics.md section 2) min-max
    normalised per image."""
    capacity = np.asarray(capacity, np.float64)
    size = (int(input_size[0]), int(input_size[1]))
    if layout != "tokens":
        return normalize(heatmap(capacity, layout, size))
    if capacity.ndim != 3:
        raise ValueError(f"image capacity must be (N, T, D), got shape {capacity.shape}")
    grid = patch_grid(capacity.shape[1], n_prefix_tokens)
    return vit_heatmap(capacity, grid, size, n_prefix_tokens)


def patch_bits(capacity: Any, layout: str = "tokens", n_prefix_tokens: int = 1) -> np.ndarray:
    """Bits per patch ``(N, gh, gw)`` (per feature-map cell for a convolutional layer), the image
    map before resizing and normalising."""
    capacity = np.asarray(capacity, np.float64)
    if layout != "tokens":
        return to_bits(channel_sum(capacity, layout))
    grid = patch_grid(capacity.shape[1], n_prefix_tokens)
    bits = to_bits(channel_sum(capacity, "tokens"))[:, n_prefix_tokens:]
    return bits.reshape(capacity.shape[0], *grid)


def token_scores(token_values: Any) -> np.ndarray:
    """M2IB's text map of one caption: its per-token values ``(T,)`` (the channel sum of the
    capacity, in any unit; special tokens included, as the authors) min-max normalised."""
    values = np.asarray(token_values, np.float64)
    if values.ndim != 1:
        raise ValueError(f"token values of one caption must be (T,), got shape {values.shape}")
    if not len(values):
        return values.copy()
    return normalize(values[None])[0]


# -- checks --------------------------------------------------------------------------------------


def check_pairs(n_images: int, n_texts: int) -> int:
    """The number of pairs, or a clear error when images and captions do not pair up."""
    if n_images < 1:
        raise ValueError("images holds no image: give a batch of at least one")
    if n_images != n_texts:
        raise ValueError(
            f"got {n_images} image(s) and {n_texts} caption(s): M2IB explains image-caption "
            "pairs, one caption per image (repeat an image to pair it with several captions)"
        )
    return n_images


def check_captions(texts: Sequence[str], attention_mask: Any, special_tokens_mask: Any) -> None:
    """Raise if a caption tokenises to special tokens only (nothing to explain, and an embedding
    of the special tokens alone)."""
    real = np.asarray(attention_mask).astype(bool) & ~np.asarray(special_tokens_mask).astype(bool)
    empty = [i for i in range(len(texts)) if not real[i].any()]
    if empty:
        shown = ", ".join(f"{i} ({texts[i]!r})" for i in empty[:5])
        raise ValueError(
            f"caption(s) {shown} tokenise to special tokens only: give each caption at least "
            "one word"
        )


# -- the result ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PairMaps:
    """The M2IB explanation of ``N`` image-caption pairs (docs/mathematics.md section 5).

    Attributes:
        image_maps: ``(N, H, W)`` in ``[0, 1]`` on the input grid: the image map.
        image_bits: ``(N, gh, gw)`` bits per patch (per feature-map cell for a convolutional
            layer), before resizing and normalising.
        text_maps: one ``iba.text.TokenMap`` per caption: bits per token (special tokens
            included) and per word (its wordpieces' sum); ``TokenMap.normalized()`` is the word
            map min-max normalised.
        similarity: ``(N,)`` the cosine of each pair's clean embeddings.
        image_explanation: the image side's ``iba.Explanation`` (``details=True`` only): its
            capacity, alpha and losses per image. The text side's bits are in ``text_maps``.
    """

    image_maps: np.ndarray
    image_bits: np.ndarray
    text_maps: tuple[TokenMap, ...]
    similarity: np.ndarray
    image_explanation: Any = None

    def __len__(self) -> int:
        return len(self.text_maps)

    def token_scores(self, index: int) -> np.ndarray:
        """Caption ``index``'s text map per token: its bits min-max normalised (the authors'
        map; special tokens included)."""
        return token_scores(self.text_maps[index].token_bits)
