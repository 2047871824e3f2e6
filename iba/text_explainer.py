"""The text explainer every adapter shares: tokens in, one :class:`iba.text.TokenMap` per text out
(Jiang et al., Findings of EMNLP 2020; docs/mathematics.md sections 6 and 6.3).

:class:`TextExplainer` puts the Per-Sample Bottleneck on the token states after one encoder layer
of a text transformer and runs the adapter's ``IBA`` through the shared driver. Everything text
is here, once:

- tokenising (a Hugging Face fast tokenizer, a ``tokenizers.Tokenizer`` or the bundled
  ``iba.models.minilm.Tokenizer``: :func:`encode`), truncation at the model's maximum length with
  a warning, grouping texts of similar length up to a token budget;
- the estimator fitted on the real tokens of a corpus and shared by every position
  (``iba.text.tile_positions``), or fitted on each explained text (``Config.estimator ==
  "sentence"``, the text-IBA authors' pipeline);
- noise drawn per text (``iba.text.text_noise``) and the attention mask as the driver's
  ``token_mask``, so that a text gets the same map alone or next to longer texts, and the same
  map on every backend;
- the words of the wordpieces and the per-text result (``iba.text.token_map``).

An adapter subclass (``iba_torch.text.TextIBA``, ``iba_tf.text.TextIBA``,
``iba_jax.text.TextIBA``) says how to reach its framework: :meth:`TextExplainer.check_model`,
:meth:`~TextExplainer.layer_names` and :meth:`~TextExplainer.native_name` (or its own
:meth:`~TextExplainer.resolve_layer`),
:meth:`~TextExplainer.model_inputs`, :meth:`~TextExplainer.logits`, and the ``IBA`` it runs.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeGuard

import numpy as np

from iba import driver, targets
from iba import text as _text
from iba.config import Config
from iba.estimator import Estimator

DEFAULT_MAX_TOKENS = 512  # padded tokens (texts x length) optimised together


class Encoded(NamedTuple):
    """A tokenised group of texts, padded to one length ``T``; arrays are NumPy."""

    inputs: dict[str, np.ndarray]  # input_ids, attention_mask (and token_type_ids): (N, T) int64
    mask: np.ndarray  # (N, T) attention mask
    special: np.ndarray  # (N, T) special-token mask (1 at [CLS], [SEP] and padding)
    offsets: np.ndarray  # (N, T, 2) characters of each token in its text
    tokens: list[list[str]]
    word_ids: list[list[int | None]]


# -- tokenizers ----------------------------------------------------------------------------------


def _backend_tokenizer(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind ``tokenizer``, or ``None`` for a Hugging Face fast
    tokenizer (called through ``transformers``)."""
    if getattr(tokenizer, "is_fast", False) and callable(tokenizer):
        return None
    inner = getattr(tokenizer, "backend", None)  # iba.models.minilm.Tokenizer
    if inner is not None and hasattr(inner, "encode_batch"):
        return inner
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "token_to_id"):
        return tokenizer
    raise TypeError(
        f"the tokenizer must be a Hugging Face fast tokenizer (AutoTokenizer.from_pretrained(..., "
        f"use_fast=True)), a tokenizers.Tokenizer or iba.models.minilm.Tokenizer; got "
        f"{type(tokenizer).__name__}"
    )


