"""Flax (Linen and NNX) ports of ``iba.nn.tiny_cnn`` and ``iba.nn.tiny_vit``, channels-last.

Weights come from a case (PyTorch names and shapes) and are converted to Flax's layout: conv
kernels ``(out, in, kh, kw)`` to ``(kh, kw, in, out)``, linear weights ``(out, in)`` to
``(in, out)``, and the rows of the classifier permuted from the channels-first flatten order
``(C, H, W)`` to Flax's ``(H, W, C)``. Target paths: ``relu1``, ``relu2`` (CNN) and
``blocks_0/norm1``, ``blocks_1/norm1`` (ViT; timm's ``blocks.0.norm1``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

GELU_C = float(np.sqrt(2 / np.pi))
LN_EPS = 1e-6


def flax_target(name: str) -> str:
    """A PyTorch module name (``blocks.0.norm1``) as the ports' Flax path (``blocks_0/norm1``)."""
    parts = name.split(".")
    if parts[0] == "blocks":
        return f"blocks_{parts[1]}/{'/'.join(parts[2:])}"
    return name


def _gelu(x):
    return 0.5 * x * (1 + jnp.tanh(GELU_C * (x + 0.044715 * x**3)))


def _layer_norm(x, weight, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + LN_EPS) * weight + bias


def _attention(qkv, x, heads):
    n, t, d = x.shape
    q, k, v = qkv.reshape(n, t, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
    scores = q @ k.transpose(0, 1, 3, 2) * (d // heads) ** -0.5
    attn = jax.nn.softmax(scores, axis=-1)
    return (attn @ v).transpose(0, 2, 1, 3).reshape(n, t, d)


def _tokens(patches, cls_token, pos_embed):
    """``(N, gh, gw, D)`` patch embeddings to ``[cls, tokens] + pos_embed``, ``(N, T, D)``."""
    n, d = patches.shape[0], patches.shape[-1]
    tokens = patches.reshape(n, -1, d)
    cls = jnp.broadcast_to(cls_token, (n, 1, d))
    return jnp.concatenate([cls, tokens], axis=1) + pos_embed


# -- weights -----------------------------------------------------------------------------------


def _dense(weights, name, dtype):
    return {
        "kernel": np.asarray(weights[f"{name}.weight"]).T.astype(dtype),
        "bias": np.asarray(weights[f"{name}.bias"]).astype(dtype),
    }


def _conv(weights, name, dtype):
    return {
        "kernel": np.asarray(weights[f"{name}.weight"]).transpose(2, 3, 1, 0).astype(dtype),
        "bias": np.asarray(weights[f"{name}.bias"]).astype(dtype),
    }


def _norm(weights, name, dtype):
    return {
        "scale": np.asarray(weights[f"{name}.weight"]).astype(dtype),
        "bias": np.asarray(weights[f"{name}.bias"]).astype(dtype),
    }


def cnn_params(weights: dict, dtype) -> dict:
    """The CNN's weights as a Linen parameter tree."""
    params = {name: _conv(weights, name, dtype) for name in ("conv1", "conv2", "conv3")}
    w = np.asarray(weights["fc.weight"])  # (out, C * H * W), channels-first flatten order
    out, flat = w.shape
    c = weights["conv3.weight"].shape[0]
    hw = int(round((flat / c) ** 0.5))
    kernel = w.reshape(out, c, hw, hw).transpose(2, 3, 1, 0).reshape(flat, out)
    params["fc"] = {"kernel": kernel.astype(dtype), "bias": np.asarray(weights["fc.bias"], dtype)}
    return params


def vit_depth(weights: dict) -> int:
    return sum(1 for k in weights if k.endswith(".norm1.weight"))


def vit_params(weights: dict, dtype) -> dict:
    """The ViT's weights as a Linen parameter tree."""
    params = {
        "patch_embed": _conv(weights, "patch_embed.proj", dtype),
        "cls_token": np.asarray(weights["cls_token"], dtype),
        "pos_embed": np.asarray(weights["pos_embed"], dtype),
        "norm": _norm(weights, "norm", dtype),
        "head": _dense(weights, "head", dtype),
    }
    for i in range(vit_depth(weights)):
        b = f"blocks.{i}"
        params[f"blocks_{i}"] = {
            "norm1": _norm(weights, f"{b}.norm1", dtype),
            "qkv": _dense(weights, f"{b}.attn.qkv", dtype),
            "proj": _dense(weights, f"{b}.attn.proj", dtype),
            "norm2": _norm(weights, f"{b}.norm2", dtype),
            "fc1": _dense(weights, f"{b}.mlp.fc1", dtype),
            "fc2": _dense(weights, f"{b}.mlp.fc2", dtype),
        }
    return params


# -- Linen -------------------------------------------------------------------------------------


class ReLU(nn.Module):
    """A ReLU as a module, so that its output has a path."""

    @nn.compact
    def __call__(self, x):
        return nn.relu(x)


class LinenCNN(nn.Module):
    """conv-relu-conv-relu-maxpool-conv-relu-flatten-linear, channels-last."""

    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu1")(nn.Conv(4, (3, 3), padding=1, name="conv1")(x))
        x = ReLU(name="relu2")(nn.Conv(6, (3, 3), padding=1, name="conv2")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ReLU(name="relu3")(nn.Conv(8, (3, 3), padding=1, name="conv3")(x))
        return nn.Dense(10, name="fc")(x.reshape(x.shape[0], -1))


class LinenLayerNorm(nn.Module):
    """LayerNorm with eps 1e-6 (parameters ``scale``, ``bias``)."""

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), x.dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), x.dtype)
        return _layer_norm(x, scale, bias)


