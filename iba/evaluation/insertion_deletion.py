"""Insertion and deletion (docs/mathematics.md section 7.4; Petsiuk et al., RISE, BMVC 2018, as in
CoIBA's evaluation, Hong et al., CVPR 2025).

Pixels are ordered by the heatmap, highest first (a stable sort: ties in row-major order), and
changed ``pixels_per_step`` at a time (``8 * 224`` by default: 28 steps for a 224 x 224 image).
Deletion replaces them, all channels, with zeros; insertion starts from the image blurred with a
Gaussian (kernel 51, std 50, reflect border) and restores them. The target's softmax probability
is recorded before each step and after the last (``steps + 1`` points);
``AUC = (sum(s) - s[0] / 2 - s[-1] / 2) / (len(s) - 1)``. Low deletion and high insertion AUC are
better.

By default the images are the model's inputs and are perturbed there. CoIBA's code perturbs the
images in pixel space and normalises afterwards: pass the pixel images and the model's
preprocessing as ``preprocess=`` (``variant="coiba-paper"`` requires it). Deletion then sets
pixels to black, not to the input space's zero (the mean colour after an ImageNet normalisation);
insertion is unchanged by any per-channel affine preprocessing, since the blur is linear with
weights that sum to one (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from iba.evaluation._batching import (
    Model,
    check_batch_size,
    check_score,
    evaluate_jobs,
)
from iba.evaluation._images import check_heatmaps, check_images, to_model, warn_constant
from iba.evaluation._variants import check_variant
from iba.evaluation.blur import gaussian_blur

CURVE_VARIANTS = ("library", "coiba-paper")
"""``"library"``: perturb the model's inputs (or pixels, with ``preprocess=``); ``"coiba-paper"``:
perturb pixels, which needs ``preprocess=``."""

PIXELS_PER_STEP = 8 * 224
"""Pixels changed per step (CoIBA's evaluation)."""


class CurveResult(NamedTuple):
    """Per-image insertion or deletion AUC and curves (``K = steps + 1`` points)."""

    scores: np.ndarray
    """``(N,)`` area under each curve, ``(sum(s) - s[0]/2 - s[-1]/2) / (K - 1)``."""
    mean: float
    """Mean of ``scores``."""
    fractions: np.ndarray
    """``(K,)`` share of the pixels changed at each point, ``0`` to ``1``."""
    curves: np.ndarray
    """``(N, K)`` target scores."""
    targets: np.ndarray
    """``(N,)`` the classes scored."""


def auc(curves: np.ndarray) -> np.ndarray:
    """``(sum(s) - s[0]/2 - s[-1]/2) / (len(s) - 1)`` over the last axis (unit-spaced trapezoid)."""
    curves = np.asarray(curves, dtype=np.float64)
    return (curves.sum(-1) - curves[..., 0] / 2 - curves[..., -1] / 2) / (curves.shape[-1] - 1)


def _compose(model: Model, preprocess: Callable[[np.ndarray], Any]) -> Model:
    """``model(preprocess(batch))``."""

    def composed(batch: np.ndarray) -> Any:
        return model(preprocess(batch))

    return composed


def check_preprocess(
    metric: str, variant: str, preprocess: Callable[[np.ndarray], Any] | None
) -> None:
    """Raise unless ``preprocess`` is a callable or ``None`` (``None`` only in the library variant)."""
    check_variant(variant, metric, CURVE_VARIANTS)
    if preprocess is not None and not callable(preprocess):
        raise TypeError(
            f"{metric}: preprocess must be a function from a batch of pixel images to the model's "
            f"inputs, got {type(preprocess).__name__}"
        )
    if variant == "coiba-paper" and preprocess is None:
        raise ValueError(
            f"{metric}: variant='coiba-paper' perturbs the images in pixel space and normalises "
            "afterwards, so it needs the model's preprocessing: pass the images in pixel space "
            "(e.g. in [0, 1]) and preprocess=, the function that turns such a batch into the "
            "model's input (e.g. lambda x: (x - mean) / std)"
        )


def _curves(
    metric: str,
    model: Model,
    images: np.ndarray,
    heatmaps: np.ndarray,
    targets: int | np.ndarray | None,
    start_from: str,
    baseline: float,
    blur_kernel_size: int,
    blur_sigma: float,
    pixels_per_step: int,
    score: str,
    data_format: str,
    batch_size: int,
    progress: bool,
    preprocess: Callable[[np.ndarray], Any] | None,
    variant: str,
) -> CurveResult:
    check_preprocess(metric, variant, preprocess)
    if preprocess is not None:  # perturb the pixels, then preprocess them for the model
        model = _compose(model, preprocess)
    check_score(score)
    batch_size = check_batch_size(batch_size)
    if int(pixels_per_step) != pixels_per_step or pixels_per_step < 1:
        raise ValueError(f"pixels_per_step must be a positive integer, got {pixels_per_step!r}")
    x = check_images(images, data_format)
    n, height, width, _ = x.shape
    maps = check_heatmaps(heatmaps, (n, height, width))
    warn_constant(maps, metric, "their pixels are changed in row-major order", stacklevel=4)

    n_pixels = height * width
    n_steps = -(-n_pixels // int(pixels_per_step))
    counts = np.minimum(np.arange(n_steps + 1) * int(pixels_per_step), n_pixels)
    ranks = np.empty((n, n_pixels), dtype=np.int32)  # the position of each pixel in the order
    for i in range(n):
        ranks[i, np.argsort(-maps[i].ravel(), kind="stable")] = np.arange(n_pixels)
    ranks = ranks.reshape(n, height, width)
    if start_from == "blurred":  # insertion: blurred -> image
        start, end = gaussian_blur(x, blur_kernel_size, blur_sigma), x
    else:  # deletion: image -> baseline
        start, end = x, np.full((n, 1, 1, 1), baseline, dtype=x.dtype)

    job_image = np.repeat(np.arange(n), n_steps + 1)
    job_step = np.tile(np.arange(n_steps + 1), n)

    def build(index: np.ndarray) -> np.ndarray:
        img = job_image[index]
        changed = ranks[img] < counts[job_step[index]][:, None, None]
        batch = start[img]
        np.copyto(batch, end[img], where=changed[..., None])
        return to_model(batch, data_format)

    target, values = evaluate_jobs(
        model, x, lambda images: to_model(images, data_format), targets, job_image, build, score,
        batch_size, metric, progress,
    )  # fmt: skip
    curves = values.reshape(n, n_steps + 1)
    scores = auc(curves)
    return CurveResult(scores, float(scores.mean()), counts / n_pixels, curves, target)


def deletion(
    model: Model,
    images: np.ndarray,
    heatmaps: np.ndarray,
    targets: int | np.ndarray | None = None,
    *,
    pixels_per_step: int = PIXELS_PER_STEP,
    baseline: float = 0.0,
    score: str = "softmax",
    data_format: str = "channels_last",
    batch_size: int = 64,
    progress: bool = True,
    preprocess: Callable[[np.ndarray], Any] | None = None,
    variant: str = "library",
) -> CurveResult:
    """Deletion AUC: set the most relevant pixels to zero, ``pixels_per_step`` at a time.

    Args:
        model: callable from a batch of images (in ``data_format``) to outputs
            ``(n, n_classes)``.
        images: ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``data_format="channels_first"``.
        heatmaps: ``(N, H, W)`` at the image size (upsample with ``iba.resize`` first).
        targets: the class per image (an int is used for all); ``None`` takes the model's top
            class on the unperturbed image.
        pixels_per_step: pixels deleted per step; the last step may delete fewer.
        baseline: the value deleted pixels take (all channels), in the model's input space, or in
            pixel space with ``preprocess`` (``0``: black, as in CoIBA's code).
        score: ``"softmax"`` (the model returns logits; the target's softmax probability is
            recorded) or ``"raw"`` (the target's output as returned).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        batch_size: perturbed images per model call.
        progress: show a tqdm progress bar (if tqdm is installed).
        preprocess: the model's preprocessing, a function from a batch of pixel images (in
            ``data_format``) to the model's input, e.g. the ImageNet normalisation. With it,
            ``images`` are in pixel space, pixels are deleted there, and the model scores
            ``model(preprocess(batch))`` (CoIBA's code). ``None``: ``images`` are the model's
            inputs.
        variant: ``"library"`` (default) or ``"coiba-paper"``, which requires ``preprocess``
            (the same computation; the name guards against scoring normalised images by
            mistake). docs/metrics.md.

    Returns:
        :class:`CurveResult` with the per-image AUC (lower is better), its mean and the curves.

    Constant heatmaps warn (``RuntimeWarning``): their pixels go in row-major order.
    """
    return _curves(
        "deletion", model, images, heatmaps, targets, "image", baseline, 1, 1.0,
        pixels_per_step, score, data_format, batch_size, progress, preprocess, variant,
    )  # fmt: skip


def insertion(
    model: Model,
    images: np.ndarray,
    heatmaps: np.ndarray,
    targets: int | np.ndarray | None = None,
    *,
    pixels_per_step: int = PIXELS_PER_STEP,
    blur_kernel_size: int = 51,
    blur_sigma: float = 50.0,
    score: str = "softmax",
    data_format: str = "channels_last",
    batch_size: int = 64,
    progress: bool = True,
    preprocess: Callable[[np.ndarray], Any] | None = None,
    variant: str = "library",
) -> CurveResult:
    """Insertion AUC: restore the most relevant pixels into the blurred image, step by step.

    Args:
        model: callable from a batch of images (in ``data_format``) to outputs
            ``(n, n_classes)``.
        images: ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``data_format="channels_first"``.
        heatmaps: ``(N, H, W)`` at the image size (upsample with ``iba.resize`` first).
        targets: the class per image (an int is used for all); ``None`` takes the model's top
            class on the unperturbed image.
        pixels_per_step: pixels restored per step; the last step may restore fewer.
        blur_kernel_size, blur_sigma: the Gaussian of the start image (51 taps, std 50), applied
            per channel with reflect padding (:func:`iba.evaluation.blur.gaussian_blur`).
        score: ``"softmax"`` (the model returns logits; the target's softmax probability is
            recorded) or ``"raw"`` (the target's output as returned).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        batch_size: perturbed images per model call.
        progress: show a tqdm progress bar (if tqdm is installed).
        preprocess: the model's preprocessing, a function from a batch of pixel images (in
            ``data_format``) to the model's input. With it, ``images`` are in pixel space, the
            blur and the restored pixels are computed there, and the model scores
            ``model(preprocess(batch))`` (CoIBA's code). For a per-channel affine preprocessing
            (a normalisation) the curves equal those on the preprocessed images, up to rounding.
        variant: ``"library"`` (default) or ``"coiba-paper"``, which requires ``preprocess``.
            docs/metrics.md.

    Returns:
        :class:`CurveResult` with the per-image AUC (higher is better), its mean and the curves.

    Constant heatmaps warn (``RuntimeWarning``): their pixels go in row-major order.
    """
    return _curves(
        "insertion", model, images, heatmaps, targets, "blurred", 0.0, blur_kernel_size,
        blur_sigma, pixels_per_step, score, data_format, batch_size, progress, preprocess, variant,
    )  # fmt: skip
