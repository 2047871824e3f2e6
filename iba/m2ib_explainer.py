"""The M2IB explainer every adapter shares: image-caption pairs in, an image map and a token map
per pair out (Wang et al., NeurIPS 2023; docs/mathematics.md section 5).

:class:`M2IBExplainer` runs two independent optimisations through the shared driver:

- the image side: the adapter's ``IBA`` after one layer of the image encoder (a vision
  transformer's tokens or a convolutional feature map), with the loss ``-cos(image embedding,
  the caption's fixed embedding)``;
- the text side: the adapter's ``TextIBA`` (``iba.text_explainer``) after one layer of the text
  encoder, with the loss ``-cos(caption embedding, the image's fixed embedding)``, captions
  grouped by length and padding masked out as for text IBA.

Both run under the standard-normal prior (``iba.m2ib_config()``), or with statistics fitted on a
data set (``iba.m2ib_config(estimator="corpus")`` and :meth:`M2IBExplainer.estimate`). The noise
of every pair comes from NumPy (``iba.draw_noise`` per image, ``iba.text.text_noise`` per
caption), so a pair's maps do not depend on the rest of the batch nor on the backend.

An adapter subclass (``iba_torch.M2IB``, ``iba_tf.M2IB``, ``iba_jax.M2IB``) says how to reach its
framework's encoders: :meth:`M2IBExplainer.check_image_model`,
:meth:`~M2IBExplainer.image_inputs`, :meth:`~M2IBExplainer.embed`,
:meth:`~M2IBExplainer.similarity_loss`, and its ``IBA`` and ``TextIBA``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from iba import driver
from iba import m2ib as _m2ib
from iba.config import Config, m2ib_config
from iba.estimator import Estimator
from iba.noise import draw_noise_in_layout
from iba.text_explainer import (
    DEFAULT_MAX_TOKENS,
    TextExplainer,
    encode,
    texts_of,
    token_counts,
)

ESTIMATORS = ("prior", "corpus")  # M2IB's prior, or the dataset-estimated variant


class M2IBExplainer:
    """M2IB on an image encoder and a text encoder whose embeddings share one space
    (docs/mathematics.md section 5). Subclassed per framework.

    Args:
        image_model: the framework's image encoder: preprocessed images in, one embedding per
            image out ``(N, P)``; left exactly as it was.
        text_model: the text encoder: the tokenizer's outputs in, one embedding per caption out
            ``(N, P)``; left exactly as it was.
        tokenizer: the text encoder's tokenizer.
        image_layer: the image encoder's layer whose output is bottlenecked (as the adapter's
            ``IBA`` names layers).
        text_layer: the text encoder's layer: an index into its encoder layers or a name (as the
            adapter's ``TextIBA`` takes it).
        config: an ``iba.Config``; default ``iba.m2ib_config()`` (the prior, ``beta = 0.1``).
            ``iba.m2ib_config(estimator="corpus")`` is the dataset-estimated variant: call
            :meth:`estimate` (or pass the estimators) first.
        max_length: tokens per caption, special tokens included; longer captions are truncated
            with a warning. Default: the text encoder's and the tokenizer's maximum.
        max_tokens: padded caption tokens optimised together (captions are grouped by length).
        image_estimator, text_estimator: for the dataset-estimated variant, estimators from
            :meth:`estimate` (or the paths they were saved to).
    """

    image_explainer_type: type[driver.Explainer]  # the adapter's IBA
    text_explainer_type: type[TextExplainer]  # the adapter's TextIBA

    def __init__(
        self,
        image_model: Any,
        text_model: Any,
        tokenizer: Any = None,
        *,
        image_layer: Any,
        text_layer: Any,
        config: Config | None = None,
        max_length: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        image_estimator: Estimator | str | os.PathLike | None = None,
        text_estimator: Estimator | str | os.PathLike | None = None,
    ):
        config = m2ib_config() if config is None else config
        if not isinstance(config, Config):
            raise TypeError(f"config must be an iba.Config, got {type(config).__name__}")
        if config.estimator not in ESTIMATORS:
            raise ValueError(
                f"M2IB runs with the standard-normal prior (estimator='prior', the default of "
                f"iba.m2ib_config()) or statistics fitted on a data set (estimator='corpus'); got "
                f"estimator={config.estimator!r}"
            )
        self.check_image_model(image_model)
        self.image_model = image_model
        self.image_layer = self.resolve_image_layer(image_layer)
        self.image_iba = self.make_image_explainer(self.image_layer, config)
        self.text = self.make_text_explainer(
            text_model, tokenizer, text_layer, config, max_length, max_tokens
        )
        if image_estimator is not None or text_estimator is not None:
            self._require_corpus("image_estimator= and text_estimator=")
        if image_estimator is not None:
            self.image_estimator = _loaded(image_estimator)
        if text_estimator is not None:
            self.text.estimator = _loaded(text_estimator)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_layer={self.image_layer!r}, "
            f"text_layer={self.text_layer!r}, config={self.config})"
        )

    # -- what an adapter provides ----------------------------------------------------------------

    def check_image_model(self, image_model: Any) -> None:
        """Raise a ``TypeError`` if ``image_model`` is not one of the framework's models."""

    def resolve_image_layer(self, layer: Any) -> Any:
        """The target the adapter's ``IBA`` takes for the image layer ``layer``."""
        return layer

    def make_image_explainer(self, layer: Any, config: Config) -> driver.Explainer:
        """The adapter's ``IBA`` at the image layer (layout found from the features' shape)."""
        return self.image_explainer_type(layer, config=config)

    def make_text_explainer(
        self,
        text_model: Any,
        tokenizer: Any,
        layer: Any,
        config: Config,
        max_length: int | None,
        max_tokens: int,
    ) -> TextExplainer:
        """The adapter's ``TextIBA`` at the text layer."""
        return self.text_explainer_type(
            text_model,
            tokenizer,
            layer=layer,
            config=config,
            max_length=max_length,
            max_tokens=max_tokens,
        )

    def image_inputs(self, images: Any) -> Any:
        """The images as the image encoder's input batch (checked: a batch, finite)."""
        return images

    def embed(self, model: Any, inputs: Any) -> np.ndarray:
        """An encoder's ``(N, P)`` embeddings of a batch, float64."""
        raise NotImplementedError

    def similarity_loss(self, other: np.ndarray) -> Callable[[Any], Any]:
        """The ``loss_fn`` of one side against the other side's fixed embeddings ``other``
        ``(N, P)``: ``iba.m2ib.similarity_loss`` in the framework's ops (one loss per noised row,
        input-major)."""
        raise NotImplementedError

    # -- configuration ---------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The ``iba.Config`` of both optimisations."""
        return self.image_iba.config

    @property
    def text_model(self) -> Any:
        """The text encoder (the adapter's ``TextIBA`` explains it)."""
        return self.text.model

    @property
    def text_layer(self) -> Any:
        """The text encoder's bottlenecked layer, as the adapter's ``TextIBA`` names it."""
        return self.text.layer

    @property
    def tokenizer(self) -> Any:
        return self.text.tokenizer

    @property
    def max_length(self) -> int:
        return self.text.max_length

    # -- statistics (the dataset-estimated variant) ---------------------------------------------

    def _require_corpus(self, what: str) -> None:
        if self.config.estimator != "corpus":
            raise ValueError(
                f"{what} fit the statistics of the dataset-estimated variant, but this explainer "
                "runs with the standard-normal prior: pass config=iba.m2ib_config("
                "estimator='corpus')"
            )

    @property
    def image_estimator(self) -> Estimator | None:
        """The image layer's statistics (dataset-estimated variant), or ``None``."""
        found = self.image_iba.estimators
        return found[0] if found else None

    @image_estimator.setter
    def image_estimator(self, estimator: Estimator) -> None:
        if not isinstance(estimator, Estimator):
            raise TypeError(f"image_estimator must be an iba.Estimator, got {estimator!r}")
        self.image_iba.estimators = [estimator]

    @property
    def text_estimator(self) -> Estimator | None:
        """The text layer's statistics, shared by every position (dataset-estimated variant)."""
        return self.text.estimator

    def estimate(
        self,
        images: Iterable | None = None,
        texts: Sequence[str] | None = None,
        n_samples: int | None = None,
        progress: bool = True,
    ) -> tuple[Estimator | None, Estimator | None]:
        """Fit the statistics of the dataset-estimated variant (docs/mathematics.md sections 1
        and 5): on ``images`` (batches of the image encoder's inputs, as ``IBA.estimate`` takes
        them) and on the real tokens of ``texts`` (a caption corpus). Either may be left out
        (its side keeps what it has). Returns ``(image_estimator, text_estimator)``."""
        self._require_corpus("estimate()")
        if images is None and texts is None:
            raise ValueError("give images= (batches of images), texts= (captions), or both")
        if images is not None:
            self.image_iba.estimate(self.image_model, images, n_samples, progress)
        if texts is not None:
            self.text.estimate(texts, n_samples, progress=progress)
        return self.image_estimator, self.text_estimator

    def _require_statistics(self) -> None:
        if self.config.estimator != "corpus":
            return
        missing = [
            side
            for side, est in (("image", self.image_estimator), ("text", self.text_estimator))
            if est is None
        ]
        if missing:
            raise RuntimeError(
                f"no statistics yet for the {' and '.join(missing)} side: the dataset-estimated "
                "variant needs estimate(images=..., texts=...) (or image_estimator= / "
                "text_estimator=) before explain()"
            )

    # -- explanations ----------------------------------------------------------------------------

    def explain(
        self,
        images: Any,
        texts: str | Sequence[str],
        *,
        seed: int = driver.DEFAULT_SEED,
        details: bool = False,
        progress: bool = False,
    ) -> _m2ib.PairMaps:
        """The M2IB maps of ``N`` image-caption pairs (each pair optimised on its own).

        Args:
            images: ``N`` preprocessed images, as the image encoder takes them (see the adapter).
            texts: ``N`` captions (a string for one pair).
            seed: every image gets ``iba.draw_noise(seed, steps, batch_size, F)`` (drawn
                channels-first: ``iba.noise.draw_noise_in_layout``), every caption
                ``iba.text.text_noise`` of the same seed: a pair's maps do not depend on the other
                pairs, nor on the backend.
            details: keep the image side's ``iba.Explanation`` in the result.
            progress: show progress bars over the optimisation steps.

        Returns:
            An ``iba.m2ib.PairMaps``: image maps ``(N, H, W)`` in ``[0, 1]``, one
            ``iba.text.TokenMap`` per caption, the clean cosine similarities.
        """
        texts = texts_of(texts)
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self._require_statistics()
        pixels = self.image_inputs(images)
        n = _m2ib.check_pairs(_n_inputs(pixels), len(texts))
        text = self.text
        longest = min(max(token_counts(text.tokenizer, texts)), text.max_length)
        enc = encode(text.tokenizer, texts, text.max_length, text.padded_length_for(longest))
        _m2ib.check_captions(texts, enc.mask, enc.special)
        with driver.running_on(pixels, "images"):
            image_embeds = self.embed(self.image_model, pixels)
        text_embeds = self.embed(text.model, text.model_inputs(enc.inputs))
        for what, embeds in (("image", image_embeds), ("text", text_embeds)):
            if embeds.ndim != 2 or embeds.shape[0] != n:
                raise ValueError(
                    f"the {what} encoder gave embeddings of shape {embeds.shape}; M2IB needs one "
                    f"embedding per input, ({n}, P)"
                )
        if image_embeds.shape[1] != text_embeds.shape[1]:
            raise ValueError(
                f"the image embeddings have {image_embeds.shape[1]} dimensions and the text "
                f"embeddings {text_embeds.shape[1]}: the encoders must share one space"
            )

        image, layout = self._explain_images(pixels, text_embeds, int(seed), progress)
        maps = text.explain_groups(
            texts,
            None,
            lambda group: self.similarity_loss(image_embeds[group]),
            seed=int(seed),
            progress=progress,
            with_logits=False,
        )
        return _m2ib.PairMaps(
            image_maps=_m2ib.image_map(image.capacity, self.image_size(pixels), layout),
            image_bits=_m2ib.patch_bits(image.capacity, layout),
            text_maps=tuple(maps),
            similarity=_m2ib.cosine_similarity(image_embeds, text_embeds),
            image_explanation=image if details else None,
        )

    def _explain_images(
        self, pixels: Any, text_embeds: np.ndarray, seed: int, progress: bool
    ) -> tuple[driver.Explanation, str]:
        """The image side's optimisation, each image with the draws of ``seed``, and the
        features' layout."""
        explainer, config = self.image_iba, self.config
        n = len(text_embeds)
        with explainer.planned(
            self.image_model,
            pixels,
            loss_fn=self.similarity_loss(text_embeds),
            seed=seed,
            progress=progress,
        ) as (run, plan):
            shape = plan.feature_shapes[0]
            one = draw_noise_in_layout(seed, config.steps, config.batch_size, shape, plan.layout)
            plan = explainer.with_noise(plan, np.repeat(one[:, None], n, axis=1), n)
            result = run.optimize(plan)
        found = driver.explanation(result, plan.layout, self.image_size(pixels), details=True)
        assert isinstance(found, driver.Explanation)
        return found, plan.layout

    channels_first = False  # the image encoder's inputs are (N, C, H, W) (else (N, H, W, C))

    def image_size(self, pixels: Any) -> tuple[int, int]:
        """``(H, W)`` of the image batch."""
        shape = tuple(int(k) for k in pixels.shape)
        return (shape[2], shape[3]) if self.channels_first else (shape[1], shape[2])


