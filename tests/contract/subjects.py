"""The subjects of the contract suite: one small model per backend, and what a test needs of it.

Every subject is the conformance suite's tiny CNN (``iba.nn.tiny_cnn(0)``: conv1-relu1-conv2-relu2-
pool-conv3-relu3-flatten-fc, 8x8 inputs, 10 classes), ported to the backend by
``conformance/ports``, with its inputs in the backend's layout (channels-first for PyTorch,
channels-last for Keras and Flax). The bottleneck sits at ``relu2`` (CoIBA: ``relu1`` and
``relu2``). A subject gives:

- ``model``, ``data`` (estimation inputs), ``x`` (two inputs to explain), ``labels``;
- ``target`` / ``coiba``: the targets in the backend's form, ``names`` / ``coiba_names``: how
  messages name them; ``feature_shape`` / ``other_shape``: the features of one input at ``relu2``
  and at ``relu1`` in the backend's layout;
- ``snapshot(model)``: everything an explainer must leave as it was (compare with
  :func:`assert_same`);
- ``trip_model``: the model with a layer after the target that calls :data:`TRIPWIRE` in every
  optimisation step (at run time, also inside compiled steps), to make a later step fail;
- ``fresh_model()``: a model that carries no statistics (Keras' ``IBALayer``s store them);
- ``per_row_loss(labels)`` / ``scalar_loss(label)``: the classification loss written in the
  backend's ops, as a ``loss_fn``; ``rows_loss(k)``: a loss of ``k`` rows.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import OrderedDict
from typing import Any

import numpy as np

import iba
from conformance import vectors
from iba import nn as reference_nn

N_DATA = 64  # estimation samples: one chunk, a few compiled shapes
N_CLASSES = 10
IMAGE = (1, 8, 8)  # channels-first
FIRST = (6, 8, 8)  # relu2's features per input, channels-first
OTHER = (4, 8, 8)  # relu1's
CONFIG = {"steps": 3, "batch_size": 2}  # small: 2 updates per analyze, 2 noise samples


class TripError(RuntimeError):
    """What the tripwire raises."""


class Tripwire:
    """Counts the calls of the layer after the target in the optimisation steps; raises on the
    ``at``-th call when armed, or on any call when ``forbid``."""

    def __init__(self) -> None:
        self.calls = 0
        self.at: int | None = None
        self.forbid = False

    def hit(self, *args: Any) -> None:
        self.calls += 1
        if self.forbid:
            raise TripError("tripwire: the forward pass went past the last target")
        if self.at is not None and self.calls >= self.at:
            raise TripError(f"tripwire: raised on call {self.calls}")

    @contextlib.contextmanager
    def armed(self, at: int | None = None, forbid: bool = False):
        self.calls, self.at, self.forbid = 0, at, forbid
        try:
            yield self
        finally:
            self.at, self.forbid = None, False


TRIPWIRE = Tripwire()


@functools.cache
def weights() -> dict:
    """The tiny CNN's weights in PyTorch's names and shapes (float64)."""
    return vectors.cnn_weights(reference_nn.tiny_cnn(0))


@functools.cache
def images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, x, labels)``, channels-first float32: estimation inputs, two inputs, their classes."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((N_DATA, *IMAGE)).astype(np.float32)
    x = rng.standard_normal((2, *IMAGE)).astype(np.float32)
    return data, x, np.array([3, 7])


def reference_features(data: np.ndarray, name: str) -> np.ndarray:
    """The reference CNN's features at ``name`` on channels-first ``data`` (float64)."""
    return reference_nn.capture(reference_nn.tiny_cnn(0), data.astype(np.float64), [name])[0]


