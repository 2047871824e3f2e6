"""The Per-Sample Bottleneck in ``torch``: a line-by-line translation of the reference.

``iba.bottleneck``, ``iba.smoothing`` and ``iba.optimize.objective`` define the formulas (docs/mathematics.md
sections 2 and 4); this module writes them with ``torch`` operations so that autograd
differentiates them with respect to ``alpha``. Constants (smoothing matrices, Adam's betas and
eps) come from the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

import iba
from iba import driver, targets
from iba.adam import BETA1, BETA2, EPS
from iba.bottleneck import noise_scale_bounds
from iba.layout import is_spatial


class LayerStats(NamedTuple):
    """``mu``, ``std'`` and the active mask of one target layer, as tensors of the features' kind."""

    mean: torch.Tensor
    std: torch.Tensor
    mask: torch.Tensor | float


def layer_stats(statistics: Any, like: torch.Tensor) -> LayerStats:
    """The driver's ``LayerStatistics`` as tensors on ``like``'s device and dtype (no mask: 1)."""

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device)

    mask = 1.0 if statistics.mask is None else tensor(statistics.mask)
    return LayerStats(tensor(statistics.mean), tensor(statistics.std), mask)


_MATRICES: dict[tuple, torch.Tensor] = {}


def smoothing_matrix(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """``iba.smoothing_matrix`` as a tensor of ``like``'s dtype and device (cached)."""
    key = (int(size), float(sigma), like.dtype, like.device)
    if key not in _MATRICES:
        if len(_MATRICES) > 64:
            _MATRICES.clear()
        matrix = np.array(iba.smoothing_matrix(size, sigma))
        _MATRICES[key] = torch.as_tensor(matrix, dtype=like.dtype, device=like.device)
    return _MATRICES[key]


def smooth(lam: torch.Tensor, sigma: float, layout: str) -> torch.Tensor:
    """``iba.smooth``: ``A_h @ lam @ A_w.T`` over the spatial axes, with the reference's matrices."""
    y = lam.movedim(-1, -3) if layout == "channels_last" else lam
    a_h = smoothing_matrix(y.shape[-2], sigma, y)
    a_w = smoothing_matrix(y.shape[-1], sigma, y)
    y = a_h @ y @ a_w.T
    return y.movedim(-3, -1) if layout == "channels_last" else y


def damping(alpha: torch.Tensor, layout: str, sigma: float | None) -> torch.Tensor:
    """``iba.damping``: ``lam = smooth(sigmoid(alpha))``, smoothed for spatial layouts only."""
    lam = torch.sigmoid(alpha)
    if sigma and is_spatial(layout):
        lam = smooth(lam, sigma, layout)
    return lam


