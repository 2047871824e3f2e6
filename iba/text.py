"""Text IBA, framework-free: token masks, the information term over real tokens, words from
wordpieces, and the per-text result (docs/mathematics.md section 6.3).

A batch of texts is padded to its longest one. Padding must carry no information, and a text must
get the same map alone or next to longer texts, so the text explainers (``iba_torch.text``):

- mask the capacity with :func:`token_mask` (zero at padding) and take the information term as
  the mean over the real tokens' elements only (:func:`information_term`);
- use statistics shared by every position (:func:`tile_positions`: an estimator of features
  ``(1, D)``, fitted on the real tokens of a corpus, repeated over the ``T`` positions);
- draw each text's noise on its own (:func:`text_noise`), independent of the batch.

The maps come back per text as :class:`TokenMap`: bits per token, and per word, where a word is
the run of wordpieces the tokenizer gives one word id (:func:`merge_wordpieces`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from iba.estimator import Estimator
from iba.heatmap import normalize


def token_mask(
    attention_mask: Any, special_tokens_mask: Any = None, keep_special: bool = True
) -> np.ndarray:
    """``(N, T)`` float64: 1 at the real tokens, 0 at padding (and, unless ``keep_special``, at the
    special tokens that ``special_tokens_mask`` marks with 1)."""
    mask = np.asarray(attention_mask)
    if mask.ndim != 2:
        raise ValueError(f"attention_mask must be (N, T), got shape {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("attention_mask must hold 0 (padding) and 1 (a token) only")
    out = mask.astype(np.float64)
    if not keep_special:
        if special_tokens_mask is None:
            raise ValueError("keep_special=False needs the special_tokens_mask")
        special = np.asarray(special_tokens_mask)
        if special.shape != mask.shape:
            raise ValueError(
                f"special_tokens_mask has shape {special.shape}, attention_mask {mask.shape}"
            )
        out = out * (special == 0)
    return out


def _mask_for(capacity: np.ndarray, mask: Any) -> np.ndarray:
    mask = np.asarray(mask, np.float64)
    if capacity.ndim < 2 or mask.shape != capacity.shape[:2]:
        raise ValueError(
            f"token mask of shape {mask.shape} does not fit capacity {capacity.shape}: expected "
            f"{capacity.shape[:2]} (N, T)"
        )
    return mask.reshape(*mask.shape, *[1] * (capacity.ndim - 2))


def masked_capacity(capacity: Any, mask: Any) -> np.ndarray:
    """The capacity ``(N, T, D)`` with the tokens outside ``mask`` ``(N, T)`` set to zero."""
    capacity = np.asarray(capacity, np.float64)
    return capacity * _mask_for(capacity, mask)


def information_weights(capacity: Any, mask: Any) -> np.ndarray:
    """Per element, the weight of the capacity in the information term, ``m / (D * sum(m))``:
    ``capacity``'s shape ``(N, T, D)`` from the token mask ``(N, T)`` (docs/mathematics.md
    section 6.3). An input without any real token gets weights 0."""
    capacity = np.asarray(capacity, np.float64)
    weights = np.broadcast_to(_mask_for(capacity, mask), capacity.shape)
    n = capacity.shape[0]
    count = weights.reshape(n, -1).sum(1)
    return weights / np.maximum(count, 1.0).reshape(n, *[1] * (capacity.ndim - 1))


def information_term(capacity: Any, mask: Any) -> np.ndarray:
    """Per input ``(N,)``: the mean capacity over the elements of the real tokens,
    ``sum(cap * m) / (D * sum(m))`` (docs/mathematics.md section 6.3).

    Without padding (``mask`` all ones) it is the mean over all elements of section 2.5. An input
    without any real token gets 0.
    """
    capacity = np.asarray(capacity, np.float64)
    weights = information_weights(capacity, mask)
    return (capacity * weights).reshape(capacity.shape[0], -1).sum(1)


def tile_positions(estimator: Estimator, n_tokens: int) -> Estimator:
    """An estimator of features ``(T, D)`` whose every position has the statistics of
    ``estimator``'s one position ``(1, D)`` (pooled over the real tokens of a corpus)."""
    if not isinstance(estimator, Estimator):
        raise TypeError(f"estimator must be an iba.Estimator, got {type(estimator).__name__}")
    shape = estimator.feature_shape
    if estimator.layout != "tokens" or shape is None or shape[0] != 1:
        raise ValueError(
            f"a position-shared estimator has layout 'tokens' and features (1, D); got "
            f"{estimator.layout!r} with {shape}: fit it with the text explainer's estimate()"
        )
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    arrays = estimator.to_arrays()
    for key in ("mean", "m2", "nonzero"):
        arrays[key] = np.repeat(arrays[key], n_tokens, axis=0)
    arrays["feature_shape"] = np.array((n_tokens, shape[1]), np.int64)
    return Estimator.from_arrays(arrays)


