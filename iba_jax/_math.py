"""The Per-Sample Bottleneck in ``jax.numpy``: a line-by-line translation of the reference.

``iba.bottleneck``, ``iba.smoothing``, ``iba.text`` and ``iba.optimize.objective`` define the
formulas (docs/mathematics.md sections 2, 4 and 6.3); this module writes them with ``jnp`` so that ``jax.grad`` differentiates them
and the whole optimisation (every step, Adam via optax) runs inside one ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import iba
from iba import driver
from iba.adam import BETA1, BETA2, EPS
from iba.bottleneck import noise_scale_bounds
from iba.layout import is_spatial

HIGHEST = jax.lax.Precision.HIGHEST


class LayerStats(NamedTuple):
    """``mu``, ``std'`` and the mask of one target layer, as arrays of the features' dtype."""

    mean: jax.Array
    std: jax.Array
    mask: jax.Array | float


def smooth(lam: jax.Array, sigma: float, layout: str) -> jax.Array:
    """``iba.smooth``: ``A_h @ lam @ A_w.T`` over the spatial axes, with the reference's matrices."""
    if layout == "channels_last":
        height, width = lam.shape[-3], lam.shape[-2]
        spec = "hk,...kwc,lw->...hlc"
    else:
        height, width = lam.shape[-2], lam.shape[-1]
        spec = "hk,...ckw,lw->...chl"
    a_h = jnp.asarray(iba.smoothing_matrix(height, sigma), lam.dtype)
    a_w = jnp.asarray(iba.smoothing_matrix(width, sigma), lam.dtype)
    return jnp.einsum(spec, a_h, lam, a_w, precision=HIGHEST)


def damping(alpha: jax.Array, layout: str, sigma: float | None) -> jax.Array:
    """``iba.damping``: ``lam = smooth(sigmoid(alpha))``, smoothed for spatial layouts only."""
    lam = jax.nn.sigmoid(alpha)
    if sigma and is_spatial(layout):
        lam = smooth(lam, sigma, layout)
    return lam


def capacity(features, lam, mean, std, active=1.0) -> jax.Array:
    """``iba.capacity``: per-element ``KL(N(lam * r, (1 - lam)^2) || N(0, 1))`` in nats."""
    r = (features - mean) / std
    m = lam * r
    v = (1 - lam) ** 2
    return -0.5 * (1 + jnp.log(v) - m**2 - v) * active


def bottleneck(features, lam, eps, active=1.0, relu: bool = False) -> jax.Array:
    """``iba.bottleneck``: ``Z = (lam * R + (1 - lam) * eps) * active``, clipped if ``relu``."""
    z = (lam * features + (1 - lam) * eps) * active
    return jnp.maximum(z, 0) if relu else z


def noise_scale(lam: jax.Array, log_var_clamp: float | None = None) -> jax.Array:
    """``iba.bottleneck.noise_scale``: ``1 - lam``, clipped to ``[exp(-c/2), exp(c/2)]`` with a
    clamp ``c`` of the noise's log-variance (docs/mathematics.md section 6)."""
    bounds = noise_scale_bounds(log_var_clamp)
    return 1 - lam if bounds is None else jnp.clip(1 - lam, *bounds)


def clamped_bottleneck(
    features, lam, mean, deviation, log_var_clamp: float | None, active=1.0, relu: bool = False
) -> jax.Array:
    """``iba.bottleneck.clamped_bottleneck``: ``Z = (lam * R + (1 - lam) * mu + s * std' * n) *
    active`` with ``s = noise_scale(lam, c)`` and ``deviation = std' * n``."""
    scale = noise_scale(lam, log_var_clamp)
    z = (lam * features + (1 - lam) * mean + scale * deviation) * active
    return jnp.maximum(z, 0) if relu else z


def adam(lr: float) -> optax.GradientTransformation:
    """optax's Adam with the reference's constants (``iba.adam_update``; equal to 1e-15 in float64)."""
    return optax.adam(lr, b1=BETA1, b2=BETA2, eps=EPS)