def check_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` if :func:`encode` can use it (it gives word ids and character offsets), else
    a ``TypeError`` that says what to pass."""
    if tokenizer is None:
        raise TypeError(
            "the text explainer needs the model's tokenizer: pass tokenizer= (e.g. "
            "AutoTokenizer.from_pretrained(...) or iba.models.minilm.Tokenizer())"
        )
    _backend_tokenizer(tokenizer)
    return tokenizer


def token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    """Tokens per text, special tokens included, without truncation."""
    inner = _backend_tokenizer(tokenizer)
    if inner is None:
        return [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    inner.no_truncation()
    inner.no_padding()
    return [len(e.ids) for e in inner.encode_batch(texts)]


def encode(tokenizer: Any, texts: list[str], max_length: int, length: int | None = None) -> Encoded:
    """Tokenise ``texts`` into one padded batch: truncated at ``max_length`` tokens and padded to
    the longest text, or to exactly ``length`` tokens (a model built for one sequence length)."""
    inner = _backend_tokenizer(tokenizer)
    if inner is None:
        enc = tokenizer(
            texts,
            padding="max_length" if length is not None else True,
            truncation=True,
            max_length=max_length if length is None else length,
            return_tensors="np",
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        names = getattr(tokenizer, "model_input_names", None) or list(enc.keys())
        return Encoded(
            inputs={k: np.asarray(enc[k], np.int64) for k in names if k in enc},
            mask=np.asarray(enc["attention_mask"], np.int64),
            special=np.asarray(enc["special_tokens_mask"], np.int64),
            offsets=np.asarray(enc["offset_mapping"], np.int64),
            tokens=[enc.tokens(i) for i in range(len(texts))],
            word_ids=[enc.word_ids(i) for i in range(len(texts))],
        )
    pad_id = inner.token_to_id("[PAD]")
    if pad_id is None:
        raise ValueError("the tokenizer has no [PAD] token to pad with")
    inner.enable_truncation(max_length=max_length if length is None else length)
    inner.enable_padding(pad_id=pad_id, pad_token="[PAD]", length=length)
    try:
        encodings = inner.encode_batch(texts)
    finally:
        inner.no_truncation()
        inner.no_padding()
    ids = np.array([e.ids for e in encodings], np.int64).reshape(len(texts), -1)
    mask = np.array([e.attention_mask for e in encodings], np.int64).reshape(ids.shape)
    return Encoded(
        inputs={
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.array([e.type_ids for e in encodings], np.int64).reshape(
                ids.shape
            ),
        },
        mask=mask,
        special=np.array([e.special_tokens_mask for e in encodings], np.int64).reshape(ids.shape),
        offsets=np.array([e.offsets for e in encodings], np.int64).reshape(*ids.shape, 2),
        tokens=[list(e.tokens) for e in encodings],
        word_ids=[list(e.word_ids) for e in encodings],
    )


def texts_of(texts: Any) -> list[str]:
    """``texts`` as a non-empty list of strings, or a clear error."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"texts must be strings; item(s) {bad[:10]} are "
            f"{sorted({type(texts[i]).__name__ for i in bad})}"
        )
    if not texts:
        raise ValueError("texts is empty: give at least one text")
    return list(texts)


def warn_truncated(indices: list[int], limit: int) -> None:
    """Say which texts were cut at ``limit`` tokens."""
    if indices:
        shown = f"{indices[:10]}{' ...' if len(indices) > 10 else ''}"
        warnings.warn(
            f"{len(indices)} text(s) (indices {shown}) have more than {limit} tokens and were "
            f"truncated to the model's maximum of {limit}; their maps cover the first {limit} "
            "tokens",
            stacklevel=3,
        )


def _positive(name: str, value: Any, least: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")
    return int(value)


# -- the explainer -------------------------------------------------------------------------------


def is_index(layer: Any) -> TypeGuard[int]:
    """Whether ``layer`` is an integer index (not a bool)."""
    return isinstance(layer, (int, np.integer)) and not isinstance(layer, (bool, np.bool_))


def encoder_layer(blocks: list[Any], index: int, none_found: str) -> Any:
    """``blocks[index]`` for ``layer=index``, or a ``ValueError`` that says why not (``none_found``:
    why a model has no encoder layers this explainer recognises)."""
    if not blocks:
        raise ValueError(
            f"layer={index} indexes the encoder layers, but {none_found}: pass the layer's name"
        )
    if not -len(blocks) <= index < len(blocks):
        raise ValueError(
            f"layer={index} is out of range: the model has {len(blocks)} encoder layers "
            f"({blocks[0]!r} ... {blocks[-1]!r})"
        )
    return blocks[int(index)]


class TextExplainer:
    """IBA on the token states after one encoder layer of a text model (docs/mathematics.md
    section 6.3), with one :class:`iba.text.TokenMap` per text. Subclassed per framework.

    Args:
        model: the framework's text model that takes the tokenizer's outputs; left exactly as it
            was.
        tokenizer: its tokenizer (default: :meth:`default_tokenizer`).
        layer: the encoder layer whose output is bottlenecked: an index into
            :meth:`encoder_layers`, or the framework's layer name (see the subclass).
        max_length: tokens per text, ``[CLS]`` and ``[SEP]`` included; longer texts are
            truncated with a warning. Default: the least of the model's and the tokenizer's
            maxima.
        max_tokens: padded tokens (texts x length) optimised together; texts are grouped by
            length up to this budget (memory grows with it).
        estimator: the statistics to start with: an ``iba.Estimator`` of features ``(1, D)``
            from :meth:`estimate`, or the path of one saved with :meth:`save_estimator`.
        labels: the class names, for display (default: the model's ``labels``, if any).
        config: an ``iba.Config`` (e.g. ``iba.text_config()``); otherwise ``**fields`` of it.
    """

    explainer_type: type[driver.Explainer]  # the adapter's IBA
    labels: tuple[str, ...] | None = None  # class names, when the model has them

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        layer: Any,
        max_length: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        estimator: Estimator | str | os.PathLike | None = None,
        labels: Sequence[str] | None = None,
        config: Config | None = None,
        **fields: Any,
    ):
        self.check_model(model)
        self.model = model
        self.tokenizer = check_tokenizer(
            self.default_tokenizer(model) if tokenizer is None else tokenizer
        )
        self.max_tokens = _positive("max_tokens", max_tokens)
        self.layer = self.resolve_layer(layer)
        self.max_length = self._max_length(max_length)
        self.explainer = self.make_explainer(self.layer, config, fields)
        self.labels = self.model_labels() if labels is None else tuple(str(c) for c in labels)
        self._estimator: Estimator | None = None
        if estimator is not None:
            if isinstance(estimator, (str, os.PathLike)):
                self.load_estimator(estimator)
            else:
                self.estimator = estimator

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layer={self.layer!r}, max_length={self.max_length}, "
            f"config={self.config})"
        )

    # -- what an adapter provides ----------------------------------------------------------------

    def check_model(self, model: Any) -> None:
        """Raise a ``TypeError`` if ``model`` is not one of the framework's models."""

    def default_tokenizer(self, model: Any) -> Any:
        """The tokenizer to use when none is given: ``model.tokenizer`` if it has one."""
        return getattr(model, "tokenizer", None)

    def model_labels(self) -> tuple[str, ...] | None:
        """The model's class names (``model.labels``), or ``None``."""
        found = getattr(self.model, "labels", None)
        return tuple(found) if isinstance(found, (list, tuple)) else None

    encoder_pattern = re.compile(r"(.*[_/])?layer_(\d+)")
    """Which of :meth:`layer_names` are encoder layers (group 2: the index): the MiniLM ports'
    ``encoder_layer_3`` (Keras) and ``encoder/layer_3`` (Flax)."""

    def layer_names(self) -> list[str]:
        """The model's layers by the names the adapter's ``IBA`` takes, in order."""
        raise NotImplementedError

    def native_name(self, name: str) -> str:
        """A Hugging Face module name (``encoder.layer.3``) as the framework spells it."""
        return name

    def encoder_layers(self) -> list[Any]:
        """The model's encoder layers, as :meth:`resolve_layer` returns them, in order: the
        :meth:`layer_names` that match :attr:`encoder_pattern`, by index."""
        matches = [(self.encoder_pattern.fullmatch(n), n) for n in self.layer_names()]
        indexed = sorted((int(match.group(2)), n) for match, n in matches if match)
        return [n for _, n in indexed]

    def resolve_layer(self, layer: Any) -> Any:
        """The target the adapter's ``IBA`` takes for ``layer``: an index into
        :meth:`encoder_layers`, or a layer name (the framework's, or a Hugging Face name that
        :meth:`native_name` translates)."""
        blocks = self.encoder_layers()
        if is_index(layer):
            return encoder_layer(blocks, layer, "the model has none that this explainer recognises")
        if not isinstance(layer, str):
            raise TypeError(
                f"layer must be an index into the encoder layers {blocks} or a layer name; got "
                f"{layer!r}"
            )
        names = self.layer_names()
        for name in (layer, self.native_name(layer)):
            if name in names:
                return name
        others = [n for n in names if n not in blocks]
        shown = f"{others[:12]}{' ...' if len(others) > 12 else ''}"
        raise ValueError(
            f"layer {layer!r} not found in the model: its encoder layers are {blocks} (by index, "
            f"name or Hugging Face name such as 'encoder.layer.3'); other layers: {shown}"
        )

    def model_limits(self) -> list[int]:
        """The longest sequences the model reads (e.g. its position embeddings' rows)."""
        own = getattr(self.model, "max_length", None)
        return [own] if isinstance(own, int) else []

    def fixed_length(self) -> int | None:
        """The one sequence length the model is built for, or ``None`` (any length)."""
        return None

    def padded_length(self, longest: int) -> int:
        """The length a group whose longest text has ``longest`` tokens is padded to: exactly
        that by default; a compiling framework may round it up to reuse compiled shapes."""
        return longest

    def make_explainer(self, layer: Any, config: Config | None, fields: dict) -> driver.Explainer:
        """The adapter's ``IBA`` at ``layer`` for token features."""
        return self.explainer_type(layer, layout="tokens", config=config, **fields)

    def model_inputs(self, inputs: dict[str, np.ndarray]) -> Any:
        """The tokenizer's ``(N, T)`` int64 arrays as the model's inputs."""
        raise NotImplementedError

    def logits(self, inputs: Any) -> np.ndarray | None:
        """The model's ``(N, C)`` logits on the clean texts, or ``None`` if its outputs are
        no logits."""
        raise NotImplementedError

    # -- configuration ---------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The ``iba.Config`` of the optimisation."""
        return self.explainer.config

    @property
    def _per_text(self) -> bool:
        """Whether the statistics are fitted on each explained text (``estimator="sentence"``)."""
        return self.config.estimator == "sentence"

    @property
    def _prior(self) -> bool:
        """Whether the standard-normal prior replaces the statistics (``estimator="prior"``,
        M2IB: docs/mathematics.md section 5)."""
        return self.config.estimator == "prior"

    def _max_length(self, given: int | None) -> int:
        limits = [int(k) for k in self.model_limits()]
        fixed = self.fixed_length()
        if fixed is not None:
            limits.append(fixed)
        told = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(told, int) and told < 1_000_000:  # transformers' "unknown" is a huge number
            limits.append(told)
        told = getattr(self.tokenizer, "max_length", None)  # iba.models.minilm.Tokenizer
        if isinstance(told, int) and not getattr(self.tokenizer, "is_fast", False):
            limits.append(told)
        if given is None:
            if not limits:
                raise ValueError(
                    "neither the model nor the tokenizer says how many tokens it reads: pass "
                    "max_length="
                )
            return min(limits)
        if isinstance(given, bool) or not isinstance(given, (int, np.integer)) or given < 2:
            raise ValueError(
                f"max_length must be an int >= 2 (with [CLS] and [SEP]), got {given!r}"
            )
        if limits and given > min(limits):
            raise ValueError(
                f"max_length={given} exceeds the model's maximum of {min(limits)} tokens"
            )
        return int(given)

    # -- statistics ------------------------------------------------------------------------------

    @property
    def estimator(self) -> Estimator | None:
        """The statistics of the layer's token states, features ``(1, D)`` shared by every
        position (``None`` before :meth:`estimate`)."""
        return self._estimator

    @estimator.setter
    def estimator(self, estimator: Estimator) -> None:
        _text.tile_positions(estimator, 1)  # checks the kind: tokens, (1, D)
        self._estimator = estimator

    def save_estimator(self, path: str | os.PathLike) -> None:
        """Write the estimator to an ``.npz`` file (no pickle)."""
        if self._estimator is None:
            raise RuntimeError("no estimator yet: call estimate(texts) first")
        self._estimator.save(path)

    def load_estimator(self, path: str | os.PathLike) -> Estimator:
        """Read an estimator written by :meth:`save_estimator`."""
        self.estimator = Estimator.load(path)
        return self._estimator  # type: ignore[return-value]  # just set

    def estimate(
        self,
        texts: Sequence[str],
        n_samples: int | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> Estimator:
        """Fit the statistics on the real tokens of ``texts`` (padding excluded), pooled over
        positions: features ``(1, D)`` (docs/mathematics.md sections 1 and 6.3).

        Args:
            texts: a corpus of texts like the ones to explain (thousands of tokens or more).
            n_samples: use only the first this many texts.
            batch_size: texts per forward pass.
            progress: show a progress bar of the texts seen.
        """
        if self._per_text or self._prior:
            raise ValueError(
                f"this explainer's config has estimator={self.config.estimator!r}: "
                + (
                    "explain() fits the statistics on each text itself"
                    if self._per_text
                    else "the standard-normal prior replaces the statistics"
                )
                + ", estimate() is not used"
            )
        texts = texts_of(texts)
        if n_samples is not None:
            texts = texts[: _positive("n_samples", n_samples)]
        batch_size = _positive("batch_size", batch_size)
        cut: list[int] = []
        masks: list[np.ndarray] = []

        def data() -> Iterator[Any]:
            for start in range(0, len(texts), batch_size):
                part = texts[start : start + batch_size]
                counts = token_counts(self.tokenizer, part)
                cut.extend(start + i for i, k in enumerate(counts) if k > self.max_length)
                longest = min(max(counts), self.max_length)
                enc = encode(self.tokenizer, part, self.max_length, self.padded_length_for(longest))
                masks.append(enc.mask.astype(bool))
                yield self.model_inputs(enc.inputs)

        with self.explainer.engine.estimation(self.model) as capture:

            def real_tokens(batch: Any) -> list[np.ndarray]:
                features = capture(batch)[0]
                mask = masks.pop(0)
                if features.shape[:2] != mask.shape:
                    raise ValueError(
                        f"layer {self.layer!r} gives features of shape {features.shape[1:]} "
                        "per text; the text explainer needs token states (T, D): choose an "
                        "encoder layer"
                    )
                return [features[mask][:, None, :]]

            estimators = driver.fit_estimators(
                real_tokens,
                data(),
                None,
                progress,
                lambda s, i: "tokens",
                f"{type(self).__name__} estimate",
            )
        warn_truncated(cut, self.max_length)
        self.estimator = estimators[0]
        return estimators[0]

    # -- explanations ----------------------------------------------------------------------------

    def explain(
        self,
        texts: str | Sequence[str],
        target: Any = None,
        loss_fn: Callable[[Any], Any] | None = None,
        *,
        seed: int = driver.DEFAULT_SEED,
        mask_special: bool = False,
        progress: bool = False,
    ) -> list[_text.TokenMap]:
        """One :class:`iba.text.TokenMap` per text: bits per token and per word.

        Args:
            texts: a text or a list of texts of any lengths (an empty string is a text).
            target: the class to explain, one int or one per text; default (with no
                ``loss_fn``): each text's predicted class.
            loss_fn: instead of ``target``, ``outputs -> loss per row`` on the noised rows of one
                group of texts (``N * B`` rows, input-major; texts are grouped by length up to
                ``max_tokens``), in the framework's ops.
            seed: seeds each text's noise; a text's map does not depend on the other texts, nor
                on the backend.
            mask_special: zero the special tokens (``[CLS]``, ``[SEP]``) in the token map; they
                are never part of a word.
            progress: show a progress bar over the optimisation steps.
        """
        texts = texts_of(texts)
        if target is not None and loss_fn is not None:
            raise ValueError("pass target= or loss_fn=, not both")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        labels = None if target is None else targets.labels(target, len(texts))
        group_loss = None if loss_fn is None else (lambda group: loss_fn)
        return self.explain_groups(
            texts, labels, group_loss, seed=seed, mask_special=mask_special, progress=progress
        )

    def explain_groups(
        self,
        texts: list[str],
        labels: np.ndarray | None,
        group_loss: Callable[[list[int]], Callable[[Any], Any]] | None,
        *,
        seed: int = driver.DEFAULT_SEED,
        mask_special: bool = False,
        progress: bool = False,
        with_logits: bool = True,
    ) -> list[_text.TokenMap]:
        """:meth:`explain` with a model loss per group of texts: ``group_loss(indices)`` gives
        the ``loss_fn`` of the texts ``indices`` (one group, in that order), e.g. M2IB's
        similarity to each caption's image (``iba.m2ib_explainer``). ``with_logits=False``: the
        model's outputs are no logits (they are not read)."""
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not (self._per_text or self._prior) and self._estimator is None:
            raise RuntimeError(
                "no statistics yet: call estimate(texts) on a corpus, or pass estimator= / "
                "load_estimator(path), before explain()"
            )
        lengths = token_counts(self.tokenizer, texts)
        truncated = [k > self.max_length for k in lengths]
        warn_truncated([i for i, c in enumerate(truncated) if c], self.max_length)
        maps: list[_text.TokenMap | None] = [None] * len(texts)
        for group in self._groups([min(k, self.max_length) for k in lengths]):
            longest = min(max(lengths[i] for i in group), self.max_length)
            enc = encode(
                self.tokenizer,
                [texts[i] for i in group],
                self.max_length,
                self.padded_length_for(longest),
            )
            inputs = self.model_inputs(enc.inputs)
            logits = self.logits(inputs) if with_logits else None
            loss_fn = None if group_loss is None else group_loss(group)
            group_labels = self._labels(labels, group, logits, loss_fn)
            bits = self._optimize(enc, inputs, group_labels, loss_fn, int(seed), progress)
            for j, i in enumerate(group):
                real = np.flatnonzero(enc.mask[j])
                maps[i] = _text.token_map(
                    texts[i],
                    [enc.tokens[j][k] for k in real],
                    [enc.word_ids[j][k] for k in real],
                    [tuple(enc.offsets[j, k]) for k in real],
                    bits[j, real],
                    enc.special[j, real].astype(bool),
                    target=None if group_labels is None else int(group_labels[j]),
                    logits=None if logits is None else logits[j],
                    truncated=truncated[i],
                    mask_special=mask_special,
                )
        return [m for m in maps if m is not None]

    def _labels(
        self,
        labels: np.ndarray | None,
        group: list[int],
        logits: np.ndarray | None,
        loss_fn: Callable[[Any], Any] | None,
    ) -> np.ndarray | None:
        """The classes explained for one group: given, or predicted; ``None`` with a
        ``loss_fn``."""
        if loss_fn is not None:
            return None
        if labels is not None:
            chosen = labels[group]
            if logits is not None:
                targets.check_range(chosen, logits.shape[1])
            return chosen
        if logits is None:
            raise ValueError(
                "target=None explains the predicted class, but the model's outputs are no "
                "logits: pass target= or loss_fn="
            )
        return logits.argmax(1)

    def _optimize(
        self,
        enc: Encoded,
        inputs: Any,
        labels: np.ndarray | None,
        loss_fn: Callable[[Any], Any] | None,
        seed: int,
        progress: bool,
    ) -> np.ndarray:
        """``(N, T)`` bits of one group, through the shared driver and the adapter's engine."""
        explainer, config = self.explainer, self.config
        if not (self._per_text or self._prior):
            assert self._estimator is not None
            explainer.estimators = [_text.tile_positions(self._estimator, enc.mask.shape[1])]
        with explainer.planned(
            self.model,
            inputs,
            target=labels,
            loss_fn=loss_fn,
            seed=seed,
            progress=progress,
            token_mask=enc.mask,
        ) as (run, plan):
            if not self._per_text:  # each text's own draws, whatever its group and backend
                dim = plan.feature_shapes[0][-1]
                noise = _text.text_noise(seed, config.steps, config.batch_size, enc.mask, dim)
                plan = explainer.with_noise(plan, noise, len(enc.mask))
            result = run.optimize(plan)
        maps = driver.explanation(result, plan.layout, None, details=False)
        assert isinstance(maps, np.ndarray)  # details=False
        return maps

    # -- grouping --------------------------------------------------------------------------------

    def padded_length_for(self, longest: int) -> int | None:
        """The padded length of a batch whose longest text has ``longest`` tokens (the model's
        fixed length, or the adapter's :meth:`padded_length`); ``None``: the longest."""
        fixed = self.fixed_length()
        if fixed is not None:
            return fixed
        padded = min(self.padded_length(longest), self.max_length)
        return None if padded == longest else padded

    def _groups(self, lengths: list[int]) -> list[list[int]]:
        """Text indices grouped by length, each group's texts x padded length <= ``max_tokens``;
        one text per group when the statistics are fitted per text."""
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        groups: list[list[int]] = []
        for i in order:
            last = groups[-1] if groups else None
            width = self.padded_length_for(lengths[i]) or lengths[i]
            if (
                last is not None
                and not self._per_text
                and (len(last) + 1) * width <= self.max_tokens
            ):
                last.append(i)
            else:
                groups.append([i])
        return groups
