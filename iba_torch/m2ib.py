"""M2IB for PyTorch image-text dual encoders such as ``transformers.CLIPModel`` (Wang et al.,
NeurIPS 2023; docs/mathematics.md section 5).

:class:`M2IB` explains image-caption pairs without labels: the shared
``iba.m2ib_explainer.M2IBExplainer`` (two independent optimisations, each side's loss
``beta * mean(capacity) - cos(bottlenecked embedding, the other side's fixed embedding)``) on
``iba_torch.IBA`` and ``iba_torch.TextIBA``. This module says how to reach a dual encoder's two
sides (``get_image_features``, ``get_text_features``), its layers, and the cosine in torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import iba
from iba import m2ib as _m2ib
from iba.config import Config
from iba.m2ib_explainer import M2IBExplainer
from iba.text_explainer import DEFAULT_MAX_TOKENS
from iba_torch import _model
from iba_torch.explainer import IBA
from iba_torch.text import TextIBA, resolve_layer

AUTHORS_LAYER = 9  # the authors' layer in both encoders of CLIP ViT-B/32


def embedding(outputs: Any, method: str) -> torch.Tensor:
    """The ``(N, P)`` embedding in what ``get_image_features`` / ``get_text_features`` return: a
    tensor, or (transformers 5) an output whose ``pooler_output`` holds the projection."""
    if isinstance(outputs, torch.Tensor):
        found = outputs
    else:
        found = None
        for name in ("image_embeds", "text_embeds", "pooler_output"):
            value = getattr(outputs, name, None)
            if isinstance(value, torch.Tensor):
                found = value
                break
    if found is None or found.ndim != 2:
        got = type(outputs).__name__ if found is None else f"shape {tuple(found.shape)}"
        raise TypeError(
            f"model.{method}() returned {got}; M2IB needs one (N, P) embedding per input"
        )
    return found


class _ImageSide(torch.nn.Module):
    """``pixel_values -> image embeddings``: the dual encoder's image side, as a module that
    ``iba_torch.IBA`` explains (it holds the model; it changes nothing in it)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.dual = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return embedding(
            self.dual.get_image_features(pixel_values=pixel_values), "get_image_features"
        )


