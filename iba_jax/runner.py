"""The command line's ``jax`` backend (the ``iba.backends`` entry point ``jax``): the Flax Linen
port of EfficientNet-Lite0 (:mod:`iba_jax.models`) with the bundled weights, jit-compiled."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from iba.demo.runners import Runner, not_a_model, preprocess
from iba_jax import IBA, models
from iba_jax.linen import param_paths


class JaxRunner(Runner):
    """The Flax Linen port (``iba_jax.models``) with the same weights as PyTorch's, or the model
    given: a Linen ``(module, variables[, apply_kwargs])``, an ``nnx.Module`` or a bound Linen
    module; layers by PyTorch's names or Flax paths (``_blocks_4``)."""

    name = "jax"
    layout = "channels_last"

    def __init__(self, model=None):
        self.bundled = model is None
        if model is not None and not (isinstance(model, (tuple, nnx.Module)) or callable(model)):
            what = "a Flax (module, variables), an nnx.Module or a bound Linen module"
            raise ValueError(not_a_model(self.name, what, model))
        self.model = models.efficientnet_lite0() if model is None else model
        if isinstance(self.model, tuple):  # Linen: (module, variables[, apply_kwargs])
            module, variables, *kwargs = self.model
            apply_kwargs = kwargs[0] if kwargs else {}
            self._forward = jax.jit(lambda x: module.apply(variables, x, **apply_kwargs))
            self._paths: list[str] | None = param_paths(variables.get("params", {}))
        else:  # an nnx.Module or a bound Linen module
            self._forward = self.model
            self._paths = None

    def layer_names(self) -> list[str]:
        if self._paths is None:
            return ["/".join(map(str, path)) for path, _ in nnx.iter_modules(self.model) if path]
        return self._paths

    def top_layers(self) -> list[str]:
        # one name, or a list's item (an NNX ``blocks/1``)
        return [
            path
            for path in self.layer_names()
            if path.count("/") == 0 or (path.count("/") == 1 and path.split("/")[1].isdigit())
        ]

    def native_layer(self, name: str) -> str:
        return models.flax_path(name)

    def inputs(self, images: np.ndarray) -> np.ndarray:
        return preprocess(images)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(self.inputs(images)))

    def explainer(self, layer: str, **config) -> IBA:
        return IBA(self.native_layer(layer), **config)

    @classmethod
    def text_explainer(cls, layer: int | str, **config) -> Any:
        """``iba_jax.text.TextIBA`` on the Flax port of the bundled MiniLM sentiment model."""
        from iba.models.minilm import Tokenizer
        from iba.models.sentiment_head import LABELS
        from iba_jax.models.minilm import minilm_sentiment
        from iba_jax.text import TextIBA

        return TextIBA(minilm_sentiment(), Tokenizer(), layer=layer, labels=LABELS, **config)

    @classmethod
    def m2ib_explainer(cls, image_layer: str, text_layer: int, **config: Any) -> Any:
        """``iba_jax.M2IB`` on ``iba_jax.models.dual_encoder.dual_encoder()``."""
        from iba_jax.m2ib import M2IB
        from iba_jax.models.dual_encoder import dual_encoder

        dual = dual_encoder()
        return M2IB(
            dual.image,
            dual.text,
            dual.tokenizer,
            image_layer=image_layer,
            text_layer=text_layer,
            **config,
        )
