"""A tiny NumPy network with a manual backward pass: the oracle of tests and of conformance.

Layers are channels-first. Each layer's ``forward`` returns its output and a function that maps
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
            x, backward = layer.forward(x)
            backwards.append(backward)
            if name in inserts:
                x, backward = inserts[name](x)
                backwards.append(backward)

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


def classification_head(model: Sequential, start: str, target: np.ndarray | int):
    """``head(Z)`` for ``iba.per_sample_bottleneck``: the mean cross entropy over noise samples.

    ``Z`` has shape ``(N, B, *F)``; it enters ``model`` after the layer named ``start``.
    """

    def head(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, b = z.shape[:2]
        logits, backward = model.forward(z.reshape(n * b, *z.shape[2:]), start=start)
        labels = np.broadcast_to(np.asarray(target), (n,))
        loss, grad = cross_entropy(logits, np.repeat(labels, b))
        return loss.reshape(n, b).mean(1), backward(grad / b).reshape(z.shape)

    return head


def classifier(model: Sequential, x: np.ndarray, target, targets: Sequence[str]):
    """``model(layers)`` for ``iba.per_sample_bottleneck``: runs ``model`` from the input ``x``
    (each input repeated for its noise samples), with ``layers[l]`` after the layer ``targets[l]``,
    and the mean cross entropy over noise samples as the loss."""

    def run(layers):
        n, b = layers[0].eps.shape[:2]
        logits, backward = model.forward(
            np.repeat(x, b, axis=0), inserts=dict(zip(targets, layers))
        )
        labels = np.repeat(np.broadcast_to(np.asarray(target), (n,)), b)
        loss, grad = cross_entropy(logits, labels)
        return loss.reshape(n, b).mean(1), lambda: backward(grad / b)

    return run


def segment(model: Sequential, start: str, stop: str):
    """``Z_l -> (R_{l+1}, vjp)`` for the layers after ``start`` up to ``stop``, on ``(N, B, *F)``."""

    def run(z: np.ndarray):
        n, b = z.shape[:2]
        r, backward = model.forward(z.reshape(n * b, *z.shape[2:]), start=start, stop=stop)
        return r.reshape(n, b, *r.shape[1:]), lambda g: backward(
            g.reshape(n * b, *g.shape[2:])
        ).reshape(z.shape)

    return run


def tiny_cnn(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> Sequential:
    """A seeded random CNN for 8x8 inputs: conv-relu-conv-relu-maxpool-conv-relu-flatten-linear."""
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out):
        w = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))
        return Conv2d(w, 0.1 * rng.standard_normal(c_out), padding=1)

    return Sequential(
        [
            ("conv1", conv(in_channels, 4)),
            ("relu1", ReLU()),
            ("conv2", conv(4, 6)),
            ("relu2", ReLU()),
            ("pool", MaxPool2d(2)),
            ("conv3", conv(6, 8)),
            ("relu3", ReLU()),
            ("flatten", Flatten()),
            ("fc", Linear(rng.standard_normal((n_classes, 8 * 4 * 4)) * 0.2, np.zeros(n_classes))),
        ]
    )
