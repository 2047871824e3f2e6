"""Attribution baselines for PyTorch image classifiers, to compare IBA with (SPEC section 8).

Every method is a function ``method(model, x, target=None, **options) -> np.ndarray`` that takes a
batch ``x`` of ``N`` images ``(N, C, H, W)`` (a tensor or a NumPy array; moved to the model's
device and floating dtype) and returns one map per image, ``(N, H, W)``, at the input size. The
score explained is the model's output (the logit) of ``target``: an int, one int per image, or
``None`` for the model's top class on each image.

How the channels are reduced to one value per pixel:

- :func:`saliency`, :func:`smoothgrad`: ``|gradient|``, the maximum over channels (Simonyan et
  al.; the IBA paper's code), or the sum with ``reduce="sum"``.
- :func:`gradient_x_input`, :func:`integrated_gradients`: the signed sum over channels, so a map
  sums to the method's total attribution (IG's completeness; what sensitivity-n correlates).
- :func:`occlusion`: one output difference per patch, shared by all channels (not summed).
- :func:`grad_cam`: one value per position of the layer's feature map, upsampled.
- :func:`random`: uniform noise, seeded; the model is not called.

Every method leaves the model exactly as it was: it runs in eval mode with every parameter's
``requires_grad`` off (gradients are taken with respect to the input only; ``.grad`` fields are
not touched) and restores modes and flags afterwards, also when it raises. Batched methods run
``batch_size`` model inputs per forward pass; rows are input-major.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

import iba
from iba_torch import _model

Target = int | np.ndarray | torch.Tensor | list[int] | None
INTEGRATION_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
                       "gausslegendre")  # fmt: skip
REDUCTIONS = ("max", "sum")


def _images(model: torch.nn.Module, x: Any) -> torch.Tensor:
    """``x`` as a detached ``(N, C, H, W)`` floating tensor on the model's device and dtype."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor or a NumPy array of images, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(
            f"x must be a non-empty batch of images (N, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch axis with x[None]"
        )
    device, dtype = _model.model_device_dtype(model)
    if not x.is_floating_point():
        x = x.to(dtype or torch.get_default_dtype())
    x = x.detach().to(device=device or x.device, dtype=dtype or x.dtype)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or infinite values; check the input data")
    return x


def _check_target(target: Target, n: int) -> torch.Tensor | None:
    """One int per input as a long tensor (an int is broadcast); ``None`` stays ``None``."""
    if target is None:
        return None
    labels = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else target
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"target must be an int or one int per input (class indices), got {target!r}"
        )
    if labels.ndim == 0:
        labels = np.full(n, int(labels))
    if labels.shape != (n,):
        raise ValueError(f"target has shape {labels.shape}; expected one int or {n} ints")
    if labels.min() < 0:
        raise ValueError(f"target must be >= 0 (a class index), got {int(labels.min())}")
    return torch.as_tensor(labels, dtype=torch.long)


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model must return logits (n, n_classes) for a batch of n = {len(x)}, got {shape}"
        )
    return out


