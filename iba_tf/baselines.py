"""Attribution baselines for Keras 3 image classifiers, to compare IBA with (SPEC section 8).

The methods of ``iba.baselines`` (the NumPy reference defines them and how the channels are
reduced) on a ``keras.Model``, on the TensorFlow, JAX and torch backends:

    >>> import keras, numpy as np
    >>> from iba_tf import baselines
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10)])
    >>> x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    >>> baselines.saliency(model, x, target=3).shape
    (2, 8, 8)
    >>> baselines.grad_cam(model, x, target=[3, 4], layer="conv").shape
    (2, 8, 8)

Every method is ``method(model, x, target=None, **options) -> np.ndarray``: a batch ``x`` of
``N`` images (a NumPy array or a tensor, cast to the model's input dtype) in ``layout``
(``"channels_last"`` ``(N, H, W, C)`` or ``"channels_first"`` ``(N, C, H, W)``; default
``keras.config.image_data_format()``) gives one map per image, ``(N, H, W)``. The score explained
is the model's output (the logit) of ``target``: an int, one int per image, or ``None`` for the
model's top class on each image.

The gradient of the target logits with respect to the input comes from the running backend
(``iba_tf._backend.make_input_gradient``: a ``GradientTape`` in a ``tf.function``, ``jax.grad``
in ``jax.jit``, torch autograd), compiled once per model and kept while the model lives. The
model runs with ``training=False``; its weights, trainable flags and state are not changed.

Grad-CAM splits a Functional or Sequential model at the layer: a sub-model from the input to the
layer's output gives the features ``A``, a sub-model from ``A`` to the logits their gradient.
That needs a top-level layer with one output that every path from the input to the logits passes
through (no skip connection around it, not inside a nested model); subclassed models are not
supported.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from iba import baselines as reference
from iba.baselines import INTEGRATION_METHODS, REDUCTIONS, integration_points
from iba_tf import _backend, _graph

__all__ = [
    "BASELINES",
    "INTEGRATION_METHODS",
    "REDUCTIONS",
    "gradient_x_input",
    "grad_cam",
    "integrated_gradients",
    "integration_points",
    "occlusion",
    "random",
    "saliency",
    "smoothgrad",
]

_COMPILED: weakref.WeakKeyDictionary[keras.Model, dict] = weakref.WeakKeyDictionary()


def _cached(model: keras.Model, key: Any, make: Callable[[], Any]) -> Any:
    """``make()``, kept for ``model`` until it is garbage (values must not hold ``model``)."""
    entries = _COMPILED.setdefault(model, {})
    if key not in entries:
        entries[key] = make()
    return entries[key]


def _numpy(value: Any) -> Any:
    """Backend tensors as NumPy arrays (targets, baselines, noise); anything else as it is."""
    return ops.convert_to_numpy(value) if ops.is_tensor(value) else value


def _target_gradient(runner: keras.Model) -> Callable:
    """``(x, labels) -> d sum_i runner(x)[i, labels[i]] / d x`` (``runner`` held weakly)."""
    ref = weakref.ref(runner)

    def score(x: Any, labels: Any) -> Any:
        out = ref()(x, training=False)
        return ops.sum(ops.take_along_axis(out, ops.expand_dims(labels, 1), axis=1))

    return _backend.make_input_gradient(score, runner.variables)


class _Keras(reference.Backend):
    """A ``keras.Model`` for ``iba.baselines``, in its input dtype."""

    def __init__(self, model: keras.Model, layout: str, dtype: str):
        self.model, self.layout, self.dtype = model, layout, dtype
        self.prefix: keras.Model | None = None
        self.head: keras.Model | None = None

    def from_numpy(self, a: np.ndarray) -> Any:
        return ops.convert_to_tensor(a, dtype=self.dtype)

    def take(self, x: Any, index: slice | np.ndarray) -> Any:
        return x[index] if isinstance(index, slice) else ops.take(x, index, axis=0)

    def logits(self, x: Any) -> Any:
        with _backend.no_grad():
            return _numpy(self.model(x, training=False))

    def gradients(self, x: Any, labels: np.ndarray) -> np.ndarray:
        gradient = _cached(self.model, "input", lambda: _target_gradient(self.model))
        return ops.convert_to_numpy(gradient(x, ops.convert_to_tensor(labels.astype("int32"))))

    def feature_gradients(self, x: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        head = self.head
        gradient = _cached(self.model, ("head", self.layer), lambda: _target_gradient(head))
        with _backend.no_grad():
            features = self.prefix(x, training=False)
        grad = gradient(features, ops.convert_to_tensor(labels.astype("int32")))
        return ops.convert_to_numpy(features), ops.convert_to_numpy(grad)


def _dtype(model: keras.Model) -> str:
    """The dtype images are given in: the model's input's if floating, else its variables'."""
    try:
        inputs = model.inputs if _graph.is_graph(model) else None
    except (AttributeError, ValueError):
        inputs = None
    if inputs and len(inputs) == 1:
        dtype = keras.backend.standardize_dtype(inputs[0].dtype)
        if "float" in dtype:
            return dtype
    return keras.backend.standardize_dtype(model.variable_dtype)


