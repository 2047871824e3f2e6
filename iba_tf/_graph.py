"""Finding layers in Keras models, cutting Functional graphs and inserting bottlenecks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from iba_tf.layer import IBALayer


class StopForward(Exception):
    """Raised by a capture hook once the last target's features are read (eager runs only)."""


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model``, nested ones included, in order, without ``model`` itself."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def is_graph(model: Any) -> bool:
    """Whether ``model`` is a Functional or Sequential model (a graph of layers Keras knows)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def find_layer(model: keras.Model, target: Any) -> keras.layers.Layer:
    """The layer ``target`` (a layer object or a layer name) of ``model``; a clear error if none."""
    layers = all_layers(model)
    if isinstance(target, keras.layers.Layer):
        if any(layer is target for layer in layers):
            return target
        raise ValueError(
            f"layer {target.name!r} is not part of model {model.name!r}; layers are: "
            f"{_names(layers)}"
        )
    if not isinstance(target, str):
        raise TypeError(f"targets are Keras layers or layer names, got {target!r}")
    found = [layer for layer in layers if layer.name == target]
    if not found:
        raise ValueError(
            f"layer {target!r} not found in model {model.name!r}; layers are: {_names(layers)}"
        )
    return found[0]


def _names(layers: Sequence[keras.layers.Layer]) -> str:
    return ", ".join(
        layer.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)
    )


def layer_input(model: keras.Model, layer: keras.layers.Layer) -> Any:
    """The input tensor of ``layer`` in the graph of ``model`` (a layer may sit in several
    models); ``None`` if ``layer`` is not a top-level node of that graph (a nested model)."""
    from keras.src.ops.function import make_node_key

    graph = getattr(model, "_functional", None) or model
    nodes = getattr(graph, "_nodes", ())
    for index, node in enumerate(layer._inbound_nodes):
        if make_node_key(layer, index) in nodes:
            tensors = node.input_tensors
            return tensors[0] if len(tensors) == 1 else None
    return None


def submodel(inputs: Any, outputs: Any) -> keras.Model | None:
    """A Functional model between two sets of tensors of a graph; ``None`` if not connected."""
    if inputs is None or any(t is None for t in keras.tree.flatten(outputs)):
        return None
    try:
        return keras.Model(inputs, outputs)
    except ValueError:
        return None


def insert_after(
    model: keras.Model, bottlenecks: dict[str, IBALayer], name: str | None = None
) -> keras.Model:
    """A Functional copy of ``model`` with ``bottlenecks[layer_name]`` after those layers.

    The copy calls the original layer objects, so it shares their weights (no copies).
    """
    if not is_graph(model):
        raise TypeError(
            f"IBACopy needs a Functional or Sequential model; {type(model).__name__} is a "
            "subclassed model: add an iba_tf.IBALayer to it instead"
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"model {model.name!r} has no inputs yet: build it with keras.Input (or call it on "
            "data) before copying it"
        )
    for layer_name in bottlenecks:
        find_layer(model, layer_name)
        if layer_name not in [layer.name for layer in model.layers]:
            raise ValueError(
                f"layer {layer_name!r} is inside a nested model; IBACopy inserts bottlenecks "
                f"after top-level layers: {_names(model.layers)}"
            )
    name = name or f"{model.name}_iba"

    def after(layer: keras.layers.Layer, out: Any) -> Any:
        if layer.name in bottlenecks:
            if not isinstance(out, keras.KerasTensor):
                raise ValueError(
                    f"layer {layer.name!r} has several outputs; choose a layer with one output"
                )
            return bottlenecks[layer.name](out)
        return out

    if isinstance(model, keras.Sequential):
        spec = model.inputs[0]
        inputs = keras.Input(batch_shape=spec.shape, dtype=spec.dtype)
        x = inputs
        for layer in model.layers:
            x = after(layer, layer(x))
        return keras.Model(inputs, x, name=name)

    def call(layer, *args, **kwargs):
        return after(layer, layer(*args, **kwargs))

    copy = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    copy.name = name
    return copy


def output_is_probability(model: keras.Model) -> bool:
    """Whether a Functional/Sequential model's single output comes out of a softmax."""
    if not is_graph(model) or len(getattr(model, "outputs", []) or []) != 1:
        return False
    layer = model.outputs[0]._keras_history.operation
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"