class _TextSide(torch.nn.Module):
    """``tokenizer outputs -> text embeddings``: the dual encoder's text side."""

    def __init__(self, model: torch.nn.Module, max_length: int | None):
        super().__init__()
        self.dual = model
        self.max_length = max_length  # the text encoder's positions (TextIBA reads it)

    def forward(self, input_ids: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return embedding(
            self.dual.get_text_features(input_ids=input_ids, **inputs), "get_text_features"
        )


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``iba.m2ib.cosine_similarity`` in torch: row-wise ``a . b / max(|a| |b|, eps)``."""
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    return (a * b).sum(1) / norms.clamp_min(_m2ib.COSINE_EPS)


def similarity_loss(other: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``loss_fn`` of one side: ``iba.m2ib.similarity_loss`` against the fixed embeddings
    ``other`` ``(N, P)``, one loss per noised row (input-major)."""
    n = other.shape[0]

    def loss(outputs: torch.Tensor) -> torch.Tensor:
        if outputs.ndim != 2 or outputs.shape[0] % n or outputs.shape[1] != other.shape[1]:
            raise ValueError(
                f"the bottlenecked side gave embeddings of shape {tuple(outputs.shape)}; "
                f"expected (N * batch_size, {other.shape[1]}) for {n} pair(s)"
            )
        rows = other.to(outputs).repeat_interleave(outputs.shape[0] // n, dim=0)
        return -cosine_similarity(outputs, rows)

    return loss


def _layer_name(model: torch.nn.Module, tower: str, layer: Any, what: str) -> str:
    """The full name in ``model.named_modules()`` of ``layer``: a full name, or an index / name /
    module of the ``tower`` (``vision_model``, ``text_model``) as ``iba_torch.text.resolve_layer``
    takes them."""
    modules = dict(model.named_modules())
    if isinstance(layer, str) and layer in modules and layer:
        return layer
    root = getattr(model, tower, None)
    root = root if isinstance(root, torch.nn.Module) else model
    try:
        name = resolve_layer(root, layer)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{what}: {err}") from None
    found = dict(root.named_modules())[name]
    return next(n for n, m in modules.items() if m is found)


class M2IB(M2IBExplainer):
    """M2IB on a PyTorch image-text dual encoder (docs/mathematics.md section 5).

    Args:
        model: a ``transformers.CLIPModel`` or any ``torch.nn.Module`` with
            ``get_image_features(pixel_values=)`` and ``get_text_features(input_ids=, ...)``
            that return one embedding per input (a tensor, or an output with the projected
            ``pooler_output``). It is left exactly as it was.
        processor_or_tokenizer: a ``CLIPProcessor`` (its ``tokenizer``, and its
            ``image_processor`` for images that are not arrays yet) or a Hugging Face fast
            tokenizer; default ``model.tokenizer``.
        image_layer, text_layer: the encoder layers whose outputs are bottlenecked: an index into
            ``model.vision_model``'s / ``model.text_model``'s encoder layers (default 9, the
            authors' layer of CLIP ViT-B/32), a module name (full, or within the encoder), or
            the module.
        config: an ``iba.Config``; default ``iba.m2ib_config()`` (``beta = 0.1``, 10 steps of
            Adam at ``lr = 1``, 10 noise samples, the standard-normal prior).
        max_length: tokens per caption with the special tokens (longer ones are truncated with a
            warning); default the least of the text encoder's positions and the tokenizer's
            maximum.
        max_tokens, image_estimator, text_estimator: as for
            ``iba.m2ib_explainer.M2IBExplainer`` (the dataset-estimated variant:
            ``config=iba.m2ib_config(estimator="corpus")`` and :meth:`estimate`).
        strategy: how the image side runs the layers after its bottleneck
            (``iba_torch.IBA``'s; default ``"plain"``). The text side always runs ``"plain"``:
            a Hugging Face attention mask has one row per caption.

    Example:
        >>> explainer = M2IB(clip, processor, image_layer=9, text_layer=9)  # doctest: +SKIP
        >>> maps = explainer.explain(pixel_values, ["a dog on a sofa"])  # doctest: +SKIP
        >>> maps.image_maps.shape, maps.text_maps[0].top_words(2)  # doctest: +SKIP
    """

    channels_first = True
    image_explainer_type = IBA
    text_explainer_type = TextIBA

    def __init__(
        self,
        model: torch.nn.Module,
        processor_or_tokenizer: Any = None,
        *,
        image_layer: Any = AUTHORS_LAYER,
        text_layer: Any = AUTHORS_LAYER,
        config: Config | None = None,
        max_length: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        image_estimator: Any = None,
        text_estimator: Any = None,
        strategy: str = "plain",
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        missing = [
            m
            for m in ("get_image_features", "get_text_features")
            if not callable(getattr(model, m, None))
        ]
        if missing:
            raise TypeError(
                f"{type(model).__name__} has no {' / '.join(missing)}(): M2IB needs an image-text "
                "dual encoder such as transformers.CLIPModel"
            )
        given = processor_or_tokenizer
        tokenizer = getattr(given, "tokenizer", given) if given is not None else None
        if tokenizer is None:
            tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise TypeError(
                "M2IB needs the model's tokenizer: pass a CLIPProcessor or a fast tokenizer as "
                "processor_or_tokenizer"
            )
        self.model = model
        self.image_processor = getattr(given, "image_processor", None)
        self.strategy = strategy
        text_name = _layer_name(model, "text_model", text_layer, "text_layer")
        super().__init__(
            _ImageSide(model),
            _TextSide(model, _text_positions(model)),
            tokenizer,
            image_layer=_layer_name(model, "vision_model", image_layer, "image_layer"),
            text_layer=f"dual.{text_name}",
            config=config,
            max_length=max_length,
            max_tokens=max_tokens,
            image_estimator=image_estimator,
            text_estimator=text_estimator,
        )

    def __repr__(self) -> str:
        return (
            f"M2IB(image_layer={self.image_layer!r}, text_layer={self.text_layer!r}, "
            f"config={self.config})"
        )

    @property
    def text_layer(self) -> str:
        """The text layer's full name in ``model.named_modules()``."""
        return str(self.text.layer).removeprefix("dual.")

    # -- the seam of iba.m2ib_explainer --------------------------------------------------------

    def make_image_explainer(self, layer: Any, config: Config) -> IBA:
        return IBA(f"dual.{layer}", strategy=self.strategy, config=config)

    def image_inputs(self, images: Any) -> torch.Tensor:
        """The images as the model's ``(N, C, H, W)`` pixel values."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            if self.image_processor is None:
                raise TypeError(
                    f"images must be pixel values (N, C, H, W), an array or tensor, got "
                    f"{type(images).__name__}; pass a CLIPProcessor as processor_or_tokenizer "
                    "to explain PIL images"
                )
            images = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        if images.ndim != 4:
            raise ValueError(
                f"images must be a batch of pixel values (N, C, H, W), got shape "
                f"{tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"pixel values must be floating point, got dtype {images.dtype}")
        iba.driver.check_finite(images, "images")
        device, dtype = _model.model_device_dtype(self.model)
        return images.to(device=device, dtype=dtype)

    def embed(self, model: Any, inputs: Any) -> np.ndarray:
        device, dtype = _model.model_device_dtype(self.model)
        with _model.preserved(model), torch.no_grad():
            out = _model.call(model, _model.as_inputs(inputs, device, dtype))
        return out.detach().cpu().double().numpy()

    def similarity_loss(self, other: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
        return similarity_loss(torch.as_tensor(other))


def _text_positions(model: torch.nn.Module) -> int | None:
    """The text encoder's position embeddings (its longest caption), if its config says."""
    for config in (
        getattr(getattr(model, "text_model", None), "config", None),
        getattr(getattr(model, "config", None), "text_config", None),
    ):
        positions = getattr(config, "max_position_embeddings", None)
        if isinstance(positions, int):
            return positions
    return None
