"""M2IB for PyTorch image-text dual encoders such as ``transformers.CLIPModel`` (Wang et al.,
NeurIPS 2023; docs/mathematics.md section 5).

:class:`M2IB` explains image-caption pairs without labels: two independent optimisations through
``iba_torch.IBA`` under the standard-normal prior (``iba.m2ib_config``), one with the bottleneck
after a layer of the vision encoder, one after a layer of the text encoder. Each side's loss is
``beta * mean(capacity) - cos(bottlenecked embedding, the other side's fixed embedding)``. The
framework-free parts (the loss's definition, the maps, the checks, the result) are ``iba.m2ib``;
tokenising and words are ``iba.text_explainer`` and ``iba.text``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import iba
from iba import m2ib as _m2ib
from iba import text as _text
from iba import text_explainer as _tx
from iba.config import Config
from iba.noise import draw_noise
from iba_torch import _model
from iba_torch.explainer import IBA
from iba_torch.text import resolve_layer

AUTHORS_LAYER = 9  # the authors' layer in both encoders of CLIP ViT-B/32


def embedding(outputs: Any, method: str) -> torch.Tensor:
    """The ``(N, P)`` embedding in what ``get_image_features`` / ``get_text_features`` return: a
    tensor, or (transformers 5) an output whose ``pooler_output`` holds the projection."""
    if isinstance(outputs, torch.Tensor):
        found = outputs
    else:
        found = None
        for name in ("image_embeds", "text_embeds", "pooler_output"):
            value = getattr(outputs, name, None)
            if isinstance(value, torch.Tensor):
                found = value
                break
    if found is None or found.ndim != 2:
        got = type(outputs).__name__ if found is None else f"shape {tuple(found.shape)}"
        raise TypeError(
            f"model.{method}() returned {got}; M2IB needs one (N, P) embedding per input"
        )
    return found


class _ImageSide(torch.nn.Module):
    """``pixel_values -> image embeddings``: the dual encoder's image side, as a module that
    ``iba_torch.IBA`` explains (it holds the model; it changes nothing in it)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.dual = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return embedding(
            self.dual.get_image_features(pixel_values=pixel_values), "get_image_features"
        )


class _TextSide(torch.nn.Module):
    """``tokenizer outputs -> text embeddings``: the dual encoder's text side."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.dual = model

    def forward(self, input_ids: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return embedding(
            self.dual.get_text_features(input_ids=input_ids, **inputs), "get_text_features"
        )


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``iba.m2ib.cosine_similarity`` in torch: row-wise ``a . b / max(|a| |b|, eps)``."""
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    return (a * b).sum(1) / norms.clamp_min(_m2ib.COSINE_EPS)


