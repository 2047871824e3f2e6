"""The per-sample optimisation of ``alpha`` (docs/mathematics.md sections 2 and 4), with analytic gradients.

The model is given as callbacks, so any model with a backward pass can be explained by the
reference. Either as a chain: ``head(Z) -> (loss, dL/dZ)`` for the part after the (last)
bottleneck and, for several target layers, ``segments[l](Z_l) -> (R_{l+1}, vjp)`` for the parts
between them; or, for any graph (residual streams between target layers, as in a ViT), as
``model(layers) -> (loss, backward)``: the model runs its forward pass from the input, calls
``layers[l]`` (a ``BottleneckLayer``) on the features of target ``l``, and ``backward()`` runs
its backward pass through those layers, which collect ``dL/dlam``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np

from iba._checks import finite_array
from iba.adam import adam_init, adam_update
from iba.bottleneck import (
    bottleneck,
    capacity,
    capacity_vjp,
    clamped_bottleneck,
    damping,
    damping_vjp,
    noise_like,
    noise_scale_vjp,
    sum_to_shape,
)
from iba.config import Config
from iba.estimator import Statistics
from iba.layout import alpha_shape as layout_alpha_shape
from iba.layout import check_alpha_shape, check_feature_shape
from iba.noise import check_noise
from iba.text import information_term, information_weights, masked_capacity

Head = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]
VJP = Callable[[np.ndarray], np.ndarray]
Segment = Callable[[np.ndarray], "tuple[np.ndarray, VJP]"]


class BottleneckLayer:
    """The bottleneck of one target layer at fixed ``lam`` and noise, as a layer with a backward.

    Called on features ``R`` of shape ``(N * B, *F)`` (input-major: rows ``i*B .. i*B+B-1`` are
    the noise samples of input ``i``), it returns ``Z`` and the function ``dL/dZ -> dL/dR``; that
    function adds ``dL/dlam`` (per input, ``(N, *F)``) to ``grad_lam``.
    """

    def __init__(self, lam: np.ndarray, eps: np.ndarray, mask, relu: bool):
        self.lam, self.eps, self.mask, self.relu = lam, eps, mask, relu
        self.grad_lam: np.ndarray | float = 0.0  # an array once vjp has run

    def __call__(self, features: np.ndarray) -> tuple[np.ndarray, VJP]:
        shape = self.eps.shape
        r = features.reshape(shape)
        z = bottleneck(r, self.lam, self.eps, self.mask)
        out = np.maximum(z, 0) if self.relu else z

        def vjp(grad: np.ndarray) -> np.ndarray:
            grad = grad.reshape(shape)
            if self.relu:
                grad = grad * (z > 0)
            grad = grad * self.mask
            self.grad_lam = self.grad_lam + (grad * (r - self.eps)).sum(axis=1)
            return (grad * self.lam).reshape(features.shape)

        return out.reshape(features.shape), vjp


class ClampedBottleneckLayer(BottleneckLayer):
    """:class:`BottleneckLayer` whose noise has its log-variance clamped when sampled.

    ``Z = (lam * R + (1 - lam) * mu + noise_scale(lam, c) * std' * n) * active`` (the text-IBA
    authors' sampling, docs/mathematics.md section 6), with ``deviation = std' * n`` of shape
    ``(N, B, *F)``. ``dZ/dlam = (R - mu + noise_scale'(lam) * deviation) * active``, where the
    derivative of the clamped scale is 0.
    """

    def __init__(self, lam, mean, deviation: np.ndarray, mask, relu: bool, log_var_clamp: float):
        super().__init__(lam, deviation + mean, mask, relu)
        self.mean, self.deviation, self.log_var_clamp = mean, deviation, log_var_clamp

    def __call__(self, features: np.ndarray) -> tuple[np.ndarray, VJP]:
        shape, c = self.deviation.shape, self.log_var_clamp
        r = features.reshape(shape)
        z = clamped_bottleneck(r, self.lam, self.mean, self.deviation, c, self.mask)
        out = np.maximum(z, 0) if self.relu else z

        def vjp(grad: np.ndarray) -> np.ndarray:
            grad = grad.reshape(shape)
            if self.relu:
                grad = grad * (z > 0)
            grad = grad * self.mask
            through_noise = noise_scale_vjp(self.lam, grad * self.deviation, c)
            self.grad_lam = self.grad_lam + (grad * (r - self.mean) + through_noise).sum(axis=1)
            return (grad * self.lam).reshape(features.shape)

        return out.reshape(features.shape), vjp


def bottleneck_layer(
    lam: np.ndarray, noise: np.ndarray, stats: Statistics, mask, config: Config
) -> BottleneckLayer:
    """The bottleneck of one target for this step's standard-normal ``noise`` ``(N, B, *F)``:
    clamped (section 6) when ``config.log_var_clamp`` is set, else section 2.3's."""
    if config.log_var_clamp is None:
        return BottleneckLayer(lam, noise_like(noise, stats.mean, stats.std), mask, config.relu)
    deviation = stats.std * noise
    return ClampedBottleneckLayer(
        lam, stats.mean, deviation, mask, config.relu, config.log_var_clamp
    )


Model = Callable[[Sequence[BottleneckLayer]], "tuple[np.ndarray, Callable[[], None]]"]


@dataclasses.dataclass
class Explanation:
    """The result of one optimisation over ``N`` inputs.

    Attributes:
        capacity: per-element capacity in nats at the (first) target layer, ``(N, *F)``: the
            heatmap's source (see ``iba.heatmap``).
        alpha: the ``alpha`` whose capacity that is, ``(N, *A)``.
        lam: ``damping(alpha)``, the damping ratio after smoothing.
        alphas: ``alpha`` before every update and after the last, ``(updates + 1, N, *A)``.
        losses: total loss per update and input, ``(updates, N)``.
        heatmap: the heatmap in bits, filled in by the adapters' ``analyze`` (``None`` here).
    """

    capacity: np.ndarray
    alpha: np.ndarray
    lam: np.ndarray
    alphas: np.ndarray
    losses: np.ndarray
    heatmap: np.ndarray | None = None


def per_sample_bottleneck(
    features: np.ndarray,
    statistics: Statistics | Sequence[Statistics],
    head: Head | None,
    noise: np.ndarray | Sequence[np.ndarray],
    config: Config | None = None,
    layout: str = "channels_first",
    segments: Sequence[Segment] = (),
    shared_alpha: bool | None = None,
    model: Model | None = None,
    token_mask: np.ndarray | None = None,
) -> Explanation:
    """Optimise ``alpha`` for ``N`` inputs at once and return their capacity.

    One target layer is the IBA Per-Sample Bottleneck; ``L`` target layers (``L - 1`` segments)
    share one ``alpha`` over channels and layers (CoIBA): every layer gets its own noise, no
    active-neuron mask, and the information term is the first layer's capacity.

    Args:
        features: ``R`` at the first target layer, ``(N, *F)``; it does not depend on ``alpha``.
        statistics: per target layer, ``(mu, std', active)`` from ``Estimator.statistics``.
        head: ``Z_L`` of shape ``(N, B, *F_L)`` to the model loss per input ``(N,)`` (mean over
            the ``B`` noise samples) and its gradient with respect to ``Z_L``.
        noise: standard-normal draws per layer, ``(steps, N, B, *F_l)`` (see ``iba.draw_noise``).
        config: hyper-parameters (``Config()`` if ``None``).
        layout: layout of the features of every target layer.
        segments: ``L - 1`` callables ``Z_l -> (R_{l+1}, vjp)`` with ``vjp(dL/dR_{l+1}) = dL/dZ_l``.
        shared_alpha: ``alpha`` shared over channels; default: only with several layers.
        model: instead of ``head`` and ``segments``, ``model(layers) -> (loss, backward)`` (see
            the module docstring); ``features`` must equal what it feeds to ``layers[0]``.
        token_mask: for ``tokens`` features ``(N, T, D)``, ``(N, T)``: 1 at real tokens, 0 at
            padding; the information term is the mean over the real tokens' elements and the
            returned capacity is zero at padding (docs/mathematics.md section 6.3).
    """
    config = config or Config()
    stats = [statistics] if isinstance(statistics, Statistics) else list(statistics)
    n_layers = len(stats)
    if model is not None and (head is not None or segments):
        raise ValueError("give the model as head (and segments) or as model, not both")
    if model is None and head is None:
        raise ValueError("give the model as head (and segments) or as model")
    if model is None and len(segments) != n_layers - 1:
        raise ValueError(
            f"{n_layers} target layers need {n_layers - 1} segments, got {len(segments)}"
        )
    if isinstance(noise, np.ndarray):
        noise = [noise]
    if len(noise) != n_layers:
        raise ValueError(f"{n_layers} target layers need {n_layers} noise arrays, got {len(noise)}")
    shared = n_layers > 1 if shared_alpha is None else shared_alpha
    if n_layers > 1 and not shared:
        raise ValueError("several target layers share one alpha over channels: shared_alpha=True")

    features = finite_array("features", features).astype(np.float64)
    n_inputs = features.shape[0]
    feature_shape = check_feature_shape(features.shape[1:], layout)
    if stats[0].mean.shape != feature_shape:
        raise ValueError(
            f"statistics of shape {stats[0].mean.shape} do not fit features of shape "
            f"{feature_shape}: the estimator was fitted for another layer"
        )
    model = model or chain(features, cast(Head, head), segments)  # head: checked above
    a_shape = layout_alpha_shape(feature_shape, layout, shared)
    for s in stats[1:]:
        check_alpha_shape(a_shape, s.mean.shape, layout)
    noise = [
        check_noise(n, config.steps, n_inputs, config.batch_size, s.mean.shape)
        for n, s in zip(noise, stats)
    ]

    alpha = np.full((n_inputs, *a_shape), float(config.initial_alpha))
    state = adam_init(alpha)
    if token_mask is not None:
        information_weights(features, token_mask)  # checks its shape: (N, T)
    alphas, losses = [alpha], []
    for step in range(config.updates):
        loss, grad = objective(
            alpha, features, stats, model, [n[step] for n in noise], config, layout, token_mask
        )
        losses.append(loss)
        alpha, state = adam_update(grad, state, alpha, config.lr)
        alphas.append(alpha)

    lam = damping(alpha, layout, config.sigma)
    first = stats[0]
    cap = capacity(features, lam, first.mean, first.std, _masks(stats)[0])
    return Explanation(
        capacity=cap if token_mask is None else masked_capacity(cap, token_mask),
        alpha=alpha,
        lam=lam,
        alphas=np.stack(alphas),
        losses=np.stack(losses) if losses else np.zeros((0, n_inputs)),
    )


def _masks(stats: Sequence[Statistics]) -> list:
    """The active-neuron mask of one target layer; none for several (CoIBA)."""
    return [stats[0].active] if len(stats) == 1 else [1.0] * len(stats)


def chain(features: np.ndarray, head: Head, segments: Sequence[Segment] = ()) -> Model:
    """A ``model`` callback from ``head`` and ``segments`` on ``(N, B, *F)`` arrays."""

    def run(layers: Sequence[BottleneckLayer]):
        n, b = layers[0].eps.shape[:2]
        r = np.broadcast_to(features[:, None], layers[0].eps.shape)
        # each maps dL/d(output) to dL/d(input), on (N, B, ...) arrays
        backwards: list[VJP] = []
        for i, layer in enumerate(layers):
            z, vjp = layer(r.reshape(n * b, *r.shape[2:]))
            z = z.reshape(r.shape)

            def layer_vjp(g: np.ndarray, vjp: VJP = vjp) -> np.ndarray:
                return vjp(g.reshape(n * b, *g.shape[2:])).reshape(g.shape)

            backwards.append(layer_vjp)
            if i < len(segments):
                r, segment_vjp = segments[i](z)
                backwards.append(segment_vjp)
        loss, grad_z = head(z)

        def backward() -> None:
            grad = grad_z
            for step in reversed(backwards):
                grad = step(grad)

        return loss, backward

    return run


def objective(
    alpha: np.ndarray,
    features: np.ndarray,
    stats: Sequence[Statistics],
    model: Model,
    noise: Sequence[np.ndarray],
    config: Config,
    layout: str,
    token_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loss per input ``model_loss(Z) + beta * mean(capacity)`` of one step, and ``dL/dalpha``.

    ``noise`` holds this step's standard-normal draws per layer, ``(N, B, *F_l)``. With a
    ``token_mask`` ``(N, T)`` the mean runs over the real tokens' elements only
    (``iba.text.information_term``, docs/mathematics.md section 6.3).
    """
    n_inputs = features.shape[0]
    masks = _masks(stats)
    first = stats[0]
    lam = damping(alpha, layout, config.sigma)
    layers = [
        bottleneck_layer(lam[:, None], n, s, mask, config)
        for n, s, mask in zip(noise, stats, masks)
    ]
    model_loss, backward = model(layers)
    backward()
    cap = capacity(features, lam, first.mean, first.std, masks[0])
    grad_cap = capacity_vjp(features, lam, first.mean, first.std, masks[0])
    if token_mask is None:
        weights: np.ndarray | float = 1.0 / cap[0].size
        information = cap.reshape(n_inputs, -1).mean(1)
    else:
        weights = information_weights(cap, token_mask)
        information = information_term(cap, token_mask)
    loss = np.asarray(model_loss) + config.beta * information
    grad_lam = sum(
        # backward() has run every layer's vjp: each grad_lam is an array
        (
            sum_to_shape(cast(np.ndarray, g), lam.shape)
            for g in [layer.grad_lam for layer in layers]
        ),
        config.beta * sum_to_shape(weights * grad_cap, lam.shape),
    )
    return loss, damping_vjp(alpha, grad_lam, layout, config.sigma)
