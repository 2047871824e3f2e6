"""``IBA``: the explainer of the common API for Flax Linen and NNX models (SPEC sections 2 and 4)."""

from __future__ import annotations

import collections
import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import iba
from iba.layout import check_alpha_shape
from iba.noise import check_noise
from iba_jax import _hooks, _math
from iba_jax.linen import linen_session
from iba_jax.nnx import nnx_session

SEED_IMPL = "rbg"  # the jax.random implementation of seed=
ESTIMATE_CHUNK = 256  # rows per forward pass when estimate() is given one array


class IBA:
    """Information Bottleneck Attribution at one Flax module path, or CoIBA at several.

    Args:
        targets: one module path, as a tuple (``("Block_4", "LayerNorm_0")``, for NNX also list
            indices: ``("blocks", 4, "norm1")``) or a ``/``-joined string (``"Block_4/LayerNorm_0"``);
            a **list** of paths shares one ``alpha`` over channels and layers (CoIBA).
        layout: layout of the target's features; by default ``"channels_last"`` for ``(H, W, C)``
            and ``"tokens"`` for ``(T, D)`` per input.
        config: an ``iba.Config``; otherwise built from ``**fields`` (``iba.Config`` defaults for one
            target, ``iba.coiba_config`` defaults for several).
        **fields: fields of ``iba.Config`` (``beta``, ``steps``, ``lr``, ``batch_size``, ...).

    The model is a Linen ``(module, variables)`` pair, a ``(module, variables, apply_kwargs)``
    triple (``apply_kwargs`` go to ``module.apply``, e.g. ``{"train": False}``), a bound Linen
    module (``module.bind(variables)``), or an ``nnx.Module`` (called as ``model(x)``).
    """

    def __init__(
        self,
        targets: object,
        *,
        layout: str | None = None,
        config: iba.Config | None = None,
        **fields: Any,
    ):
        self.paths = _hooks.to_paths(targets)
        self.config = iba.config.for_targets(len(self.paths), config, **fields)
        self.layout = None if layout is None else iba.layout.check_layout(layout)
        self.estimators: list[iba.Estimator] = []

    @property
    def targets(self) -> list[str]:
        """The target module paths, ``/``-joined."""
        return [_hooks.format_path(p) for p in self.paths]

    def __repr__(self) -> str:
        return f"IBA(targets={self.targets}, config={self.config})"

    # -- model access ----------------------------------------------------------------------------

    def _session(self, model: object):
        session = linen_session(model, self.paths) or nnx_session(model, self.paths)
        if session is None:
            raise TypeError(
                "model must be a Flax Linen (module, variables) pair, a bound Linen module "
                f"(module.bind(variables)) or an nnx.Module; got {type(model).__name__}"
            )
        return session

    def _capture(self, session, n_targets: int):
        """A jitted ``(dynamic, x) -> features of targets 0 .. n_targets - 1``, and its args."""
        static, dynamic, _ = session.capture_parts()

        def build():
            run = session.runner(static)

            def features(dynamic, x):
                try:
                    return tuple(
                        _hooks.capture(lambda: run(dynamic, None, x), n_targets, run.describe)
                    )
                except _hooks.NotReached as missing:
                    raise run.not_reached(missing.layer) from None

            return features

        key = None if static is None else ("capture", static, n_targets)
        return _cached(key, lambda: jax.jit(build())), dynamic

    def _feature_shapes(self, session, x) -> list[jax.ShapeDtypeStruct]:
        fn, dynamic = self._capture(session, len(self.paths))
        key = ("shapes", fn, _spec(x), _spec(dynamic), jax.config.jax_enable_x64)
        return _cached(key, lambda: list(jax.eval_shape(fn, dynamic, x)))

    def _layout(self, shape: tuple[int, ...]) -> str:
        if self.layout is not None:
            return self.layout
        if len(shape) == 3:
            return "channels_last"
        if len(shape) == 2:
            return "tokens"
        raise ValueError(
            f"the target's features have shape {shape} per input; IBA needs (H, W, C) or (T, D): "
            "choose another target or pass layout="
        )

    # -- estimation ------------------------------------------------------------------------------

    def estimate(
        self, model: object, data: Iterable, n_samples: int | None = None, progress: bool = True
    ) -> list[iba.Estimator]:
        """Fit one ``iba.Estimator`` per target on the features of ``data`` (SPEC section 1).

        ``data`` is an iterable of input batches or ``(inputs, labels, ...)`` tuples, or one array
        of inputs. The forward pass stops after the last target.
        """
        if n_samples is not None and (isinstance(n_samples, bool) or int(n_samples) < 1):
            raise ValueError(f"n_samples must be a positive int or None, got {n_samples!r}")
        total = n_samples
        if total is None and isinstance(data, (np.ndarray, jax.Array)):
            total = len(data)
        estimators: list[iba.Estimator] = []
        seen = 0
        with self._session(model) as session:
            capture, dynamic = self._capture(session, len(self.paths))
            with tqdm(total=total, unit="sample", desc="IBA estimate", disable=not progress) as bar:
                for x in _batches(data):
                    if n_samples is not None:
                        x = jax.tree.map(functools.partial(_head, n_samples - seen), x)
                    rows = _rows(x)
                    features = [np.asarray(f) for f in capture(dynamic, x)]
                    if not estimators:
                        estimators = [
                            iba.Estimator(layout=self._layout(f.shape[1:])) for f in features
                        ]
                    for est, f in zip(estimators, features):
                        est.update(f)
                    seen += rows
                    bar.update(rows)
                    if n_samples is not None and seen >= n_samples:
                        break
        if not estimators:
            raise ValueError("estimate() got no data: the iterable yielded no batches")
        self.estimators = estimators
        return estimators

    def save_estimators(self, path: str | os.PathLike) -> None:
        """Write the estimators to one ``.npz`` file (no pickle)."""
        self._require_estimators()
        iba.save_estimators(path, self.estimators)

    def load_estimators(self, path: str | os.PathLike) -> list[iba.Estimator]:
        """Read estimators written by ``save_estimators``; checked against the layers at analysis."""
        self.estimators = iba.load_estimators(path, self.targets)
        return self.estimators

    def _require_estimators(self) -> None:
        iba.estimator.require_estimators(self.estimators, self.targets)

    # -- analysis --------------------------------------------------------------------------------

    def analyze(
        self,
        model: object,
        x: Any,
        target: int | Iterable[int] | None = None,
        loss_fn: Callable[[Any], jax.Array] | None = None,
        noise: Any = None,
        seed: int | None = None,
        details: bool = False,
    ) -> np.ndarray | iba.Explanation:
        """Heatmaps of ``N`` inputs ``x`` (channels-last images or any model input), in bits.

        Args:
            target: class index, or one per input: the model loss is the mean over noise samples
                of ``-log_softmax(outputs)[target]``.
            loss_fn: ``outputs -> loss per row`` (``N * B`` rows, input-major), traceable by JAX;
                instead of ``target``. A new function object compiles anew: reuse one.
            noise: ``iba.draw_noise(seed, steps, batch_size, F, n_inputs=N)`` (a list, one per
                target, for several targets), or a ``jax.random`` key.
            seed: seeds ``jax.random.key(seed, impl="rbg")`` instead (``noise`` and ``seed`` both
                ``None``: seed 0); the same seed gives the same noise on the same platform.
            details: return an ``iba.Explanation`` (capacity, alpha, lam, alphas, losses, heatmap).

        Returns:
            ``(N, H, W)`` at the input's size for images, ``(N, T)`` per token for token features.
        """
        with self._prepared(model, x, target, loss_fn, noise, seed) as (fn, args, finish):
            result = fn(*args)
        finish()
        layout, x = finish.layout, args[2]
        arrays = _math.as_numpy(result)
        input_size = None
        if iba.layout.is_spatial(layout) and isinstance(x, jax.Array) and x.ndim == 4:
            input_size = tuple(x.shape[1:3])
        maps = iba.heatmap(arrays["capacity"], layout, input_size)
        if not details:
            return maps
        return iba.Explanation(heatmap=maps, **arrays)

    def lower(
        self,
        model: object,
        x: Any,
        target: int | Iterable[int] | None = None,
        loss_fn: Callable[[Any], jax.Array] | None = None,
        noise: Any = None,
        seed: int | None = None,
    ) -> jax.stages.Lowered:
        """The optimisation that ``analyze`` runs, lowered for inspection or timing.

        ``.compile()`` compiles it, ``.compile().as_text()`` shows the optimised HLO (for example
        to check that the layers before the target are not in the per-step loop).
        """
        with self._prepared(model, x, target, loss_fn, noise, seed) as (fn, args, _):
            return fn.lower(*args)

    @contextlib.contextmanager
    def _prepared(self, model, x, target, loss_fn, noise, seed):
        """Yield the compiled optimisation, its arguments and a check to run on its result."""
        self._require_estimators()
        if (target is None) == (loss_fn is None):
            raise ValueError("pass exactly one of target= (class index per input) or loss_fn=")
        if noise is not None and seed is not None:
            raise ValueError("pass noise= or seed=, not both")
        config = self.config
        x = jax.tree.map(jnp.asarray, x)
        n_inputs = _rows(x)
        if n_inputs < 1:
            raise ValueError("x holds no inputs")

        with self._session(model) as session:
            shapes = self._feature_shapes(session, x)
            feature_shapes = [tuple(s.shape[1:]) for s in shapes]
            dtype = shapes[0].dtype
            layout = self.estimators[0].layout
            stats = self._statistics(feature_shapes, dtype)
            shared = len(self.paths) > 1
            a_shape = iba.alpha_shape(feature_shapes[0], layout, shared)
            for shape in feature_shapes[1:]:
                check_alpha_shape(a_shape, shape, layout)
            noise_arg, keyed = self._noise(noise, seed, n_inputs, feature_shapes, dtype)
            labels = None if target is None else _labels(target, n_inputs)

            alpha0 = jnp.full((n_inputs, *a_shape), config.initial_alpha, dtype)
            static, dynamic, params = session.analysis_parts(alpha0)
            key = None
            if static is not None:
                key = ("analysis", static, loss_fn, keyed, config, layout, tuple(feature_shapes))

            def compile_new() -> tuple[Callable, dict]:
                meta: dict[str, Any] = {}  # filled while tracing: the number of classes
                explain = _build_explain(
                    session, static, loss_fn, config, layout, feature_shapes, meta
                )
                return jax.jit(explain), meta

            fn, meta = _cached(key, compile_new)

            def finish() -> None:
                if labels is not None:
                    _check_labels(labels, meta.get("classes"))

            finish.layout = layout
            yield fn, (dynamic, params, x, stats, noise_arg, labels), finish

    def _statistics(self, feature_shapes, dtype) -> tuple[_math.LayerStats, ...]:
        self._require_estimators()
        stats = []
        for path, est, shape in zip(self.paths, self.estimators, feature_shapes):
            try:
                est.check(shape)
            except ValueError as err:
                raise ValueError(f"target {_hooks.format_path(path)!r}: {err}") from None
            s = est.statistics(self.config.min_std, self.config.active_threshold)
            mask = jnp.asarray(s.active, dtype) if len(self.paths) == 1 else 1.0
            stats.append(
                _math.LayerStats(jnp.asarray(s.mean, dtype), jnp.asarray(s.std, dtype), mask)
            )
        return tuple(stats)

    def _noise(self, noise, seed, n_inputs, feature_shapes, dtype):
        config = self.config
        if noise is None:  # "rbg" compiles in a fraction of threefry's time on CPU
            return jax.random.key(0 if seed is None else int(seed), impl=SEED_IMPL), True
        if _is_key(noise):
            return noise, True
        arrays = list(noise) if isinstance(noise, (list, tuple)) else [noise]
        if len(arrays) != len(feature_shapes):
            raise ValueError(
                f"{len(feature_shapes)} target(s) need {len(feature_shapes)} noise array(s), "
                f"got {len(arrays)}"
            )
        checked = [
            check_noise(n, config.steps, n_inputs, config.batch_size, shape)[: config.updates]
            for n, shape in zip(arrays, feature_shapes)
        ]
        return [jnp.asarray(n, dtype) for n in checked], False


