"""The attribution baselines IBA is compared with (docs/mathematics.md section 8), written once
for every framework.

Every method is ``method(model, x, target=None, **options) -> np.ndarray``: ``N`` images ``x``
in ``model.layout`` (``(N, C, H, W)`` or ``(N, H, W, C)``) give one map per image, ``(N, H, W)``,
at the input size. The score explained is the logit of ``target``: an int, one int per image, or
``None`` for the model's top class on each image. Batched methods run ``batch_size`` model inputs
per call of the model; their rows are input-major.

``model`` is a :class:`Backend`: the little a method needs of a framework (the logits, the
gradient of the target logits with respect to the input and, for Grad-CAM, with respect to a
layer's output). The adapters ``iba_torch.baselines``, ``iba_tf.baselines`` and
``iba_jax.baselines`` each write one function ``make_backend(model, **backend_options) ->
Backend`` and get the seven methods for their framework's models from :func:`bind` (the same
functions, signatures and docstrings as here). :class:`NumpyBackend` wraps NumPy functions:

    >>> import numpy as np
    >>> from iba import baselines
    >>> w = np.random.default_rng(0).standard_normal((4, 4, 3, 10))  # a linear model of (H, W, C)
    >>> model = baselines.NumpyBackend(
    ...     logits=lambda x: np.einsum("nhwc,hwck->nk", x, w),
    ...     gradients=lambda x, labels: np.moveaxis(w[..., labels], -1, 0),
    ... )
    >>> x = np.random.default_rng(1).standard_normal((2, 4, 4, 3))
    >>> maps = baselines.saliency(model, x, target=3)
    >>> maps.shape, bool(np.allclose(maps, np.abs(w[..., 3]).max(axis=-1)))
    ((2, 4, 4), True)

How the channels are reduced to one value per pixel:

- :func:`saliency`, :func:`smoothgrad`: ``|gradient|``, the maximum over channels (Simonyan et
  al.; the IBA paper's code), or the sum with ``reduce="sum"``.
- :func:`gradient_x_input`, :func:`integrated_gradients`: the signed sum over channels, so a map
  sums to the method's total attribution (IG's completeness; what sensitivity-n correlates).
- :func:`occlusion`: one output difference per patch, shared by all channels (not summed).
- :func:`grad_cam`: one value per position of the layer's feature map, upsampled.
- :func:`random`: uniform noise, seeded; the model is not called.

The inputs of the model (path points, noisy and occluded copies) are built from the backend's own
arrays (``from_numpy``, ``take``, ``+`` and ``*``), so they stay on the framework's device; the
gradients and logits come back as NumPy arrays and are summed and reduced here.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from iba import targets
from iba.heatmap import resize

INTEGRATION_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
                       "gausslegendre")  # fmt: skip
REDUCTIONS = ("max", "sum")
IMAGE_LAYOUTS = ("channels_first", "channels_last")


class Backend:
    """A classifier as the methods see it; each adapter subclasses it for its framework.

    A method runs inside ``session()``, takes its images from ``images(x)`` and its target,
    baseline and noise through ``numpy``; it builds model inputs from arrays of the framework
    (``from_numpy``, ``take``, and ``+``, ``-``, ``*`` between them) and gets NumPy arrays back
    from ``logits``, ``gradients`` and ``feature_gradients``.

    Attributes:
        layout: ``"channels_first"`` or ``"channels_last"``: the images' (and Grad-CAM features').
        layer: the name of the layer Grad-CAM explains (for error messages).
    """

    layout: str = "channels_last"
    layer: str | None = None

    def session(self) -> contextlib.AbstractContextManager:
        """The context one call of a method runs in (e.g. the model in eval mode, restored on
        exit, also when the method raises)."""
        return contextlib.nullcontext()

    def images(self, x: Any) -> np.ndarray:
        """The images ``x`` as a NumPy array in the model's floating dtype (checked afterwards by
        :func:`check_images`)."""
        return np.asarray(x)

    def numpy(self, value: Any) -> Any:
        """A framework array (a target, baseline or noise) as a NumPy array; others as they are."""
        return value

    def from_numpy(self, a: np.ndarray) -> Any:
        """``a`` (floating, already in the images' dtype) as an array of the framework."""
        return a

    def take(self, x: Any, index: slice | np.ndarray) -> Any:
        """The rows ``index`` (a slice or integer indices) of a framework array ``x``."""
        return x[index]

    def logits(self, x: Any) -> Any:
        """The model's outputs on ``x`` as a NumPy array ``(n, n_classes)``, no gradient taken.

        An output that is not an array is returned as it is (the methods report its type).
        """
        raise NotImplementedError

    def logits_shape(self, x: Any) -> tuple[int, ...] | str:
        """The shape of ``logits(x)`` (the type name of a non-array output); override to infer
        it without running the model."""
        out = self.logits(x)
        return tuple(out.shape) if isinstance(out, np.ndarray) else type(out).__name__

    def gradients(self, x: Any, labels: np.ndarray) -> np.ndarray:
        """``d sum_i logits(x)[i, labels[i]] / d x`` as a NumPy array of ``x``'s shape."""
        raise NotImplementedError

    def feature_gradients(self, x: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(A, d sum_i logits(x)[i, labels[i]] / d A)`` with ``A`` the output of ``layer``."""
        raise NotImplementedError(f"{type(self).__name__} does not provide Grad-CAM's gradients")

    def standard_normal(self, shape: tuple[int, ...], seed: int | None) -> np.ndarray:
        """SmoothGrad's standard-normal draws ``(N, n_samples, *image)``: :func:`smoothgrad_noise`."""
        return smoothgrad_noise(shape, seed, self.layout)


class NumpyBackend(Backend):
    """A :class:`Backend` of NumPy functions ``logits(x)`` and ``gradients(x, labels)`` (and
    ``feature_gradients(x, labels)`` for Grad-CAM), on images of ``layout``."""

    def __init__(
        self,
        logits: Callable[[np.ndarray], np.ndarray],
        gradients: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        feature_gradients: Callable[[np.ndarray, np.ndarray], tuple] | None = None,
        *,
        layout: str = "channels_last",
        layer: str | None = None,
    ):
        self.layout = check_image_layout(layout)
        self.layer = layer
        self._logits = logits
        self._gradients = gradients
        self._feature_gradients = feature_gradients

    def logits(self, x: np.ndarray) -> Any:
        out = self._logits(x)
        return np.asarray(out) if hasattr(out, "__array__") else out

    def gradients(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self._gradients is None:
            raise TypeError("this NumpyBackend has no gradients function")
        return np.asarray(self._gradients(x, labels))

    def feature_gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._feature_gradients is None:
            raise TypeError("this NumpyBackend has no feature_gradients function (for Grad-CAM)")
        features, grads = self._feature_gradients(x, labels)
        return np.asarray(features), np.asarray(grads)


# -- checks ---------------------------------------------------------------------------------------


def check_image_layout(layout: str) -> str:
    """``layout`` if it is an image layout, else a ValueError that lists them."""
    if layout not in IMAGE_LAYOUTS:
        raise ValueError(
            f"unknown layout {layout!r}; image layouts are: {', '.join(IMAGE_LAYOUTS)}"
        )
    return layout


def _axes(layout: str) -> tuple[int, tuple[int, int]]:
    """``(channel axis, spatial axes)`` of a batch ``(N, *image)`` of ``layout``."""
    return (1, (2, 3)) if check_image_layout(layout) == "channels_first" else (3, (1, 2))


def check_images(x: Any, layout: str) -> np.ndarray:
    """``x`` as a floating ``(N, *image)`` array of ``layout``; raise if empty, not 4-D or not finite."""
    axes = "(N, C, H, W)" if check_image_layout(layout) == "channels_first" else "(N, H, W, C)"
    images = np.asarray(x)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"x must be a non-empty batch of images {axes}, got shape {images.shape}; "
            "add a batch axis with x[None]"
        )
    if not np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float64)
    if not np.all(np.isfinite(images)):
        raise ValueError("x holds NaN or infinite values; check the input data")
    return images


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; a ValueError naming ``name`` otherwise."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_logits(out: Any, n: int) -> np.ndarray:
    """``out`` if it is an ``(n, n_classes)`` array; else a ValueError that describes it."""
    _check_logits_shape(tuple(out.shape) if isinstance(out, np.ndarray) else type(out).__name__, n)
    return out


def _check_logits_shape(shape: tuple[int, ...] | str, n: int) -> int:
    """``n_classes`` of logits of ``shape`` (a type name for an output that is no array)."""
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[0] != n:
        raise ValueError(
            f"the model must return logits (n, n_classes) for a batch of n = {n}, got {shape}"
        )
    return int(shape[1])


def check_reduce(reduce: str) -> str:
    """``reduce`` if it is a known reduction over channels."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; reductions are: {', '.join(REDUCTIONS)}")
    return reduce


def check_feature_map(shape: tuple, n: int | None, layer: str | None, layout: str) -> None:
    """Raise unless ``shape`` is a batch of ``n`` feature maps of ``layout`` (Grad-CAM's)."""
    shape = tuple(shape)
    if len(shape) != 4 or (n is not None and shape[0] != n):
        axes = "(N, C, h, w)" if check_image_layout(layout) == "channels_first" else "(N, h, w, C)"
        words = layout.replace("_", "-")
        raise ValueError(
            f"layer {layer!r} returns features of shape {shape}; Grad-CAM needs a convolutional "
            f"layer with {words} output {axes}"
        )


# -- building blocks ------------------------------------------------------------------------------


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices of ``batch_size`` rows (the last one shorter) that cover ``range(n)``."""
    size = check_positive_int("batch_size", batch_size)
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def reduce_channels(values: np.ndarray, reduce: str, layout: str) -> np.ndarray:
    """``(N, *image) -> (N, H, W)``: the maximum or the sum over the channel axis of ``layout``."""
    axis = _axes(layout)[0]
    if check_reduce(reduce) == "max":
        return values.max(axis=axis)
    return values.sum(axis=axis)


def integration_points(steps: int, method: str = "riemann_right") -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` of the path integral over ``[0, 1]`` (Captum's methods and names).

    ``riemann_right`` (the IG paper's sum, ``alpha = k / steps`` for ``k = 1 .. steps``),
    ``riemann_left``, ``riemann_middle``, ``riemann_trapezoid`` or ``gausslegendre``.
    """
    n = check_positive_int("steps", steps, minimum=2)
    weights = np.full(n, 1.0 / n)
    if method == "riemann_right":
        alphas = np.linspace(1.0 / n, 1.0, n)
    elif method == "riemann_left":
        alphas = np.linspace(0.0, 1.0 - 1.0 / n, n)
    elif method == "riemann_middle":
        alphas = np.linspace(0.5 / n, 1.0 - 0.5 / n, n)
    elif method == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        weights[0] /= 2
        weights[-1] /= 2
    elif method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas, weights = 0.5 * (nodes + 1), 0.5 * w
    else:
        raise ValueError(
            f"unknown integration method {method!r}; methods are: {', '.join(INTEGRATION_METHODS)}"
        )
    return alphas, weights


def baseline_images(images: np.ndarray, baseline: str | float | Any, layout: str) -> np.ndarray:
    """IG's start ``x'`` for every image: ``"mean"`` (each image's per-channel mean), a number or
    an array that broadcasts to ``images``."""
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"unknown baseline {baseline!r}; use 'mean', a number or an array")
        means = images.mean(axis=_axes(layout)[1], keepdims=True)
        return np.ascontiguousarray(np.broadcast_to(means, images.shape))
    value = np.asarray(baseline, dtype=images.dtype)
    try:
        return np.ascontiguousarray(np.broadcast_to(value, images.shape))
    except ValueError:
        raise ValueError(
            f"baseline of shape {value.shape} does not broadcast to the images {images.shape}"
        ) from None


def smoothgrad_noise(
    shape: tuple[int, ...], seed: int | None = 0, layout: str = "channels_last"
) -> np.ndarray:
    """SmoothGrad's standard-normal draws ``(N, n_samples, *image)`` (float64) from
    ``np.random.default_rng(seed)``; ``seed=None`` draws fresh entropy.

    Drawn in the channels-last order ``(N, n_samples, H, W, C)`` and moved to ``(N, n_samples, C,
    H, W)`` for ``layout="channels_first"``: the same seed gives every pixel and channel the same
    draw on every machine, backend and layout.
    """
    rng = np.random.default_rng(seed)
    if check_image_layout(layout) == "channels_first":
        n, n_samples, channels, height, width = shape
        return np.moveaxis(rng.standard_normal((n, n_samples, height, width, channels)), -1, 2)
    return rng.standard_normal(shape)


def noise_std(images: np.ndarray, noise_level: float) -> np.ndarray:
    """SmoothGrad's noise std per image: ``noise_level * (x.max() - x.min())``, ``(N,)``."""
    if not np.isfinite(noise_level) or noise_level < 0:
        raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
    flat = images.reshape(len(images), -1)
    return noise_level * (flat.max(axis=1) - flat.min(axis=1))


def patch_grid(height: int, width: int, patch: int) -> tuple[np.ndarray, int]:
    """``(H, W)`` patch index of every pixel (patches row-major, stride = ``patch``) and the
    number of patches; the last row / column of patches is smaller where ``patch`` does not
    divide the image."""
    size = check_positive_int("patch", patch)
    if size > min(height, width):
        raise ValueError(f"patch {size} is larger than the {height}x{width} image")
    cols = -(-width // size)
    rows = -(-height // size)
    index = (np.arange(height) // size)[:, None] * cols + (np.arange(width) // size)[None]
    return index, rows * cols


def grad_cam_maps(
    features: np.ndarray, grads: np.ndarray, layout: str, relu: bool = True
) -> np.ndarray:
    """``ReLU(sum_c w_c A_c)``, ``(N, h, w)``, with ``w_c`` the spatial mean of ``d logit / d A_c``
    (Selvaraju et al., 2017) for feature maps ``A`` of ``layout``."""
    channel, spatial = _axes(layout)
    cam = (grads.mean(axis=spatial, keepdims=True) * features).sum(axis=channel)
    return np.maximum(cam, 0) if relu else cam


def _per_row(values: np.ndarray) -> np.ndarray:
    return values.reshape(-1, 1, 1, 1)


def _add_rows(total: np.ndarray, image: np.ndarray, values: np.ndarray) -> None:
    """``total[image[r]] += values[r]`` for sorted ``image`` (input-major rows)."""
    starts = np.flatnonzero(np.r_[True, image[1:] != image[:-1]])
    total[image[starts]] += np.add.reduceat(values, starts, axis=0)


_ADAPTERS_NOTE = """

    In the adapters (``iba_torch.baselines``, ``iba_tf.baselines``, ``iba_jax.baselines``, see
    :func:`bind`) ``model`` is the framework's model, ``x``, ``target``, ``baseline`` and
    ``noise`` may be the framework's arrays, and ``x`` is cast to the model's floating dtype.
    PyTorch images are channels-first ``(N, C, H, W)``, Flax images channels-last
    ``(N, H, W, C)``; Keras takes the backend option ``layout``: ``"channels_last"`` or
    ``"channels_first"`` (default ``keras.config.image_data_format()``). Grad-CAM takes the
    backend option ``layer`` (required), see :func:`grad_cam`.
    """


def _method(body: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``body(model, x, target, **options)`` run in ``model.session()``, for a Backend ``model``;
    its docstring with the note on the adapters."""

    @functools.wraps(body)
    def method(model: Backend, x: Any, target: Any = None, **options: Any) -> np.ndarray:
        if not isinstance(model, Backend):
            raise TypeError(
                f"model must be an iba.baselines.Backend, got {type(model).__name__}; the "
                "adapters iba_torch.baselines, iba_tf.baselines and iba_jax.baselines take "
                "framework models"
            )
        with model.session():
            return body(model, x, target, **options)

    method.__doc__ = (body.__doc__ or "").rstrip() + _ADAPTERS_NOTE
    return method


def _prepare(model: Backend, x: Any) -> tuple[np.ndarray, Any]:
    images = check_images(model.images(x), model.layout)
    return images, model.from_numpy(images)


def _all_logits(model: Backend, images: Any, n: int, batch_size: int) -> np.ndarray:
    out = []
    for index in batches(n, batch_size):
        out.append(check_logits(model.logits(model.take(images, index)), index.stop - index.start))
    return np.concatenate(out)


def _labels(model: Backend, images: Any, n: int, target: Any, batch_size: int) -> np.ndarray:
    """The checked class per input; ``None`` becomes the model's top class on each image."""
    if target is None:
        return _all_logits(model, images, n, batch_size).argmax(axis=1)
    labels = targets.labels(model.numpy(target), n)
    check_positive_int("batch_size", batch_size)
    n_classes = _check_logits_shape(model.logits_shape(model.take(images, slice(0, 1))), 1)
    targets.check_range(labels, n_classes)
    return labels


def _gradients(
    model: Backend, rows: Callable[[slice], Any], labels: np.ndarray, batch_size: int
) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, d logit[label] / d input)`` for the model inputs ``rows(slice)``, a batch at a time."""
    for index in batches(len(labels), batch_size):
        yield index, np.asarray(model.gradients(rows(index), labels[index]))


# -- the methods ----------------------------------------------------------------------------------


@_method
def random(model: Backend, x: Any, target: Any = None, *, seed: int | None = 0) -> np.ndarray:
    """Uniform noise in ``[0, 1)`` per pixel, ``(N, H, W)``: the baseline every method must beat.

    ``seed`` seeds NumPy's generator (``None``: fresh entropy); the model is not called
    (``target`` is ignored).
    """
    images, _ = _prepare(model, x)
    spatial = _axes(model.layout)[1]
    shape = (len(images), images.shape[spatial[0]], images.shape[spatial[1]])
    return np.random.default_rng(seed).random(shape)


@_method
def saliency(
    model: Backend, x: Any, target: Any = None, *, reduce: str = "max", batch_size: int = 64
) -> np.ndarray:
    """Saliency map: ``|d logit[target] / d x|``, reduced over channels (Simonyan et al., 2014).

    Args:
        reduce: ``"max"`` (the maximum over channels, as in the paper and the IBA paper's code)
            or ``"sum"``. Captum's ``Saliency`` returns the per-channel ``|gradient|``.
        batch_size: images per call of the model.
    """
    check_reduce(reduce)
    images, tensors = _prepare(model, x)
    labels = _labels(model, tensors, len(images), target, batch_size)
    maps = [
        reduce_channels(np.abs(grad), reduce, model.layout)
        for _, grad in _gradients(model, lambda s: model.take(tensors, s), labels, batch_size)
    ]
    return np.concatenate(maps).astype(images.dtype, copy=False)


@_method
def gradient_x_input(
    model: Backend, x: Any, target: Any = None, *, batch_size: int = 64
) -> np.ndarray:
    """Gradient x input, summed over channels (signed; Shrikumar et al., 2016).

    Args:
        batch_size: images per call of the model.
    """
    images, tensors = _prepare(model, x)
    labels = _labels(model, tensors, len(images), target, batch_size)
    maps = [
        reduce_channels(grad * images[index], "sum", model.layout)
        for index, grad in _gradients(model, lambda s: model.take(tensors, s), labels, batch_size)
    ]
    return np.concatenate(maps).astype(images.dtype, copy=False)


@_method
def integrated_gradients(
    model: Backend,
    x: Any,
    target: Any = None,
    *,
    steps: int = 50,
    baseline: str | float | Any = "mean",
    method: str = "riemann_right",
    batch_size: int = 50,
) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al., 2017), summed over channels (signed).

    ``(x - x') * sum_k w_k grad(x' + alpha_k (x - x'))`` with the gradients of the target's logit.

    Args:
        steps: points on the straight path from the baseline ``x'`` to ``x`` (50,
            docs/mathematics.md section 8).
        baseline: ``"mean"`` (each image's per-channel mean, the IBA paper's choice), a number,
            or an array that broadcasts to ``x``.
        method: the quadrature, see :func:`integration_points` (``"riemann_right"``: the paper's
            sum; ``"gausslegendre"``: Captum's default).
        batch_size: path points per call of the model (rows of all images, input-major).
    """
    alphas, weights = integration_points(steps, method)
    images, tensors = _prepare(model, x)
    start = baseline_images(images, model.numpy(baseline), model.layout)
    delta = images - start
    n_steps = len(alphas)
    alphas, weights = alphas.astype(images.dtype), weights.astype(images.dtype)
    labels = _labels(model, tensors, len(images), target, batch_size)
    start_t, delta_t = model.from_numpy(start), model.from_numpy(delta)

    def rows(index: slice) -> Any:
        r = np.arange(index.start, index.stop)
        image, step = r // n_steps, r % n_steps
        along = model.from_numpy(_per_row(alphas[step]))
        return model.take(start_t, image) + along * model.take(delta_t, image)

    total = np.zeros_like(images)
    for index, grad in _gradients(model, rows, np.repeat(labels, n_steps), batch_size):
        r = np.arange(index.start, index.stop)
        _add_rows(total, r // n_steps, grad * _per_row(weights[r % n_steps]))
    return reduce_channels(total * delta, "sum", model.layout)


@_method
def smoothgrad(
    model: Backend,
    x: Any,
    target: Any = None,
    *,
    n_samples: int = 50,
    noise_level: float = 0.15,
    reduce: str = "max",
    seed: int | None = 0,
    noise: Any = None,
    batch_size: int = 50,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al., 2017): the mean ``|gradient|`` over noisy copies, reduced over
    channels like :func:`saliency` (what Captum's ``NoiseTunnel(Saliency)`` computes per channel).

    Args:
        n_samples: noisy copies per image (50).
        noise_level: the noise std as a share of each image's range: ``std = noise_level *
            (x.max() - x.min())`` (0.15, docs/mathematics.md section 8).
        reduce: ``"max"`` or ``"sum"`` over channels of the mean ``|gradient|``.
        seed: seeds the draws, :func:`smoothgrad_noise` (NumPy, drawn channels-last: the same
            noise for every framework and layout); ``None`` draws fresh ones.
        noise: the standard-normal draws themselves, ``(N, n_samples, *image)`` in the images'
            layout (instead of ``seed``), scaled by each image's std.
        batch_size: noisy copies per call of the model (input-major).
    """
    check_reduce(reduce)
    n_samples = check_positive_int("n_samples", n_samples)
    images, tensors = _prepare(model, x)
    n = len(images)
    shape = (n, n_samples, *images.shape[1:])
    std = noise_std(images, noise_level)
    draws = model.standard_normal(shape, seed) if noise is None else np.asarray(model.numpy(noise))
    if draws.shape != shape:
        raise ValueError(f"noise has shape {draws.shape}; expected {shape}")
    draws = draws.astype(images.dtype).reshape(n * n_samples, *images.shape[1:])
    labels = _labels(model, tensors, n, target, batch_size)

    def rows(index: slice) -> Any:
        image = np.arange(index.start, index.stop) // n_samples
        scale = model.from_numpy(_per_row(std[image]))
        return model.take(tensors, image) + scale * model.from_numpy(draws[index])

    total = np.zeros_like(images)
    for index, grad in _gradients(model, rows, np.repeat(labels, n_samples), batch_size):
        _add_rows(total, np.arange(index.start, index.stop) // n_samples, np.abs(grad))
    return reduce_channels(total / n_samples, reduce, model.layout)


@_method
def occlusion(
    model: Backend,
    x: Any,
    target: Any = None,
    *,
    patch: int = 8,
    baseline: float | str = 0.0,
    batch_size: int = 64,
) -> np.ndarray:
    """Occlusion (Zeiler & Fergus, 2014): the drop of the target's logit when a ``patch`` x
    ``patch`` square (all channels) is set to ``baseline``; stride = ``patch``.

    Every pixel of a patch gets the patch's drop (one value per pixel, not summed over channels).
    Where ``patch`` does not divide the image, the last row / column of patches is smaller (Captum
    leaves those pixels at 0 instead). The IBA paper uses 8x8 and 14x14 patches.

    Args:
        baseline: the value of the occluded pixels, or ``"mean"``: each image's per-channel mean
            (the IBA paper's occlusion, and Captum's with that baseline; docs/metrics.md).
        batch_size: occluded images per call of the model.
    """
    check_positive_int("batch_size", batch_size)
    if isinstance(baseline, str) and baseline != "mean":
        raise ValueError(
            f"baseline must be a number or 'mean' (each image's per-channel mean), got {baseline!r}"
        )
    fill = None if isinstance(baseline, str) else float(model.numpy(baseline))
    images, tensors = _prepare(model, x)
    n = len(images)
    channel, spatial = _axes(model.layout)
    if fill is None:  # (N, C, 1, 1) or (N, 1, 1, C): per image and channel
        fills = images.mean(axis=spatial, keepdims=True, dtype=np.float64).astype(images.dtype)
    else:
        fills = np.full((n, 1, 1, 1), fill, dtype=images.dtype)
    grid, n_tiles = patch_grid(images.shape[spatial[0]], images.shape[spatial[1]], patch)
    logits = _all_logits(model, tensors, n, batch_size)
    if target is None:
        labels = logits.argmax(axis=1)
    else:
        labels = targets.labels(model.numpy(target), n)
        targets.check_range(labels, logits.shape[1])
    reference = logits[np.arange(n), labels]
    row_labels = np.repeat(labels, n_tiles)
    drops = np.empty(n * n_tiles, dtype=np.result_type(images.dtype, logits.dtype))
    for index in batches(n * n_tiles, batch_size):
        r = np.arange(index.start, index.stop)
        image, tile = r // n_tiles, r % n_tiles
        keep = np.expand_dims(grid[None] != tile[:, None, None], channel).astype(images.dtype)
        # x * keep + fill * (1 - keep) is x or fill exactly (x is finite, keep is 0 or 1)
        occluded = model.take(tensors, image) * model.from_numpy(keep) + model.from_numpy(
            fills[image] * (1 - keep)
        )
        scores = check_logits(model.logits(occluded), len(r))[np.arange(len(r)), row_labels[r]]
        drops[index] = reference[image] - scores
    return drops.reshape(n, n_tiles)[:, grid].astype(images.dtype, copy=False)


@_method
def grad_cam(
    model: Backend, x: Any, target: Any = None, *, relu: bool = True, batch_size: int = 64
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) at a convolutional layer, upsampled to the input.

    ``ReLU(sum_c w_c A_c)`` with ``A`` the layer's output ``(C, h, w)`` and ``w_c`` the spatial
    mean of ``d logit[target] / d A_c`` (:func:`grad_cam_maps`); resized bilinearly with
    half-pixel centres (:func:`iba.resize`, PyTorch's ``align_corners=False``), not rescaled.

    Args:
        relu: apply the ReLU (``False`` returns the signed map).
        batch_size: images per call of the model.
        layer: the layer (a backend option: a :class:`Backend` has its own ``layer``); its
            output must be a feature map in the images' layout, ``(N, C, h, w)`` or
            ``(N, h, w, C)``. PyTorch: a module or its dotted name from ``named_modules()``
            (its output or its first item). Keras: a top-level layer of a Functional or
            Sequential model, or its name; the model is split there (no skip connection may
            pass around the layer). Flax: a module path, a tuple (``("Block_1",)``, for NNX
            also list indices: ``("blocks", 1)``) or a ``/``-joined string (``"blocks/1"``);
            the module must run once per forward pass.
    """
    images, tensors = _prepare(model, x)
    n = len(images)
    labels = _labels(model, tensors, n, target, batch_size)
    maps = []
    for index in batches(n, batch_size):
        features, grads = model.feature_gradients(model.take(tensors, index), labels[index])
        features, grads = np.asarray(features), np.asarray(grads)
        check_feature_map(features.shape, index.stop - index.start, model.layer, model.layout)
        maps.append(grad_cam_maps(features, grads, model.layout, relu))
    cams = np.concatenate(maps)
    spatial = _axes(model.layout)[1]
    size = (images.shape[spatial[0]], images.shape[spatial[1]])
    return resize(cams, size).astype(cams.dtype)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "random": random,
    "saliency": saliency,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "occlusion": occlusion,
    "grad_cam": grad_cam,
}
"""The baselines by name (docs/mathematics.md section 8); the adapters' ``grad_cam`` needs
``layer=``."""


# -- the adapters ---------------------------------------------------------------------------------

LAYER_OPTION = "layer"
"""The backend option that names the layer Grad-CAM explains; the other methods do not take it."""


class Methods(NamedTuple):
    """The seven methods on the models of one framework, as :func:`bind` makes them."""

    random: Callable[..., np.ndarray]
    saliency: Callable[..., np.ndarray]
    gradient_x_input: Callable[..., np.ndarray]
    integrated_gradients: Callable[..., np.ndarray]
    smoothgrad: Callable[..., np.ndarray]
    occlusion: Callable[..., np.ndarray]
    grad_cam: Callable[..., np.ndarray]


ADAPTER_EXPORTS = (
    "BASELINES",
    "INTEGRATION_METHODS",
    "REDUCTIONS",
    "integration_points",
    "make_backend",
    *Methods._fields,
)
"""What an adapter's ``baselines`` module exports (its ``__all__``): the methods, ``BASELINES``,
its ``make_backend`` and this module's ``INTEGRATION_METHODS``, ``REDUCTIONS`` and
``integration_points``."""


def bind(make_backend: Callable[..., Backend]) -> Methods:
    """The methods of this module on a framework's models, for an adapter to publish.

    ``make_backend(model, *, layer=None, **backend_options) -> Backend`` checks ``model`` (a
    TypeError that names the framework's model type) and wraps it; its keyword-only parameters
    are the backend options. Every method of the result is the method of this module, with its
    name, docstring and signature; ``model`` is annotated like ``make_backend``'s first parameter
    and the backend options are added as keyword-only parameters: ``layer`` (:data:`LAYER_OPTION`)
    to :func:`grad_cam` only, where it is required, the others (Keras' ``layout``) to all::

        _METHODS = bind(make_backend)
        random, saliency, gradient_x_input, integrated_gradients, smoothgrad, occlusion, grad_cam = (
            _METHODS
        )
        BASELINES = _METHODS._asdict()
        __all__ = [*ADAPTER_EXPORTS]

    ``saliency(model, x, target, layout=...)`` is then ``iba.baselines.saliency(
    make_backend(model, layout=...), x, target)``.
    """
    factory = list(inspect.signature(make_backend).parameters.values())
    options = [p for p in factory[1:] if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return Methods(
        **{
            name: _bound(method, make_backend, factory[0].annotation, options)
            for name, method in BASELINES.items()
        }
    )


def _bound(
    method: Callable[..., np.ndarray],
    make_backend: Callable[..., Backend],
    model_type: Any,
    options: list[inspect.Parameter],
) -> Callable[..., np.ndarray]:
    """``method`` on the models ``make_backend`` takes, with the backend ``options`` it uses."""
    if method is grad_cam:
        taken = [_required(p) if p.name == LAYER_OPTION else p for p in options]
    else:
        taken = [p for p in options if p.name != LAYER_OPTION]
    shared = list(inspect.signature(method).parameters.values())
    parameters = [shared[0].replace(annotation=model_type), *shared[1:], *taken]
    # keyword-only parameters without a default (Grad-CAM's layer) first, then in their order
    parameters.sort(key=lambda p: (p.kind, p.kind is p.KEYWORD_ONLY and p.default is not p.empty))
    signature = inspect.signature(method).replace(parameters=parameters)
    names = [p.name for p in taken]

    @functools.wraps(method)
    def bound(*args: Any, **kwargs: Any) -> np.ndarray:
        call = signature.bind(*args, **kwargs)
        backend_options = {
            name: call.arguments.pop(name) for name in names if name in call.arguments
        }
        backend = make_backend(call.args[0], **backend_options)
        return method(backend, *call.args[1:], **call.kwargs)

    bound.__signature__ = signature  # type: ignore[attr-defined]
    bound.__module__ = make_backend.__module__
    return bound


def _required(option: inspect.Parameter) -> inspect.Parameter:
    """``option`` without its default (and without ``| None`` in a string annotation)."""
    annotation = option.annotation
    if isinstance(annotation, str) and annotation.endswith(" | None"):
        annotation = annotation.removesuffix(" | None")
    return option.replace(default=option.empty, annotation=annotation)


__all__ = [
    "ADAPTER_EXPORTS",
    "BASELINES",
    "IMAGE_LAYOUTS",
    "INTEGRATION_METHODS",
    "LAYER_OPTION",
    "REDUCTIONS",
    "Backend",
    "Methods",
    "NumpyBackend",
    "baseline_images",
    "batches",
    "bind",
    "check_feature_map",
    "check_image_layout",
    "check_images",
    "check_logits",
    "check_positive_int",
    "check_reduce",
    "gradient_x_input",
    "grad_cam",
    "grad_cam_maps",
    "integrated_gradients",
    "integration_points",
    "noise_std",
    "occlusion",
    "patch_grid",
    "random",
    "reduce_channels",
    "saliency",
    "smoothgrad",
    "smoothgrad_noise",
]