def capacity(
    features: torch.Tensor,
    lam: torch.Tensor,
    mean: torch.Tensor | float,
    std: torch.Tensor | float,
    active: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """``iba.capacity``: per-element ``KL(N(lam * r, (1 - lam)^2) || N(0, 1))`` in nats."""
    r = (features - mean) / std
    m = lam * r
    v = (1 - lam) ** 2
    return -0.5 * (1 + torch.log(v) - m**2 - v) * active


def bottleneck(
    features: torch.Tensor,
    lam: torch.Tensor,
    eps: torch.Tensor,
    active: torch.Tensor | float = 1.0,
    relu: bool = False,
) -> torch.Tensor:
    """``iba.bottleneck``: ``Z = (lam * R + (1 - lam) * eps) * active``, clipped if ``relu``.

    ``torch.relu`` passes no gradient at zero, as the reference's ``(z > 0)``.
    """
    z = (lam * features + (1 - lam) * eps) * active
    return torch.relu(z) if relu else z


def noise_scale(lam: torch.Tensor, log_var_clamp: float | None = None) -> torch.Tensor:
    """``iba.bottleneck.noise_scale``: ``1 - lam``, clipped to ``[exp(-c/2), exp(c/2)]`` with a
    clamp ``c`` of the noise's log-variance (docs/mathematics.md section 6)."""
    bounds = noise_scale_bounds(log_var_clamp)
    return 1 - lam if bounds is None else torch.clamp(1 - lam, *bounds)


def noised(
    features: torch.Tensor,
    lam: torch.Tensor,
    stats: LayerStats,
    noise: torch.Tensor,
    relu: bool = False,
    log_var_clamp: float | None = None,
) -> torch.Tensor:
    """``bottleneck(features, lam, std' * noise + mu, active, relu)`` for ``(N, B, *F)`` noise;
    with ``log_var_clamp``, ``iba.bottleneck.clamped_bottleneck``."""
    return Noiser(features, stats, log_var_clamp)(lam, noise, relu)


class Noiser:
    """``iba.bottleneck`` with ``eps = std' * n + mu`` for fixed features ``R`` (``(N, 1, *F)``).

    The same formula grouped as ``active * (mu + lam * (R - mu)) + (1 - lam) * active * std' *
    n``, with the parts that do not depend on ``lam`` computed once: per step, two fused
    multiply-adds per input and one on all ``N * B`` noise samples. With ``log_var_clamp``
    (docs/mathematics.md section 6), ``1 - lam`` in the noise's factor is :func:`noise_scale`.
    """

    def __init__(
        self, features: torch.Tensor, stats: LayerStats, log_var_clamp: float | None = None
    ):
        mask = stats.mask
        self.mean = mask * stats.mean + torch.zeros_like(features)
        self.diff = mask * (features - stats.mean)
        self.std = mask * stats.std + torch.zeros_like(features)
        self.neg_std = -self.std
        self.log_var_clamp = log_var_clamp

    def __call__(self, lam: torch.Tensor, noise: torch.Tensor, relu: bool = False) -> torch.Tensor:
        base = torch.addcmul(self.mean, lam, self.diff)
        if self.log_var_clamp is None:
            scale = torch.addcmul(self.std, lam, self.neg_std)
        else:
            scale = self.std * noise_scale(lam, self.log_var_clamp)
        z = torch.addcmul(base, scale, noise)
        return torch.relu(z) if relu else z


def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the reference's constants: the arithmetic of ``iba.adam_update``."""
    return torch.optim.Adam(params, lr=lr, betas=(BETA1, BETA2), eps=EPS, foreach=False)


def logits_of(outputs: Any) -> torch.Tensor:
    """The logits in a model's outputs: a tensor, a ``.logits`` attribute or a tuple's first item."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if hasattr(outputs, "logits") and isinstance(outputs.logits, torch.Tensor):
        return outputs.logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise TypeError(
        f"target= needs logits from the model; it returned {type(outputs).__name__}: "
        "pass loss_fn=... that maps the outputs to one loss per row"
    )


def classification_loss(outputs: Any, labels: torch.Tensor, n_inputs: int) -> torch.Tensor:
    """Mean over noise samples of ``-log_softmax(logits)[target]``, per input ``(N,)``."""
    logits = logits_of(outputs)
    if logits.ndim != 2 or logits.shape[0] % n_inputs:
        raise ValueError(
            f"target= needs model outputs of shape (batch, classes), got {tuple(logits.shape)}; "
            "pass loss_fn=... for other outputs"
        )
    targets.check_range(labels.cpu().numpy(), logits.shape[1])
    batch = logits.shape[0] // n_inputs
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(1, labels.repeat_interleave(batch)[:, None].to(logp.device))[:, 0]
    return -picked.reshape(n_inputs, batch).mean(1)


def user_loss(loss_fn: Callable, outputs: Any, n_inputs: int, batch: int) -> torch.Tensor:
    """``loss_fn(outputs)``: one loss per row (averaged per input) or, for one input, a scalar."""
    loss = loss_fn(outputs)
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a torch.Tensor, got {type(loss).__name__}")
    if driver.check_loss_shape(tuple(loss.shape), n_inputs, batch):
        return loss.reshape(n_inputs, batch).mean(1)
    return loss[None]
