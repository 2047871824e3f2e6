"""Text IBA on Keras 3 text models (docs/mathematics.md sections 6 and 6.3): the shared
``iba.text_explainer.TextExplainer`` on ``iba_tf.IBA``.

The model is a Keras model from ``{"input_ids", "attention_mask"}`` (``(N, T)`` integers) to
logits, built for one sequence length ``T`` (the bottleneck layer needs token states of a known
shape), such as ``iba_tf.models.minilm_sentiment(sequence_length=128)``. Every text is padded to
``T`` (the padding carries no information: docs/mathematics.md section 6.3), longer ones
truncated with a warning.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from iba.config import Config
from iba.text_explainer import TextExplainer
from iba_tf._graph import all_layers
from iba_tf.explainer import IBA


class TextIBA(TextExplainer):
    """IBA on the token states after one encoder layer of a Keras text model, one
    :class:`iba.text.TokenMap` per text (the PyTorch ``TextIBA``'s API and maps).

    Args:
        model: a ``keras.Model`` from ``{"input_ids", "attention_mask"}`` to logits, e.g.
            ``iba_tf.models.minilm_sentiment(sequence_length=128)``, built for one sequence
            length; left exactly as it was.
        tokenizer: its tokenizer: ``iba.models.minilm.Tokenizer()`` for the bundled MiniLM, a
            ``tokenizers.Tokenizer`` or a Hugging Face fast tokenizer.
        layer: the encoder layer whose output is bottlenecked: an index into the encoder layers
            (the layers named ``..._layer_<i>``, e.g. ``encoder_layer_3``), a Keras layer name,
            or a Hugging Face name (``"encoder.layer.3"``).
        labels: the class names, for display (e.g. ``("rotten", "fresh")``).
        max_length, max_tokens, estimator, config, **fields: as for
            ``iba.text_explainer.TextExplainer``.

    Example:
        >>> from iba.models.minilm import Tokenizer  # doctest: +SKIP
        >>> from iba_tf.models import minilm_sentiment  # doctest: +SKIP
        >>> explainer = TextIBA(minilm_sentiment(sequence_length=128), Tokenizer(), layer=3)  # doctest: +SKIP
    """

    explainer_type = IBA

    def check_model(self, model: Any) -> None:
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
        shapes = [tuple(t.shape) for t in model.inputs]
        if not shapes or any(len(s) != 2 or s[1] is None for s in shapes):
            raise ValueError(
                f"the Keras model must be built for one sequence length (its inputs are "
                f"{shapes}): the bottleneck layer needs token states of a known shape (T, D); "
                "build it with e.g. iba_tf.models.minilm_sentiment(sequence_length=128)"
            )

    def layer_names(self) -> list[str]:
        return [
            layer.name
            for layer in all_layers(self.model)
            if not isinstance(layer, keras.layers.InputLayer)
        ]

    def native_name(self, name: str) -> str:
        return name.replace(".", "_")  # Hugging Face's encoder.layer.3: encoder_layer_3

    def _input_names(self) -> list[str]:
        return [getattr(t, "name", "") for t in self.model.inputs]

    def fixed_length(self) -> int | None:
        lengths = {t.shape[1] for t in self.model.inputs if len(t.shape) == 2}
        return int(next(iter(lengths))) if len(lengths) == 1 and None not in lengths else None

    def model_limits(self) -> list[int]:
        limits = super().model_limits()
        for layer in all_layers(self.model):
            positions = getattr(getattr(layer, "config", None), "max_position_embeddings", None)
            if isinstance(positions, int):
                return [*limits, positions]
        return limits

    def make_explainer(self, layer: Any, config: Config | None, fields: dict) -> IBA:
        return IBA(layer, config=config, **fields)  # Keras recognises token features by shape

    def model_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._input_names()
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(
                f"the model takes inputs {names}; the tokenizer gives {sorted(inputs)}: name the "
                "model's inputs input_ids and attention_mask"
            )
        return {n: inputs[n].astype(np.int32) for n in names}

    def logits(self, inputs: Any) -> np.ndarray | None:
        outputs = self.model(inputs, training=False)
        if isinstance(outputs, (list, tuple, dict)):
            return None
        logits = np.asarray(keras.ops.convert_to_numpy(outputs), np.float64)
        n = next(iter(inputs.values())).shape[0]
        return logits if logits.ndim == 2 and logits.shape[0] == n else None