def classification_loss(logits: jax.Array, labels: jax.Array, n_inputs: int) -> jax.Array:
    """Mean over noise samples of ``-log_softmax(logits)[target]``, per input ``(N,)``."""
    if getattr(logits, "ndim", None) != 2:
        got = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(
            f"target= needs model outputs of shape (batch, classes), got {got}; "
            "pass loss_fn=... for other outputs"
        )
    batch = logits.shape[0] // n_inputs
    logp = jax.nn.log_softmax(logits.astype(jnp.result_type(logits, jnp.float32)), axis=-1)
    picked = jnp.take_along_axis(logp, jnp.repeat(labels, batch)[:, None], axis=1)[:, 0]
    return -picked.reshape(n_inputs, batch).mean(1)


def user_loss(loss_fn: Callable, outputs: Any, n_inputs: int, batch: int) -> jax.Array:
    """``loss_fn(outputs)``: one loss per row (averaged per input) or, for one input, a scalar."""
    loss = loss_fn(outputs)
    if not isinstance(loss, (jax.Array, np.ndarray, float, int)):
        raise TypeError(f"loss_fn must return a JAX array, got {type(loss).__name__}")
    loss = jnp.asarray(loss)
    if driver.check_loss_shape(loss.shape, n_inputs, batch):
        return loss.reshape(n_inputs, batch).mean(1)
    return loss[None]


def token_weights(mask: jax.Array | None, like: jax.Array) -> jax.Array | None:
    """A token mask ``(N, T)`` shaped to broadcast over features ``like`` ``(N, T, D)``, or
    ``None`` (docs/mathematics.md section 6.3)."""
    if mask is None:
        return None
    return mask.astype(like.dtype).reshape(*mask.shape, *[1] * (like.ndim - 2))


def information(cap: jax.Array, tokens: jax.Array | None) -> jax.Array:
    """The information term per input ``(N,)``: the mean capacity over every element, or with
    ``tokens`` (``token_weights``) over the real tokens' elements, ``sum(cap * m) / max(D *
    sum(m), 1)`` (``iba.text.information_term``, docs/mathematics.md sections 2 and 6.3)."""
    n = cap.shape[0]
    if tokens is None:
        return cap.reshape(n, -1).mean(1)
    weights = jnp.broadcast_to(tokens, cap.shape).reshape(n, -1)
    count = jnp.maximum(weights.sum(1), 1.0)
    return (cap.reshape(n, -1) * weights).sum(1) / count


class Result(NamedTuple):
    """What the compiled optimisation returns (see ``iba.Explanation``)."""

    capacity: jax.Array
    alpha: jax.Array
    lam: jax.Array
    alphas: jax.Array
    losses: jax.Array