def similarity_loss(other: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``loss_fn`` of one side: ``iba.m2ib.similarity_loss`` against the fixed embeddings
    ``other`` ``(N, P)``, one loss per noised row (input-major)."""
    n = other.shape[0]

    def loss(outputs: torch.Tensor) -> torch.Tensor:
        if outputs.ndim != 2 or outputs.shape[0] % n or outputs.shape[1] != other.shape[1]:
            raise ValueError(
                f"the bottlenecked side gave embeddings of shape {tuple(outputs.shape)}; "
                f"expected (N * batch_size, {other.shape[1]}) for {n} pair(s)"
            )
        rows = other.to(outputs).repeat_interleave(outputs.shape[0] // n, dim=0)
        return -cosine_similarity(outputs, rows)

    return loss


def _layer_name(model: torch.nn.Module, tower: str, layer: Any, what: str) -> str:
    """The full name in ``model.named_modules()`` of ``layer``: a full name, or an index / name /
    module of the ``tower`` (``vision_model``, ``text_model``) as ``iba_torch.text.resolve_layer``
    takes them."""
    modules = dict(model.named_modules())
    if isinstance(layer, str) and layer in modules and layer:
        return layer
    root = getattr(model, tower, None)
    root = root if isinstance(root, torch.nn.Module) else model
    try:
        name = resolve_layer(root, layer)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{what}: {err}") from None
    found = dict(root.named_modules())[name]
    return next(n for n, m in modules.items() if m is found)


class M2IB:
    """M2IB on a PyTorch image-text dual encoder (docs/mathematics.md section 5).

    Args:
        model: a ``transformers.CLIPModel`` or any ``torch.nn.Module`` with
            ``get_image_features(pixel_values=)`` and ``get_text_features(input_ids=, ...)``
            that return one embedding per input (a tensor, or an output with the projected
            ``pooler_output``). It is left exactly as it was.
        processor_or_tokenizer: a ``CLIPProcessor`` (its ``tokenizer``, and its
            ``image_processor`` for images that are not arrays yet) or a Hugging Face fast
            tokenizer; default ``model.tokenizer``.
        image_layer, text_layer: the encoder layers whose outputs are bottlenecked: an index into
            ``model.vision_model``'s / ``model.text_model``'s encoder layers (default 9, the
            authors' layer of CLIP ViT-B/32), a module name (full, or within the encoder), or
            the module.
        config: an ``iba.Config``; default ``iba.m2ib_config()`` (``beta = 0.1``, 10 steps of
            Adam at ``lr = 1``, 10 noise samples, the standard-normal prior).
        max_length: tokens per caption with the special tokens (longer ones are truncated with a
            warning); default the least of the text encoder's positions and the tokenizer's
            maximum.
        strategy: how the image side runs the layers after its bottleneck
            (``iba_torch.IBA``'s; default ``"plain"``). The text side always runs ``"plain"``:
            a Hugging Face attention mask has one row per caption.

    Example:
        >>> explainer = M2IB(clip, processor, image_layer=9, text_layer=9)  # doctest: +SKIP
        >>> maps = explainer.explain(pixel_values, ["a dog on a sofa"])  # doctest: +SKIP
        >>> maps.image_maps.shape, maps.text_maps[0].top_words(2)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor_or_tokenizer: Any = None,
        *,
        image_layer: Any = AUTHORS_LAYER,
        text_layer: Any = AUTHORS_LAYER,
        config: Config | None = None,
        max_length: int | None = None,
        strategy: str = "plain",
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        missing = [
            m
            for m in ("get_image_features", "get_text_features")
            if not callable(getattr(model, m, None))
        ]
        if missing:
            raise TypeError(
                f"{type(model).__name__} has no {' / '.join(missing)}(): M2IB needs an image-text "
                "dual encoder such as transformers.CLIPModel"
            )
        config = iba.m2ib_config() if config is None else config
        if not isinstance(config, Config):
            raise TypeError(f"config must be an iba.Config, got {type(config).__name__}")
        if config.estimator != "prior":
            raise ValueError(
                f"M2IB runs with the standard-normal prior (Config.estimator='prior'), got "
                f"estimator={config.estimator!r}: use iba.m2ib_config(...); the dataset-"
                "estimated variant is not available in M2IB yet"
            )
        given = processor_or_tokenizer
        tokenizer = getattr(given, "tokenizer", given) if given is not None else None
        if tokenizer is None:
            tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise TypeError(
                "M2IB needs the model's tokenizer: pass a CLIPProcessor or a fast tokenizer as "
                "processor_or_tokenizer"
            )
        self.model = model
        self.tokenizer = _tx.check_tokenizer(tokenizer)
        self.image_processor = getattr(given, "image_processor", None)
        self.config = config
        self.image_layer = _layer_name(model, "vision_model", image_layer, "image_layer")
        self.text_layer = _layer_name(model, "text_model", text_layer, "text_layer")
        self.max_length = self._max_length(max_length)
        self._image_side = _ImageSide(model)
        self._text_side = _TextSide(model)
        self.image_iba = IBA(
            f"dual.{self.image_layer}", layout="tokens", strategy=strategy, config=config
        )
        self.text_iba = IBA(
            f"dual.{self.text_layer}", layout="tokens", strategy="plain", config=config
        )

    def __repr__(self) -> str:
        return (
            f"M2IB(image_layer={self.image_layer!r}, text_layer={self.text_layer!r}, "
            f"config={self.config})"
        )

    def _max_length(self, given: int | None) -> int:
        limits = []
        text_model = getattr(self.model, "text_model", None)
        for config in (
            getattr(text_model, "config", None),
            getattr(getattr(self.model, "config", None), "text_config", None),
        ):
            positions = getattr(config, "max_position_embeddings", None)
            if isinstance(positions, int):
                limits.append(positions)
        told = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(told, int) and told < 1_000_000:
            limits.append(told)
        if given is None:
            if not limits:
                raise ValueError(
                    "neither the model nor the tokenizer says how many tokens a caption may "
                    "have: pass max_length="
                )
            return min(limits)
        if isinstance(given, bool) or not isinstance(given, (int, np.integer)) or given < 2:
            raise ValueError(f"max_length must be an int >= 2, got {given!r}")
        if limits and given > min(limits):
            raise ValueError(f"max_length={given} exceeds the model's maximum of {min(limits)}")
        return int(given)

    # -- inputs ----------------------------------------------------------------------------------

    def _pixels(self, images: Any) -> torch.Tensor:
        """The images as the model's ``(N, C, H, W)`` pixel values."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            if self.image_processor is None:
                raise TypeError(
                    f"images must be pixel values (N, C, H, W), an array or tensor, got "
                    f"{type(images).__name__}; pass a CLIPProcessor as processor_or_tokenizer "
                    "to explain PIL images"
                )
            images = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        if images.ndim != 4:
            raise ValueError(
                f"images must be a batch of pixel values (N, C, H, W), got shape "
                f"{tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"pixel values must be floating point, got dtype {images.dtype}")
        iba.driver.check_finite(images, "images")
        device, dtype = _model.model_device_dtype(self.model)
        return images.to(device=device, dtype=dtype)

    def _tokens(self, texts: list[str]) -> tuple[_tx.Encoded, list[bool]]:
        """The captions tokenised into one padded batch, and which were truncated."""
        counts = _tx.token_counts(self.tokenizer, texts)
        truncated = [k > self.max_length for k in counts]
        _tx.warn_truncated([i for i, cut in enumerate(truncated) if cut], self.max_length)
        enc = _tx.encode(self.tokenizer, texts, self.max_length)
        _m2ib.check_captions(texts, enc.mask, enc.special)
        return enc, truncated

    # -- explanations ----------------------------------------------------------------------------

    def explain(
        self,
        images: Any,
        texts: str | Sequence[str],
        *,
        seed: int = iba.driver.DEFAULT_SEED,
        noise: tuple[Any, Any] | None = None,
        details: bool = False,
        progress: bool = False,
    ) -> _m2ib.PairMaps:
        """The M2IB maps of ``N`` image-caption pairs, optimised together (each pair on its own).

        Args:
            images: ``(N, C, H, W)`` pixel values (an array or tensor), or what the processor's
                ``image_processor`` takes (PIL images) when a processor was given.
            texts: ``N`` captions (a string for one pair).
            seed: the noise: every pair gets ``iba.draw_noise(seed, steps, batch_size, F)`` on the
                image side and ``iba.text.text_noise`` on the text side, so a pair's maps do not
                depend on the other pairs of the batch.
            noise: instead of ``seed``, ``(image_noise, text_noise)``: standard-normal draws
                ``(steps, N, batch_size, T, D)`` at each bottleneck (the text side's ``T`` is the
                padded length; padding's draws are unused).
            details: keep both optimisations' ``iba.Explanation`` in the result.
            progress: show progress bars over the optimisation steps.

        Returns:
            An ``iba.m2ib.PairMaps``: image maps ``(N, H, W)`` in ``[0, 1]``, one
            ``iba.text.TokenMap`` per caption, the clean cosine similarities.
        """
        texts = _tx.texts_of(texts)
        pixels = self._pixels(images)
        n = _m2ib.check_pairs(int(pixels.shape[0]), len(texts))
        enc, truncated = self._tokens(texts)
        tokens = {k: torch.as_tensor(v, dtype=torch.long) for k, v in enc.inputs.items()}
        device = _model.model_device_dtype(self.model)[0]
        if device is not None:
            tokens = {k: v.to(device) for k, v in tokens.items()}

        image_side, text_side = self._image_side, self._text_side
        image_module = dict(image_side.named_modules())[f"dual.{self.image_layer}"]
        text_module = dict(text_side.named_modules())[f"dual.{self.text_layer}"]
        with _model.preserved(image_side), torch.no_grad():
            with iba.driver.running_on(pixels, "images"):
                image_embeds = image_side(pixels)
                image_features = _model.capture(
                    image_side, ((pixels,), {}), [(self.image_layer, image_module)]
                )[0]
            with iba.driver.running_on(tokens, "texts"):
                text_embeds = text_side(**tokens)
                text_features = _model.capture(
                    text_side, ((), tokens), [(self.text_layer, text_module)]
                )[0]
        for what, features in (("image", image_features), ("text", text_features)):
            if features.ndim != 3:
                raise ValueError(
                    f"the {what} layer gives features of shape {tuple(features.shape[1:])} per "
                    "input; M2IB needs token states (T, D): choose an encoder layer"
                )
        if noise is None:
            image_noise, text_noise = self._draws(
                seed, n, tuple(image_features.shape[1:]), int(text_features.shape[2]), enc.mask
            )
        else:
            if not isinstance(noise, (tuple, list)) or len(noise) != 2:
                raise TypeError("noise must be a pair (image_noise, text_noise)")
            image_noise, text_noise = noise

        image = self.image_iba.analyze(
            image_side,
            pixels,
            loss_fn=similarity_loss(text_embeds.detach()),
            noise=image_noise,
            details=True,
            progress=progress,
        )
        text = self.text_iba.analyze(
            text_side,
            tokens,
            loss_fn=similarity_loss(image_embeds.detach()),
            noise=text_noise,
            token_mask=enc.mask,
            details=True,
            progress=progress,
        )
        assert isinstance(image, iba.Explanation) and isinstance(text, iba.Explanation)
        size = (int(pixels.shape[2]), int(pixels.shape[3]))
        maps = []
        assert text.heatmap is not None  # filled in by analyze
        for j in range(n):
            real = np.flatnonzero(enc.mask[j])
            maps.append(
                _text.token_map(
                    texts[j],
                    [enc.tokens[j][k] for k in real],
                    [enc.word_ids[j][k] for k in real],
                    [tuple(enc.offsets[j, k]) for k in real],
                    text.heatmap[j, real],
                    enc.special[j, real].astype(bool),
                    truncated=truncated[j],
                )
            )
        return _m2ib.PairMaps(
            image_maps=_m2ib.image_map(image.capacity, size),
            image_bits=_m2ib.patch_bits(image.capacity),
            text_maps=tuple(maps),
            similarity=_m2ib.cosine_similarity(
                image_embeds.detach().cpu().double().numpy(),
                text_embeds.detach().cpu().double().numpy(),
            ),
            image_explanation=image if details else None,
            text_explanation=text if details else None,
        )

    def _draws(
        self, seed: int, n: int, image_shape: tuple[int, ...], text_dim: int, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The default noise of ``seed``: the same draws for every pair, whatever the batch
        (``iba.draw_noise`` per image, ``iba.text.text_noise`` per caption)."""
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        steps, batch = self.config.steps, self.config.batch_size
        one = draw_noise(int(seed), steps, batch, image_shape)
        image = np.repeat(one[:, None], n, axis=1)
        text = _text.text_noise(int(seed), steps, batch, mask, text_dim)
        return image, text
