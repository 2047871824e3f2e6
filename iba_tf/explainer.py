"""``IBA``: estimate feature statistics and explain Keras models.

The Per-Sample Bottleneck and CoIBA (docs/mathematics.md sections 1, 2 and 4). The shared driver
(``iba.driver``) does everything around the arithmetic; this module is the Keras engine: one code
path for every Keras backend, written with ``keras.ops``; only the gradient with respect to
``alpha`` comes from the backend (``iba_tf._backend``). The layers before the first bottleneck
run once per call of ``analyze`` (a sub-model of a Functional/Sequential graph, or a forward pass
that stops at the layer); the compiled step runs the rest of the model on the ``N * B`` noised
copies.

The explainer keeps, per model, how to run it (a ``_Plan``) and its compiled steps, without
keeping the model alive: the plans are keyed weakly by the model and hold it weakly, and a model's
steps are dropped when it is collected.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

import iba
from iba import driver, targets
from iba.layout import is_spatial
from iba_tf import _backend, _graph, _ops
from iba_tf.layer import IBALayer

STEPS_KEPT = 16  # compiled steps an explainer keeps (least recently used dropped)
# analyze() pads its inputs to the next power of two from 1 up to this bound (beyond it, to a
# multiple of it): one compiled step per bucket instead of one per number of inputs. The compiled
# backends only: Keras' torch backend runs the step eagerly, where padding only costs.
BUCKETS = (1, 32)
_CALL = threading.local()  # per thread: the number of real inputs of the running analyze


class KerasEngine(driver.EngineBase):
    """The Keras engine of ``iba.driver`` (see ``iba.driver.Engine``): ``IBALayer``s."""

    def __init__(self, targets: Any, layout: str | None = None, buckets: Any = "auto"):
        super().__init__(targets)
        self.names = [t if isinstance(t, str) else t.name for t in self.targets]
        self.buckets = check_buckets(buckets)
        self.traces = 0  # how often an objective was traced (compiled backends) or run (torch)
        if layout not in (None, "channels_last", "channels_first"):
            raise ValueError(
                f"layout must be 'channels_last' or 'channels_first' (token features are "
                f"recognised by their shape), got {layout!r}"
            )
        self.layout = layout
        # weak keys, and plans that hold the model weakly: explaining a model does not keep it
        self._plans: weakref.WeakKeyDictionary[keras.Model, _Plan] = weakref.WeakKeyDictionary()
        self._steps = _Steps()
        self._lock = threading.Lock()
        self._local = threading.local()  # per thread: the plan it estimates or explains

    @property
    def _current(self) -> _Plan | None:
        """The plan of the model this thread is estimating or explaining, if any."""
        return getattr(self._local, "plan", None)

    @_current.setter
    def _current(self, plan: _Plan | None) -> None:
        self._local.plan = plan

    def plan(self, model: Any) -> _Plan:
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
        with self._lock:
            plan = self._plans.get(model)
            if plan is None:
                plan = _Plan(model, self.targets, self.layout)
                self._plans[model] = plan
                # the model's compiled steps go with it (they hold its layers and variables)
                weakref.finalize(model, _Steps.drop_plan, weakref.ref(self._steps), plan.key)
            return plan

    def layout_of(self, shape: tuple[int, ...], index: int) -> str | None:
        """The layout of target ``index``: its ``IBALayer``'s."""
        return None if self._current is None else layer_layout(self._current.layers[index])

    def stored_estimators(self, model: Any) -> list[iba.Estimator] | None:  # in the weights
        stored = [layer.estimator() for layer in self.plan(model).layers]
        fitted = [est for est in stored if est is not None]
        return fitted if len(fitted) == len(stored) else None

    def store_estimators(self, model: Any, estimators: list[iba.Estimator]) -> None:
        for layer, est in zip(self.plan(model).layers, estimators):
            layer.set_estimator(est)  # saved with the model

    @contextlib.contextmanager
    def _using(self, plan: _Plan) -> Iterator[None]:
        self._current = plan
        try:
            yield
        finally:
            self._current = None

    @contextlib.contextmanager
    def estimation(self, model: Any) -> Iterator[Callable[[Any], list]]:
        plan = self.plan(model)
        size = {"rows": 0}

        def capture(batch: Any) -> list[np.ndarray]:
            rows = driver.n_rows(batch)
            size["rows"] = max(size["rows"], rows)
            padded = _pad(batch, size["rows"])  # one compiled shape for every chunk
            outputs = plan.features(padded, len(plan.layers), compiled=True)
            return [ops.convert_to_numpy(f)[:rows] for f in outputs]

        with self._using(plan):
            yield capture

    @contextlib.contextmanager
    def analysis(self, model: Any, x: Any, config: iba.Config) -> Iterator[_Analysis]:
        plan = self.plan(model)
        _check_inputs(plan.model, x)
        with self._using(plan):
            yield _Analysis(self, plan, to_tensors(x))