_CACHE: collections.OrderedDict[Any, Any] = collections.OrderedDict()
CACHE_SIZE = 64  # compiled functions kept, shared by all explainers (least recently used dropped)


def _cached(key: Any, make: Callable[[], Any]) -> Any:
    """``make()``, remembered under ``key`` (``None``: not remembered)."""
    if key is None:
        return make()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = make()
    _CACHE[key] = value
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def _spec(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(np.shape(a)), str(getattr(a, "dtype", type(a)))) for a in leaves)


def _build_explain(session, static, loss_fn, config, layout, feature_shapes, meta) -> Callable:
    """The function that ``analyze`` compiles: features once, then every optimisation step."""
    run = session.runner(static)
    batch = config.batch_size

    def explain(dynamic, params, x, stats, noise, labels):
        try:
            (features,) = _hooks.capture(lambda: run(dynamic, params, x), 1, run.describe)
        except _hooks.NotReached as missing:
            raise run.not_reached(missing.layer) from None
        n_inputs = features.shape[0]
        x_rep = jax.tree.map(lambda a: jnp.repeat(a, batch, axis=0), x)

        def forward(params, hook):
            with _hooks.active(hook):
                return run(dynamic, params, x_rep)

        def model_loss(outputs):
            if loss_fn is not None:
                return _math.user_loss(loss_fn, outputs, n_inputs, batch)
            meta["classes"] = outputs.shape[-1] if hasattr(outputs, "shape") else None
            return _math.classification_loss(outputs, labels, n_inputs)

        return _math.optimize(
            params=params,
            alpha_of=session.alpha_of,
            forward=forward,
            features=features,
            stats=stats,
            feature_shapes=feature_shapes,
            noise=noise,
            model_loss=model_loss,
            config=config,
            layout=layout,
        )

    return explain


