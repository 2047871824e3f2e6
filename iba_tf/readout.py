"""The Readout Bottleneck for Keras 3 (Schulz et al., ICLR 2020, section 3.2; docs/mathematics.md
section 3), on the TensorFlow, JAX and torch backends.

A small network of 1x1 convolutions predicts ``alpha`` from features read at several layers, in
one forward pass; it is trained over a data set to minimise cross entropy plus ``beta`` times the
bottleneck's mean capacity. What does not depend on Keras (constants, layer sizes, the NumPy
reference, the file format, the checks) is ``iba.readout``; the arithmetic here is its
translation into ``keras.ops``, with the bottleneck of ``iba_tf._ops``. The bottleneck replaces
the output of an ``IBALayer`` (the model's own, or one inserted after the named layer in a copy
of a Functional / Sequential model: the user's model is not changed).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

import iba
from iba import driver
from iba import readout as shared
from iba.readout import ALPHA_BOUND, LAST_BIAS, LAST_SCALE
from iba_tf import _backend, _graph, _ops
from iba_tf.explainer import _input_size, _Plan, to_tensors
from iba_tf.layer import IBALayer

__all__ = ["ALPHA_BOUND", "LAST_BIAS", "LAST_SCALE", "Readout"]


class _Parts:
    """How a Readout runs one model: the ``IBALayer`` at the bottleneck, a model of the clean
    features (the bottleneck's input and every readout layer's output) and the part of the model
    from the bottleneck on (``head``)."""

    def __init__(self, model: Any, targets: Sequence[Any], layout: str | None):
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
        if not _graph.is_graph(model):
            raise TypeError(
                f"iba_tf.Readout needs a Functional or Sequential model; {model.name!r} is a "
                "subclassed model: rebuild it with the Functional API"
            )
        plan = _Plan(model, list(targets[:1]), layout)
        self.plan = plan  # keeps the copy with the inserted IBALayer alive
        self.layer: IBALayer = plan.layers[0]
        graph = plan.model
        readouts = [_graph.find_layer(model, t) for t in targets[1:]]
        self.names = [self.layer.name, *[layer.name for layer in readouts]]
        outputs = [_layer_output(graph, layer) for layer in readouts]
        start = _graph.layer_input(graph, self.layer)
        for layer, out in zip(readouts, outputs):
            if out is None:
                raise ValueError(
                    f"readout layer {layer.name!r} has several outputs or sits inside a nested "
                    "model: choose a top-level layer with one output"
                )
        if start is None or plan.head is None:
            raise ValueError(
                f"the bottleneck {self.names[0]!r} is not a top-level layer with one input: "
                "choose a top-level layer of the model"
            )
        self.features = keras.Model(graph.inputs, [start, *outputs])
        self.head = plan.head
        self.layout = shared.check_layout(self.layer.layout)
        shared.check_bottleneck_shape(self.layer.feature_shape, self.names[0])
        self.probabilities = _graph.output_is_probability(graph)
        spec = keras.tree.flatten(graph.outputs)
        self.n_classes = int(spec[0].shape[-1]) if len(spec) == 1 else None

    def read(self, x: Any, compiled: bool = False) -> list:
        """The clean features, readout vectors as ``1 x 1`` maps."""
        if compiled:
            out = self.features.predict_on_batch(x)
        else:
            with _backend.no_grad():
                out = self.features(x, training=False)
        out = [ops.convert_to_tensor(o) for o in out]
        return [
            shared.as_map(f, self.layout, name, ops.reshape) for f, name in zip(out, self.names)
        ]


def _layer_output(model: keras.Model, layer: keras.layers.Layer) -> Any:
    """The output tensor of ``layer`` in the graph of ``model`` (``None`` if several or none)."""
    from keras.src.ops.function import make_node_key

    graph = getattr(model, "_functional", None) or model
    nodes = getattr(graph, "_nodes", ())
    for index, node in enumerate(layer._inbound_nodes):
        if make_node_key(layer, index) in nodes:
            tensors = node.output_tensors
            return tensors[0] if len(tensors) == 1 else None
    return None


def network(params: Sequence[Any], x: Any, layout: str) -> Any:
    """``iba.readout.network`` in ``keras.ops``: three 1x1 convolutions (``einsum``: Keras' torch
    backend computes float64 ``matmul`` in ``floatx``), ReLUs, the clamp to ``[-5, 5]``."""
    spec = "oi,nihw->nohw" if layout == "channels_first" else "oi,nhwi->nhwo"
    for k in range(3):
        bias = params[2 * k + 1]
        if layout == "channels_first":
            bias = ops.reshape(bias, (-1, 1, 1))
        x = ops.einsum(spec, params[2 * k], x) + bias
        if k < 2:
            x = ops.relu(x)
    return clamp(x)


def clamp(x: Any) -> Any:
    """``alpha`` clamped to ``[-5, 5]``, written so that every backend passes the gradient at the
    bounds as ``torch.clamp`` does (``ops.clip``'s gradient there differs between backends)."""
    return x - ops.relu(x - ALPHA_BOUND) + ops.relu(-ALPHA_BOUND - x)


def readout_input(readouts: Sequence[Any], stats: Sequence[_ops.LayerStats], size, layout) -> Any:
    """``iba.readout.readout_input`` in ``keras.ops``: standardise, expand ``1 x 1`` maps, resize
    the others with ``iba.resize_matrix``, concatenate on channels."""
    height, width = size
    first = layout == "channels_first"
    parts = []
    for f, s in zip(readouts, stats):
        f = (f - s.mean) / s.std
        dtype = keras.backend.standardize_dtype(f.dtype)
        h, w = shared.grid(f.shape[1:], layout)
        if (h, w) == (1, 1):
            shape = list(f.shape)
            if first:
                shape[2:] = [height, width]
            else:
                shape[1:3] = [height, width]
            parts.append(ops.broadcast_to(f, [int(ops.shape(f)[0]), *shape[1:]]))
            continue
        a_h = ops.convert_to_tensor(iba.resize_matrix(h, height), dtype)
        a_w = ops.convert_to_tensor(iba.resize_matrix(w, width), dtype)
        if first:
            f = ops.einsum("Ww,ncHw->ncHW", a_w, ops.einsum("Hh,nchw->ncHw", a_h, f))
        else:
            f = ops.einsum("Ww,nHwc->nHWc", a_w, ops.einsum("Hh,nhwc->nHwc", a_h, f))
        parts.append(f)
    return ops.concatenate(parts, axis=1 if first else -1)


class Readout(shared.ReadoutExplainer):
    """A Readout Bottleneck at ``bottleneck`` that reads the features of ``readouts`` (Keras 3).

    Args:
        bottleneck: the layer (object or name) whose output the bottleneck replaces: an
            ``IBALayer`` of the model, or any top-level layer of a Functional / Sequential model
            (a copy of the model with an ``IBALayer`` after it is used; the model is not
            changed). Its features must be maps ``(H, W, C)`` (or ``(C, H, W)``, see ``layout``).
        readouts: layers (objects or names) whose outputs predict ``alpha``: feature maps are
            resized to the bottleneck's ``H x W``, vectors ``(D,)`` (e.g. logits) are expanded.
        beta, sigma, relu, min_std, active_threshold: as in ``iba.Config``.
        layout: the data format of an inserted ``IBALayer`` (default
            ``keras.config.image_data_format()``); the readouts are read in the same layout.

    The API is ``iba_torch.Readout``'s (both are ``iba.readout.ReadoutExplainer``):
    ``estimate``, ``fit``, ``analyze``, ``save`` / ``load`` (``iba.readout``'s file, shared with
    PyTorch and Flax). ``weights`` are the network's ``[w0, b0, w1, b1, w2, b2]`` (NumPy, ``w`` as
    ``(out, in)``). ``fit`` draws the noise from NumPy's generator seeded with ``seed`` and runs
    the reference's Adam (``iba.adam_update``).

    Example:
        >>> readout = Readout("conv2", ["conv3", "logits"])  # doctest: +SKIP
        >>> readout.estimate(model, x_train, n_samples=5000)  # doctest: +SKIP
        >>> losses = readout.fit(model, dataset, epochs=10, lr=1e-5)  # doctest: +SKIP
        >>> heatmaps = readout.analyze(model, x)  # one forward pass  # doctest: +SKIP
    """

    framework = "keras"
    one_target = (str, keras.layers.Layer)

    def _name(self, target: Any) -> str:
        return target if isinstance(target, str) else target.name

    def _bind(self, model: Any) -> _Parts:
        return _Parts(model, self._targets, self.layout)

    def _layout_of(self, bound: _Parts) -> str:
        return bound.layout

    @contextlib.contextmanager
    def _estimation(self, model: Any) -> Iterator[tuple[Callable, str]]:
        parts = self._bind(model)

        def capture(batch: Any) -> list[np.ndarray]:
            return [ops.convert_to_numpy(f) for f in parts.read(to_tensors(batch), compiled=True)]

        yield capture, parts.layout

    def _stats(self, dtype: str) -> list[_ops.LayerStats]:
        return [
            _ops.LayerStats(*(ops.convert_to_tensor(a, dtype) for a in s))
            for s in shared.statistics(self.estimators, self.config)
        ]

    def _features(self, parts: _Parts, x: Any) -> list:
        with driver.running_on(x):
            features = parts.read(x)
        return self._checked(features, parts.names)

    # -- training --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _training(
        self, parts: _Parts, weights: list[np.ndarray], lr: float, seed: int | None
    ) -> Iterator[shared.Step]:
        rng = np.random.default_rng(seed)
        state: dict[str, Any] = {}

        def step(x: Any, y: Any) -> float:
            x = to_tensors(x)
            driver.check_finite(x)
            features = self._features(parts, x)
            r = features[0]
            dtype = keras.backend.standardize_dtype(r.dtype)
            if "step" not in state:
                state["stats"] = self._stats(dtype)
                state["params"] = [ops.convert_to_tensor(w, dtype) for w in weights]
                state["mu"] = [ops.zeros_like(p) for p in state["params"]]
                state["nu"] = [ops.zeros_like(p) for p in state["params"]]
                state["step"] = _train_step(self._objective(parts), lr, parts.head.variables)
                state["count"] = 0
            stats = state["stats"]
            labels = shared.check_labels(y, int(r.shape[0]), parts.n_classes)
            size = shared.grid(r.shape[1:], parts.layout)
            readin = readout_input(features[1:], stats[1:], size, parts.layout)
            noise = ops.convert_to_tensor(rng.standard_normal(tuple(r.shape)), dtype)
            state["count"] += 1
            count = ops.convert_to_tensor(float(state["count"]), dtype)
            params, mu, nu, loss = state["step"](
                state["params"], state["mu"], state["nu"], count,
                r, readin, noise, ops.convert_to_tensor(labels.astype(np.int32)), *stats[0],
            )  # fmt: skip
            state["params"], state["mu"], state["nu"] = list(params), list(mu), list(nu)
            return float(ops.convert_to_numpy(loss))

        yield step
        if "params" in state:
            self.weights = [
                np.asarray(ops.convert_to_numpy(p), np.float64) for p in state["params"]
            ]

    def _objective(self, parts: _Parts) -> Callable:
        """``(params, r, readin, noise, labels, mean, std, mask) -> loss`` in ``keras.ops``."""
        config, layout, layer, head = self.config, parts.layout, parts.layer, parts.head
        probabilities = parts.probabilities

        def objective(params, r, readin, noise, labels, mean, std, mask):
            lam = _ops.damping(network(params, readin, layout), layout, config.sigma)
            z = _ops.bottleneck(r, lam, std * noise + mean, mask, config.relu)
            layer._hook = lambda _, inputs: ops.cast(z, inputs.dtype)
            try:
                outputs = head(r, training=False)
            finally:
                layer._hook = None
            n = int(r.shape[0])
            cross_entropy = ops.sum(_ops.classification_loss(outputs, labels, n, probabilities))
            cap = _ops.capacity(r, lam, mean, std, mask)
            size = int(np.prod(cap.shape))
            return ops.cast(cross_entropy, lam.dtype) / n + config.beta * ops.sum(cap) / size

        return objective

    # -- heatmaps --------------------------------------------------------------------------------

    def _forward(
        self, parts: _Parts, weights: list[np.ndarray], x: Any
    ) -> tuple[Any, Any, Any, tuple[int, int] | None]:
        driver.check_finite(x)
        x = to_tensors(x)
        layout = parts.layout
        with _backend.no_grad():
            features = self._features(parts, x)
            r = features[0]
            dtype = keras.backend.standardize_dtype(r.dtype)
            stats = self._stats(dtype)
            params = [ops.convert_to_tensor(w, dtype) for w in weights]
            readin = readout_input(
                features[1:], stats[1:], shared.grid(r.shape[1:], layout), layout
            )
            alpha = network(params, readin, layout)
            lam = _ops.damping(alpha, layout, self.config.sigma)
            cap = _ops.capacity(r, lam, *stats[0])
        arrays = [ops.convert_to_numpy(a) for a in (cap, alpha, lam)]
        return (*arrays, _input_size(x, layout))

    # -- save / load -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        bottleneck: Any = None,
        readouts: Sequence[Any] | None = None,
        layout: str | None = None,
    ) -> Readout:
        """Read a readout written by ``save`` of any framework; ``bottleneck`` and ``readouts``
        replace the saved layer names (a file of another framework names its layers), whose
        statistics are converted to the model's layout when it is used."""
        return cls._from_file(path, bottleneck, readouts, None, layout=layout)


