"""M2IB for Keras 3 image and text encoders (Wang et al., NeurIPS 2023; docs/mathematics.md
section 5): the shared ``iba.m2ib_explainer.M2IBExplainer`` on ``iba_tf.IBA`` and
``iba_tf.TextIBA``, on the TensorFlow, JAX and torch backends.

The dual encoder is two Keras models whose outputs share one embedding space: an image encoder
from preprocessed images ``(N, H, W, C)`` to ``(N, P)``, and a text encoder from
``{"input_ids", "attention_mask"}`` to ``(N, P)``, built for one sequence length (as
``iba_tf.TextIBA`` needs), e.g. ``iba_tf.models.dual_encoder``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from iba import m2ib as _m2ib
from iba.m2ib_explainer import M2IBExplainer, check_images, pick_layer
from iba_tf._graph import all_layers
from iba_tf.explainer import IBA
from iba_tf.text import TextIBA


def similarity_loss(other: np.ndarray) -> Callable[[Any], Any]:
    """``iba.m2ib.similarity_loss`` in ``keras.ops`` against the fixed embeddings ``other``
    ``(N, P)``: one loss per noised row (input-major). A ``functools.partial`` of one function, so
    the embeddings are an argument of the compiled step (``iba_tf._backend.lift_loss``): new pairs
    of the same shapes reuse it."""
    return functools.partial(_negative_cosine, np.asarray(other, np.float64))


def _negative_cosine(other: Any, outputs: Any) -> Any:
    """``-cos(outputs[i], other[i // B])`` per row of ``outputs`` ``(N * B, P)``."""
    ops = keras.ops
    n, width = (int(s) for s in other.shape)
    if len(outputs.shape) != 2 or outputs.shape[1] != width:
        raise ValueError(
            f"the bottlenecked side gave embeddings of shape {tuple(outputs.shape)}; "
            f"expected (N * batch_size, {width}) for {n} pair(s)"
        )
    rows = ops.repeat(ops.cast(other, outputs.dtype), outputs.shape[0] // n, 0)
    norms = ops.norm(outputs, axis=1) * ops.norm(rows, axis=1)
    return -ops.sum(outputs * rows, axis=1) / ops.maximum(norms, _m2ib.COSINE_EPS)


class M2IB(M2IBExplainer):
    """M2IB on a Keras image encoder and text encoder (docs/mathematics.md section 5), the
    PyTorch ``M2IB``'s maps.

    Args:
        image_model: a ``keras.Model`` from preprocessed images ``(N, H, W, C)`` to embeddings
            ``(N, P)``; left exactly as it was.
        text_model: a ``keras.Model`` from ``{"input_ids", "attention_mask"}`` to embeddings
            ``(N, P)`` in the same space, built for one sequence length.
        tokenizer: the text encoder's tokenizer (``iba.models.minilm.Tokenizer()`` for the
            bundled MiniLM, a ``tokenizers.Tokenizer`` or a Hugging Face fast tokenizer).
        image_layer: the name of the image encoder's layer whose output is bottlenecked (a
            convolutional block or a vision transformer's token states), or its PyTorch name
            (``"_blocks.14"`` is ``"_blocks_14"``).
        text_layer: the text encoder's layer: an index into its encoder layers or a name (as
            ``iba_tf.TextIBA`` takes it).
        config, max_length, max_tokens, image_estimator, text_estimator: as for
            ``iba.m2ib_explainer.M2IBExplainer``; default ``iba.m2ib_config()``.

    Example:
        >>> from iba_tf.models.dual_encoder import dual_encoder  # doctest: +SKIP
        >>> dual = dual_encoder()  # doctest: +SKIP
        >>> explainer = M2IB(dual.image_model, dual.text_model, dual.tokenizer,
        ...                  image_layer="_blocks_14", text_layer=1)  # doctest: +SKIP
        >>> maps = explainer.explain(images, ["a photo of a cat"])  # doctest: +SKIP
    """

    image_explainer_type = IBA
    text_explainer_type = TextIBA

    def check_image_model(self, image_model: Any) -> None:
        if not isinstance(image_model, keras.Model):
            raise TypeError(f"image_model must be a keras.Model, got {type(image_model).__name__}")

    def resolve_image_layer(self, layer: Any) -> str:
        names = [
            n.name
            for n in all_layers(self.image_model)
            if not isinstance(n, keras.layers.InputLayer)
        ]
        return pick_layer(layer, names, lambda name: name.replace(".", "_"), "layer name")

    def image_inputs(self, images: Any) -> np.ndarray:
        if not isinstance(images, np.ndarray):
            images = keras.ops.convert_to_numpy(images)
        return check_images(images)

    def embed(self, model: Any, inputs: Any) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(model(inputs, training=False)), np.float64)

    def similarity_loss(self, other: np.ndarray) -> Callable[[Any], Any]:
        return similarity_loss(other)
