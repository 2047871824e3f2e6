"""Attribution baselines for Keras 3 image classifiers, to compare IBA with (docs/mathematics.md
section 8).

The seven methods of ``iba.baselines`` (defined there once: their options, docstrings and how
the channels are reduced) on a ``keras.Model``, on the TensorFlow, JAX and torch backends:

    >>> import keras, numpy as np
    >>> from iba_tf import baselines
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10)])
    >>> x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    >>> baselines.saliency(model, x, target=3).shape
    (2, 8, 8)
    >>> baselines.grad_cam(model, x, target=[3, 4], layer="conv").shape
    (2, 8, 8)

A batch ``x`` of ``N`` images (a NumPy array or a tensor, cast to the model's input dtype) is in
``layout`` (every method's option: ``"channels_last"`` ``(N, H, W, C)`` or ``"channels_first"``
``(N, C, H, W)``; default ``keras.config.image_data_format()``).

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
from typing import Any, cast

import keras
import numpy as np
from keras import ops

from iba import baselines as reference
from iba.baselines import INTEGRATION_METHODS, REDUCTIONS, integration_points  # noqa: F401
from iba_tf import _backend, _graph

__all__ = [*reference.ADAPTER_EXPORTS]

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
        out = cast("keras.Model", ref())(x, training=False)  # alive while its gradient is used
        return ops.sum(ops.take_along_axis(out, ops.expand_dims(labels, 1), axis=1))

    return _backend.make_input_gradient(score, runner.variables)


class _Keras(reference.Backend):
    """A ``keras.Model`` for ``iba.baselines``, in its input dtype (Grad-CAM: split at a layer)."""

    def __init__(self, model: keras.Model, layout: str, dtype: str):
        self.model, self.layout, self.dtype = model, layout, dtype
        self.prefix: keras.Model | None = None
        self.head: keras.Model | None = None

    def images(self, x: Any) -> np.ndarray:
        images = np.asarray(_numpy(x))
        try:
            np_dtype = np.dtype(self.dtype)
        except TypeError:  # bfloat16: no NumPy dtype; the backend casts from float32
            np_dtype = np.dtype(np.float32)
        if np.issubdtype(images.dtype, np.number):
            images = images.astype(np_dtype, copy=False)
        return images

    def numpy(self, value: Any) -> Any:
        return _numpy(value)

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
        assert self.prefix is not None  # set with head by make_backend(layer=...)
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


def make_backend(
    model: keras.Model, *, layer: str | keras.layers.Layer | None = None, layout: str | None = None
) -> reference.Backend:
    """``model`` as an ``iba.baselines.Backend`` on images of ``layout`` (default
    ``keras.config.image_data_format()``); for Grad-CAM split at ``layer`` (a layer or its name)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    layout = reference.check_image_layout(layout or keras.config.image_data_format())
    backend = _Keras(model, layout, _dtype(model))
    if layer is not None:
        backend.layer = name = _graph.find_layer(model, layer).name
        backend.prefix, backend.head = _cached(
            model, ("split", name, layout), lambda: _split(model, name, layout)
        )
    return backend


_METHODS = reference.bind(make_backend)
random, saliency, gradient_x_input, integrated_gradients, smoothgrad, occlusion, grad_cam = _METHODS
BASELINES = _METHODS._asdict()
"""The baselines by name (docs/mathematics.md section 8); ``grad_cam`` needs ``layer=``."""