def optimize(
    *,
    params: Any,
    alpha_of: Callable[[Any], jax.Array],
    forward: Callable[[Any, Callable], Any],
    features: jax.Array,
    stats: Sequence[LayerStats],
    feature_shapes: Sequence[tuple[int, ...]],
    noise: Sequence[jax.Array] | jax.Array,
    model_loss: Callable[[Any], jax.Array],
    config: iba.Config,
    layout: str,
    token_mask: jax.Array | None = None,
) -> Result:
    """The whole per-sample optimisation of ``iba.per_sample_bottleneck``, traceable by ``jax.jit``.

    Args:
        params: what Adam updates (``alpha``, or an ``nnx.State`` holding it).
        alpha_of: ``params -> alpha`` of shape ``(N, *A)``.
        forward: ``(params, hook) -> outputs`` runs the model on the ``N * B`` rows with ``hook``
            active; the framework calls ``hook(l, compute)`` where target layer ``l`` would run
            (``compute()`` runs it) and uses its return value as that layer's output.
        features: ``R`` at the first target layer, ``(N, *F)``, computed once.
        stats: ``mu``, ``std'`` and mask per target layer.
        noise: per layer, standard-normal draws ``(updates, N, B, *F_l)``, or a ``jax.random`` key.
        model_loss: outputs on the ``N * B`` rows to the model loss per input ``(N,)``.
        token_mask: for token features ``(N, T, D)``, ``(N, T)``: 1 at real tokens, 0 at padding.
            The information term is the mean over the real tokens' elements, and the returned
            capacity is zero at padding (docs/mathematics.md section 6.3).
    """
    n_inputs = features.shape[0]
    batch = config.batch_size
    dtype = features.dtype
    first = stats[0]
    keyed = not isinstance(noise, (list, tuple))
    tokens = token_weights(token_mask, features)

    def objective(params, step_noise):
        lam = damping(alpha_of(params), layout, config.sigma)
        lam_b = lam[:, None]
        calls = []

        def hook(layer: int, compute: Callable[[], jax.Array]) -> jax.Array:
            if layer in calls:
                raise RuntimeError(
                    f"target layer {layer} was called twice in one forward pass: a bottleneck "
                    "target must be a module that runs once per forward pass"
                )
            calls.append(layer)
            shape = (n_inputs, batch, *feature_shapes[layer])
            if layer == 0:
                r = features[:, None]  # computed once; the layers before are never run again
            else:
                out = compute()
                _check_output(out, (n_inputs * batch, *feature_shapes[layer]), layer)
                r = out.reshape(shape)
            s = stats[layer]
            if config.log_var_clamp is not None:  # docs/mathematics.md section 6
                deviation = s.std * step_noise[layer]
                c = config.log_var_clamp
                z = clamped_bottleneck(r, lam_b, s.mean, deviation, c, s.mask, config.relu)
            else:
                eps = s.std * step_noise[layer] + s.mean
                z = bottleneck(r, lam_b, eps, s.mask, config.relu)
            return z.reshape(n_inputs * batch, *feature_shapes[layer])

        outputs = forward(params, hook)
        if sorted(calls) != list(range(len(stats))):
            raise RuntimeError(
                f"the forward pass reached target layers {sorted(calls)} of {len(stats)}"
            )
        cap = capacity(features, lam, first.mean, first.std, first.mask)
        losses = model_loss(outputs) + config.beta * information(cap, tokens)
        return losses.sum(), losses

    def step_noise_at(xs):
        if keyed:
            return [
                jax.random.normal(k, (n_inputs, batch, *shape), dtype)
                for k, shape in zip(xs, feature_shapes)
            ]
        return xs

    opt = adam(config.lr)

    def step(carry, xs):
        params, state = carry
        (_, losses), grads = jax.value_and_grad(objective, has_aux=True)(params, step_noise_at(xs))
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), (alpha_of(params), losses)

    if keyed:  # one key per layer and step, split before the loop
        keys = jax.random.split(noise, (len(feature_shapes), config.updates))
        xs = [keys[layer] for layer in range(len(feature_shapes))]
    else:
        xs = [n[: config.updates] for n in noise]
    alpha0 = alpha_of(params)
    (params, _), (alphas, losses) = jax.lax.scan(
        step, (params, opt.init(params)), xs, length=config.updates
    )
    alpha = alpha_of(params)
    lam = damping(alpha, layout, config.sigma)
    cap = capacity(features, lam, first.mean, first.std, first.mask)
    return Result(
        capacity=cap if tokens is None else cap * tokens,  # none at padding
        alpha=alpha,
        lam=lam,
        alphas=jnp.concatenate([alpha0[None], alphas]),
        losses=losses,
    )


def _check_output(out: Any, expected: tuple[int, ...], layer: int) -> None:
    if not isinstance(out, jax.Array) or tuple(out.shape) != expected:
        got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ValueError(
            f"target layer {layer} returned {got} on the noised batch, expected an array of shape "
            f"{expected}; choose a module that returns one array"
        )


def as_numpy(result: Result) -> dict[str, np.ndarray]:
    """The result's arrays in NumPy, float64."""
    return {k: np.asarray(v, np.float64) for k, v in result._asdict().items()}
