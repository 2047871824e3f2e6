"""Keras ports of the reference's NumPy networks (same weights) and the MNIST test CNN.

Built from the conformance suite's float64-safe layers (``conformance.ports.keras_ports``: linear
maps as ``EinsumDense``, a layer norm that divides sums, GELU's tanh from ``exp``), with the
``IBALayer`` placements and layouts these tests need.
"""

from __future__ import annotations

import keras
from keras import layers

import iba_tf
from conformance.ports.keras_ports import Attention, Embed, LayerNorm, gelu, keras_name, linear
from iba import nn


def tiny_cnn(
    net: nn.Sequential,
    targets: tuple[str, ...] = ("relu2",),
    dtype: str = "float64",
    data_format: str = "channels_last",
) -> tuple[keras.Model, dict[str, iba_tf.IBALayer]]:
    """``iba.nn.tiny_cnn`` as a channels-last Keras model with an ``IBALayer`` after ``targets``.

    With ``data_format="channels_first"`` the features are permuted to ``(C, H, W)`` around each
    ``IBALayer`` (the bottleneck then sees exactly the reference's layout).
    """
    inputs = keras.Input((8, 8, 1), dtype=dtype)
    x = inputs
    bottlenecks = {}
    for name, layer in net.layers:
        if isinstance(layer, nn.Conv2d):
            conv = layers.Conv2D(layer.weight.shape[0], 3, padding="same", name=name, dtype=dtype)
            x = conv(x)
            conv.set_weights([layer.weight.transpose(2, 3, 1, 0), layer.bias])
        elif isinstance(layer, nn.ReLU):
            x = layers.ReLU(name=name, dtype=dtype)(x)
        elif isinstance(layer, nn.MaxPool2d):
            x = layers.MaxPooling2D(layer.size, name=name, dtype=dtype)(x)
        elif isinstance(layer, nn.Flatten):
            x = layers.Flatten(name=name, dtype=dtype)(x)
        elif isinstance(layer, nn.Linear):
            out, features = layer.weight.shape
            # the reference flattens (C, H, W), Keras (H, W, C): permute the weight's columns
            c = 8
            hw = int(round((features / c) ** 0.5))
            weight = layer.weight.reshape(out, c, hw, hw).transpose(0, 2, 3, 1).reshape(out, -1)
            x = linear(weight, layer.bias, name, dtype)(x)
        if name in targets:
            bottleneck = iba_tf.IBALayer(data_format, name=f"iba_{name}", dtype=dtype)
            if data_format == "channels_first":
                x = layers.Permute((3, 1, 2), dtype=dtype)(x)
                x = layers.Permute((2, 3, 1), dtype=dtype)(bottleneck(x))
            else:
                x = bottleneck(x)
            bottlenecks[name] = bottleneck
    return keras.Model(inputs, x, name="tiny_cnn"), bottlenecks


def tiny_vit(
    vit, targets: tuple[str, ...] = (), dtype: str = "float64"
) -> tuple[keras.Model, dict[str, iba_tf.IBALayer]]:
    """``iba.nn.tiny_vit`` as a Functional Keras model; an ``IBALayer`` after each of ``targets``
    (timm names such as ``"blocks.0.norm1"``)."""
    p, d = vit.params, vit.params["cls_token"].shape[-1]
    n_tokens = p["pos_embed"].shape[1]
    patch = vit.patch
    keras.config.set_dtype_policy(dtype)
    try:
        inputs = keras.Input((8, 8, 1), dtype=dtype)
        conv = layers.Conv2D(d, patch, strides=patch, name="patch_embed_proj")
        x = conv(inputs)
        w = p["patch_embed.proj.weight"]
        conv.set_weights([w.transpose(2, 3, 1, 0), p["patch_embed.proj.bias"]])
        x = layers.Reshape((-1, d))(x)
        x = Embed(p["cls_token"], p["pos_embed"], name="patch_embed")(x)
        bottlenecks = {}

        def tap(name, value):
            if name in targets:
                bottlenecks[name] = iba_tf.IBALayer(name=keras_name(f"{name}.iba"))
                return bottlenecks[name](value)
            return value

        def lin(name):
            return linear(p[f"{name}.weight"], p[f"{name}.bias"], keras_name(name), dtype, n_tokens)

        for i in range(vit.depth):
            b = f"blocks.{i}"
            h = LayerNorm(
                p[f"{b}.norm1.weight"], p[f"{b}.norm1.bias"], name=keras_name(f"{b}.norm1")
            )(x)
            h = tap(f"{b}.norm1", h)
            h = Attention(
                lin(f"{b}.attn.qkv"), lin(f"{b}.attn.proj"), vit.heads, name=keras_name(f"{b}.attn")
            )(h)
            x = layers.Add(name=keras_name(f"{b}.attn_residual"))([x, h])
            h = LayerNorm(
                p[f"{b}.norm2.weight"], p[f"{b}.norm2.bias"], name=keras_name(f"{b}.norm2")
            )(x)
            h = lin(f"{b}.mlp.fc2")(layers.Activation(gelu)(lin(f"{b}.mlp.fc1")(h)))
            x = layers.Add(name=keras_name(b))([x, h])
        x = LayerNorm(p["norm.weight"], p["norm.bias"], name="norm")(x)
        x = layers.Lambda(lambda t: t[:, 0])(x)
        out = linear(p["head.weight"], p["head.bias"], "head", dtype)(x)
        return keras.Model(inputs, out, name="tiny_vit"), bottlenecks
    finally:
        keras.config.set_dtype_policy("float32")


def mnist_cnn(with_bottleneck: bool = False) -> keras.Model:
    """The small MNIST classifier of the tests (logits); optionally with an ``IBALayer``."""
    stack = [
        keras.Input((28, 28, 1)),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
    ]
    if with_bottleneck:
        stack.append(iba_tf.IBALayer(name="iba"))
    stack += [
        layers.MaxPooling2D(2, name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dropout(0.2, name="dropout"),
        layers.Dense(10, name="logits"),
    ]
    return keras.Sequential(stack, name="mnist_cnn")