def assert_same(before: Any, after: Any, where: str = "snapshot") -> None:
    """Snapshots equal: arrays element for element, everything else with ``==``."""
    if isinstance(before, dict):
        assert isinstance(after, dict) and list(before) == list(after), where
        for key in before:
            assert_same(before[key], after[key], f"{where}[{key!r}]")
    elif isinstance(before, (list, tuple)):
        assert isinstance(after, (list, tuple)) and len(before) == len(after), where
        for i, (a, b) in enumerate(zip(before, after)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(before, np.ndarray):
        np.testing.assert_array_equal(after, before, err_msg=where)
    else:
        assert before == after, f"{where}: {before!r} != {after!r}"


class Subject:
    """What the contract tests know of a backend; see the module docstring."""

    name: str
    layout: str
    target: Any
    coiba: list
    names: list[str]
    coiba_names: list[str]
    unknown = "relu9"  # a target that is not in the model
    known: list[str]  # layer names an unknown-layer error lists
    model: Any
    trip_model: Any

    def __init__(self) -> None:
        data, x, labels = images()
        last = self.layout == "channels_last"
        self.data_nchw, self.x_nchw = data, x
        self.data, self.x = self.inputs(self.to_layout(data)), self.inputs(self.to_layout(x))
        self.labels = labels
        self.feature_shape = (FIRST[1], FIRST[2], FIRST[0]) if last else FIRST
        self.other_shape = (OTHER[1], OTHER[2], OTHER[0]) if last else OTHER
        self.other_layout = "channels_first" if last else "channels_last"

    def __repr__(self) -> str:
        return self.name

    def to_layout(self, array: np.ndarray, lead: int = 1) -> np.ndarray:
        """A channels-first array ``(*lead, C, H, W)`` in the subject's layout."""
        return vectors.to_channels_last(array, lead) if self.layout == "channels_last" else array

    def inputs(self, array: np.ndarray) -> Any:
        return array

    def rows(self, x: Any, start: int, stop: int) -> Any:
        return x[start:stop]

    def fresh_model(self) -> Any:
        return self.model

    def explainer(self, targets: Any = None, **fields: Any):
        """An ``IBA`` with the suite's small config (``fields`` override it)."""
        return self.IBA(self.target if targets is None else targets, **{**CONFIG, **fields})

    def rows_loss(self, k: int):
        """A ``loss_fn`` that returns ``k`` rows (a wrong number)."""
        return lambda outputs: outputs[:k, 0]


# -- PyTorch -------------------------------------------------------------------------------------


class TorchSubject(Subject):
    name = "torch"
    layout = "channels_first"
    target, coiba = "relu2", ["relu1", "relu2"]
    names, coiba_names = ["relu2"], ["relu1", "relu2"]
    known = ["'conv1'", "'relu1'", "'fc'"]

    def __init__(self) -> None:
        import torch

        from conformance.ports import torch_ports
        from iba_torch import IBA

        self.torch, self.IBA = torch, IBA
        super().__init__()
        model = torch_ports.model("cnn", weights(), torch.float32, "cpu")
        # state that the explainer must put back: train mode, a frozen weight, a gradient and a
        # user's hook
        model.train()
        model.fc.weight.requires_grad_(False)
        model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
        model.relu1.register_forward_hook(_torch_user_hook)
        self.model = model
        modules = list(model.named_children())
        at = [n for n, _ in modules].index("relu2") + 1
        trip = _torch_trip_module()
        self.trip_model = torch.nn.Sequential(
            OrderedDict([*modules[:at], ("trip", trip), *modules[at:]])
        )

    def inputs(self, array: np.ndarray) -> Any:
        return self.torch.as_tensor(array)

    def snapshot(self, model) -> dict:
        torch = self.torch
        with torch.no_grad():
            outputs = model(self.x).numpy().copy()
        return {
            "state": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
            "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
            "grad": {
                k: None if p.grad is None else p.grad.numpy().copy()
                for k, p in model.named_parameters()
            },
            "training": {k: m.training for k, m in model.named_modules()},
            "hooks": {
                k: [
                    list(m._forward_hooks),
                    list(m._forward_pre_hooks),
                    list(m._backward_hooks),
                    list(getattr(m, "_backward_pre_hooks", {})),
                ]
                for k, m in model.named_modules()
            },
            "outputs": outputs,
        }

    def per_row_loss(self, labels: np.ndarray):
        rows = self.torch.as_tensor(np.repeat(labels, CONFIG["batch_size"]))
        return lambda outputs: -outputs.log_softmax(-1).gather(1, rows[:, None])[:, 0]

    def scalar_loss(self, label: int):
        return lambda outputs: -outputs.log_softmax(-1)[:, label].mean()


def _torch_user_hook(module, args, output):
    return None


def _torch_trip_module():
    from .torch_trip import Trip

    return Trip()


# -- Keras 3 -------------------------------------------------------------------------------------


class KerasSubject(Subject):
    layout = "channels_last"
    target, coiba = "iba_relu2", ["iba_relu1", "iba_relu2"]
    names, coiba_names = ["iba_relu2"], ["iba_relu1", "iba_relu2"]
    known = ["conv1", "relu1", "fc"]

    def __init__(self, backend: str) -> None:
        import keras

        import iba_tf

        if keras.backend.backend() != backend:
            raise RuntimeError(
                f"IBA_BACKEND=keras-{backend} needs KERAS_BACKEND={backend}; Keras runs on "
                f"{keras.backend.backend()!r}"
            )
        self.keras, self.IBA = keras, iba_tf.IBA
        self.name = f"keras-{backend}"
        super().__init__()
        self.model = self.fresh_model()
        self.trip_model = self.fresh_model(trip=True)

    def fresh_model(self, trip: bool = False):
        """The port with ``IBALayer``s after ``relu1`` and ``relu2`` (no statistics in them)."""
        from conformance.ports import keras_ports
        from iba_tf import IBALayer

        keras = self.keras

        def bottleneck(name, x):
            layer = IBALayer("channels_last", name=keras_ports.keras_name(f"iba.{name}"))
            x = layer(x)
            return _keras_trip_layer()(x) if trip and name == "relu2" else x

        inputs, outputs = keras_ports._cnn(weights(), ("relu1", "relu2"), "float32", bottleneck)
        return keras.Model(inputs, outputs)

    def snapshot(self, model) -> dict:
        from keras import ops

        from iba_tf import IBALayer

        variables = [v for v in model.variables if "seed_generator" not in v.path]
        return {
            "layers": [layer.name for layer in model.layers],
            "variables": [(v.path, np.array(ops.convert_to_numpy(v.value))) for v in variables],
            "trainable": [(v.path, v.trainable) for v in variables],
            "hooks": [
                (layer.name, layer._hook is None)
                for layer in model.layers
                if isinstance(layer, IBALayer)
            ],
        }

    def per_row_loss(self, labels: np.ndarray):
        from keras import ops

        rows = np.repeat(labels, CONFIG["batch_size"]).astype(np.int32)

        def loss(outputs):
            picked = ops.take_along_axis(
                ops.log_softmax(outputs, axis=-1), ops.convert_to_tensor(rows[:, None]), axis=-1
            )
            return -picked[:, 0]

        return loss

    def scalar_loss(self, label: int):
        from keras import ops

        return lambda outputs: -ops.mean(ops.log_softmax(outputs, axis=-1)[:, label])


@functools.cache
def _keras_trip_class():
    import keras

    class Trip(keras.layers.Layer):
        """The identity that calls the tripwire at run time (also in compiled steps)."""

        def call(self, x):
            backend = keras.backend.backend()
            if backend == "jax":
                import jax

                jax.debug.callback(TRIPWIRE.hit)
                return x
            if backend == "tensorflow":
                import tensorflow as tf

                zero = tf.py_function(lambda: TRIPWIRE.hit() or 0.0, [], tf.float32)
                zero.set_shape(())
                return x + tf.cast(zero, x.dtype) * 0
            TRIPWIRE.hit()
            return x

        def compute_output_shape(self, input_shape):
            return input_shape

    return Trip


def _keras_trip_layer():
    return _keras_trip_class()(name="trip")


# -- Flax ----------------------------------------------------------------------------------------


class FlaxSubject(Subject):
    layout = "channels_last"
    target, coiba = "relu2", ["relu1", "relu2"]
    names, coiba_names = ["relu2"], ["relu1", "relu2"]
    known = ["conv1", "relu1", "fc"]

    def __init__(self, api: str) -> None:
        import jax
        import jax.numpy as jnp

        from conformance.ports import flax_ports
        from iba_jax import IBA

        self.jax, self.jnp, self.IBA, self.api = jax, jnp, IBA, api
        self.name = f"flax-{api}"
        super().__init__()
        if api == "linen":
            module, variables = flax_ports.linen_model("cnn", weights(), np.float32)
            self.model = (module, variables)
            self.trip_model = (_linen_trip_cnn()(), variables)
        else:
            self.model = flax_ports.nnx_model("cnn", weights(), np.float32)
            self.trip_model = _nnx_trip_cnn()(self.model)

    def inputs(self, array: np.ndarray) -> Any:
        return self.jnp.asarray(array)

    def snapshot(self, model) -> dict:
        jax = self.jax
        if self.api == "linen":
            module, variables = model
            leaves, treedef = jax.tree.flatten(variables)
            outputs = module.apply(variables, self.x)
            return {
                "tree": str(treedef),
                "variables": [np.array(leaf) for leaf in leaves],
                "outputs": np.array(outputs),
            }
        from flax import nnx

        from iba_jax import Bottleneck

        modules = list(nnx.iter_modules(model))
        return {
            "modules": [(tuple(p), type(m).__name__, id(m)) for p, m in modules],
            "bottlenecks": [p for p, m in modules if isinstance(m, Bottleneck)],
            "graphdef": str(nnx.graphdef(model)),
            "state": [np.array(leaf) for leaf in jax.tree.leaves(nnx.state(model))],
            "outputs": np.array(model(self.x)),
        }

    def per_row_loss(self, labels: np.ndarray):
        jax, jnp = self.jax, self.jnp
        rows = jnp.asarray(np.repeat(labels, CONFIG["batch_size"]))

        def loss(outputs):
            logp = jax.nn.log_softmax(outputs, axis=-1)
            return -jnp.take_along_axis(logp, rows[:, None], axis=1)[:, 0]

        return loss

    def scalar_loss(self, label: int):
        jax = self.jax
        return lambda outputs: -jax.nn.log_softmax(outputs, axis=-1)[:, label].mean()


@functools.cache
def _linen_trip_cnn():
    import flax.linen as nn
    import jax

    from conformance.ports import flax_ports

    class Trip(nn.Module):
        @nn.compact
        def __call__(self, x):
            jax.debug.callback(TRIPWIRE.hit)
            return x

    class TripCNN(nn.Module):
        """``flax_ports.LinenCNN`` with a ``Trip`` after ``relu2`` (the same variables)."""

        @nn.compact
        def __call__(self, x):
            relu = flax_ports.ReLU
            x = relu(name="relu1")(nn.Conv(4, (3, 3), padding=1, name="conv1")(x))
            x = relu(name="relu2")(nn.Conv(6, (3, 3), padding=1, name="conv2")(x))
            x = Trip(name="trip")(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = relu(name="relu3")(nn.Conv(8, (3, 3), padding=1, name="conv3")(x))
            return nn.Dense(10, name="fc")(x.reshape(x.shape[0], -1))

    return TripCNN


@functools.cache
def _nnx_trip_cnn():
    import jax
    from flax import nnx

    class Trip(nnx.Module):
        def __call__(self, x):
            jax.debug.callback(TRIPWIRE.hit)
            return x

    class TripCNN(nnx.Module):
        """The NNX port's layers (shared) with a ``Trip`` after ``relu2``."""

        def __init__(self, base):
            for name in ("conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "fc"):
                setattr(self, name, getattr(base, name))
            self.trip = Trip()

        def __call__(self, x):
            x = self.trip(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
            x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            x = self.relu3(self.conv3(x))
            return self.fc(x.reshape(x.shape[0], -1))

    return TripCNN


# -- the backend under test ----------------------------------------------------------------------


def backend() -> str:
    """``IBA_BACKEND`` (``numpy`` when unset)."""
    return os.environ.get("IBA_BACKEND", "").strip() or "numpy"


def subject_names(name: str) -> list[str]:
    """The subjects of a backend: Flax runs the contract on a Linen and an NNX model."""
    return ["flax-linen", "flax-nnx"] if name == "flax" else [name]


@functools.cache
def make(name: str) -> Subject:
    """The subject ``name`` (built once per session)."""
    if name == "torch":
        return TorchSubject()
    if name.startswith("keras-"):
        return KerasSubject(name.removeprefix("keras-"))
    if name.startswith("flax-"):
        return FlaxSubject(name.removeprefix("flax-"))
    raise ValueError(
        f"IBA_BACKEND={name!r}: the contract suite knows torch, keras-tensorflow, keras-jax, "
        "keras-torch and flax"
    )


def draw_noise(subject: Subject, seed: int, n_inputs: int | None = 2, shape=None) -> np.ndarray:
    """``iba.draw_noise`` for the suite's config at the subject's first target."""
    shape = subject.feature_shape if shape is None else shape
    return iba.draw_noise(seed, CONFIG["steps"], CONFIG["batch_size"], shape, n_inputs=n_inputs)


def model_snapshot(model: Any) -> Any:
    """What an explanation must leave as it was of a real model (the runners' text and dual
    encoders), per framework: a module, a Keras model or a Flax (module, variables) pair."""
    if backend() == "torch":
        return {
            "state": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
            "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
            "training": {k: m.training for k, m in model.named_modules()},
            "hooks": {k: len(m._forward_hooks) for k, m in model.named_modules()},
        }
    if backend().startswith("keras-"):
        from keras import ops

        variables = [v for v in model.variables if "seed_generator" not in v.path]
        return {
            "layers": [layer.name for layer in model.layers],
            "variables": [(v.path, np.array(ops.convert_to_numpy(v.value))) for v in variables],
        }
    import jax

    module, variables = model
    return {"module": repr(module), "leaves": [np.asarray(a) for a in jax.tree.leaves(variables)]}
