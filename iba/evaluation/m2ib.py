"""M2IB confidence drop and increase (docs/mathematics.md section 7; Wang et al., NeurIPS 2023).

For an image-text dual encoder such as CLIP. The explained modality's input is multiplied by its
map (images by the full 2-D map, all channels alike; tokens by one weight per token embedding) and
embedded again; the other modality's embedding stays fixed. With ``before`` and ``after`` the
cosine similarities of the two embeddings: drop = mean of ``max(0, before - after)`` (lower is
better), increase = percentage of samples with ``after > before`` (higher is better), as
pytorch-grad-cam's ``DropInConfidence`` / ``IncreaseInConfidence`` that the authors used.

:func:`half_share` is the localisation check on side-by-side pairs (``iba.demo.pairs``): the
share of an image map's mass on the half its caption names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from iba._checks import finite_array
from iba.evaluation._batching import check_batch_size, progress_bar
from iba.evaluation._images import check_images, to_model

Embed = Callable[[np.ndarray], Any]
"""An encoder: a batch of inputs ``(n, ...)`` in, embeddings ``(n, d)`` out."""

COSINE_EPS = 1e-8
"""Norms are floored at this in the cosine similarity (as in torch's ``cosine_similarity``)."""


class ConfidenceResult(NamedTuple):
    """Per-sample similarities before and after masking, and the two M2IB scores."""

    before: np.ndarray
    """``(N,)`` cosine similarity with the other modality, unmasked input."""
    after: np.ndarray
    """``(N,)`` cosine similarity, input multiplied by its map."""
    drops: np.ndarray
    """``(N,)`` ``max(0, before - after)``."""
    drop: float
    """Confidence drop: mean of ``drops``."""
    increase: float
    """Confidence increase: percentage (0-100) of samples with ``after > before``."""


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``(n, d)`` arrays, norms floored at :data:`COSINE_EPS`."""
    norms = np.maximum(np.linalg.norm(a, axis=-1), COSINE_EPS) * np.maximum(
        np.linalg.norm(b, axis=-1), COSINE_EPS
    )
    return np.sum(a * b, axis=-1) / norms


def _embed_all(embed: Embed, inputs: np.ndarray, batch_size: int, bar: Any) -> np.ndarray:
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        emb = embed(batch)
        if hasattr(emb, "detach"):
            emb = emb.detach().cpu()
        emb = np.asarray(emb, dtype=np.float64)
        if emb.ndim != 2 or len(emb) != len(batch):
            raise ValueError(
                f"embed must return (n, d) embeddings for a batch of n = {len(batch)} inputs, "
                f"got shape {emb.shape}"
            )
        out.append(emb)
        bar.update(len(batch))
    return np.concatenate(out)


def confidence_drop_increase(
    embed: Embed,
    inputs: np.ndarray,
    maps: np.ndarray,
    other_embeddings: np.ndarray,
    *,
    data_format: str = "channels_last",
    batch_size: int = 32,
    progress: bool = True,
) -> ConfidenceResult:
    """M2IB confidence drop / increase of one modality's maps against the other's embeddings.

    Args:
        embed: the explained modality's encoder, a batch of inputs to embeddings ``(n, d)``.
            For text it must accept token embeddings (e.g. a CLIP text model called with
            ``inputs_embeds``), since token ids cannot be multiplied by a map.
        inputs: images ``(N, H, W, C)`` (``"channels_last"``) or ``(N, C, H, W)``
            (``"channels_first"``), or token embeddings ``(N, T, D)`` (``"tokens"``).
        maps: ``(N, H, W)`` image maps at the image size or ``(N, T)`` token maps, with values in
            ``[0, 1]`` (min-max normalise them with ``iba.normalize``).
        other_embeddings: ``(N, d)`` fixed embeddings of the other modality (or ``(d,)`` for all).
        data_format: ``"channels_last"``, ``"channels_first"`` or ``"tokens"``.
        batch_size: inputs per ``embed`` call.
        progress: show a tqdm progress bar (if tqdm is installed).

    Returns:
        :class:`ConfidenceResult`: ``drop`` (mean of ``max(0, before - after)``) and
        ``increase`` (percentage of ``after > before``) with the per-sample similarities.

    Raises ``ValueError`` for maps outside ``[0, 1]``, NaN values and mismatched shapes.
    """
    batch_size = check_batch_size(batch_size)
    if data_format == "tokens":
        x = finite_array("inputs", inputs, ndim=3)
        expected = x.shape[:2]
    else:
        x = check_images(inputs, data_format)  # channels-last
        expected = x.shape[:3]
    weights = finite_array("maps", maps)
    if weights.shape != expected:
        raise ValueError(
            f"maps of shape {weights.shape} do not match the inputs: expected {expected}"
        )
    if weights.min() < 0 or weights.max() > 1:
        raise ValueError(
            f"maps must lie in [0, 1], got [{weights.min():.3g}, {weights.max():.3g}]; "
            "normalise them with iba.normalize"
        )
    other = finite_array("other_embeddings", other_embeddings)
    if other.ndim == 1:
        other = np.broadcast_to(other, (len(x), len(other)))
    if other.ndim != 2 or len(other) != len(x):
        raise ValueError(
            f"other_embeddings must be (N, d) with N = {len(x)}, or (d,), got shape {other.shape}"
        )
    masked = x * weights[..., None].astype(x.dtype)
    if data_format != "tokens":
        x, masked = to_model(x, data_format), to_model(masked, data_format)

    with progress_bar(2 * len(x), "confidence", progress) as bar:
        emb_before = _embed_all(embed, x, batch_size, bar)
        emb_after = _embed_all(embed, masked, batch_size, bar)
    if emb_before.shape[1] != other.shape[1]:
        raise ValueError(
            f"embed returns {emb_before.shape[1]}-dim embeddings but other_embeddings are "
            f"{other.shape[1]}-dim"
        )
    before = cosine_similarity(emb_before, other)
    after = cosine_similarity(emb_after, other)
    drops = np.maximum(0.0, before - after)
    return ConfidenceResult(
        before, after, drops, float(drops.mean()), float(100.0 * np.mean(after > before))
    )


def half_share(maps: Any, halves: Any) -> np.ndarray:
    """The share of each map's mass on the half of the image its caption names, ``(N,)``.

    For side-by-side pairs (``iba.demo.pairs``): ``maps`` ``(N, H, W)`` non-negative (any scale:
    bits, or min-max normalised), ``halves`` one of ``"left"`` / ``"right"`` per map. The left
    half is the first ``W / 2`` columns; with an odd ``W`` the middle column counts half on each
    side. A map that follows its caption scores above 0.5; a map of zeros raises.
    """
    values = finite_array("maps", maps, ndim=3)
    if values.min() < 0:
        raise ValueError(
            f"maps must be non-negative (bits or normalised maps), got a minimum of "
            f"{values.min():.3g}"
        )
    sides = [halves] if isinstance(halves, str) else list(halves)
    if len(sides) != len(values):
        raise ValueError(f"got {len(values)} map(s) and {len(sides)} half/halves: one per map")
    unknown = sorted({str(s) for s in sides} - {"left", "right"})
    if unknown:
        raise ValueError(f"halves must be 'left' or 'right', got {unknown}")
    width = values.shape[2]
    columns = values.sum(axis=1)  # (N, W)
    left = columns[:, : width // 2].sum(1)
    if width % 2:
        left = left + columns[:, width // 2] / 2
    total = columns.sum(1)
    if (total <= 0).any():
        empty = np.flatnonzero(total <= 0).tolist()
        raise ValueError(f"map(s) {empty} hold no mass: their share is undefined")
    share_left = left / total
    return np.where(np.asarray(sides) == "left", share_left, 1.0 - share_left)