def _is_key(value: object) -> bool:
    if not isinstance(value, jax.Array):
        return False
    if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        return True
    return value.dtype == jnp.uint32 and value.shape == (2,)  # a raw jax.random.PRNGKey


def _head(n: int, a: Any) -> Any:
    return a[:n]


def _rows(x: Any) -> int:
    leaves = jax.tree.leaves(x)
    if not leaves or not getattr(leaves[0], "shape", ()):
        raise ValueError("inputs must be arrays with a batch axis first")
    return int(leaves[0].shape[0])


def _batches(data: Iterable) -> Iterator[Any]:
    if isinstance(data, (np.ndarray, jax.Array)):
        for start in range(0, len(data), ESTIMATE_CHUNK):
            yield data[start : start + ESTIMATE_CHUNK]
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _labels(target: object, n_inputs: int) -> jax.Array:
    labels = np.asarray(target)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"target must be an int or ints, got {target!r}")
    if labels.ndim == 0:
        labels = np.full(n_inputs, int(labels))
    if labels.shape != (n_inputs,):
        raise ValueError(f"target has shape {labels.shape}; expected one int or {n_inputs} ints")
    return jnp.asarray(labels, jnp.int32)


def _check_labels(labels: jax.Array, classes: int | None) -> None:
    values = np.asarray(labels)
    if classes is not None and (values.min() < 0 or values.max() >= classes):
        raise ValueError(f"target {values.tolist()} out of range for {classes} model outputs")