def text_noise(seed: int, steps: int, batch_size: int, mask: Any, dim: int) -> np.ndarray:
    """Standard-normal draws ``(steps, N, B, T, D)`` float64 for a padded batch: text ``i``'s
    ``k`` real tokens (where ``mask`` ``(N, T)`` is 1, in order) get
    ``default_rng(seed).standard_normal((steps, B, k, D))``, its padding zeros. A text's draws
    depend on the seed and its own length only, not on the other texts of the batch."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (N, T), got shape {mask.shape}")
    n, t = mask.shape
    out = np.zeros((steps, n, batch_size, t, dim))
    for i in range(n):
        real = np.flatnonzero(mask[i])
        draws = np.random.default_rng(seed).standard_normal((steps, batch_size, len(real), dim))
        out[:, i, :, real] = np.moveaxis(draws, 2, 0)
    return out


# -- words ---------------------------------------------------------------------------------------


class Word(NamedTuple):
    """One word of a text: its characters ``text[start:end]`` and its tokens ``first:stop``."""

    text: str
    start: int
    end: int
    first: int
    stop: int


def merge_wordpieces(
    word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]], text: str
) -> list[Word]:
    """The words of one text: each run of consecutive tokens with the same word id.

    Args:
        word_ids: per token, the tokenizer's word index, ``None`` for special tokens and padding.
        offsets: per token, its ``(start, end)`` characters in ``text``.
        text: the text the offsets point into.
    """
    if len(word_ids) != len(offsets):
        raise ValueError(f"{len(word_ids)} word ids for {len(offsets)} token offsets")
    words: list[Word] = []
    first = 0
    for i in range(1, len(word_ids) + 1):
        if i < len(word_ids) and word_ids[i] == word_ids[first]:
            continue
        if word_ids[first] is not None:
            start, end = int(offsets[first][0]), int(offsets[i - 1][1])
            words.append(Word(text[start:end], start, end, first, i))
        first = i
    return words


def word_sums(values: Any, words: Sequence[Word]) -> np.ndarray:
    """Per word, the sum of ``values`` ``(T,)`` over its tokens: ``(W,)`` float64."""
    values = np.asarray(values, np.float64)
    return np.array([values[w.first : w.stop].sum() for w in words], np.float64)


@dataclasses.dataclass(frozen=True)
class TokenMap:
    """The explanation of one text (docs/mathematics.md section 6.3), padding removed.

    Attributes:
        text: the text as given.
        tokens: its tokens, special tokens included (``[CLS]`` ... ``[SEP]``).
        token_bits: ``(T,)`` information per token, in bits.
        special: ``(T,)`` bool, True at special tokens.
        words: the words (:class:`Word`: characters and token range), special tokens excluded.
        word_bits: ``(W,)`` bits per word, the sum over its wordpieces.
        target: the class explained (``None`` for a ``loss_fn``).
        prediction: the model's top class on the text (``None`` if its outputs are no logits).
        probabilities: the softmax of its logits, or ``None``.
        truncated: whether the text was cut at the model's maximum length.
    """

    text: str
    tokens: tuple[str, ...]
    token_bits: np.ndarray
    special: np.ndarray
    words: tuple[Word, ...]
    word_bits: np.ndarray
    target: int | None = None
    prediction: int | None = None
    probabilities: np.ndarray | None = None
    truncated: bool = False

    @property
    def word_spans(self) -> list[tuple[int, int]]:
        """``(start, end)`` characters of each word in :attr:`text`."""
        return [(w.start, w.end) for w in self.words]

    @property
    def total_bits(self) -> float:
        """The information of all tokens together, in bits."""
        return float(self.token_bits.sum())

    def normalized(self) -> np.ndarray:
        """The word map min-max normalised to ``[0, 1]`` (the text-IBA authors' display)."""
        if not len(self.word_bits):
            return np.zeros(0)
        return normalize(self.word_bits[None])[0]

    def top_words(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` words with the most bits, ``(word, bits)``, most first (stable)."""
        order = np.argsort(-self.word_bits, kind="stable")[:k]
        return [(self.words[i].text, float(self.word_bits[i])) for i in order]

    def __str__(self) -> str:
        words = " ".join(f"{w.text}({b:.1f})" for w, b in zip(self.words, self.word_bits))
        return f"TokenMap({self.total_bits:.1f} bits: {words})"


def token_map(
    text: str,
    tokens: Sequence[str],
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    bits: Any,
    special: Any,
    *,
    target: int | None = None,
    logits: Any = None,
    truncated: bool = False,
    mask_special: bool = False,
) -> TokenMap:
    """The :class:`TokenMap` of one text from its real tokens' data (no padding).

    ``mask_special`` zeroes the bits of the special tokens (``[CLS]``, ``[SEP]``) in the map; the
    words never include them.
    """
    bits = np.array(bits, np.float64)
    special = np.asarray(special, bool)
    if not len(tokens) == len(word_ids) == len(offsets) == len(bits) == len(special):
        raise ValueError(
            f"per-token data of different lengths: {len(tokens)} tokens, {len(word_ids)} word "
            f"ids, {len(offsets)} offsets, {len(bits)} values, {len(special)} special flags"
        )
    if mask_special:
        bits[special] = 0.0
    words = merge_wordpieces(word_ids, offsets, text)
    probabilities = prediction = None
    if logits is not None:
        z = np.asarray(logits, np.float64)
        z = np.exp(z - z.max())
        probabilities = z / z.sum()
        prediction = int(np.argmax(probabilities))
    return TokenMap(
        text=text,
        tokens=tuple(tokens),
        token_bits=bits,
        special=special,
        words=tuple(words),
        word_bits=word_sums(bits, words),
        target=None if target is None else int(target),
        prediction=prediction,
        probabilities=probabilities,
        truncated=bool(truncated),
    )
