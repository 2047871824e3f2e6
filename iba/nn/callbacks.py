"""Model callbacks for ``iba.per_sample_bottleneck`` built from the NumPy networks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iba.nn.layers import Sequential, cross_entropy


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


def capture(model, x: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    """The outputs of the layers ``names`` of ``model`` (a ``Sequential`` or ``TinyViT``) on ``x``."""
    seen = {}

    def keep(name):
        def layer(value):
            seen[name] = value
            return value, lambda g: g

        return layer

    model.forward(x, inserts={name: keep(name) for name in names})
    return [seen[name] for name in names]


def classifier(model, x: np.ndarray, target, targets: Sequence[str]):
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