def _prepare(model: Any, x: Any, layout: str | None) -> tuple[_Keras, np.ndarray]:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    layout = reference.check_image_layout(layout or keras.config.image_data_format())
    dtype = _dtype(model)
    images = np.asarray(_numpy(x))
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:  # bfloat16: no NumPy dtype; the backend casts from float32
        np_dtype = np.dtype(np.float32)
    if np.issubdtype(images.dtype, np.number):
        images = images.astype(np_dtype, copy=False)
    return _Keras(model, layout, dtype), images


def _run(fn: Callable[..., np.ndarray], model: Any, x: Any, target: Any, /, **options: Any):
    layout = options.pop("layout")
    backend, images = _prepare(model, x, layout)
    return fn(backend, images, _numpy(target), **options)


def random(
    model: keras.Model, x: Any, target: Any = None, *, seed: int = 0, layout: str | None = None
) -> np.ndarray:
    """Uniform noise in ``[0, 1)`` per pixel, ``(N, H, W)``: the baseline every method must beat.

    ``seed`` seeds NumPy's generator; the model is not called (``target`` is ignored).
    """
    return _run(reference.random, model, x, None, seed=seed, layout=layout)


def saliency(
    model: keras.Model,
    x: Any,
    target: Any = None,
    *,
    reduce: str = "max",
    batch_size: int = 64,
    layout: str | None = None,
) -> np.ndarray:
    """Saliency map: ``|d logit[target] / d x|``, reduced over channels (Simonyan et al., 2014).

    Args:
        reduce: ``"max"`` (the maximum over channels, as in the paper and the IBA paper's code)
            or ``"sum"``.
    """
    reference.check_reduce(reduce)
    return _run(
        reference.saliency, model, x, target, reduce=reduce, batch_size=batch_size, layout=layout
    )


def gradient_x_input(
    model: keras.Model,
    x: Any,
    target: Any = None,
    *,
    batch_size: int = 64,
    layout: str | None = None,
) -> np.ndarray:
    """Gradient x input, summed over channels (signed; Shrikumar et al., 2016)."""
    return _run(reference.gradient_x_input, model, x, target, batch_size=batch_size, layout=layout)


