"""Attribution baselines for Flax image classifiers (Linen and NNX), to compare IBA with
(docs/mathematics.md section 8).

The seven methods of ``iba.baselines`` (defined there once: their options, docstrings and how
the channels are reduced) on the models ``iba_jax.IBA`` takes: a Linen ``(module, variables)``
pair, a ``(module, variables, apply_kwargs)`` triple, a bound Linen module, or an ``nnx.Module``.

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

A batch ``x`` of ``N`` images is channels-last, ``(N, H, W, C)`` (a NumPy or JAX array, cast to
the dtype of the model's floating parameters).

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

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from iba import baselines as reference
from iba.baselines import INTEGRATION_METHODS, REDUCTIONS, integration_points  # noqa: F401
from iba_jax import _cache, _hooks
from iba_jax.linen import linen_session
from iba_jax.nnx import nnx_session

__all__ = [*reference.ADAPTER_EXPORTS]


def _picked(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``sum_i logits[i, labels[i]]``."""
    return jnp.take_along_axis(logits, labels[:, None], axis=1).sum()


def _logits_fn(run: _hooks.Runner) -> Callable:
    def logits(dynamic, x):
        return run(dynamic, None, x)

    return logits


def _gradients_fn(run: _hooks.Runner) -> Callable:
    def gradients(dynamic, x, labels):
        return jax.grad(lambda x: _picked(run(dynamic, None, x), labels))(x)

    return gradients


def _features_fn(run: _hooks.Runner) -> Callable:
    def features(dynamic, x):
        try:
            (out,) = _hooks.capture(lambda: run(dynamic, None, x), 1, run.describe)
        except _hooks.NotReached:
            raise run.not_reached(0) from None
        return out

    return features


def _feature_gradients_fn(run: _hooks.Runner) -> Callable:
    """``(dynamic, x, labels, delta) -> (A, d logit / d A)``: ``A + delta`` replaces ``A``."""

    def feature_gradients(dynamic, x, labels, delta):
        def score(delta):
            captured: list[Any] = []

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

    def __init__(self, session: Any, layer: Any):
        self._session = session
        self.layer = None if layer is None else _hooks.format_path(_hooks.to_path(layer))

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        with self._session:
            self.static, self.dynamic, _ = self._session.capture_parts()
            self.run = self._session.runner(self.static)
            yield

    def images(self, x: Any) -> np.ndarray:
        images = np.asarray(x)
        self.dtype = _dtype(self.dynamic, images)
        if np.issubdtype(images.dtype, np.number):
            images = images.astype(self.dtype, copy=False)
        return images

    def _compiled(self, kind: str, build: Callable[[_hooks.Runner], Callable]) -> Callable:
        key = None if self.static is None else ("baselines", kind, self.static)
        return _cache.cached(key, lambda: jax.jit(build(self.run)), [self._session.owner])

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


def _dtype(dynamic: Any, x: np.ndarray) -> np.dtype:
    """The dtype of the model's first floating parameter (else of ``x``, else float32)."""
    for leaf in jax.tree.leaves(dynamic):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            return np.dtype(dtype)
    if np.issubdtype(x.dtype, np.floating):
        return np.dtype(jax.dtypes.canonicalize_dtype(x.dtype))
    return np.dtype(np.float32)


def make_backend(model: Any, *, layer: str | tuple | None = None) -> reference.Backend:
    """The Flax ``model`` as an ``iba.baselines.Backend`` (Grad-CAM at the module path ``layer``)."""
    paths = [] if layer is None else [_hooks.to_path(layer)]
    session = linen_session(model, paths) or nnx_session(model, paths)
    if session is None:
        raise TypeError(
            "model must be a Flax Linen (module, variables) pair, a bound Linen module "
            f"(module.bind(variables)) or an nnx.Module; got {type(model).__name__}"
        )
    return _Flax(session, layer)


_METHODS = reference.bind(make_backend)
random, saliency, gradient_x_input, integrated_gradients, smoothgrad, occlusion, grad_cam = _METHODS
BASELINES = _METHODS._asdict()
"""The baselines by name (docs/mathematics.md section 8); ``grad_cam`` needs ``layer=``."""
