"""Attribution baselines for Flax image classifiers (Linen and NNX), to compare IBA with (SPEC
section 8).

The methods of ``iba.baselines`` (the NumPy reference defines them and how the channels are
reduced) on the models ``iba_jax.IBA`` takes: a Linen ``(module, variables)`` pair, a
``(module, variables, apply_kwargs)`` triple, a bound Linen module, or an ``nnx.Module``.

    >>> import flax.linen as nn, jax, numpy as np
    >>> from iba_jax import baselines
    >>> class CNN(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    ...         return nn.Dense(10)(x.reshape(x.shape[0], -1))
    >>> x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    >>> model = (CNN(), CNN().init(jax.random.key(0), x))
    >>> baselines.saliency(model, x, target=3).shape
    (2, 8, 8)
    >>> baselines.grad_cam(model, x, target=[3, 4], layer="conv").shape
    (2, 8, 8)

Every method is ``method(model, x, target=None, **options) -> np.ndarray``: a batch ``x`` of
``N`` channels-last images ``(N, H, W, C)`` (a NumPy or JAX array, cast to the dtype of the
model's floating parameters) gives one map per image, ``(N, H, W)``. The score explained is the
model's output (the logit) of ``target``: an int, one int per image, or ``None`` for the model's
top class on each image.

Gradients come from ``jax.grad``; the model's forward pass, its gradients and Grad-CAM's are each
one ``jax.jit`` function, compiled once per model structure and batch shape (and shared with
later calls, like ``iba_jax.IBA``'s). The model is called as ``iba_jax.IBA`` calls it
(``module.apply(variables, x, **apply_kwargs)`` or ``model(x)``): pass ``{"train": False}``-like
``apply_kwargs`` or an NNX model in eval mode (``model.eval()``) where that matters. Variables
are not changed; an NNX model's submodule is wrapped for the duration of Grad-CAM only.

Grad-CAM at a module path (``"Block_1"``, ``("blocks", 1)`` or ``"blocks/1"``) reuses the
adapter's hooks (``iba_jax._hooks``): the module's output ``A`` is replaced by ``A + delta`` with
``delta = 0``, and ``d logit / d delta`` is ``d logit / d A``. The module must run once per
forward pass and return one channels-last feature map ``(N, h, w, C)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from iba import baselines as reference
from iba.baselines import INTEGRATION_METHODS, REDUCTIONS, integration_points
from iba_jax import _hooks
from iba_jax.explainer import _cached
from iba_jax.linen import linen_session
from iba_jax.nnx import nnx_session

__all__ = [
    "BASELINES",
    "INTEGRATION_METHODS",
    "REDUCTIONS",
    "gradient_x_input",
    "grad_cam",
    "integrated_gradients",
    "integration_points",
    "occlusion",
    "random",
    "saliency",
    "smoothgrad",
]


def _picked(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``sum_i logits[i, labels[i]]``."""
    return jnp.take_along_axis(logits, labels[:, None], axis=1).sum()


def _logits_fn(run: Callable) -> Callable:
    def logits(dynamic, x):
        return run(dynamic, None, x)

    return logits


def _gradients_fn(run: Callable) -> Callable:
    def gradients(dynamic, x, labels):
        return jax.grad(lambda x: _picked(run(dynamic, None, x), labels))(x)

    return gradients


def _features_fn(run: Callable) -> Callable:
    def features(dynamic, x):
        try:
            (out,) = _hooks.capture(lambda: run(dynamic, None, x), 1, run.describe)
        except _hooks.NotReached:
            raise run.not_reached(0) from None
        return out

    return features


def _feature_gradients_fn(run: Callable) -> Callable:
    """``(dynamic, x, labels, delta) -> (A, d logit / d A)``: ``A + delta`` replaces ``A``."""

    def feature_gradients(dynamic, x, labels, delta):
        def score(delta):
            captured = []

            def hook(layer: int, compute: Callable[[], Any]) -> Any:
                if captured:
                    raise ValueError(
                        f"layer {run.describe(0)!r} runs more than once per forward pass; "
                        "Grad-CAM needs a module that runs once"
                    )
                captured.append(compute())
                return captured[0] + delta

            with _hooks.active(hook):
                logits = run(dynamic, None, x)
            if not captured:
                raise run.not_reached(0)
            return _picked(logits, labels), captured[0]

        grads, features = jax.grad(score, has_aux=True)(delta)
        return features, grads

    return feature_gradients


