"""What the command line needs from a backend: the framework-free :class:`Runner` interface, the
preprocessing every port shares, and :func:`runner`, which finds a backend's runner by name.

The runners live in the adapters (``iba_torch.runner``, ``iba_tf.runner``, ``iba_jax.runner``),
registered as ``iba.backends`` entry points in ``pyproject.toml``; the names and install hints come
from :mod:`iba.backends`. Nothing here imports an adapter: a backend's framework is imported only
when it is chosen, by loading its entry point.

Layer names are PyTorch's module names (``_blocks.4``) on every backend; the Keras and Flax ports
name their layers by their own rules (``_blocks_4``), and either form is accepted there.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from iba import backends

# EfficientNet-Lite's preprocessing: (pixel - 127) / 128.
MEAN, STD = 0.498, 0.502
DEFAULT_LAYER = "_blocks.4"


class Unavailable(RuntimeError):
    """The chosen backend cannot run here; the message says what to install."""


def _install_hint(backend: str) -> str:
    engine = backends.engine(backend)
    return engine.install if engine else "install the package that registers it"


def unavailable(backend: str, err: ImportError, module: str | None = None) -> Unavailable:
    """The error that says what ``backend`` needs, from the ``ImportError`` of its framework."""
    name = err.name or module
    if name is None:  # an ImportError that says itself what is missing
        return Unavailable(f"the {backend} backend: {err}")
    return Unavailable(f"the {backend} backend needs {name}: {_install_hint(backend)}")


def require(module: str, backend: str):
    """``module`` imported, or :class:`Unavailable` saying what ``backend`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise unavailable(backend, err, module) from None


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

    def __init__(self, model: Any = None) -> None:
        self.model = model

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


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=backends.ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """The backends :func:`runner` takes: the registry's, then any other registered runner."""
    known = backends.engine_names()
    return known + sorted(set(_entry_points()) - set(known))


def runner_class(backend: str) -> type[Runner]:
    """The runner of ``backend``, from its ``iba.backends`` entry point (imports its framework)."""
    points = _entry_points()
    if backend not in points:
        if backends.engine(backend) is None:
            raise ValueError(f"unknown backend {backend!r}; backends are: {', '.join(names())}")
        raise Unavailable(
            f"no runner is registered for the {backend} backend (entry point group "
            f"{backends.ENTRY_POINT_GROUP!r}): install iba itself, pip install ."
        )
    try:
        return points[backend].load()
    except ImportError as err:
        raise unavailable(backend, err) from None


def runner(backend: str, model=None) -> Runner:
    """The runner of ``backend`` (``torch``, ``keras`` or ``jax``); ``model`` replaces the bundled
    EfficientNet-Lite0 (a ``torch.nn.Module``, a ``keras.Model``, a Flax ``(module, variables)``)."""
    cls = runner_class(backend)
    try:
        return cls(model)
    except ImportError as err:  # the bundled model's package or weights
        raise unavailable(backend, err) from None
