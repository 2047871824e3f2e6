"""``IBA``: the explainer of the common API for Flax Linen and NNX models.

The Per-Sample Bottleneck and CoIBA (docs/mathematics.md sections 2 and 4). The shared driver
(``iba.driver``) does everything around the arithmetic; this module is the JAX engine: Linen
interceptors or NNX surgery (``iba_jax.linen``, ``iba_jax.nnx``) and the whole optimisation in
one ``jax.jit`` (``iba_jax._math.optimize``).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

import iba
from iba import driver, targets
from iba_jax import _cache, _hooks, _math
from iba_jax._cache import _CACHE  # noqa: F401 - the compiled functions, counted by benchmarks
from iba_jax.linen import linen_session
from iba_jax.nnx import nnx_session

SEED_IMPL = "rbg"  # the jax.random implementation of seed= ("rbg" compiles fast on CPU)


class JaxEngine(driver.EngineBase):
    """The JAX engine of ``iba.driver`` (see ``iba.driver.Engine``)."""

    image_layout = "channels_last"

    def __init__(self, targets: object, layout: str | None = None):
        self.paths = _hooks.to_paths(targets)
        super().__init__([_hooks.format_path(p) for p in self.paths], layout)

    def native_noise(self, noise: Any) -> bool:
        """A ``jax.random`` key is accepted as ``noise=``."""
        return _is_key(noise)

    def session(self, model: object):
        session = linen_session(model, self.paths) or nnx_session(model, self.paths)
        if session is None:
            raise TypeError(
                "model must be a Flax Linen (module, variables) pair, a bound Linen module "
                f"(module.bind(variables)) or an nnx.Module; got {type(model).__name__}"
            )
        return session

    def capture_fn(self, session, n_targets: int):
        """A jitted ``(dynamic, x) -> features of targets 0 .. n_targets - 1``, its ``dynamic``
        argument and its cache key (``None``: not cached)."""
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
        return _cache.cached(key, lambda: jax.jit(build()), [session.owner]), dynamic, key

    @contextlib.contextmanager
    def estimation(self, model: object) -> Iterator[Callable[[Any], list]]:
        with self.session(model) as session:
            capture, dynamic, _ = self.capture_fn(session, len(self.paths))
            yield lambda batch: [np.asarray(f) for f in capture(dynamic, batch)]

    @contextlib.contextmanager
    def analysis(self, model: object, x: Any, config: iba.Config) -> Iterator[_Analysis]:
        x = jax.tree.map(jnp.asarray, x)
        with self.session(model) as session:
            yield _Analysis(self, session, x)


class _Analysis:
    """One ``analyze`` call: the compiled optimisation and its arguments."""

    def __init__(self, engine: JaxEngine, session, x: Any):
        self.engine, self.session, self.x = engine, session, x
        self.n_inputs = driver.n_rows(x)
        self._shapes: list[jax.ShapeDtypeStruct] | None = None

    def _feature_specs(self) -> list[jax.ShapeDtypeStruct]:
        if self._shapes is None:
            fn, dynamic, capture = self.engine.capture_fn(self.session, len(self.engine.paths))
            key = None
            if capture is not None:  # the capture's key, not the function: that may be dropped
                key = (capture, _spec(self.x), _spec(dynamic), jax.config.jax_enable_x64)
            self._shapes = _cache.shapes(key, lambda: list(jax.eval_shape(fn, dynamic, self.x)))
        return self._shapes

    def feature_shapes(self) -> list[tuple[int, ...] | None]:
        return [tuple(s.shape[1:]) for s in self._feature_specs()]

    def input_size(self, layout: str) -> tuple[int, int] | None:
        x = self.x
        if isinstance(x, jax.Array) and x.ndim == 4:
            return tuple(x.shape[1:3])
        return None

    def compiled(self, plan: driver.Plan) -> tuple[jax.stages.Wrapped, tuple, dict]:
        """The jitted optimisation, its arguments, and what tracing found out (the classes)."""
        config, session = plan.config, self.session
        dtype = self._feature_specs()[0].dtype
        stats = tuple(
            _math.LayerStats(
                jnp.asarray(s.mean, dtype),
                jnp.asarray(s.std, dtype),
                1.0 if s.mask is None else jnp.asarray(s.mask, dtype),
            )
            for s in plan.stats
        )
        noise = plan.noise
        if noise.arrays is not None:
            noise_arg, keyed = [jnp.asarray(a, dtype) for a in noise.arrays], False
        elif noise.native is not None:
            noise_arg, keyed = noise.native, True
        else:
            noise_arg, keyed = jax.random.key(noise.seed, impl=SEED_IMPL), True
        labels = None if plan.labels is None else jnp.asarray(plan.labels, jnp.int32)
        # a traced argument: another mask of the same shape runs the same compiled function
        token_mask = None if plan.token_mask is None else jnp.asarray(plan.token_mask, dtype)
        alpha0 = jnp.full((self.n_inputs, *plan.alpha_shape), config.initial_alpha, dtype)
        static, dynamic, params = session.analysis_parts(alpha0)
        # arrays bound in a functools.partial loss_fn are arguments too (_cache.lift_arrays),
        # where the rest of it is described by value (else it is keyed by identity, as it is)
        loss_fn, loss_data = _cache.lift_arrays(plan.loss_fn)
        loss_key = _cache.loss_key(loss_fn)
        if isinstance(loss_key, _cache.ById):
            loss_fn, loss_data = plan.loss_fn, None
            loss_key = _cache.loss_key(loss_fn)
        args = (dynamic, params, self.x, stats, noise_arg, labels, token_mask, loss_data)
        shapes = tuple(plan.feature_shapes)
        key = base = None
        if static is not None:  # one compiled executable per entry: the arguments' shapes too
            base = ("analysis", static, keyed, config, plan.layout, shapes, _spec(args))
            key = (*base, loss_key)

        def compile_new() -> tuple[Callable, dict]:
            meta: dict[str, Any] = {}  # filled while tracing: the number of classes
            loss = _loss_ref(loss_fn, weak=isinstance(loss_key, _cache.ById))
            explain = _build_explain(session, static, loss, config, plan.layout, shapes, meta)
            if base is not None and plan.loss_fn is not None:
                _cache.count_loss_compile(base)
            return jax.jit(explain), meta

        fn, meta = _cache.cached(key, compile_new, [session.owner])
        return fn, args, meta

    def optimize(self, plan: driver.Plan) -> driver.Result:
        fn, args, meta = self.compiled(plan)
        result = fn(*args)
        if plan.labels is not None:
            targets.check_range(plan.labels, meta.get("classes"))
        return driver.Result(**result._asdict())


class IBA(driver.Explainer):
    """Information Bottleneck Attribution at one Flax module path, or CoIBA at several.

    Args:
        targets: one module path, as a tuple (``("Block_4", "LayerNorm_0")``, for NNX also list
            indices: ``("blocks", 4, "norm1")``) or a ``/``-joined string (``"Block_4/LayerNorm_0"``);
            a **list** of paths shares one ``alpha`` over channels and layers (CoIBA).
        layout: layout of the target's features; by default ``"channels_last"`` for ``(H, W, C)``
            and ``"tokens"`` for ``(T, D)`` per input.
        config: an ``iba.Config``; otherwise built from ``**fields`` (``iba.Config`` defaults for one
            target, ``iba.coiba_config`` defaults for several).
        estimators: estimators to start with (a list, one per target, or a saved file's path).
        **fields: fields of ``iba.Config`` (``beta``, ``steps``, ``lr``, ``batch_size``, ...).

    The model is a Linen ``(module, variables)`` pair, a ``(module, variables, apply_kwargs)``
    triple (``apply_kwargs`` go to ``module.apply``, e.g. ``{"train": False}``), a bound Linen
    module (``module.bind(variables)``), or an ``nnx.Module`` (called as ``model(x)``).
    ``analyze`` (``iba.driver.Explainer.analyze``) runs the whole optimisation in one compiled
    call; its ``noise=`` also takes a ``jax.random`` key, its default is
    ``jax.random.key(0, impl="rbg")``. ``analyze``'s ``token_mask`` (token features) is an
    argument of the compiled function: texts of the same padded length share one.

    Compiled functions are shared by all explainers (``iba_jax._cache``): at most 16, each kept
    while a model that used it is alive (and the 2 most recent after that, for a loop over new
    copies of one model). A ``loss_fn`` must be traceable by JAX. It is keyed by its code and
    the values it captures (numbers, strings, small arrays, JAX / NumPy functions), so a lambda
    rebuilt for each call with the same values reuses the compiled function; one that captures
    other objects (a model, a large array, ``self``) is keyed by identity and compiles anew as a
    new object: pass the same ``loss_fn`` object (a warning says so after 8 such compilations on
    one model). Data per input belongs in a ``functools.partial(loss, data)``: its bound arrays
    are arguments of the compiled function, so new data of the same shape runs it again. See
    docs/reliability.md.
    """

    engine: JaxEngine
    engine_type = JaxEngine

    @property
    def paths(self) -> list[tuple]:
        """The target module paths as tuples."""
        return list(self.engine.paths)

    def lower(
        self,
        model: object,
        x: Any,
        target: Any = None,
        loss_fn: Callable[[Any], jax.Array] | None = None,
        noise: Any = None,
        seed: int | None = None,
    ) -> jax.stages.Lowered:
        """The optimisation that ``analyze`` runs, lowered for inspection or timing.

        ``.compile()`` compiles it, ``.compile().as_text()`` shows the optimised HLO (for example
        to check that the layers before the target are not in the per-step loop).
        """
        with self.planned(model, x, target, loss_fn, noise, seed) as (run, plan):
            fn, args, _ = cast(_Analysis, run).compiled(plan)  # JaxEngine.analysis yields one
            return fn.lower(*args)


def _loss_ref(loss_fn: Any, weak: bool) -> Callable[[], Any]:
    """``() -> loss_fn``; held weakly where the cache keys it by identity (its entry dies with
    it), else strongly (a function described by value: small, and shared by equal ones)."""
    if loss_fn is None or not weak:
        return lambda: loss_fn
    try:
        return weakref.ref(loss_fn)
    except TypeError:
        return lambda: loss_fn


def _spec(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(np.shape(a)), str(getattr(a, "dtype", type(a)))) for a in leaves)


def _build_explain(session, static, loss_fn, config, layout, feature_shapes, meta) -> Callable:
    """The function that ``analyze`` compiles: features once, then every optimisation step.

    ``loss_fn`` is ``() -> the user's loss_fn or None`` (for a ``functools.partial``, its
    template: ``_cache.lift_arrays``). The variables, ``alpha``, the inputs, the statistics, the
    noise, the labels, the token mask and the loss_fn's bound arrays are arguments: the compiled
    code holds no array of the model or the data (docs/reliability.md).
    """
    run = session.runner(static)
    batch = config.batch_size
    alpha_of = session.alpha_of  # not the session: the cache must not keep the model alive

    def explain(dynamic, params, x, stats, noise, labels, token_mask, loss_data):
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
            user_fn = loss_fn()
            if user_fn is not None:
                user_fn = _cache.bind(user_fn, loss_data)
                return _math.user_loss(user_fn, outputs, n_inputs, batch)
            meta["classes"] = outputs.shape[-1] if hasattr(outputs, "shape") else None
            return _math.classification_loss(outputs, labels, n_inputs)

        return _math.optimize(
            params=params,
            alpha_of=alpha_of,
            forward=forward,
            features=features,
            stats=stats,
            feature_shapes=feature_shapes,
            noise=noise,
            model_loss=model_loss,
            config=config,
            layout=layout,
            token_mask=token_mask,
        )

    return explain


def _is_key(value: object) -> bool:
    if not isinstance(value, jax.Array):
        return False
    if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        return True
    return value.dtype == jnp.uint32 and value.shape == (2,)  # a raw jax.random.PRNGKey