class _Flax(reference.Backend):
    """A Flax model (through an ``iba_jax`` session) for ``iba.baselines``, channels-last."""

    layout = "channels_last"

    def __init__(self, session: Any, layer: Any, images: np.ndarray):
        self.static, self.dynamic, _ = session.capture_parts()
        self.run = session.runner(self.static)
        self.dtype = _dtype(self.dynamic, images)
        self.layer = None if layer is None else _hooks.format_path(_hooks.to_path(layer))

    def _compiled(self, kind: str, build: Callable[[Callable], Callable]) -> Callable:
        key = None if self.static is None else ("baselines", kind, self.static)
        return _cached(key, lambda: jax.jit(build(self.run)))

    def from_numpy(self, a: np.ndarray) -> jax.Array:
        return jnp.asarray(a, self.dtype)

    def logits(self, x: jax.Array) -> Any:
        out = self._compiled("logits", _logits_fn)(self.dynamic, x)
        return np.asarray(out) if isinstance(out, jax.Array) else out

    def logits_shape(self, x: jax.Array) -> tuple[int, ...] | str:
        out = jax.eval_shape(self._compiled("logits", _logits_fn), self.dynamic, x)
        return tuple(out.shape) if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__

    def gradients(self, x: jax.Array, labels: np.ndarray) -> np.ndarray:
        fn = self._compiled("gradients", _gradients_fn)
        return np.asarray(fn(self.dynamic, x, jnp.asarray(labels, jnp.int32)))

    def feature_gradients(self, x: jax.Array, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spec = jax.eval_shape(self._compiled("features", _features_fn), self.dynamic, x)
        if not isinstance(spec, jax.ShapeDtypeStruct):
            raise ValueError(
                f"layer {self.layer!r} returns {type(spec).__name__}; Grad-CAM needs a module "
                "that returns one feature map (N, h, w, C)"
            )
        reference.check_feature_map(spec.shape, x.shape[0], self.layer, self.layout)
        fn = self._compiled("feature_gradients", _feature_gradients_fn)
        features, grads = fn(
            self.dynamic, x, jnp.asarray(labels, jnp.int32), jnp.zeros(spec.shape, spec.dtype)
        )
        return np.asarray(features), np.asarray(grads)


def _session(model: Any, layer: Any = None) -> Any:
    paths = [] if layer is None else [_hooks.to_path(layer)]
    session = linen_session(model, paths) or nnx_session(model, paths)
    if session is None:
        raise TypeError(
            "model must be a Flax Linen (module, variables) pair, a bound Linen module "
            f"(module.bind(variables)) or an nnx.Module; got {type(model).__name__}"
        )
    return session


def _dtype(dynamic: Any, x: np.ndarray) -> np.dtype:
    """The dtype of the model's first floating parameter (else of ``x``, else float32)."""
    for leaf in jax.tree.leaves(dynamic):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            return np.dtype(dtype)
    if np.issubdtype(x.dtype, np.floating):
        return np.dtype(jax.dtypes.canonicalize_dtype(x.dtype))
    return np.dtype(np.float32)


def _array(value: Any) -> Any:
    """JAX arrays as NumPy arrays (targets, baselines, noise); anything else as it is."""
    return np.asarray(value) if isinstance(value, jax.Array) else value


def _run(
    fn: Callable[..., np.ndarray], model: Any, x: Any, target: Any, layer: Any = None, /, **options
) -> np.ndarray:
    """``fn`` of ``iba.baselines`` on the Flax ``model`` (Grad-CAM at ``layer``)."""
    session = _session(model, layer)
    images = np.asarray(x)
    with session:
        backend = _Flax(session, layer, images)
        if np.issubdtype(images.dtype, np.number):
            images = images.astype(backend.dtype, copy=False)
        return fn(backend, images, _array(target), **options)


def random(model: Any, x: Any, target: Any = None, *, seed: int = 0) -> np.ndarray:
    """Uniform noise in ``[0, 1)`` per pixel, ``(N, H, W)``: the baseline every method must beat.

    ``seed`` seeds NumPy's generator; the model is not called (``target`` is ignored).
    """
    return _run(reference.random, model, x, None, seed=seed)


def saliency(
    model: Any, x: Any, target: Any = None, *, reduce: str = "max", batch_size: int = 64
) -> np.ndarray:
    """Saliency map: ``|d logit[target] / d x|``, reduced over channels (Simonyan et al., 2014).

    Args:
        reduce: ``"max"`` (the maximum over channels, as in the paper and the IBA paper's code)
            or ``"sum"``.
    """
    reference.check_reduce(reduce)
    return _run(reference.saliency, model, x, target, reduce=reduce, batch_size=batch_size)


def gradient_x_input(model: Any, x: Any, target: Any = None, *, batch_size: int = 64) -> np.ndarray:
    """Gradient x input, summed over channels (signed; Shrikumar et al., 2016)."""
    return _run(reference.gradient_x_input, model, x, target, batch_size=batch_size)


def integrated_gradients(
    model: Any,
    x: Any,
    target: Any = None,
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
            or an array that broadcasts to ``x``.
        method: the quadrature, see :func:`integration_points` (``"riemann_right"``: the paper's
            sum; ``"gausslegendre"``: Captum's default).
        batch_size: path points per call of the model (rows of all images, input-major).
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
    model: Any,
    x: Any,
    target: Any = None,
    *,
    n_samples: int = 50,
    noise_level: float = 0.15,
    reduce: str = "max",
    seed: int | None = 0,
    noise: Any = None,
    batch_size: int = 50,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al., 2017): the mean ``|gradient|`` over noisy copies, reduced over
    channels like :func:`saliency`.

    Args:
        n_samples: noisy copies per image (50).
        noise_level: the noise std as a share of each image's range: ``std = noise_level *
            (x.max() - x.min())`` (0.15, SPEC section 8).
        reduce: ``"max"`` or ``"sum"`` over channels of the mean ``|gradient|``.
        seed: seeds the draws, ``np.random.default_rng(seed).standard_normal((N, n_samples,
            H, W, C))`` (``iba.baselines.smoothgrad_noise``: the same noise as ``iba_torch`` and
            ``iba_tf`` give for the same seed); ``None`` draws fresh ones.
        noise: the standard-normal draws themselves, ``(N, n_samples, H, W, C)`` (instead of
            ``seed``), scaled by each image's std.
        batch_size: noisy copies per call of the model.
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
    model: Any,
    x: Any,
    target: Any = None,
    *,
    patch: int = 8,
    baseline: float = 0.0,
    batch_size: int = 64,
) -> np.ndarray:
    """Occlusion (Zeiler & Fergus, 2014): the drop of the target's logit when a ``patch`` x
    ``patch`` square (all channels) is set to ``baseline``; stride = ``patch``.

    Every pixel of a patch gets the patch's drop; where ``patch`` does not divide the image, the
    last row / column of patches is smaller. The IBA paper uses 8x8 and 14x14 patches.
    """
    return _run(
        reference.occlusion, model, x, target, patch=patch, baseline=baseline, batch_size=batch_size
    )


def grad_cam(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    layer: str | tuple,
    relu: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) at the module ``layer``, upsampled to the input.

    ``ReLU(sum_c w_c A_c)`` with ``A`` the module's output and ``w_c`` the spatial mean of
    ``d logit[target] / d A_c``; resized bilinearly with half-pixel centres (``iba.resize``).

    Args:
        layer: a module path, as a tuple (``("Block_1",)``, for NNX also list indices:
            ``("blocks", 1)``) or a ``/``-joined string (``"blocks/1"``); the module must return a
            channels-last feature map ``(N, h, w, C)``.
        relu: apply the ReLU (``False`` returns the signed map).
    """
    return _run(reference.grad_cam, model, x, target, layer, relu=relu, batch_size=batch_size)


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
