"""Keras 3 ports of ``iba.nn.tiny_cnn`` and ``iba.nn.tiny_vit``, channels-last, with an
``iba_tf.IBALayer`` after every target layer.

Written so that float64 stays float64 on every Keras backend (Keras' torch backend computes
``matmul`` of float64 in float32, and its JAX and torch backends ``ops.mean`` and ``ops.tanh`` at
float32 precision): linear maps are ``EinsumDense``, the layer norm divides sums, GELU's tanh is
written with ``exp``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

import iba_tf


def keras_name(name: str) -> str:
    """``blocks.0.norm1`` as ``blocks_0_norm1``: Keras' torch backend rejects dots in names."""
    return name.replace(".", "_")


def linear(weight, bias, name, dtype, tokens=0):
    spec = "btd,de->bte" if tokens else "bd,de->be"
    shape = (tokens, weight.shape[0]) if tokens else weight.shape[0]
    layer = layers.EinsumDense(spec, shape, bias_axes="e", name=name, dtype=dtype)
    layer.build((None, tokens, weight.shape[1]) if tokens else (None, weight.shape[1]))
    layer.set_weights([np.asarray(weight).T, np.asarray(bias)])
    return layer


class LayerNorm(layers.Layer):
    """LayerNorm (eps 1e-6) with sums instead of ``ops.mean``."""

    def __init__(self, weight, bias, **kwargs):
        super().__init__(**kwargs)
        self.gamma = self.add_weight(shape=weight.shape, initializer="ones", name="weight")
        self.beta = self.add_weight(shape=bias.shape, initializer="zeros", name="bias")
        self.set_weights([weight, bias])

    def call(self, x):
        d = x.shape[-1]
        mean = ops.sum(x, axis=-1, keepdims=True) / d
        var = ops.sum((x - mean) ** 2, axis=-1, keepdims=True) / d
        return (x - mean) / ops.sqrt(var + 1e-6) * self.gamma + self.beta


class Embed(layers.Layer):
    """Patch tokens ``(N, P, D)`` to ``[cls, tokens] + pos_embed``."""

    def __init__(self, cls_token, pos_embed, **kwargs):
        super().__init__(**kwargs)
        self.cls = self.add_weight(shape=cls_token.shape, initializer="zeros", name="cls_token")
        self.pos = self.add_weight(shape=pos_embed.shape, initializer="zeros", name="pos_embed")
        self.set_weights([cls_token, pos_embed])

    def call(self, tokens):
        cls = ops.broadcast_to(self.cls, (ops.shape(tokens)[0], 1, tokens.shape[-1]))
        return ops.concatenate([cls, tokens], axis=1) + self.pos