class LinenBlock(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        h = LinenLayerNorm(name="norm1")(x)
        h = nn.Dense(3 * d, name="qkv")(h)
        x = x + nn.Dense(d, name="proj")(_attention(h, x, self.heads))
        h = LinenLayerNorm(name="norm2")(x)
        h = nn.Dense(2 * d, name="fc1")(h)
        return x + nn.Dense(d, name="fc2")(_gelu(h))


class LinenViT(nn.Module):
    """Patch embedding (a stride-``patch`` conv), class token first, pre-norm blocks, head."""

    depth: int = 2
    heads: int = 2
    dim: int = 16
    patch: int = 2

    @nn.compact
    def __call__(self, x):
        p = self.patch
        x = nn.Conv(self.dim, (p, p), strides=p, padding="VALID", name="patch_embed")(x)
        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.dim), x.dtype)
        pos = self.param(
            "pos_embed", nn.initializers.zeros, (1, x.shape[1] * x.shape[2] + 1, self.dim), x.dtype
        )
        x = _tokens(x, cls, pos)
        for i in range(self.depth):
            x = LinenBlock(self.heads, name=f"blocks_{i}")(x)
        x = LinenLayerNorm(name="norm")(x)
        return nn.Dense(10, name="head")(x[:, 0])


def linen_model(architecture: str, weights: dict, dtype):
    """``(module, variables)`` of the Linen port with the case's weights."""
    if architecture == "cnn":
        module, params = LinenCNN(), cnn_params(weights, dtype)
    else:
        module, params = LinenViT(depth=vit_depth(weights)), vit_params(weights, dtype)
    return module, {"params": jax.tree.map(jnp.asarray, params)}


# -- NNX ---------------------------------------------------------------------------------------


class NNXReLU(nnx.Module):
    def __call__(self, x):
        return nnx.relu(x)


class NNXLayerNorm(nnx.Module):
    def __init__(self, dim: int, dtype):
        self.scale = nnx.Param(jnp.ones((dim,), dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype))

    def __call__(self, x):
        return _layer_norm(x, self.scale[...], self.bias[...])


def _nnx_linear(d_in, d_out, dtype):
    return nnx.Linear(d_in, d_out, param_dtype=dtype, dtype=dtype, rngs=nnx.Rngs(0))


def _nnx_conv(c_in, c_out, k, dtype, **kw):
    return nnx.Conv(c_in, c_out, (k, k), param_dtype=dtype, dtype=dtype, rngs=nnx.Rngs(0), **kw)


class NNXCNN(nnx.Module):
    def __init__(self, dtype):
        self.conv1 = _nnx_conv(1, 4, 3, dtype, padding=1)
        self.relu1 = NNXReLU()
        self.conv2 = _nnx_conv(4, 6, 3, dtype, padding=1)
        self.relu2 = NNXReLU()
        self.conv3 = _nnx_conv(6, 8, 3, dtype, padding=1)
        self.relu3 = NNXReLU()
        self.fc = _nnx_linear(8 * 4 * 4, 10, dtype)

    def __call__(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = self.relu3(self.conv3(x))
        return self.fc(x.reshape(x.shape[0], -1))


class NNXBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, hidden: int, dtype):
        self.heads = heads
        self.norm1 = NNXLayerNorm(dim, dtype)
        self.qkv = _nnx_linear(dim, 3 * dim, dtype)
        self.proj = _nnx_linear(dim, dim, dtype)
        self.norm2 = NNXLayerNorm(dim, dtype)
        self.fc1 = _nnx_linear(dim, hidden, dtype)
        self.fc2 = _nnx_linear(hidden, dim, dtype)

    def __call__(self, x):
        x = x + self.proj(_attention(self.qkv(self.norm1(x)), x, self.heads))
        return x + self.fc2(_gelu(self.fc1(self.norm2(x))))


class NNXViT(nnx.Module):
    def __init__(self, depth: int, dtype, dim=16, heads=2, hidden=32, patch=2, tokens=17):
        self.patch_embed = _nnx_conv(1, dim, patch, dtype, strides=patch, padding="VALID")
        self.cls_token = nnx.Param(jnp.zeros((1, 1, dim), dtype))
        self.pos_embed = nnx.Param(jnp.zeros((1, tokens, dim), dtype))
        self.blocks = nnx.List([NNXBlock(dim, heads, hidden, dtype) for _ in range(depth)])
        self.norm = NNXLayerNorm(dim, dtype)
        self.head = _nnx_linear(dim, 10, dtype)

    def __call__(self, x):
        x = _tokens(self.patch_embed(x), self.cls_token[...], self.pos_embed[...])
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def nnx_target(name: str) -> str:
    """A PyTorch module name as the NNX port's path (``blocks/0/norm1``)."""
    return name.replace(".", "/")


def _set_tree(module, tree):
    for key, value in tree.items():
        if isinstance(value, dict):
            _set_tree(getattr(module, key), value)
        else:
            getattr(module, key).set_value(jnp.asarray(value))


def nnx_model(architecture: str, weights: dict, dtype):
    """The NNX port with the case's weights."""
    if architecture == "cnn":  # eval_shape: no random initialisation, the weights are given
        model = nnx.eval_shape(lambda: NNXCNN(dtype))
        _set_tree(model, cnn_params(weights, dtype))
        return model
    depth = vit_depth(weights)
    model = nnx.eval_shape(lambda: NNXViT(depth, dtype))
    params = vit_params(weights, dtype)
    blocks = {str(i): params.pop(f"blocks_{i}") for i in range(depth)}
    _set_tree(model, params)
    for i, tree in blocks.items():
        _set_tree(model.blocks[int(i)], tree)
    return model