def _train_step(objective: Callable, lr: float, variables: Sequence[Any]) -> Callable:
    """One training step ``(params, mu, nu, count, *args) -> (params, mu, nu, loss)``: the loss's
    gradient with respect to the network's ``params`` from the running backend's autodiff, then
    the reference's Adam (``iba_tf._ops.adam_update``) on each. Compiled as ``_backend.make_step``
    is (``tf.function``; ``jax.jit`` with the model's ``variables`` passed through a
    ``keras.StatelessScope``; torch eagerly)."""
    backend = keras.backend.backend()

    def update(grads, mu, nu, count, params):
        new = [_ops.adam_update(g, m, v, count, p, lr) for g, m, v, p in zip(grads, mu, nu, params)]
        return [n[0] for n in new], [n[1] for n in new], [n[2] for n in new]

    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def tf_step(params, mu, nu, count, *args):
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = objective(params, *args)
            grads = tape.gradient(loss, params)
            return (*update(grads, mu, nu, count, params), loss)

        return tf_step
    if backend == "jax":
        import jax

        held = list(variables)

        def jax_step(values, params, mu, nu, count, *args):
            with keras.StatelessScope(state_mapping=list(zip(held, values))):
                loss, grads = jax.value_and_grad(objective)(params, *args)
            return (*update(grads, mu, nu, count, params), loss)

        compiled = jax.jit(jax_step)
        return lambda *args: compiled([v.value for v in held], *args)
    if backend == "torch":
        import torch

        def torch_step(params, mu, nu, count, *args):
            params = [p.detach().requires_grad_(True) for p in params]
            with torch.enable_grad():
                loss = objective(params, *args)
                grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                new = update(grads, mu, nu, count, [p.detach() for p in params])
            return (*new, loss.detach())

        return torch_step
    raise NotImplementedError(
        f"iba_tf supports the Keras backends tensorflow, jax and torch, not {backend!r}"
    )
