"""The Per-Sample Bottleneck (Schulz et al., ICLR 2020, section 3.1; docs/mathematics.md section 2).

Every function works on arrays with any number of leading batch axes followed by the feature
shape ``F`` (``alpha`` may be shared over channels: size 1 on the channel axis), and has a
vector-Jacobian product so that the reference can run an optimisation without autodiff.
"""

from __future__ import annotations

import math

import numpy as np

from iba.layout import is_spatial
from iba.smoothing import smooth


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large ``|x|``."""
    x = np.asarray(x)
    out = np.empty_like(x, dtype=np.result_type(x, np.float32))
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def damping(alpha: np.ndarray, layout: str, sigma: float | None) -> np.ndarray:
    """``lam = smooth(sigmoid(alpha))``; smoothing only for spatial layouts and ``sigma > 0``."""
    lam = sigmoid(alpha)
    if sigma and is_spatial(layout):
        lam = smooth(lam, sigma, layout)
    return lam


def damping_vjp(alpha: np.ndarray, grad_lam: np.ndarray, layout: str, sigma: float | None):
    """Gradient with respect to ``alpha`` given ``dL/dlam`` (both of ``alpha``'s shape)."""
    if sigma and is_spatial(layout):
        grad_lam = smooth(grad_lam, sigma, layout, transpose=True)
    s = sigmoid(alpha)
    return grad_lam * s * (1 - s)


def noise_like(noise: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``eps = std' * n + mu`` from standard-normal ``n``."""
    return std * noise + mean


def bottleneck(
    features: np.ndarray,
    lam: np.ndarray,
    eps: np.ndarray,
    active: np.ndarray | float = 1.0,
    relu: bool = False,
) -> np.ndarray:
    """``Z = (lam * R + (1 - lam) * eps) * active``, clipped at zero if ``relu``."""
    z = (lam * features + (1 - lam) * eps) * active
    return np.maximum(z, 0) if relu else z


def noise_scale_bounds(log_var_clamp: float | None) -> tuple[float, float] | None:
    """``(exp(-c / 2), exp(c / 2))``: the range of the noise scale ``1 - lam`` when the noise's
    log-variance is clamped to ``[-c, c]`` (``None``: no clamp; docs/mathematics.md section 6)."""
    if log_var_clamp is None:
        return None
    bound = math.exp(0.5 * log_var_clamp)
    return 1 / bound, bound


def noise_scale(lam: np.ndarray, log_var_clamp: float | None = None) -> np.ndarray:
    """The noise's standard deviation in standardised units, ``1 - lam``.

    With ``log_var_clamp = c`` it is clipped to ``[exp(-c / 2), exp(c / 2)]``: the text-IBA
    authors clamp the noise's log-variance ``log((1 - lam)^2)`` to ``[-c, c]`` when they sample
    (docs/mathematics.md section 6); the capacity keeps the unclamped variance.
    """
    scale = 1 - lam
    bounds = noise_scale_bounds(log_var_clamp)
    return scale if bounds is None else np.clip(scale, *bounds)


def noise_scale_vjp(lam: np.ndarray, grad: np.ndarray, log_var_clamp: float | None) -> np.ndarray:
    """``grad * d noise_scale / d lam``: ``-grad`` where the clamp is not active, 0 where it is."""
    bounds = noise_scale_bounds(log_var_clamp)
    if bounds is None:
        return -grad
    scale = 1 - lam
    return np.where((scale >= bounds[0]) & (scale <= bounds[1]), -grad, 0.0)


def clamped_bottleneck(
    features: np.ndarray,
    lam: np.ndarray,
    mean: np.ndarray | float,
    deviation: np.ndarray,
    log_var_clamp: float | None,
    active: np.ndarray | float = 1.0,
    relu: bool = False,
) -> np.ndarray:
    """``Z = (lam * R + (1 - lam) * mu + s * std' * n) * active`` with ``s = noise_scale(lam, c)``.

    ``deviation`` is ``std' * n``. Without the clamp, ``s = 1 - lam`` and this is
    :func:`bottleneck` with ``eps = std' * n + mu``; with it, the text-IBA authors' sampling
    ``t = (lam * r + s * n) * std' + mu`` with ``r = (R - mu) / std'`` (docs/mathematics.md section 6).
    """
    scale = noise_scale(lam, log_var_clamp)
    z = (lam * features + (1 - lam) * mean + scale * deviation) * active
    return np.maximum(z, 0) if relu else z


def capacity(
    features: np.ndarray,
    lam: np.ndarray,
    mean: np.ndarray | float,
    std: np.ndarray | float,
    active: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Per-element ``KL(N(lam * r, (1 - lam)^2) || N(0, 1))`` in nats, ``r = (R - mu) / std'``.

    With ``mean = 0`` and ``std = 1`` this is M2IB's capacity against a standard normal.
    """
    r = (features - mean) / std
    m = lam * r
    v = (1 - lam) ** 2
    return -0.5 * (1 + np.log(v) - m**2 - v) * active


def capacity_vjp(
    features: np.ndarray,
    lam: np.ndarray,
    mean: np.ndarray | float,
    std: np.ndarray | float,
    active: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Elementwise ``d capacity / d lam`` = ``(1 / (1 - lam) + lam * r^2 - (1 - lam)) * active``."""
    r = (features - mean) / std
    return (1 / (1 - lam) + lam * r**2 - (1 - lam)) * active


def sum_to_shape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``x`` over the axes that broadcasting expanded from ``shape`` (the adjoint of it)."""
    lead = x.ndim - len(shape)
    x = x.sum(axis=tuple(range(lead))) if lead else x
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x
