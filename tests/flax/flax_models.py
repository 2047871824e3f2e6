"""Flax models of the tests: ports of ``iba.nn.tiny_cnn``, MNIST CNNs and a small ViT."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from iba import nn as ref_nn

# -- the reference's tiny CNN, channels-last --------------------------------------------------


class ReLU(nn.Module):
    """A ReLU as a module, so that its output has a path (the reference's ``relu1`` ...)."""

    @nn.compact
    def __call__(self, x):
        return nn.relu(x)


class TinyCNN(nn.Module):
    """``iba.nn.tiny_cnn`` in Linen: conv-relu-conv-relu-maxpool-conv-relu-flatten-linear."""

    n_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu1")(nn.Conv(4, (3, 3), padding=1, name="conv1")(x))
        x = ReLU(name="relu2")(nn.Conv(6, (3, 3), padding=1, name="conv2")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ReLU(name="relu3")(nn.Conv(8, (3, 3), padding=1, name="conv3")(x))
        return nn.Dense(self.n_classes, name="fc")(x.reshape(x.shape[0], -1))


class NNXReLU(nnx.Module):
    def __call__(self, x):
        return nnx.relu(x)


class NNXTinyCNN(nnx.Module):
    """``iba.nn.tiny_cnn`` in NNX, with the same attribute names as the reference's layers."""

    def __init__(self, rngs: nnx.Rngs, n_classes: int = 10):
        self.conv1 = nnx.Conv(1, 4, (3, 3), padding=1, rngs=rngs)
        self.relu1 = NNXReLU()
        self.conv2 = nnx.Conv(4, 6, (3, 3), padding=1, rngs=rngs)
        self.relu2 = NNXReLU()
        self.conv3 = nnx.Conv(6, 8, (3, 3), padding=1, rngs=rngs)
        self.relu3 = NNXReLU()
        self.fc = nnx.Linear(8 * 4 * 4, n_classes, rngs=rngs)

    def __call__(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = self.relu3(self.conv3(x))
        return self.fc(x.reshape(x.shape[0], -1))


def tiny_weights(model: ref_nn.Sequential, dtype=np.float64) -> dict:
    """The reference's weights in Flax's layout: kernels ``(kh, kw, in, out)``; the Linear rows
    permuted from the channels-first flatten order ``(C, H, W)`` to ``(H, W, C)``."""
    layers = dict(model.layers)
    params = {}
    for name in ("conv1", "conv2", "conv3"):
        params[name] = {
            "kernel": layers[name].weight.transpose(2, 3, 1, 0).astype(dtype),
            "bias": layers[name].bias.astype(dtype),
        }
    w = layers["fc"].weight  # (out, C * H * W)
    kernel = w.reshape(w.shape[0], 8, 4, 4).transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
    params["fc"] = {"kernel": kernel.astype(dtype), "bias": layers["fc"].bias.astype(dtype)}
    return params


def linen_tiny(model: ref_nn.Sequential, dtype=np.float64):
    """``(module, variables)`` of the Linen port with the reference's weights."""
    params = jax.tree.map(jnp.asarray, tiny_weights(model, dtype))
    return TinyCNN(), {"params": params}


def nnx_tiny(model: ref_nn.Sequential, dtype=np.float64) -> NNXTinyCNN:
    """The NNX port with the reference's weights."""
    net = nnx.eval_shape(lambda: NNXTinyCNN(nnx.Rngs(0)))  # no random init: weights are given
    for name, p in tiny_weights(model, dtype).items():
        layer = getattr(net, name)
        layer.kernel.set_value(jnp.asarray(p["kernel"]))
        layer.bias.set_value(jnp.asarray(p["bias"]))
    return net


# -- MNIST CNNs ---------------------------------------------------------------------------------


class Block(nn.Module):
    """Conv and ReLU: the block's path names post-activation features."""

    features: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3), padding=1)(x))


class MnistCNN(nn.Module):
    """28x28x1 -> Block(8) -> pool -> Block(16) -> pool -> Dense(10)."""

    @nn.compact
    def __call__(self, x):
        x = nn.max_pool(Block(8)(x), (2, 2), strides=(2, 2))
        x = nn.max_pool(Block(16)(x), (2, 2), strides=(2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class NNXBlock(nnx.Module):
    def __init__(self, c_in: int, c_out: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(c_in, c_out, (3, 3), padding=1, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.conv(x))


class NNXMnistCNN(nnx.Module):
    """The same network in NNX; blocks in an ``nnx.List`` (paths ``blocks/0``, ``blocks/1``)."""

    def __init__(self, rngs: nnx.Rngs):
        self.blocks = nnx.List([NNXBlock(1, 8, rngs), NNXBlock(8, 16, rngs)])
        self.head = nnx.Linear(7 * 7 * 16, 10, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = nnx.max_pool(block(x), (2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))


# -- a small ViT ----------------------------------------------------------------------------------


class EncoderBlock(nn.Module):
    """Pre-norm transformer block, ``LayerNorm_0`` is timm's ``norm1``."""

    dim: int
    heads: int

    @nn.compact
    def __call__(self, x):
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(x))
        h = nn.Dense(2 * self.dim)(nn.LayerNorm()(x))
        return x + nn.Dense(self.dim)(nn.gelu(h))


class ViT(nn.Module):
    """Patches of 7x7 on 28x28 (a 4x4 grid), a class token, ``depth`` blocks, a linear head."""

    dim: int = 32
    depth: int = 2
    heads: int = 2
    patch: int = 7

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.dim, (self.patch, self.patch), strides=self.patch, padding="VALID")(x)
        x = x.reshape(x.shape[0], -1, self.dim)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(0.02), (1, x.shape[1], self.dim))
        for _ in range(self.depth):
            x = EncoderBlock(self.dim, self.heads)(x)
        return nn.Dense(10)(nn.LayerNorm()(x[:, 0]))


# -- training -----------------------------------------------------------------------------------


def key(seed: int) -> jax.Array:
    """A ``jax.random`` key for initialisation: "rbg" compiles ~5x faster than threefry on CPU."""
    return jax.random.key(seed, impl="rbg")


def train_linen(module: nn.Module, images, labels, epochs: int, lr: float, seed: int = 0):
    """Adam on cross entropy, batches of 64; returns the variables."""
    variables = module.init(key(seed), images[:1])
    opt = optax.adam(lr)
    state = opt.init(variables)

    @jax.jit
    def step(variables, state, x, y):
        def loss(v):
            logits = module.apply(v, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(variables)
        updates, state = opt.update(grads, state, variables)
        return optax.apply_updates(variables, updates), state

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order) - 63, 64):
            idx = order[start : start + 64]
            variables, state = step(variables, state, images[idx], labels[idx])
    return variables


def train_nnx(model: nnx.Module, images, labels, epochs: int, lr: float, seed: int = 0):
    """Adam on cross entropy with ``nnx.Optimizer``; trains ``model`` in place."""
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = nnx.grad(loss)(model)
        optimizer.update(model, grads)

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order) - 63, 64):
            idx = order[start : start + 64]
            step(model, optimizer, images[idx], labels[idx])
    return model


def accuracy(logits, labels) -> float:
    return float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))