class _Steps:
    """An engine's compiled steps, most recently used last: at most ``STEPS_KEPT`` of them (a new
    ``loss_fn`` per call stays bounded), and none of a model that was collected. Safe to share
    between threads."""

    def __init__(self) -> None:
        self._steps: OrderedDict[tuple, Callable] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._steps)

    def values(self) -> list[Callable]:
        with self._lock:
            return list(self._steps.values())

    def get(self, key: tuple, make: Callable[[], Callable]) -> Callable:
        """The step of ``key`` (the plan's key first), made by ``make()`` if it is not kept."""
        with self._lock:
            step = self._steps.pop(key, None)
        if step is None:
            step = make()  # outside the lock: building an objective may take a while
        with self._lock:
            self._steps[key] = step  # the most recently used last
            while len(self._steps) > STEPS_KEPT:
                self._steps.popitem(last=False)
        return step

    @staticmethod
    def drop_plan(ref: weakref.ref, plan_key: int) -> None:
        """Drop the steps of a plan whose model was collected (``weakref.finalize``)."""
        steps = ref()
        if steps is None:
            return
        with steps._lock:
            for key in [k for k in steps._steps if k[0] == plan_key]:
                del steps._steps[key]


class _Analysis:
    """One ``analyze`` call: the features before the first bottleneck once, then the steps."""

    def __init__(self, engine: KerasEngine, plan: _Plan, x: Any):
        self.engine, self.plan, self.x = engine, plan, x
        self.n_inputs = driver.n_rows(x)

    def feature_shapes(self) -> list[tuple[int, ...] | None]:
        return [tuple(layer_shape(layer)) for layer in self.plan.layers]

    def input_size(self, layout: str) -> tuple[int, int] | None:
        return _input_size(self.x, layout)

    def optimize(self, p: driver.Plan) -> driver.Result:
        plan, config, real = self.plan, p.config, self.n_inputs
        # a scalar loss_fn couples the rows of one input: one input is never padded then
        single = p.loss_fn is not None and real == 1
        n_inputs = real if single else bucket(real, self.engine.buckets)
        x = _pad_rows(self.x, n_inputs)  # every padded row repeats the last input
        with _backend.no_grad(), driver.running_on(self.x):
            features = plan.features(x, 1, compiled=_backend.eager_compiles())[0]
        layers = plan.layers
        layout = p.layout
        dtype = keras.backend.standardize_dtype(features.dtype)
        stats = [
            _ops.LayerStats(
                *(
                    ops.convert_to_tensor(a, dtype)
                    for a in (s.mean, s.std, np.ones(()) if s.mask is None else s.mask)
                )
            )
            for s in p.stats
        ]
        draws = _noise(p, real, n_inputs, dtype)

        batch = config.batch_size
        runner = plan.runner
        if plan.head is not None:
            inputs = ops.repeat(features, batch, axis=0)
        else:
            inputs = keras.tree.map_structure(lambda a: ops.repeat(a, batch, axis=0), x)
        labels = None if p.labels is None else driver.pad_rows(p.labels, n_inputs)
        rows = ops.convert_to_tensor(
            np.zeros(1, np.int32) if labels is None else np.repeat(labels, batch).astype(np.int32)
        )
        # the function itself: an id could be reused after it is freed; the config: the step
        # bakes it in (explainer.config may be replaced between calls). One step serves every
        # token mask: the mask is an argument; and every partial(f, *arrays) of one f: the
        # arrays are arguments too (a new M2IB caption of the same shapes compiles nothing).
        loss_fn, loss_data, loss_key = _backend.lift_loss(p.loss_fn)
        step = self.engine._steps.get(
            (plan.key, loss_key, config),
            lambda: _backend.make_step(
                _objective(plan, config, loss_fn, self.engine), config.lr, runner.variables
            ),
        )
        mask = None if p.token_mask is None else driver.pad_rows(p.token_mask, n_inputs)
        tokens = _token_weights(mask, features)  # (N, T, 1), or None: every element

        if p.labels is not None:
            targets.check_range(p.labels, plan.n_classes(x))
        flat_stats = [t for s in stats for t in s]
        alpha = ops.full((n_inputs, *p.alpha_shape), config.initial_alpha, dtype=dtype)
        mu, nu = ops.zeros_like(alpha), ops.zeros_like(alpha)
        alphas, losses = [ops.convert_to_numpy(alpha)[:real]], []
        # the bottleneck runs only in the step's own forward pass (the objective's hooks, of this
        # thread); the layers' bottleneck_on switch is left to the user
        _CALL.real = real  # for the messages of a trace (loss_fn's shape)
        try:
            for i in driver.steps(config.updates, p.progress):
                count = ops.convert_to_tensor(float(i + 1), dtype)
                step_noise = [draw(i) for draw in draws]
                alpha, mu, nu, loss = step(
                    alpha,
                    mu,
                    nu,
                    count,
                    inputs,
                    features,
                    rows,
                    tokens,
                    loss_data,
                    *flat_stats,
                    *step_noise,
                )
                alphas.append(ops.convert_to_numpy(alpha)[:real])
                losses.append(ops.convert_to_numpy(loss)[:real])
        finally:
            _CALL.real = None
            for layer in layers:
                layer._hook = None

        with _backend.no_grad():
            lam = _ops.damping(alpha, layout, config.sigma)
            cap = _ops.capacity(features, lam, *stats[0])
            if tokens is not None:  # no capacity at padding (docs/mathematics.md section 6.3)
                cap = cap * tokens
        return driver.Result(
            capacity=ops.convert_to_numpy(cap)[:real],
            alpha=alphas[-1],
            lam=ops.convert_to_numpy(lam)[:real],
            alphas=np.stack(alphas),
            losses=np.stack(losses) if losses else np.zeros((0, real)),
        )


