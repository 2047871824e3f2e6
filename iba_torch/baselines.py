"""Attribution baselines for PyTorch image classifiers, to compare IBA with (SPEC section 8).

Every method is a function ``method(model, x, target=None, **options) -> np.ndarray`` that takes a
batch ``x`` of ``N`` images ``(N, C, H, W)`` (a tensor or a NumPy array; moved to the model's
device and floating dtype) and returns one map per image, ``(N, H, W)``, at the input size. The
score explained is the model's output (the logit) of ``target``: an int, one int per image, or
``None`` for the model's top class on each image.

    >>> import torch
    >>> from iba_torch import baselines
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    >>> x = torch.rand(2, 3, 8, 8)
    >>> baselines.saliency(model, x, target=3).shape
    (2, 8, 8)
    >>> baselines.grad_cam(conv_net, x, target=3, layer="features.4")  # doctest: +SKIP

The methods are the NumPy reference's (``iba.baselines``, which defines how the channels are
reduced); this module gives them the model's logits and its gradients from torch autograd. The
model inputs (path points, noisy and occluded copies) are built on the model's device; the
gradients come back to the CPU once per batch.

Every method leaves the model exactly as it was: it runs in eval mode with every parameter's
``requires_grad`` off (gradients are taken with respect to the input only; ``.grad`` fields are
not touched) and restores modes and flags afterwards, also when it raises. Batched methods run
``batch_size`` model inputs per forward pass; rows are input-major.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from iba import baselines as reference
from iba.baselines import INTEGRATION_METHODS, REDUCTIONS, integration_points
from iba_torch import _model

Target = int | np.ndarray | torch.Tensor | list[int] | None

__all__ = [
    "BASELINES",
    "INTEGRATION_METHODS",
    "REDUCTIONS",
    "Target",
    "gradient_x_input",
    "grad_cam",
    "integrated_gradients",
    "integration_points",
    "occlusion",
    "random",
    "saliency",
    "smoothgrad",
]


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()  # bfloat16 and the like have no NumPy dtype
    return t.cpu().numpy()


def _array(value: Any) -> Any:
    """Tensors as NumPy arrays (targets, baselines, noise); anything else as it is."""
    return _numpy(value) if isinstance(value, torch.Tensor) else value


class _Torch(reference.Backend):
    """A ``torch.nn.Module`` for ``iba.baselines``: model inputs on its device, in its dtype."""

    layout = "channels_first"

    def __init__(self, model: torch.nn.Module, layer: tuple[str, torch.nn.Module] | None = None):
        self.model = model
        device, self.dtype = _model.model_device_dtype(model)
        self.device = device or torch.device("cpu")
        self.layer, self.module = layer if layer is not None else (None, None)

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


def _images(model: torch.nn.Module, x: Any) -> np.ndarray:
    """``x`` as a NumPy array in the model's floating dtype (checked by ``iba.baselines``)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor or a NumPy array of images, got {type(x).__name__}")
    _, dtype = _model.model_device_dtype(model)
    if not x.is_floating_point():
        x = x.to(dtype or torch.get_default_dtype())
    elif dtype is not None:
        x = x.to(dtype)
    return _numpy(x)


def _run(
    fn: Callable[..., np.ndarray],
    model: torch.nn.Module,
    x: Any,
    target: Target,
    layer: tuple[str, torch.nn.Module] | None = None,
    /,
    **options: Any,
) -> np.ndarray:
    """``fn`` of ``iba.baselines`` on ``model`` in eval mode with frozen parameters."""
    images = _images(model, x)
    with _model.preserved(model):
        return fn(_Torch(model, layer), images, _array(target), **options)


def random(model: torch.nn.Module, x: Any, target: Target = None, *, seed: int = 0) -> np.ndarray:
    """Uniform noise in ``[0, 1)`` per pixel, ``(N, H, W)``: the baseline every method must beat.

    ``seed`` seeds NumPy's generator; the model is not called (``target`` is ignored).
    """
    return reference.random(_Torch(model), _images(model, x), seed=seed)


def saliency(
    model: torch.nn.Module,
    x: Any,
    target: Target = None,
    *,
    reduce: str = "max",
    batch_size: int = 64,
) -> np.ndarray:
    """Saliency map: ``|d logit[target] / d x|``, reduced over channels (Simonyan et al., 2014).

    Args:
        reduce: ``"max"`` (the maximum over channels, as in the paper and the IBA paper's code)
            or ``"sum"``. Captum's ``Saliency`` returns the per-channel ``|gradient|``.
    """
    reference.check_reduce(reduce)
    return _run(reference.saliency, model, x, target, reduce=reduce, batch_size=batch_size)