def check_images(images: np.ndarray) -> np.ndarray:
    """A channels-last image batch ``(N, H, W, C)`` checked (floating point, finite) as float32,
    for the adapters whose image encoders take NumPy arrays."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"images must be a batch of preprocessed images (N, H, W, C), got shape {images.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be floating point, got dtype {images.dtype}")
    driver.check_finite(images, "images")
    return images.astype(np.float32, copy=False)


def pick_layer(layer: Any, names: list[str], native: Callable[[str], str], what: str) -> str:
    """``layer`` if it is one of ``names`` (the image encoder's layers), else its PyTorch name
    translated by ``native`` (``"_blocks.14"`` to ``"_blocks_14"``); a clear error otherwise."""
    if not isinstance(layer, str):
        raise TypeError(f"image_layer must be a {what} of the image model, got {layer!r}")
    for name in (layer, native(layer)):
        if name in names:
            return name
    shown = f"{names[:16]}{' ...' if len(names) > 16 else ''}"
    raise ValueError(f"image_layer {layer!r} not found in the image model: its {what}s are {shown}")


def _n_inputs(x: Any) -> int:
    shape = np.shape(x) if not hasattr(x, "shape") else tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"images must be a batch (N, ...), got shape {tuple(shape)}")
    return int(shape[0])


def _loaded(estimator: Estimator | str | os.PathLike) -> Estimator:
    if isinstance(estimator, (str, os.PathLike)):
        return Estimator.load(estimator)
    if not isinstance(estimator, Estimator):
        raise TypeError(f"expected an iba.Estimator or a path, got {type(estimator).__name__}")
    return estimator