def integrated_gradients(
    model: keras.Model,
    x: Any,
    target: Any = None,
    *,
    steps: int = 50,
    baseline: str | float | Any = "mean",
    method: str = "riemann_right",
    batch_size: int = 50,
    layout: str | None = None,
) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al., 2017), summed over channels (signed).

    ``(x - x') * sum_k w_k grad(x' + alpha_k (x - x'))`` with the gradients of the target's logit.

    Args:
        steps: points on the straight path from the baseline ``x'`` to ``x`` (50, SPEC section 8).
        baseline: ``"mean"`` (each image's per-channel mean, the IBA paper's choice), a number,
            or an array / tensor that broadcasts to ``x``.
        method: the quadrature, see :func:`integration_points` (``"riemann_right"``: the paper's
            sum; ``"gausslegendre"``: Captum's default).
        batch_size: path points per call of the model (rows of all images, input-major).
    """
    integration_points(steps, method)
    return _run(
        reference.integrated_gradients,
        model,
        x,
        target,
        steps=steps,
        baseline=_numpy(baseline),
        method=method,
        batch_size=batch_size,
        layout=layout,
    )


def smoothgrad(
    model: keras.Model,
    x: Any,
    target: Any = None,
    *,
    n_samples: int = 50,
    noise_level: float = 0.15,
    reduce: str = "max",
    seed: int | None = 0,
    noise: Any = None,
    batch_size: int = 50,
    layout: str | None = None,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al., 2017): the mean ``|gradient|`` over noisy copies, reduced over
    channels like :func:`saliency`.

    Args:
        n_samples: noisy copies per image (50).
        noise_level: the noise std as a share of each image's range: ``std = noise_level *
            (x.max() - x.min())`` (0.15, SPEC section 8).
        reduce: ``"max"`` or ``"sum"`` over channels of the mean ``|gradient|``.
        seed: seeds the draws, ``iba.baselines.smoothgrad_noise`` (drawn channels-last: the
            same noise on every Keras backend and layout, and in ``iba_torch`` and ``iba_jax``);
            ``None`` draws fresh ones.
        noise: the standard-normal draws themselves, ``(N, n_samples, *image)`` (instead of
            ``seed``), scaled by each image's std.
        batch_size: noisy copies per call of the model.
    """
    reference.check_reduce(reduce)
    return _run(
        reference.smoothgrad,
        model,
        x,
        target,
        n_samples=n_samples,
        noise_level=noise_level,
        reduce=reduce,
        seed=seed,
        noise=_numpy(noise),
        batch_size=batch_size,
        layout=layout,
    )


def occlusion(
    model: keras.Model,
    x: Any,
    target: Any = None,
    *,
    patch: int = 8,
    baseline: float = 0.0,
    batch_size: int = 64,
    layout: str | None = None,
) -> np.ndarray:
    """Occlusion (Zeiler & Fergus, 2014): the drop of the target's logit when a ``patch`` x
    ``patch`` square (all channels) is set to ``baseline``; stride = ``patch``.

    Every pixel of a patch gets the patch's drop; where ``patch`` does not divide the image, the
    last row / column of patches is smaller. The IBA paper uses 8x8 and 14x14 patches.
    """
    return _run(
        reference.occlusion,
        model,
        x,
        target,
        patch=patch,
        baseline=baseline,
        batch_size=batch_size,
        layout=layout,
    )


def _layer_output(model: keras.Model, layer: keras.layers.Layer) -> Any:
    """The output tensor of ``layer`` in the graph of ``model``; ``None`` if it is not a
    top-level layer of that graph with one output."""
    from keras.src.ops.function import make_node_key

    graph = getattr(model, "_functional", None) or model
    nodes = getattr(graph, "_nodes", ())
    for index, node in enumerate(layer._inbound_nodes):
        if make_node_key(layer, index) in nodes:
            outputs = node.output_tensors
            return outputs[0] if len(outputs) == 1 else None
    return None


def _split(model: keras.Model, layer: Any, layout: str) -> tuple[keras.Model, keras.Model]:
    """``(input -> layer output, layer output -> logits)`` of a Functional/Sequential model."""
    found = _graph.find_layer(model, layer)
    if not _graph.is_graph(model):
        raise ValueError(
            f"Grad-CAM splits the model at layer {found.name!r}, which needs a Functional or "
            f"Sequential model; {model.name!r} is a subclassed {type(model).__name__}"
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"model {model.name!r} has no inputs yet: build it with keras.Input (or call it on "
            "data) before Grad-CAM"
        )
    features = _layer_output(model, found)
    if features is None:
        names = ", ".join(
            lay.name for lay in model.layers if not isinstance(lay, keras.layers.InputLayer)
        )
        raise ValueError(
            f"layer {found.name!r} is not a top-level layer of {model.name!r} with one output "
            f"(a layer of a nested model, or one with several outputs); Grad-CAM takes one of: "
            f"{names}"
        )
    reference.check_feature_map(features.shape, None, found.name, layout)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
    prefix, head = _graph.submodel(inputs, features), _graph.submodel(features, outputs)
    if prefix is None or head is None:
        raise ValueError(
            f"cannot split model {model.name!r} at layer {found.name!r}: the layers after it "
            "must see the input only through its output (no skip connection around it); choose "
            "a layer that every path from the input to the logits passes through"
        )
    return prefix, head


def grad_cam(
    model: keras.Model,
    x: Any,
    target: Any = None,
    *,
    layer: str | keras.layers.Layer,
    relu: bool = True,
    batch_size: int = 64,
    layout: str | None = None,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) at a convolutional ``layer``, upsampled to the input.

    ``ReLU(sum_c w_c A_c)`` with ``A`` the layer's output and ``w_c`` the spatial mean of
    ``d logit[target] / d A_c``; resized bilinearly with half-pixel centres (``iba.resize``).

    Args:
        layer: a top-level layer of a Functional or Sequential model (object or name) whose
            output is a feature map in ``layout`` (``(N, h, w, C)`` for channels-last).
        relu: apply the ReLU (``False`` returns the signed map).
    """
    backend, images = _prepare(model, x, layout)
    name = _graph.find_layer(model, layer).name
    backend.layer = name
    backend.prefix, backend.head = _cached(
        model, ("split", name, backend.layout), lambda: _split(model, name, backend.layout)
    )
    return reference.grad_cam(backend, images, _numpy(target), relu=relu, batch_size=batch_size)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "random": random,
    "saliency": saliency,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "occlusion": occlusion,
    "grad_cam": grad_cam,
}
"""The baselines by name (SPEC section 8); ``grad_cam`` needs ``layer=``."""