def _noise(p: driver.Plan, real: int, n_inputs: int, dtype: str) -> list[Callable[[int], Any]]:
    """Per target layer, ``step -> (n_inputs, B, *F)`` standard-normal draws: those of the
    ``real`` inputs (the same as without padding), then zeros for the padding rows."""
    if p.noise.arrays is not None:

        def fixed(n: np.ndarray) -> Callable[[int], Any]:
            if n_inputs > real:
                pad = np.zeros((n.shape[0], n_inputs - real, *n.shape[2:]), n.dtype)
                n = np.concatenate([n, pad], axis=1)
            return lambda step: ops.convert_to_tensor(n[step], dtype)

        return [fixed(n) for n in p.noise.arrays]
    # a fixed name: TensorFlow keeps ~35 KB for every new variable name, and an unnamed generator
    # gets a new one (a leak of one per call)
    gen = keras.random.SeedGenerator(p.noise.seed, name="iba_noise")

    def draw(shape: tuple[int, ...]) -> Callable[[int], Any]:
        full = (real, p.config.batch_size, *shape)
        if n_inputs == real:
            return lambda step: keras.random.normal(full, dtype=dtype, seed=gen)
        pad = ops.zeros((n_inputs - real, *full[1:]), dtype=dtype)
        return lambda step: ops.concatenate(
            [keras.random.normal(full, dtype=dtype, seed=gen), pad], axis=0
        )

    return [draw(shape) for shape in p.feature_shapes]


def _token_weights(mask: np.ndarray | None, features: Any) -> Any:
    """The plan's ``(N, T)`` token mask as an ``(N, T, 1)`` tensor of the features' dtype, or
    ``None`` (docs/mathematics.md section 6.3)."""
    if mask is None:
        return None
    shape = tuple(int(s) for s in features.shape)
    if mask.shape != shape[:2] or len(shape) != 3:
        raise ValueError(
            f"token_mask of shape {mask.shape} does not fit features {shape}: expected "
            f"{shape[:2]} (N, T)"
        )
    dtype = keras.backend.standardize_dtype(features.dtype)
    return ops.convert_to_tensor(mask[..., None], dtype)