def _select(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logits[i, labels[i]]``; raise if a label is out of range."""
    n_classes = logits.shape[1]
    if int(labels.max()) >= n_classes:
        raise ValueError(
            f"target {int(labels.max())} out of range for a model with {n_classes} outputs"
        )
    return logits.gather(1, labels.to(logits.device)[:, None])[:, 0]


def _resolve_target(model: torch.nn.Module, x: torch.Tensor, target: Target, batch_size: int):
    """The checked target per input; ``None`` becomes the model's top class on ``x``."""
    labels = _check_target(target, len(x))
    if labels is not None:
        return labels
    with torch.no_grad():
        top = [_logits(model, x[i : i + batch_size]).argmax(1) for i in _starts(len(x), batch_size)]
    return torch.cat(top).cpu()


def _starts(n: int, batch_size: int) -> range:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return range(0, n, int(batch_size))


def _gradients(
    model: torch.nn.Module,
    rows: Callable[[slice], torch.Tensor],
    labels: torch.Tensor,
    batch_size: int,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(rows, d logit[label] / d input)`` for the inputs ``rows(slice)``, a batch at a time."""
    for start in _starts(len(labels), batch_size):
        index = slice(start, min(len(labels), start + batch_size))
        x = rows(index).detach().requires_grad_(True)
        score = _select(_logits(model, x), labels[index]).sum()
        (grad,) = torch.autograd.grad(score, x)
        yield index, grad


def _reduce(values: torch.Tensor, reduce: str) -> torch.Tensor:
    if reduce == "max":
        return values.amax(dim=1)
    if reduce == "sum":
        return values.sum(dim=1)
    raise ValueError(f"unknown reduce {reduce!r}; reductions are: {', '.join(REDUCTIONS)}")


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def random(model: torch.nn.Module, x: Any, target: Target = None, *, seed: int = 0) -> np.ndarray:
    """Uniform noise in ``[0, 1)`` per pixel, ``(N, H, W)``: the baseline every method must beat.

    ``seed`` seeds NumPy's generator; the model is not called (``target`` is ignored).
    """
    images = _images(model, x)
    n, _, height, width = images.shape
    return np.random.default_rng(seed).random((n, height, width))


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
    _reduce(torch.zeros(1, 1), reduce)
    images = _images(model, x)
    out = torch.empty(images.shape[0], *images.shape[2:], dtype=images.dtype)
    with _model.preserved(model):
        labels = _resolve_target(model, images, target, batch_size)
        for index, grad in _gradients(model, lambda s: images[s], labels, batch_size):
            out[index] = _reduce(grad.abs(), reduce).cpu()
    return _numpy(out)


def gradient_x_input(
    model: torch.nn.Module, x: Any, target: Target = None, *, batch_size: int = 64
) -> np.ndarray:
    """Gradient x input, summed over channels (signed; Shrikumar et al., 2016)."""
    images = _images(model, x)
    out = torch.empty(images.shape[0], *images.shape[2:], dtype=images.dtype)
    with _model.preserved(model):
        labels = _resolve_target(model, images, target, batch_size)
        for index, grad in _gradients(model, lambda s: images[s], labels, batch_size):
            out[index] = (grad * images[index]).sum(dim=1).cpu()
    return _numpy(out)


def integration_points(steps: int, method: str = "riemann_right") -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` of the path integral over ``[0, 1]`` (Captum's methods and names).

    ``riemann_right`` (the IG paper's sum, ``alpha = k / steps`` for ``k = 1 .. steps``),
    ``riemann_left``, ``riemann_middle``, ``riemann_trapezoid`` or ``gausslegendre``.
    """
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    n = int(steps)
    weights = np.full(n, 1.0 / n)
    if method == "riemann_right":
        alphas = np.linspace(1.0 / n, 1.0, n)
    elif method == "riemann_left":
        alphas = np.linspace(0.0, 1.0 - 1.0 / n, n)
    elif method == "riemann_middle":
        alphas = np.linspace(0.5 / n, 1.0 - 0.5 / n, n)
    elif method == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        weights[0] /= 2
        weights[-1] /= 2
    elif method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas, weights = 0.5 * (nodes + 1), 0.5 * w
    else:
        raise ValueError(
            f"unknown integration method {method!r}; methods are: {', '.join(INTEGRATION_METHODS)}"
        )
    return alphas, weights


def _baseline_images(images: torch.Tensor, baseline: str | float | Any) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"unknown baseline {baseline!r}; use 'mean', a number or a tensor")
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    value = torch.as_tensor(np.asarray(baseline) if isinstance(baseline, np.ndarray) else baseline)
    value = value.to(device=images.device, dtype=images.dtype)
    try:
        return value.expand_as(images)
    except RuntimeError:
        raise ValueError(
            f"baseline of shape {tuple(value.shape)} does not broadcast to the images "
            f"{tuple(images.shape)}"
        ) from None


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
    alphas, weights = integration_points(steps, method)
    images = _images(model, x)
    start = _baseline_images(images, baseline)
    delta = images - start
    n_steps = len(alphas)
    a = torch.as_tensor(alphas, dtype=images.dtype, device=images.device)
    w = torch.as_tensor(weights, dtype=images.dtype, device=images.device)
    total = torch.zeros_like(images)

    def rows(index: slice) -> torch.Tensor:
        r = torch.arange(index.start, index.stop, device=images.device)
        image, step = r // n_steps, r % n_steps
        return start[image] + a[step].view(-1, 1, 1, 1) * delta[image]

    with _model.preserved(model):
        labels = _resolve_target(model, images, target, batch_size)
        path_labels = labels.repeat_interleave(n_steps)
        for index, grad in _gradients(model, rows, path_labels, batch_size):
            r = torch.arange(index.start, index.stop, device=images.device)
            total.index_add_(0, r // n_steps, grad * w[r % n_steps].view(-1, 1, 1, 1))
    return _numpy((total * delta).sum(dim=1))


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
        seed: seeds a ``torch.Generator`` on the CPU; ``None`` draws from the global generator.
            The draws are ``(N * n_samples, C, H, W)`` standard normals, input-major.
        noise: the standard-normal draws themselves, ``(N, n_samples, C, H, W)`` (instead of
            ``seed``), scaled by each image's std.
        batch_size: noisy copies per forward pass.
    """
    _reduce(torch.zeros(1, 1), reduce)
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    n_samples = int(n_samples)
    images = _images(model, x)
    n = len(images)
    if noise is None:
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        draws = torch.randn((n * n_samples, *images.shape[1:]), generator=generator)
    else:
        draws = torch.as_tensor(np.asarray(noise) if isinstance(noise, np.ndarray) else noise)
        expected = (n, n_samples, *images.shape[1:])
        if tuple(draws.shape) != expected:
            raise ValueError(f"noise has shape {tuple(draws.shape)}; expected {expected}")
        draws = draws.reshape(n * n_samples, *images.shape[1:])
    draws = draws.to(device=images.device, dtype=images.dtype)
    flat = images.reshape(n, -1)
    std = noise_level * (flat.amax(dim=1) - flat.amin(dim=1))
    total = torch.zeros_like(images)

    def rows(index: slice) -> torch.Tensor:
        image = torch.arange(index.start, index.stop, device=images.device) // n_samples
        return images[image] + std[image].view(-1, 1, 1, 1) * draws[index]

    with _model.preserved(model):
        labels = _resolve_target(model, images, target, batch_size)
        for index, grad in _gradients(model, rows, labels.repeat_interleave(n_samples), batch_size):
            image = torch.arange(index.start, index.stop, device=images.device) // n_samples
            total.index_add_(0, image, grad.abs())
    return _numpy(_reduce(total / n_samples, reduce))


def _patches(height: int, width: int, patch: int) -> tuple[torch.Tensor, int]:
    """``(H, W)`` patch index of every pixel (row-major) and the number of patches."""
    if int(patch) != patch or patch < 1:
        raise ValueError(f"patch must be a positive integer, got {patch!r}")
    if patch > min(height, width):
        raise ValueError(f"patch {patch} is larger than the {height}x{width} image")
    cols = -(-width // int(patch))
    rows = -(-height // int(patch))
    index = (torch.arange(height) // patch)[:, None] * cols + (torch.arange(width) // patch)[None]
    return index, rows * cols


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
    images = _images(model, x)
    n, _, height, width = images.shape
    tiles, n_tiles = _patches(height, width, patch)
    tiles = tiles.to(images.device)
    fill = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    drops = torch.empty(n * n_tiles, dtype=images.dtype)
    with _model.preserved(model), torch.no_grad():
        labels = _resolve_target(model, images, target, batch_size)
        reference = torch.cat(
            [
                _select(_logits(model, images[s : s + batch_size]), labels[s : s + batch_size])
                for s in _starts(n, batch_size)
            ]
        ).cpu()
        row_labels = labels.repeat_interleave(n_tiles)
        for start in _starts(n * n_tiles, batch_size):
            r = torch.arange(start, min(n * n_tiles, start + batch_size), device=images.device)
            masks = (tiles[None] == (r % n_tiles)[:, None, None])[:, None]
            batch = torch.where(masks, fill, images[r // n_tiles])
            scores = _select(_logits(model, batch), row_labels[r.cpu()]).cpu()
            drops[r.cpu()] = reference[(r // n_tiles).cpu()] - scores
    maps = drops.reshape(n, n_tiles)[:, tiles.cpu()]
    return _numpy(maps)


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
    images = _images(model, x)
    n, _, height, width = images.shape
    maps = []
    captured: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        captured.append(_model.first_tensor(output))

    with _model.preserved(model), _model.hooks([(module, hook)]):
        labels = _resolve_target(model, images, target, batch_size)
        for start in _starts(n, batch_size):
            captured.clear()
            index = slice(start, min(n, start + batch_size))
            batch = images[index].detach().requires_grad_(True)  # so the layer's output has grad
            score = _select(_logits(model, batch), labels[index]).sum()
            if len(captured) != 1:
                raise RuntimeError(
                    f"layer {name!r} ran {len(captured)} times in one forward pass; Grad-CAM needs "
                    "a layer that runs exactly once"
                )
            (features,) = captured
            if features.ndim != 4 or features.shape[0] != len(batch):
                raise ValueError(
                    f"layer {name!r} returns features of shape {tuple(features.shape)}; Grad-CAM "
                    "needs a convolutional layer with channels-first output (N, C, h, w)"
                )
            (grad,) = torch.autograd.grad(score, features)
            cam = (grad.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1)
            maps.append(_numpy(torch.relu(cam) if relu else cam))
    captured.clear()
    return iba.resize(np.concatenate(maps), (height, width)).astype(maps[0].dtype)


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
