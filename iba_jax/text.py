"""Text IBA on Flax text models (docs/mathematics.md sections 6 and 6.3): the shared
``iba.text_explainer.TextExplainer`` on ``iba_jax.IBA``.

The model is a Linen ``(module, variables)`` pair (or a bound module, or an ``nnx.Module``) that
takes ``{"input_ids", "attention_mask"}`` (``(N, T)`` integers) and returns logits, such as
``iba_jax.models.minilm_sentiment()``. Each group of texts is padded to a multiple of
:data:`LENGTH_STEP` tokens, so that few shapes are compiled.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

from iba.text_explainer import TextExplainer
from iba_jax.explainer import IBA
from iba_jax.linen import param_paths
from iba_jax.models.efficientnet_lite import flax_path

LENGTH_STEP = 16  # groups are padded to a multiple of this many tokens: few compiled shapes


def model_parts(model: Any, what: str = "model") -> tuple[Any, Any, dict]:
    """``(module, variables, apply_kwargs)`` of a Linen ``(module, variables[, apply_kwargs])``
    pair or a bound Linen module; ``(model, None, {})`` for an ``nnx.Module``; a clear error for
    anything else (``what`` names the argument)."""
    if isinstance(model, tuple) and len(model) in (2, 3) and isinstance(model[0], nn.Module):
        return model[0], model[1], dict(model[2]) if len(model) == 3 else {}
    if isinstance(model, nn.Module) and model.scope is not None:
        module, variables = model.unbind()
        return module, variables, {}
    if isinstance(model, nnx.Module):
        return model, None, {}
    raise TypeError(
        f"{what} must be a Flax Linen (module, variables) pair, a bound Linen module or an "
        f"nnx.Module; got {type(model).__name__}"
    )


def layer_paths(model: Any) -> list[str]:
    """The ``/``-joined paths of a Flax model's submodules, in order (``model_parts``' forms)."""
    module, variables, _ = model_parts(model)
    if variables is None:
        return ["/".join(map(str, p)) for p, _ in nnx.iter_modules(module) if p]
    return param_paths(variables.get("params", {}))


class TextIBA(TextExplainer):
    """IBA on the token states after one encoder layer of a Flax text model, one
    :class:`iba.text.TokenMap` per text (the PyTorch ``TextIBA``'s API and maps).

    Args:
        model: a Linen ``(module, variables)`` pair, a bound Linen module or an ``nnx.Module``
            that takes ``{"input_ids", "attention_mask"}`` and returns logits, e.g.
            ``iba_jax.models.minilm_sentiment()``; left exactly as it was.
        tokenizer: its tokenizer: ``iba.models.minilm.Tokenizer()`` for the bundled MiniLM, a
            ``tokenizers.Tokenizer`` or a Hugging Face fast tokenizer.
        layer: the encoder layer whose output is bottlenecked: an index into the encoder layers
            (the module paths ending ``layer_<i>``, e.g. ``encoder/layer_3``), a Flax module
            path, or a Hugging Face name (``"encoder.layer.3"``).
        labels: the class names, for display (e.g. ``("rotten", "fresh")``).
        max_length, max_tokens, estimator, config, **fields: as for
            ``iba.text_explainer.TextExplainer``.

    Example:
        >>> from iba.models.minilm import Tokenizer  # doctest: +SKIP
        >>> from iba_jax.models import minilm_sentiment  # doctest: +SKIP
        >>> explainer = TextIBA(minilm_sentiment(), Tokenizer(), layer=3)  # doctest: +SKIP
    """

    explainer_type = IBA

    def check_model(self, model: Any) -> None:
        model_parts(model)

    def _module(self) -> tuple[Any, Any, dict]:
        """``(module, variables, apply_kwargs)`` of a Linen model; ``(model, None, {})`` for NNX."""
        return model_parts(self.model)

    def layer_names(self) -> list[str]:
        return layer_paths(self.model)

    def native_name(self, name: str) -> str:
        return flax_path(name)  # Hugging Face's encoder.layer.3: encoder/layer_3

    def model_limits(self) -> list[int]:
        limits = super().model_limits()
        module = self._module()[0]
        positions = getattr(getattr(module, "config", None), "max_position_embeddings", None)
        return [*limits, positions] if isinstance(positions, int) else limits

    def padded_length(self, longest: int) -> int:
        return -(-longest // LENGTH_STEP) * LENGTH_STEP

    def model_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: inputs[k].astype(np.int32) for k in ("input_ids", "attention_mask")}

    def logits(self, inputs: Any) -> np.ndarray | None:
        module, variables, kwargs = self._module()
        x = {k: jnp.asarray(v) for k, v in inputs.items()}
        if variables is None:
            outputs = module(x)
        else:
            if getattr(self, "_forward", None) is None:  # one compiled forward per explainer
                self._forward = jax.jit(lambda v, x: module.apply(v, x, **kwargs))
            outputs = self._forward(variables, x)
        if not hasattr(outputs, "ndim"):
            return None
        logits = np.asarray(outputs, np.float64)
        n = inputs["input_ids"].shape[0]
        return logits if logits.ndim == 2 and logits.shape[0] == n else None