def information(cap: Any, tokens: Any) -> Any:
    """The information term per input ``(N,)``: the mean capacity over every element, or with an
    ``(N, T, 1)`` token mask over the real tokens' elements, ``sum(cap * m) / (D * max(sum(m),
    1))`` (``iba.text.information_term``; docs/mathematics.md sections 2.5 and 6.3)."""
    n = int(cap.shape[0])
    if tokens is None:
        return _ops.mean(ops.reshape(cap, (n, -1)), axis=1)
    per_token = int(np.prod(cap.shape[2:]))  # D
    count = ops.maximum(ops.sum(ops.reshape(tokens, (n, -1)), axis=1) * per_token, 1.0)
    return ops.sum(ops.reshape(cap * tokens, (n, -1)), axis=1) / count


def check_buckets(buckets: Any) -> tuple[int, int] | None:
    """The validated ``buckets`` option: ``(smallest, largest)`` padded sizes, or ``None``;
    ``"auto"``: :data:`BUCKETS` on the TensorFlow and JAX backends, ``None`` on torch."""
    if isinstance(buckets, str) and buckets == "auto":
        return None if keras.backend.backend() == "torch" else BUCKETS
    if buckets is None:
        return None
    ok = (
        isinstance(buckets, (tuple, list))
        and len(buckets) == 2
        and all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in buckets)
        and 1 <= buckets[0] <= buckets[1]
    )
    if not ok:
        raise ValueError(
            f"buckets must be 'auto', None (no padding) or (smallest, largest) with "
            f"1 <= smallest <= largest, e.g. (1, 32); got {buckets!r}"
        )
    return int(buckets[0]), int(buckets[1])


