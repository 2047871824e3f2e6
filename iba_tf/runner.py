"""The command line's ``keras`` backend (the ``iba.backends`` entry point ``keras``): the Keras 3
port of EfficientNet-Lite0 (:mod:`iba_tf.models`) with the bundled weights, on the Keras backend
that ``KERAS_BACKEND`` selects."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from iba.demo.runners import Runner, not_a_model, preprocess
from iba_tf import IBA, models

TEXT_LENGTH = 128  # tokens the Keras MiniLM is built for (the bottleneck needs a fixed (T, D))


class KerasRunner(Runner):
    """The Keras 3 port (``iba_tf.models``) with the same weights as PyTorch's, or the
    ``keras.Model`` given; layers by PyTorch's names or Keras' (``_blocks_4``)."""

    name = "keras"
    layout = "channels_last"

    def __init__(self, model=None):
        self.bundled = model is None
        if model is not None and not isinstance(model, keras.Model):
            raise ValueError(not_a_model(self.name, "a keras.Model", model))
        self.model = models.efficientnet_lite0() if model is None else model

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.model.layers]

    def top_layers(self) -> list[str]:
        inputs = keras.layers.InputLayer
        return [layer.name for layer in self.model.layers if not isinstance(layer, inputs)]

    def native_layer(self, name: str) -> str:
        return models.torch_name_to_keras(name)

    def inputs(self, images: np.ndarray) -> np.ndarray:
        return preprocess(images)

    def logits(self, images: np.ndarray) -> np.ndarray:
        # Keras' compiled predict function (traced once per batch size, kept by the model): the
        # metrics call this hundreds of times per image, which eager JAX runs op by op.
        out = self.model.predict_on_batch(self.inputs(images))
        return np.asarray(keras.ops.convert_to_numpy(out))

    def explainer(self, layer: str, **config) -> IBA:
        return IBA(self.native_layer(layer), **config)

    @classmethod
    def text_explainer(cls, layer: int | str, **config) -> Any:
        """``iba_tf.text.TextIBA`` on the Keras port of the bundled MiniLM sentiment model, built
        for :data:`TEXT_LENGTH` tokens."""
        from iba.models.minilm import Tokenizer
        from iba.models.sentiment_head import LABELS
        from iba_tf.models.minilm import minilm_sentiment
        from iba_tf.text import TextIBA

        model = minilm_sentiment(sequence_length=TEXT_LENGTH)
        tokenizer = Tokenizer(max_length=TEXT_LENGTH)
        return TextIBA(model, tokenizer, layer=layer, labels=LABELS, **config)

    @classmethod
    def m2ib_explainer(cls, image_layer: str, text_layer: int, **config: Any) -> Any:
        """``iba_tf.M2IB`` on ``iba_tf.models.dual_encoder.dual_encoder()``, its text encoder
        built for :data:`TEXT_LENGTH` tokens."""
        from iba_tf.m2ib import M2IB
        from iba_tf.models.dual_encoder import dual_encoder

        dual = dual_encoder(sequence_length=TEXT_LENGTH)
        return M2IB(
            dual.image_model,
            dual.text_model,
            dual.tokenizer,
            image_layer=image_layer,
            text_layer=text_layer,
            **config,
        )
