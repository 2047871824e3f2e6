"""M2IB for Flax image and text encoders (Wang et al., NeurIPS 2023; docs/mathematics.md
section 5): the shared ``iba.m2ib_explainer.M2IBExplainer`` on ``iba_jax.IBA`` and
``iba_jax.TextIBA``.

The dual encoder is two Flax models whose outputs share one embedding space, each a Linen
``(module, variables)`` pair (or a bound Linen module, or an ``nnx.Module``): an image encoder
from preprocessed images ``(N, H, W, C)`` to ``(N, P)``, and a text encoder from
``{"input_ids", "attention_mask"}`` to ``(N, P)``, e.g. ``iba_jax.models.dual_encoder``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from iba import m2ib as _m2ib
from iba.config import Config
from iba.m2ib_explainer import M2IBExplainer, check_images, pick_layer
from iba.text_explainer import DEFAULT_MAX_TOKENS
from iba_jax.explainer import IBA
from iba_jax.models.efficientnet_lite import flax_path
from iba_jax.text import TextIBA, layer_paths, model_parts

COSINE_EPS = _m2ib.COSINE_EPS  # a number: the loss is keyed by value (iba_jax._cache)


def similarity_loss(other: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    """``iba.m2ib.similarity_loss`` in ``jax.numpy`` against the fixed embeddings ``other``
    ``(N, P)``: one loss per noised row (input-major). A ``functools.partial``, so the embeddings
    are an argument of the compiled optimisation: new pairs of the same shapes reuse it."""
    return functools.partial(_negative_cosine, np.asarray(other, np.float64))


def _negative_cosine(other: jax.Array, outputs: jax.Array) -> jax.Array:
    if outputs.ndim != 2 or outputs.shape[1] != other.shape[1]:
        raise ValueError(
            f"the bottlenecked side gave embeddings of shape {tuple(outputs.shape)}; "
            f"expected (N * batch_size, {other.shape[1]}) for {other.shape[0]} pair(s)"
        )
    rows = jnp.repeat(other.astype(outputs.dtype), outputs.shape[0] // other.shape[0], 0)
    norms = jnp.linalg.norm(outputs, axis=1) * jnp.linalg.norm(rows, axis=1)
    return -(outputs * rows).sum(1) / jnp.maximum(norms, COSINE_EPS)


class M2IB(M2IBExplainer):
    """M2IB on a Flax image encoder and text encoder (docs/mathematics.md section 5), the
    PyTorch ``M2IB``'s maps.

    Args:
        image: the image encoder, a Linen ``(module, variables)`` pair (or a bound Linen module,
            or an ``nnx.Module``) from preprocessed images ``(N, H, W, C)`` to ``(N, P)``; left
            exactly as it was.
        text: the text encoder, from ``{"input_ids", "attention_mask"}`` to ``(N, P)`` in the
            same space.
        tokenizer: the text encoder's tokenizer (``iba.models.minilm.Tokenizer()`` for the
            bundled MiniLM, a ``tokenizers.Tokenizer`` or a Hugging Face fast tokenizer).
        image_layer: the image encoder's module path whose output is bottlenecked
            (``"_blocks_14"``, ``"encoder/layer_9"``) as ``iba_jax.IBA`` takes it, or the
            PyTorch module name (``"_blocks.14"``).
        text_layer: the text encoder's layer: an index into its encoder layers or a module path
            (as ``iba_jax.TextIBA`` takes it).
        config, max_length, max_tokens, image_estimator, text_estimator: as for
            ``iba.m2ib_explainer.M2IBExplainer``; default ``iba.m2ib_config()``.

    Example:
        >>> from iba_jax.models.dual_encoder import dual_encoder  # doctest: +SKIP
        >>> dual = dual_encoder()  # doctest: +SKIP
        >>> explainer = M2IB(dual.image, dual.text, dual.tokenizer,
        ...                  image_layer="_blocks_14", text_layer=1)  # doctest: +SKIP
        >>> maps = explainer.explain(images, ["a photo of a cat"])  # doctest: +SKIP
    """

    image_explainer_type = IBA
    text_explainer_type = TextIBA

    def __init__(
        self,
        image: Any,
        text: Any,
        tokenizer: Any = None,
        *,
        image_layer: str,
        text_layer: Any,
        config: Config | None = None,
        max_length: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        image_estimator: Any = None,
        text_estimator: Any = None,
    ):
        self._forwards: dict[int, Callable] = {}
        super().__init__(
            image,
            text,
            tokenizer,
            image_layer=image_layer,
            text_layer=text_layer,
            config=config,
            max_length=max_length,
            max_tokens=max_tokens,
            image_estimator=image_estimator,
            text_estimator=text_estimator,
        )

    def check_image_model(self, image_model: Any) -> None:
        model_parts(image_model, "image")

    def resolve_image_layer(self, layer: Any) -> str:
        return pick_layer(layer, layer_paths(self.image_model), flax_path, "module path")

    def image_inputs(self, images: Any) -> np.ndarray:
        return check_images(images)

    def embed(self, model: Any, inputs: Any) -> np.ndarray:
        module, variables, kwargs = model_parts(model)
        if isinstance(inputs, dict):
            inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
        if variables is None:
            return np.asarray(module(inputs), np.float64)
        forward = self._forwards.get(id(module))
        if forward is None:  # one compiled forward per encoder
            forward = jax.jit(lambda v, x: module.apply(v, x, **kwargs))
            self._forwards[id(module)] = forward
        return np.asarray(forward(variables, inputs), np.float64)

    def similarity_loss(self, other: np.ndarray) -> Callable[[jax.Array], jax.Array]:
        return similarity_loss(other)
