"""Attribution baselines for PyTorch image classifiers, to compare IBA with (docs/mathematics.md
section 8).

The seven methods of ``iba.baselines`` (defined there once: their options, docstrings and how
the channels are reduced) on a ``torch.nn.Module`` and channels-first images ``(N, C, H, W)`` (a
tensor or a NumPy array; moved to the model's device and floating dtype):

    >>> import torch
    >>> from iba_torch import baselines
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    >>> x = torch.rand(2, 3, 8, 8)
    >>> baselines.saliency(model, x, target=3).shape
    (2, 8, 8)
    >>> baselines.grad_cam(conv_net, x, target=3, layer="features.4")  # doctest: +SKIP

This module gives them the model's logits and its gradients from torch autograd
(:func:`make_backend`). The model inputs (path points, noisy and occluded copies) are built on
the model's device; the gradients come back to the CPU once per batch.

Every method leaves the model exactly as it was: it runs in eval mode with every parameter's
``requires_grad`` off (gradients are taken with respect to the input only; ``.grad`` fields are
not touched) and restores modes and flags afterwards, also when it raises.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from iba import baselines as reference
from iba.baselines import INTEGRATION_METHODS, REDUCTIONS, integration_points  # noqa: F401
from iba_torch import _model

Target = int | np.ndarray | torch.Tensor | list[int] | None

__all__ = ["Target", *reference.ADAPTER_EXPORTS]


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()  # bfloat16 and the like have no NumPy dtype
    return t.cpu().numpy()


class _Torch(reference.Backend):
    """A ``torch.nn.Module`` for ``iba.baselines``: model inputs on its device, in its dtype."""

    layout = "channels_first"

    def __init__(self, model: torch.nn.Module, layer: tuple[str, torch.nn.Module] | None = None):
        self.model = model
        device, self.dtype = _model.model_device_dtype(model)
        self.device = device or torch.device("cpu")
        self.module: torch.nn.Module | None
        self.layer, self.module = layer if layer is not None else (None, None)

    def session(self) -> contextlib.AbstractContextManager:
        return _model.preserved(self.model)

    def images(self, x: Any) -> np.ndarray:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"x must be a tensor or a NumPy array of images, got {type(x).__name__}"
            )
        if not x.is_floating_point():
            x = x.to(self.dtype or torch.get_default_dtype())
        elif self.dtype is not None:
            x = x.to(self.dtype)
        return _numpy(x)

    def numpy(self, value: Any) -> Any:
        return _numpy(value) if isinstance(value, torch.Tensor) else value

    def from_numpy(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.require(a, requirements=["C", "W"]))
        return t.to(device=self.device, dtype=self.dtype or t.dtype)

    def take(self, x: torch.Tensor, index: slice | np.ndarray) -> torch.Tensor:
        if isinstance(index, slice):
            return x[index]
        return x[torch.as_tensor(index, device=x.device)]

    def logits(self, x: torch.Tensor) -> Any:
        with torch.no_grad():
            out = self.model(x)
        return _numpy(out) if isinstance(out, torch.Tensor) else out

    def _score(self, x: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
        out = self.model(x)
        return out.gather(1, torch.as_tensor(labels, device=out.device)[:, None]).sum()

    def gradients(self, x: torch.Tensor, labels: np.ndarray) -> np.ndarray:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self._score(x, labels), x)
        return _numpy(grad)

    def feature_gradients(
        self, x: torch.Tensor, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        captured: list[torch.Tensor] = []

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            captured.append(_model.first_tensor(output))

        x = x.detach().requires_grad_(True)  # so that the layer's output has a gradient
        with _model.hooks([(self.module, hook)]), torch.enable_grad():
            score = self._score(x, labels)
        if len(captured) != 1:
            raise RuntimeError(
                f"layer {self.layer!r} ran {len(captured)} times in one forward pass; Grad-CAM "
                "needs a layer that runs exactly once"
            )
        (features,) = captured
        (grad,) = torch.autograd.grad(score, features)
        return _numpy(features), _numpy(grad)


def make_backend(
    model: torch.nn.Module, *, layer: str | torch.nn.Module | None = None
) -> reference.Backend:
    """``model`` as an ``iba.baselines.Backend`` (Grad-CAM at ``layer``: a module or its name)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return _Torch(model, None if layer is None else _model.resolve(model, [layer])[0])


_METHODS = reference.bind(make_backend)
random, saliency, gradient_x_input, integrated_gradients, smoothgrad, occlusion, grad_cam = _METHODS
BASELINES = _METHODS._asdict()
"""The baselines by name (docs/mathematics.md section 8); ``grad_cam`` needs ``layer=``."""
