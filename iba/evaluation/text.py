"""Text degradation by token deletion (docs/mathematics.md section 7; Jiang et al., Findings of EMNLP 2020).

For each fraction ``f`` of the deletable tokens (9 fractions, 10 % to 90 %), the
``k = floor(f * L + 0.5)`` tokens with the highest map values are deleted (``L``: the sequence's
deletable tokens; a stable sort, ties in position order) and the target's probability and the
accuracy (top class = target) are recorded. The unperturbed sequence is recorded too, as fraction 0.

Deletion replaces the tokens by ``replacement_id`` (``mode="replace"``, the default: e.g. the
tokenizer's ``[MASK]`` or ``[UNK]`` id), which keeps the length and positions of the other tokens
and the fixed ``(N, T)`` batch shape. ``mode="remove"`` drops the tokens instead: the rest move
left and the sequence is padded at the end with ``pad_id`` (the model callable must treat
``pad_id`` as padding, e.g. build its attention mask from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from iba._checks import finite_array
from iba.evaluation._batching import (
    Model,
    check_batch_size,
    check_score,
    check_targets,
    model_outputs,
    progress_bar,
    select_scores,
)

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Shares of the deletable tokens deleted."""

MODES = ("replace", "remove")


class TextDegradationResult(NamedTuple):
    """Target probability and accuracy after deleting the top-k tokens (``K`` fractions)."""

    fractions: np.ndarray
    """``(K,)`` share of the deletable tokens deleted, ``0`` first."""
    probabilities: np.ndarray
    """``(N, K)`` the target's score (softmax probability by default)."""
    correct: np.ndarray
    """``(N, K)`` boolean: the model's top class is the target."""
    n_deleted: np.ndarray
    """``(N, K)`` tokens deleted."""
    mean: np.ndarray
    """``(K,)`` mean of ``probabilities`` per fraction."""
    accuracy: np.ndarray
    """``(K,)`` mean of ``correct`` per fraction."""
    targets: np.ndarray
    """``(N,)`` the classes scored."""


def _delete(ids: np.ndarray, drop: np.ndarray, mode: str, fill: int) -> np.ndarray:
    if mode == "replace":
        return np.where(drop, fill, ids)
    kept = ids[~drop]
    return np.concatenate([kept, np.full(len(ids) - len(kept), fill, dtype=ids.dtype)])


def text_degradation(
    model: Model,
    token_ids: np.ndarray,
    token_maps: np.ndarray,
    targets: int | np.ndarray | None = None,
    *,
    fractions: Sequence[float] = FRACTIONS,
    mode: str = "replace",
    replacement_id: int | None = None,
    pad_id: int | None = None,
    deletable: np.ndarray | None = None,
    score: str = "softmax",
    batch_size: int = 64,
    progress: bool = True,
) -> TextDegradationResult:
    """Delete the top-k tokens by the map and record the target probability and accuracy.

    Args:
        model: callable from token ids ``(n, T)`` (int) to outputs ``(n, n_classes)``.
        token_ids: ``(N, T)`` integer token ids (padded sequences are fine, see ``deletable``).
        token_maps: ``(N, T)`` relevance per token.
        targets: the class per sequence (an int is used for all); ``None`` takes the model's
            top class on the unperturbed sequence.
        fractions: shares of the deletable tokens to delete, each in ``(0, 1]``.
        mode: ``"replace"`` (by ``replacement_id``) or ``"remove"`` (shift left, pad with
            ``pad_id``).
        replacement_id: the id deleted tokens become in ``"replace"`` mode (required there).
        pad_id: the padding id appended in ``"remove"`` mode (required there).
        deletable: ``(N, T)`` boolean, the tokens that may be deleted and that count in the length
            ``L`` (default: all). Pass e.g. ``attention_mask & ~special_tokens_mask`` to keep
            ``[CLS]``, ``[SEP]`` and padding.
        score: ``"softmax"`` (the model returns logits) or ``"raw"`` (probabilities as returned).
        batch_size: sequences per model call.
        progress: show a tqdm progress bar (if tqdm is installed).

    Returns:
        :class:`TextDegradationResult` with per-sequence curves and their means per fraction.
    """
    check_score(score)
    batch_size = check_batch_size(batch_size)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; modes are: {', '.join(MODES)}")
    fill = replacement_id if mode == "replace" else pad_id
    if fill is None:
        need = "replacement_id" if mode == "replace" else "pad_id"
        raise ValueError(f"mode={mode!r} needs {need} (the token id deleted tokens become)")
    ids = np.asarray(token_ids)
    if not np.issubdtype(ids.dtype, np.integer) or ids.ndim != 2:
        raise ValueError(f"token_ids must be an (N, T) integer array, got {ids.dtype} {ids.shape}")
    if len(ids) == 0:
        raise ValueError("token_ids: the batch is empty")
    maps = finite_array("token_maps", token_maps)
    if maps.shape != ids.shape:
        raise ValueError(f"token_maps of shape {maps.shape} do not match token_ids {ids.shape}")
    allowed = np.ones(ids.shape, bool) if deletable is None else np.asarray(deletable, dtype=bool)
    if allowed.shape != ids.shape:
        raise ValueError(f"deletable of shape {allowed.shape} does not match token_ids {ids.shape}")
    fracs = np.asarray(fractions, dtype=np.float64)
    if fracs.ndim != 1 or fracs.size == 0 or np.any((fracs <= 0) | (fracs > 1)):
        raise ValueError(f"fractions must be a non-empty list of values in (0, 1], got {fractions}")
    fracs = np.r_[0.0, fracs]

    n, length = ids.shape
    counts = np.floor(fracs[None, :] * allowed.sum(1, keepdims=True) + 0.5).astype(np.int64)
    order = np.argsort(np.where(allowed, -maps, np.inf), axis=1, kind="stable")
    perturbed = np.empty((n, len(fracs), length), dtype=ids.dtype)
    for i in range(n):
        for j, k in enumerate(counts[i]):
            drop = np.zeros(length, bool)
            drop[order[i, :k]] = True
            perturbed[i, j] = _delete(ids[i], drop, mode, int(fill))
    flat = perturbed.reshape(-1, length)
    checked = check_targets(targets, n)

    outputs = []
    with progress_bar(len(flat), "text degradation", progress) as bar:
        for start in range(0, len(flat), batch_size):
            batch = flat[start : start + batch_size]
            outputs.append(model_outputs(model, batch))
            bar.update(len(batch))
    out = np.concatenate(outputs).reshape(n, len(fracs), -1)
    target = out[:, 0].argmax(axis=1) if checked is None else checked
    probabilities = select_scores(
        out.reshape(n * len(fracs), -1), np.repeat(target, len(fracs)), score
    ).reshape(n, len(fracs))
    correct = out.argmax(axis=2) == target[:, None]
    return TextDegradationResult(
        fracs,
        probabilities,
        correct,
        counts,
        probabilities.mean(axis=0),
        correct.mean(axis=0),
        target,
    )