def bucket(n: int, buckets: tuple[int, int] | None) -> int:
    """The number of rows ``n`` inputs are padded to: ``n`` without buckets; otherwise the
    smallest ``smallest * 2**k >= n`` up to ``largest``, and beyond ``largest`` the next multiple
    of it."""
    if buckets is None:
        return n
    smallest, largest = buckets
    if n > largest:
        return -(-n // largest) * largest
    size = smallest
    while size < n:
        size *= 2
    return min(size, largest)


def _pad_rows(x: Any, rows: int) -> Any:
    """Tensors ``x`` (or a structure of them) with the last row repeated up to ``rows`` rows."""
    missing = rows - driver.n_rows(x)
    if missing <= 0:
        return x
    return keras.tree.map_structure(
        lambda a: ops.concatenate([a, ops.repeat(a[-1:], missing, axis=0)], axis=0), x
    )


class IBA(driver.Explainer):
    """Information Bottleneck Attribution at one Keras layer, or CoIBA at several.

    Args:
        targets: an ``IBALayer`` of the model (object or name), or any layer of a Functional or
            Sequential model (object or name): then a copy of the model with an ``IBALayer`` after
            it is used (see ``IBACopy``; the model itself is not changed). A **list** of targets
            shares one ``alpha`` over channels and layers (CoIBA, docs/mathematics.md section 4).
        layout: data format of bottlenecks this explainer inserts (``"channels_last"`` or
            ``"channels_first"``; default ``keras.config.image_data_format()``).
        config: an ``iba.Config``; otherwise built from ``**fields`` (``iba.Config`` defaults for
            one target, ``iba.coiba_config`` defaults for several).
        estimators: estimators to start with (a list, one per target, or a saved file's path).
        buckets: ``analyze`` pads its ``N`` inputs to the next ``smallest * 2**k`` up to
            ``largest`` (beyond it, to a multiple of ``largest``), so that one compiled step
            serves every ``N`` of a bucket: ``(1, 32)`` compiles at most 6 steps for 1 to 32
            inputs; ``(8, 8)``: one step for 1 to 8 (each call then costs 8 inputs' work).
            Padding rows repeat the last input with zero noise and are dropped: each input's
            loss is its own, so the maps of the real inputs are those of an unpadded call.
            ``None``: no padding (a step per ``N``). ``"auto"`` (default): ``(1, 32)`` on the
            TensorFlow and JAX backends, ``None`` on torch (which compiles nothing).
        **fields: fields of ``iba.Config`` (``beta``, ``steps``, ``lr``, ``batch_size``, ...).

    ``estimate`` (``iba.driver.Explainer.estimate``) also stores the statistics in the
    ``IBALayer``s' weights (saved with the model), and ``analyze`` uses those when the explainer
    has none. A ``loss_fn`` is written with ``keras.ops``; for ``target=`` on a model that ends in
    a softmax the loss is ``-log(outputs)[target]``.
    """

    engine: KerasEngine
    engine_type = KerasEngine

    def __init__(self, targets: Any, *, buckets: Any = "auto", **kwargs: Any):
        self._buckets = check_buckets(buckets)
        super().__init__(targets, **kwargs)

    def make_engine(self, targets: Any, layout: str | None) -> KerasEngine:
        return KerasEngine(targets, layout, getattr(self, "_buckets", "auto"))

    def model(self, model: keras.Model) -> keras.Model:
        """The model this explainer runs for ``model``: itself, or its copy with bottlenecks."""
        return self.engine.plan(model).model

    def layers(self, model: keras.Model) -> list[IBALayer]:
        """The ``IBALayer``s this explainer drives in ``model`` (or in its copy)."""
        return list(self.engine.plan(model).layers)


def layer_layout(layer: IBALayer) -> str:
    """The ``iba`` layout of a built ``IBALayer``'s features."""
    if not layer.built:
        raise ValueError(
            f"IBALayer {layer.name!r} is not built: call the model on data once before explaining"
        )
    return layer.layout


def layer_shape(layer: IBALayer) -> tuple[int, ...]:
    """The feature shape of one input at a built ``IBALayer``."""
    layer_layout(layer)
    return tuple(layer.feature_shape)


def _objective(plan: _Plan, config: iba.Config, loss_fn, engine: KerasEngine) -> Callable:
    """``(alpha, inputs, features, labels, tokens, loss_data, *stats, *noise) -> (total, loss per
    input)``; ``loss_data``: the arrays lifted out of ``loss_fn`` (``_backend.lift_loss``) or
    ``None``.

    ``iba.optimize.objective`` in ``keras.ops``: the model loss (mean over the noise samples) plus
    ``beta`` times the information term of the first target (:func:`information`; ``tokens``:
    the ``(N, T, 1)`` token mask or ``None``), per input; the total is their sum. Each input's
    loss depends on its own rows only, so padding rows (:func:`bucket`) leave the real rows'
    gradients as they are. The model is run through the plan (which holds it weakly), not
    captured here; ``engine.traces`` counts the objective's runs (traces on compiled backends).
    """
    layers = plan.layers
    n_layers = len(layers)
    layout = layer_layout(layers[0])
    probabilities = _graph.output_is_probability(plan.model)

    def objective(alpha, inputs, features, labels, tokens, loss_data, *rest):
        engine.traces += 1
        stats = [_ops.LayerStats(*rest[3 * i : 3 * i + 3]) for i in range(n_layers)]
        noise = rest[3 * n_layers :]
        n_inputs, batch = int(alpha.shape[0]), config.batch_size
        lam = _ops.damping(alpha, layout, config.sigma)
        lam_rows = ops.expand_dims(lam, 1)

        def hook_for(s: _ops.LayerStats, n: Any, shape: tuple[int, ...]):
            eps = s.std * n + s.mean

            def hook(layer: IBALayer, r: Any) -> Any:
                r_dtype = r.dtype
                r = ops.reshape(ops.cast(r, lam.dtype), (n_inputs, batch, *shape))
                if config.log_var_clamp is not None:  # docs/mathematics.md section 6
                    z = _ops.clamped_bottleneck(
                        r, lam_rows, s.mean, s.std * n, config.log_var_clamp, s.mask, config.relu
                    )
                else:
                    z = _ops.bottleneck(r, lam_rows, eps, s.mask, config.relu)
                return ops.cast(ops.reshape(z, (n_inputs * batch, *shape)), r_dtype)

            return hook

        try:
            for layer, s, n in zip(layers, stats, noise):
                layer._hook = hook_for(s, n, layer.feature_shape)
            outputs = plan.runner(inputs, training=False)
        finally:
            for layer in layers:
                layer._hook = None
        if loss_fn is None:
            model_loss = _ops.classification_loss(outputs, labels, n_inputs, probabilities)
        else:
            real = getattr(_CALL, "real", None) or n_inputs
            if real != n_inputs:  # loss_fn sees the real inputs' rows only, as unpadded
                outputs = keras.tree.map_structure(lambda o: o[: real * batch], outputs)
            loss = _backend.bind_loss(loss_fn, loss_data)(outputs)
            if real != n_inputs:
                shape = tuple(getattr(loss, "shape", ()))
                if shape != (real * batch,):
                    driver.check_loss_shape(shape, real, batch)
                    raise ValueError(
                        f"loss_fn must return one loss per row, shape ({real * batch},) for "
                        f"{real} input(s) x {batch} noise samples"
                    )
                padding = ops.zeros(((n_inputs - real) * batch,), dtype=loss.dtype)
                loss = ops.concatenate([loss, padding], axis=0)  # the padding rows: no loss
            model_loss = _ops.user_loss(loss, n_inputs, batch)
        model_loss = ops.cast(model_loss, lam.dtype)
        cap = _ops.capacity(features, lam, *stats[0])
        per_input = model_loss + config.beta * information(cap, tokens)
        return ops.sum(per_input), per_input

    return objective


class _Plan:
    """How to run one model for an explainer's targets: which ``IBALayer``s, how to cut it.

    The user's model is held weakly (the explainer must not keep it alive); a copy with inserted
    bottlenecks (``IBACopy``) is the plan's own and held strongly (it holds the user's layers, not
    the user's model).
    """

    _keys = itertools.count(1)  # plan keys, never reused (an id could be)

    def __init__(self, model: keras.Model, targets: list, layout: str | None):
        self.key = next(_Plan._keys)
        self._user = weakref.ref(model)
        self._own: keras.Model | None = None
        found = [_graph.find_layer(model, t) for t in targets]
        missing = {layer.name: layer for layer in found if not isinstance(layer, IBALayer)}
        if missing:
            if not _graph.is_graph(model):
                name = next(iter(missing))
                raise ValueError(
                    f"layer {name!r} of the subclassed model {model.name!r} is not an IBALayer: "
                    "add iba_tf.IBALayer() after it in the model's call(), or explain a "
                    "Functional/Sequential model (IBACopy)"
                )
            bottlenecks = {name: IBALayer(layout, name=f"iba_{name}") for name in missing}
            model = self._own = _graph.insert_after(model, bottlenecks)
            found = [bottlenecks.get(layer.name, layer) for layer in found]
        if len({id(layer) for layer in found}) != len(found):
            raise ValueError("the same target layer is named twice")
        if _graph.is_graph(model) and len(found) > 1:  # layers are listed in topological order
            position = {id(layer): i for i, layer in enumerate(model.layers)}
            reached = sorted(range(len(found)), key=lambda i: position[id(found[i])])
            if reached != list(range(len(found))):
                raise driver.order_error([layer.name for layer in found], reached)
        self.layers: list[IBALayer] = found
        self.graph = _graph.is_graph(model)
        self._prefix: dict[int, keras.Model | None] = {}
        self.head = None
        if self.graph:
            self.head = _graph.submodel(_graph.layer_input(model, found[0]), model.outputs)

    @property
    def model(self) -> keras.Model:
        """The model this plan runs: the plan's copy, or the user's model (while it lives)."""
        model = self._own if self._own is not None else self._user()
        if model is None:
            raise RuntimeError("the model of this plan was collected")
        return model

    @property
    def runner(self) -> keras.Model:
        """What the optimisation steps call: the part from the first bottleneck on, or the model."""
        return self.head if self.head is not None else self.model

    def n_classes(self, x: Any) -> int | None:
        """The size of the last axis of the model's output (from its output spec), if known."""
        try:
            if self.graph:
                spec = self.model.outputs
            else:
                spec = self.model.compute_output_spec(
                    keras.tree.map_structure(lambda a: keras.KerasTensor(a.shape, a.dtype), x)
                )
            spec = keras.tree.flatten(spec)
            return int(spec[0].shape[-1]) if len(spec) == 1 else None
        except Exception:  # an output spec Keras cannot compute: checked when the step traces
            return None

    def _prefix_model(self, n: int) -> keras.Model | None:
        if n not in self._prefix:
            self._prefix[n] = None
            if self.graph:
                self._prefix[n] = _graph.submodel(
                    self.model.inputs,
                    [_graph.layer_input(self.model, layer) for layer in self.layers[:n]],
                )
        return self._prefix[n]

    def features(self, x: Any, n: int, compiled: bool = False) -> list:
        """The inputs of the first ``n`` target layers on ``x`` (identity bottlenecks).

        ``compiled``: run the layers before them as Keras' compiled predict function (for the
        many equal-sized batches of ``estimate``, and in ``analyze`` on JAX, which would
        otherwise compile every operation for a new number of inputs on its own); otherwise
        eagerly (TensorFlow and torch: no trace for every new number of inputs).
        """
        x = to_tensors(x)
        prefix = self._prefix_model(n)
        if prefix is None:
            return self._capture(x, n)
        if not isinstance(x, (list, tuple)) and len(prefix.inputs) == 1:
            x = [x]
        if compiled:
            out = prefix.predict_on_batch(x)
        else:
            with _backend.no_grad():
                out = prefix(x, training=False)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return [ops.convert_to_tensor(o) for o in out]

    def _capture(self, x: Any, n: int) -> list:
        captured: dict[int, Any] = {}
        order = {id(layer): i for i, layer in enumerate(self.layers[:n])}

        def hook(layer: IBALayer, inputs: Any) -> Any:
            captured[order[id(layer)]] = inputs
            if len(captured) == n:
                raise _graph.StopForward
            return inputs

        try:
            for layer in self.layers[:n]:
                layer._hook = hook
            with _backend.no_grad():
                self.model(x, training=False)
        except _graph.StopForward:
            pass
        finally:
            for layer in self.layers:
                layer._hook = None
        if list(captured) != sorted(captured):
            raise driver.order_error([layer.name for layer in self.layers[:n]], list(captured))
        if len(captured) < n:
            names = [layer.name for i, layer in enumerate(self.layers[:n]) if i not in captured]
            raise ValueError(
                f"the forward pass of {self.model.name!r} never called the IBALayer(s) {names}: "
                "call them in the model's call()"
            )
        return [captured[i] for i in range(n)]


def to_tensors(x: Any) -> Any:
    """Backend tensors of ``x`` (a tensor, an array or a structure of them), NumPy dtypes kept.

    (Keras' torch backend would otherwise turn float64 arrays into float32 tensors.)
    """

    def convert(a: Any) -> Any:
        if isinstance(a, np.ndarray) or np.isscalar(a):
            return ops.convert_to_tensor(a, dtype=np.asarray(a).dtype.name)
        return ops.convert_to_tensor(a)

    return keras.tree.map_structure(convert, x)


def _pad(batch: Any, rows: int) -> Any:
    """A NumPy ``batch`` with its last row repeated up to ``rows`` rows: one compiled shape for
    all chunks (other batches are left as they are)."""
    if not all(isinstance(a, np.ndarray) for a in keras.tree.flatten(batch)):
        return batch
    return driver.pad_rows(batch, rows)


def _check_inputs(model: keras.Model, x: Any) -> None:
    """Raise unless ``x`` fits a Functional or Sequential model's inputs (rank and fixed sizes):
    Keras would otherwise add or drop an axis of its own accord, or fail inside the step."""
    leaves = keras.tree.flatten(x)
    if not _graph.is_graph(model) or len(leaves) != len(model.inputs):
        return
    for spec, a in zip(model.inputs, leaves):
        want, got = tuple(spec.shape), tuple(getattr(a, "shape", ()))
        if len(want) != len(got) or any(w not in (None, g) for w, g in zip(want[1:], got[1:])):
            raise ValueError(
                f"x has shape {got}; the model takes inputs of shape {want} (None: any size): "
                "pass a batch of inputs, batch axis first"
            )


def _input_size(x: Any, layout: str) -> tuple[int, int] | None:
    """``(H, W)`` of an image batch ``x`` (in ``keras.config.image_data_format()``), else ``None``.

    ``None`` (heatmaps at the features' size) for token features and non-image inputs.
    """
    if not is_spatial(layout) or isinstance(x, (list, tuple, dict)) or len(x.shape) != 4:
        return None
    shape = tuple(int(s) for s in x.shape)
    if keras.config.image_data_format() == "channels_last":
        return shape[1], shape[2]
    return shape[2], shape[3]