class Attention(layers.Layer):
    """One ``qkv`` map, softmax attention per head, ``proj``."""

    def __init__(self, qkv, proj, heads, **kwargs):
        super().__init__(**kwargs)
        self.qkv, self.proj, self.heads = qkv, proj, heads

    def call(self, x):
        t, d = x.shape[1], x.shape[2]
        h = self.heads
        qkv = ops.reshape(self.qkv(x), (-1, t, 3, h, d // h))
        q, k, v = (qkv[:, :, i] for i in range(3))
        scores = ops.einsum("nthe,nshe->nhts", q, k) * (d // h) ** -0.5
        scores = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
        attn = scores / ops.sum(scores, axis=-1, keepdims=True)
        return self.proj(ops.reshape(ops.einsum("nhts,nshe->nthe", attn, v), (-1, t, d)))


def gelu(x):
    c = float(np.sqrt(2 / np.pi))
    return 0.5 * x * (1 + (1 - 2 / (ops.exp(2 * c * (x + 0.044715 * x**3)) + 1)))


def _cnn(weights, targets, dtype, bottleneck):
    inputs = keras.Input((8, 8, 1), dtype=dtype)
    x = inputs
    for name in ("conv1", "relu1", "conv2", "relu2", "pool", "conv3", "relu3", "fc"):
        if name.startswith("conv"):
            w = np.asarray(weights[f"{name}.weight"])
            conv = layers.Conv2D(w.shape[0], 3, padding="same", name=name, dtype=dtype)
            x = conv(x)
            conv.set_weights([w.transpose(2, 3, 1, 0), np.asarray(weights[f"{name}.bias"])])
        elif name.startswith("relu"):
            x = layers.ReLU(name=name, dtype=dtype)(x)
        elif name == "pool":
            x = layers.MaxPooling2D(2, name=name, dtype=dtype)(x)
        else:  # the reference flattens (C, H, W), Keras (H, W, C): permute the weight's columns
            c, hw = x.shape[-1], x.shape[1]
            x = layers.Flatten(name="flatten", dtype=dtype)(x)
            w = np.asarray(weights["fc.weight"])
            w = w.reshape(w.shape[0], c, hw, hw).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            x = linear(w, weights["fc.bias"], name, dtype)(x)
        if name in targets:
            x = bottleneck(name, x)
    return inputs, x


def _vit(weights, targets, dtype, bottleneck):
    p = {k: np.asarray(v) for k, v in weights.items()}
    d = p["cls_token"].shape[-1]
    n_tokens = p["pos_embed"].shape[1]
    depth = sum(1 for k in p if k.endswith(".norm1.weight"))
    w = p["patch_embed.proj.weight"]
    patch = w.shape[-1]
    inputs = keras.Input((8, 8, 1), dtype=dtype)
    conv = layers.Conv2D(d, patch, strides=patch, name="patch_embed_proj", dtype=dtype)
    x = conv(inputs)
    conv.set_weights([w.transpose(2, 3, 1, 0), p["patch_embed.proj.bias"]])
    x = layers.Reshape((-1, d), dtype=dtype)(x)
    x = Embed(p["cls_token"], p["pos_embed"], name="patch_embed", dtype=dtype)(x)

    def lin(name):
        return linear(p[f"{name}.weight"], p[f"{name}.bias"], keras_name(name), dtype, n_tokens)

    def norm(name):
        return LayerNorm(p[f"{name}.weight"], p[f"{name}.bias"], name=keras_name(name), dtype=dtype)

    for i in range(depth):
        b = f"blocks.{i}"
        h = norm(f"{b}.norm1")(x)
        if f"{b}.norm1" in targets:
            h = bottleneck(f"{b}.norm1", h)
        attn = Attention(
            lin(f"{b}.attn.qkv"),
            lin(f"{b}.attn.proj"),
            2,
            name=keras_name(f"{b}.attn"),
            dtype=dtype,
        )
        x = layers.Add(name=keras_name(f"{b}.attn_residual"), dtype=dtype)([x, attn(h)])
        h = norm(f"{b}.norm2")(x)
        h = lin(f"{b}.mlp.fc2")(layers.Activation(gelu, dtype=dtype)(lin(f"{b}.mlp.fc1")(h)))
        x = layers.Add(name=keras_name(b), dtype=dtype)([x, h])
    x = norm("norm")(x)
    x = layers.Lambda(lambda t: t[:, 0], dtype=dtype)(x)
    return inputs, linear(p["head.weight"], p["head.bias"], "head", dtype)(x)


def model(architecture: str, weights: dict, targets, dtype: str):
    """``(model, bottlenecks, features)``: the Functional port with an ``IBALayer`` after each
    target (``bottlenecks``, in the targets' order) and a model of the first target's output."""
    bottlenecks = {}

    def bottleneck(name, x):
        bottlenecks[name] = iba_tf.IBALayer(
            "channels_last", name=keras_name(f"iba.{name}"), dtype=dtype
        )
        return bottlenecks[name](x)

    old = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(dtype)
    try:
        build = _cnn if architecture == "cnn" else _vit
        inputs, outputs = build(weights, tuple(targets), dtype, bottleneck)
        net = keras.Model(inputs, outputs)
        features = keras.Model(inputs, bottlenecks[targets[0]].input)
    finally:
        keras.config.set_dtype_policy(old)
    return net, [bottlenecks[t] for t in targets], features
