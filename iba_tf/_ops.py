"""The Per-Sample Bottleneck in ``keras.ops``: a line-by-line translation of the reference.

``iba.bottleneck``, ``iba.smoothing``, ``iba.adam`` and ``iba.optimize.objective`` define the
formulas (docs/mathematics.md sections 2 and 4); this module writes them once with ``keras.ops`` so that every
Keras backend differentiates them with its own autodiff. The smoothing uses the reference's
matrices (``iba.smoothing_matrix``) and Adam the reference's arithmetic (not Keras' Adam, which
places ``eps`` differently).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
from keras import ops

import iba
from iba import driver
from iba.adam import BETA1, BETA2, EPS
from iba.bottleneck import noise_scale_bounds
from iba.layout import is_spatial


class LayerStats(NamedTuple):
    """``mu``, ``std'`` and the active mask of one target layer, as tensors of the features' dtype."""

    mean: Any
    std: Any
    mask: Any


def smooth(lam: Any, sigma: float, layout: str) -> Any:
    """``iba.smooth``: ``A_h @ lam @ A_w.T`` over the spatial axes, each channel alike.

    Written with ``einsum``: Keras' torch backend computes ``matmul`` of float64 in ``floatx``.
    """
    if layout == "channels_last":
        height, width = lam.shape[-3], lam.shape[-2]
        rows, cols = "hk,...kwc->...hwc", "lw,...hwc->...hlc"
    else:
        height, width = lam.shape[-2], lam.shape[-1]
        rows, cols = "hk,...ckw->...chw", "lw,...chw->...chl"
    dtype = keras.backend.standardize_dtype(lam.dtype)
    a_h = ops.convert_to_tensor(iba.smoothing_matrix(height, sigma), dtype)
    a_w = ops.convert_to_tensor(iba.smoothing_matrix(width, sigma), dtype)
    return ops.einsum(cols, a_w, ops.einsum(rows, a_h, lam))


def damping(alpha: Any, layout: str, sigma: float | None) -> Any:
    """``iba.damping``: ``lam = smooth(sigmoid(alpha))``, smoothed for spatial layouts only."""
    lam = ops.sigmoid(alpha)
    if sigma and is_spatial(layout):
        lam = smooth(lam, sigma, layout)
    return lam


def bottleneck(features: Any, lam: Any, eps: Any, active: Any = 1.0, relu: bool = False) -> Any:
    """``iba.bottleneck``: ``Z = (lam * R + (1 - lam) * eps) * active``, clipped if ``relu``."""
    z = (lam * features + (1 - lam) * eps) * active
    return ops.relu(z) if relu else z


def noise_scale(lam: Any, log_var_clamp: float | None = None) -> Any:
    """``iba.bottleneck.noise_scale``: ``1 - lam``, clipped to ``[exp(-c/2), exp(c/2)]`` with a
    clamp ``c`` of the noise's log-variance (docs/mathematics.md section 6)."""
    bounds = noise_scale_bounds(log_var_clamp)
    return 1 - lam if bounds is None else ops.clip(1 - lam, *bounds)


def clamped_bottleneck(
    features: Any,
    lam: Any,
    mean: Any,
    deviation: Any,
    log_var_clamp: float | None,
    active: Any = 1.0,
    relu: bool = False,
) -> Any:
    """``iba.bottleneck.clamped_bottleneck``: ``Z = (lam * R + (1 - lam) * mu + s * std' * n) *
    active`` with ``s = noise_scale(lam, c)`` and ``deviation = std' * n``."""
    scale = noise_scale(lam, log_var_clamp)
    z = (lam * features + (1 - lam) * mean + scale * deviation) * active
    return ops.relu(z) if relu else z


def capacity(features: Any, lam: Any, mean: Any, std: Any, active: Any = 1.0) -> Any:
    """``iba.capacity``: per-element ``KL(N(lam * r, (1 - lam)^2) || N(0, 1))`` in nats."""
    r = (features - mean) / std
    m = lam * r
    v = (1 - lam) ** 2
    return -0.5 * (1 + ops.log(v) - m**2 - v) * active


def adam_update(grad: Any, mu: Any, nu: Any, count: Any, params: Any, lr: float):
    """``iba.adam_update`` with the step ``count`` (after this update) as a tensor.

    Returns the new ``params``, ``mu`` and ``nu``.
    """
    dtype = keras.backend.standardize_dtype(count.dtype)
    b1, b2 = ops.convert_to_tensor(BETA1, dtype), ops.convert_to_tensor(BETA2, dtype)
    mu = BETA1 * mu + (1 - BETA1) * grad
    nu = BETA2 * nu + (1 - BETA2) * grad * grad
    step_size = lr / (1 - ops.power(b1, count))
    denom = ops.sqrt(nu) / ops.sqrt(1 - ops.power(b2, count)) + EPS
    return params - step_size * mu / denom, mu, nu


def mean(x: Any, axis: int) -> Any:
    """``sum / count``: Keras' ``ops.mean`` on JAX and torch loses float64 precision."""
    return ops.sum(x, axis=axis) / x.shape[axis]


def classification_loss(outputs: Any, labels: Any, n_inputs: int, probabilities: bool) -> Any:
    """Per input, the mean over its noise samples of ``-log_softmax(logits)[target]``.

    ``outputs`` are ``(N * B, K)`` (input-major), ``labels`` one int per row. For a model that
    ends in a softmax, ``-log(p)[target]`` is the same number.
    """
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            "target= needs a model with one output of class scores; pass loss_fn= for a model "
            "with several outputs"
        )
    if len(outputs.shape) != 2:
        raise ValueError(
            f"target= needs model outputs of shape (batch, classes), got {tuple(outputs.shape)}; "
            "pass loss_fn= for other outputs"
        )
    if probabilities:
        logp = ops.log(ops.maximum(outputs, keras.backend.epsilon() ** 4))
    else:
        logp = ops.log_softmax(outputs, axis=-1)
    picked = ops.take_along_axis(logp, ops.expand_dims(labels, -1), axis=-1)[:, 0]
    return mean(ops.reshape(-picked, (n_inputs, -1)), axis=1)


def user_loss(loss: Any, n_inputs: int, batch: int) -> Any:
    """The loss of ``loss_fn`` per row (``N * B``), or a scalar for one input, to ``(N,)``."""
    if not hasattr(loss, "shape") and not isinstance(loss, (float, int)):
        raise TypeError(f"loss_fn must return a tensor (keras.ops), got {type(loss).__name__}")
    loss = ops.convert_to_tensor(loss)
    if driver.check_loss_shape(tuple(loss.shape), n_inputs, batch):
        return mean(ops.reshape(loss, (n_inputs, batch)), axis=1)
    return ops.reshape(loss, (1,))