def gradient_x_input(
    model: torch.nn.Module, x: Any, target: Target = None, *, batch_size: int = 64
) -> np.ndarray:
    """Gradient x input, summed over channels (signed; Shrikumar et al., 2016)."""
    return _run(reference.gradient_x_input, model, x, target, batch_size=batch_size)


def integrated_gradients(
    model: torch.nn.Module,
    x: Any,
    target: Target = None,
    *,
    steps: int = 50,
    baseline: str | float | Any = "mean",
    method: str = "riemann_right",
    batch_size: int = 50,
) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al., 2017), summed over channels (signed).

    ``(x - x') * sum_k w_k grad(x' + alpha_k (x - x'))`` with the gradients of the target's logit.

    Args:
        steps: points on the straight path from the baseline ``x'`` to ``x`` (50, SPEC section 8).
        baseline: ``"mean"`` (each image's per-channel mean, the IBA paper's choice), a number,
            or an array / tensor that broadcasts to ``x``.
        method: the quadrature, see :func:`integration_points` (Captum's default is
            ``"gausslegendre"``; the paper's sum is ``"riemann_right"``).
        batch_size: path points per forward pass (rows of all images, input-major).
    """
    integration_points(steps, method)
    return _run(
        reference.integrated_gradients,
        model,
        x,
        target,
        steps=steps,
        baseline=_array(baseline),
        method=method,
        batch_size=batch_size,
    )


def smoothgrad(
    model: torch.nn.Module,
    x: Any,
    target: Target = None,
    *,
    n_samples: int = 50,
    noise_level: float = 0.15,
    reduce: str = "max",
    seed: int | None = 0,
    noise: Any = None,
    batch_size: int = 50,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al., 2017): the mean ``|gradient|`` over noisy copies, reduced over
    channels like :func:`saliency` (what Captum's ``NoiseTunnel(Saliency)`` computes per channel).

    Args:
        n_samples: noisy copies per image (50).
        noise_level: the noise std as a share of each image's range: ``std = noise_level *
            (x.max() - x.min())`` (0.15, SPEC section 8).
        reduce: ``"max"`` or ``"sum"`` over channels of the mean ``|gradient|``.
        seed: seeds the draws, ``iba.baselines.smoothgrad_noise`` (NumPy; the same noise as
            ``iba_tf`` and ``iba_jax`` give for the same seed); ``None`` draws fresh ones.
        noise: the standard-normal draws themselves, ``(N, n_samples, C, H, W)`` (instead of
            ``seed``), scaled by each image's std.
        batch_size: noisy copies per forward pass.
    """
    reference.check_reduce(reduce)
    return _run(
        reference.smoothgrad,
        model,
        x,
        target,
        n_samples=n_samples,
        noise_level=noise_level,
        reduce=reduce,
        seed=seed,
        noise=_array(noise),
        batch_size=batch_size,
    )


def occlusion(
    model: torch.nn.Module,
    x: Any,
    target: Target = None,
    *,
    patch: int = 8,
    baseline: float = 0.0,
    batch_size: int = 64,
) -> np.ndarray:
    """Occlusion (Zeiler & Fergus, 2014): the drop of the target's logit when a ``patch`` x
    ``patch`` square (all channels) is set to ``baseline``; stride = ``patch``.

    Every pixel of a patch gets the patch's drop (one value per pixel, not summed over channels).
    Where ``patch`` does not divide the image, the last row / column of patches is smaller (Captum
    leaves those pixels at 0 instead). The IBA paper uses 8x8 and 14x14 patches.
    """
    return _run(
        reference.occlusion, model, x, target, patch=patch, baseline=baseline, batch_size=batch_size
    )


def grad_cam(
    model: torch.nn.Module,
    x: Any,
    target: Target = None,
    *,
    layer: str | torch.nn.Module,
    relu: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) at a convolutional ``layer``, upsampled to the input.

    ``ReLU(sum_c w_c A_c)`` with ``A`` the layer's output ``(C, h, w)`` and ``w_c`` the spatial
    mean of ``d logit[target] / d A_c``; resized bilinearly with half-pixel centres
    (:func:`iba.resize`, PyTorch's ``align_corners=False``), not rescaled.

    Args:
        layer: the module or its dotted name from ``named_modules()``; its output (or its first
            item) must be a channels-first feature map ``(N, C, h, w)``.
        relu: apply the ReLU (``False`` returns the signed map).
    """
    ((name, module),) = _model.resolve(model, [layer])
    return _run(
        reference.grad_cam, model, x, target, (name, module), relu=relu, batch_size=batch_size
    )


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "random": random,
    "saliency": saliency,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "occlusion": occlusion,
    "grad_cam": grad_cam,
}
"""The baselines by name (SPEC section 8); ``grad_cam`` needs ``layer=``."""
