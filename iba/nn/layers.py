"""Layers with a manual backward pass.

Images are channels-first. Each layer's ``forward`` returns its output and a function that maps
the gradient of the output to the gradient of the input (weights get no gradients: IBA never
needs them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Backward = Callable[[np.ndarray], np.ndarray]


class Layer:
    """A differentiable map of a batch (first axis) of arrays."""

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Backward]:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[0]


def _windows(x: np.ndarray, k: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(-2, -1))


class Conv2d(Layer):
    """2-D cross-correlation, stride 1, zero padding; ``weight`` is ``(out, in, k, k)``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, padding: int = 0):
        self.weight = np.asarray(weight, np.float64)
        self.bias = np.asarray(bias, np.float64)
        self.padding = int(padding)

    @staticmethod
    def _correlate(x: np.ndarray, weight: np.ndarray, padding: int) -> np.ndarray:
        p = padding
        x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        return np.einsum("nchwij,ocij->nohw", _windows(x, weight.shape[-1]), weight)

    def forward(self, x):
        y = self._correlate(x, self.weight, self.padding) + self.bias[:, None, None]
        k = self.weight.shape[-1]
        flipped = self.weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        return y, lambda g: self._correlate(g, flipped, k - 1 - self.padding)


class ReLU(Layer):
    """``max(x, 0)``; the gradient at 0 is 0."""

    def forward(self, x):
        return np.maximum(x, 0), lambda g: g * (x > 0)


class MaxPool2d(Layer):
    """Non-overlapping ``size x size`` max pooling (H and W divisible by ``size``)."""

    def __init__(self, size: int = 2):
        self.size = size

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.size
        blocks = x.reshape(n, c, h // s, s, w // s, s)
        y = blocks.max(axis=(3, 5))
        flat = blocks.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // s, w // s, s * s)
        first = flat.argmax(-1)

        def backward(g):
            out = np.zeros_like(flat)
            np.put_along_axis(out, first[..., None], g[..., None], axis=-1)
            out = out.reshape(n, c, h // s, w // s, s, s).transpose(0, 1, 2, 4, 3, 5)
            return out.reshape(n, c, h, w)

        return y, backward


class AvgPool2d(Layer):
    """Non-overlapping ``size x size`` average pooling."""

    def __init__(self, size: int = 2):
        self.size = size

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.size
        y = x.reshape(n, c, h // s, s, w // s, s).mean(axis=(3, 5))
        return y, lambda g: np.repeat(np.repeat(g, s, axis=2), s, axis=3) / (s * s)


class Flatten(Layer):
    """``(N, ...)`` to ``(N, -1)``."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1), lambda g: g.reshape(x.shape)


class Linear(Layer):
    """``x @ weight.T + bias``; ``weight`` is ``(out, in)``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        self.weight = np.asarray(weight, np.float64)
        self.bias = np.asarray(bias, np.float64)

    def forward(self, x):
        return x @ self.weight.T + self.bias, lambda g: g @ self.weight


class Sequential(Layer):
    """Named layers in order; ``forward`` can run a slice ``[start, stop)`` given by names."""

    def __init__(self, layers: Sequence[tuple[str, Layer]]):
        self.layers = list(layers)
        self.names = [name for name, _ in self.layers]

    def _index(self, name: str | None, default: int) -> int:
        if name is None:
            return default
        if name not in self.names:
            raise ValueError(f"layer {name!r} not found; layers are: {', '.join(self.names)}")
        return self.names.index(name) + 1

    def forward(self, x, start: str | None = None, stop: str | None = None, inserts=None):
        """Run the layers after ``start`` up to and including ``stop`` (names; ``None``: the ends).

        ``inserts`` maps layer names to layers (``x -> (y, backward)``) run on that layer's output,
        such as the reference's ``BottleneckLayer``.
        """
        inserts = dict(inserts or {})
        for name in inserts:
            self._index(name, 0)
        backwards = []
        for name, layer in self.layers[self._index(start, 0) : self._index(stop, len(self.layers))]:
            x, layer_backward = layer.forward(x)
            backwards.append(layer_backward)
            if name in inserts:
                x, insert_backward = inserts[name](x)
                backwards.append(insert_backward)

        def backward(g):
            for b in reversed(backwards):
                g = b(g)
            return g

        return x, backward


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``-log_softmax(logits)[target]`` and its gradient with respect to ``logits``."""
    logp = log_softmax(logits)
    rows = np.arange(logits.shape[0])
    grad = np.exp(logp)
    grad[rows, target] -= 1
    return -logp[rows, target], grad
