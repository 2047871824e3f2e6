"""``IBA``: estimate feature statistics and explain Keras models (SPEC sections 1, 2 and 4).

One code path for every Keras backend, written with ``keras.ops``; only the gradient with respect
to ``alpha`` comes from the backend (``iba_tf._backend``). The layers before the first bottleneck
run once per call of ``analyze`` (a sub-model of a Functional/Sequential graph, or a forward pass
that stops at the layer); the compiled step runs the rest of the model on the ``N * B`` noised
copies.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras
import numpy as np
from keras import ops
from tqdm.auto import tqdm

import iba
from iba.layout import check_alpha_shape, is_spatial
from iba.noise import check_noise
from iba_tf import _backend, _graph, _ops
from iba_tf.layer import IBALayer

ESTIMATE_CHUNK = 256  # rows per forward pass when estimate() is given one array


class IBA:
    """Information Bottleneck Attribution at one Keras layer, or CoIBA at several.

    Args:
        targets: an ``IBALayer`` of the model (object or name), or any layer of a Functional or
            Sequential model (object or name): then a copy of the model with an ``IBALayer`` after
            it is used (see ``IBACopy``; the model itself is not changed). A **list** of targets
            shares one ``alpha`` over channels and layers (CoIBA, SPEC section 4).
        layout: data format of bottlenecks this explainer inserts (``"channels_last"`` or
            ``"channels_first"``; default ``keras.config.image_data_format()``).
        config: an ``iba.Config``; otherwise built from ``**fields`` (``iba.Config`` defaults for
            one target, ``iba.coiba_config`` defaults for several).
        **fields: fields of ``iba.Config`` (``beta``, ``steps``, ``lr``, ``batch_size``, ...).
    """

    def __init__(
        self,
        targets: Any,
        *,
        layout: str | None = None,
        config: iba.Config | None = None,
        **fields: Any,
    ):
        many = isinstance(targets, (list, tuple))
        self.targets = list(targets) if many else [targets]
        if not self.targets:
            raise ValueError("IBA needs at least one target layer")
        config = iba.config.for_targets(len(self.targets), config, **fields)
        if layout not in (None, "channels_last", "channels_first"):
            raise ValueError(
                f"layout must be 'channels_last' or 'channels_first' (token features are "
                f"recognised by their shape), got {layout!r}"
            )
        self.config = config
        self.layout = layout
        self.estimators: list[iba.Estimator] = []
        self._plans: dict[int, tuple[weakref.ref, _Plan]] = {}
        self._steps: dict[Any, Callable] = {}

    def __repr__(self) -> str:
        names = [t if isinstance(t, str) else t.name for t in self.targets]
        return f"IBA(targets={names}, config={self.config})"

    def _plan(self, model: Any) -> _Plan:
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
        entry = self._plans.get(id(model))
        if entry is not None and entry[0]() is model:
            return entry[1]
        plan = _Plan(model, self.targets, self.layout)
        self._plans[id(model)] = (weakref.ref(model), plan)
        return plan

    def model(self, model: keras.Model) -> keras.Model:
        """The model this explainer runs for ``model``: itself, or its copy with bottlenecks."""
        return self._plan(model).model

    def layers(self, model: keras.Model) -> list[IBALayer]:
        """The ``IBALayer``s this explainer drives in ``model`` (or in its copy)."""
        return list(self._plan(model).layers)

    # -- estimation --------------------------------------------------------------------------

    def estimate(
        self,
        model: keras.Model,
        data: Iterable,
        n_samples: int | None = None,
        progress: bool = True,
    ) -> list[iba.Estimator]:
        """Fit the per-element feature statistics of every target layer (SPEC section 1).

        Args:
            data: input batches: a NumPy array (split into chunks), a ``tf.data.Dataset``, a
                generator or any iterable of batches or of ``(inputs, labels, ...)`` tuples.
            n_samples: stop after this many samples (default: all of ``data``).
            progress: show a progress bar of the samples seen.

        The statistics go to ``self.estimators`` and into the ``IBALayer``s' weights (saved with
        the model). The forward pass stops after the last target layer where Keras allows it.
        """
        if n_samples is not None and (not isinstance(n_samples, int) or n_samples < 1):
            raise ValueError(f"n_samples must be a positive int or None, got {n_samples!r}")
        plan = self._plan(model)
        total = n_samples
        if total is None and isinstance(data, np.ndarray):
            total = len(data)
        estimators = [iba.Estimator(layout=layer_layout(layer)) for layer in plan.layers]
        seen = 0
        with tqdm(total=total, unit="sample", desc="IBA estimate", disable=not progress) as bar:
            for batch in _batches(data):
                rows = _rows(batch)
                if n_samples is not None and seen + rows > n_samples:
                    rows = n_samples - seen
                    batch = keras.tree.map_structure(lambda a, r=rows: a[:r], batch)
                if rows <= 0:
                    break
                padded = _pad(batch, ESTIMATE_CHUNK) if isinstance(data, np.ndarray) else batch
                outputs = plan.features(padded, len(plan.layers), compiled=True)
                for est, features in zip(estimators, outputs):
                    est.update(ops.convert_to_numpy(features)[:rows])
                seen += rows
                bar.update(rows)
                if n_samples is not None and seen >= n_samples:
                    break
        if seen < 2:
            raise ValueError(
                f"estimate() saw {seen} sample(s) in data; the statistics need at least 2 "
                "(the IBA paper used 5,000-10,000)"
            )
        for layer, est in zip(plan.layers, estimators):
            layer.set_estimator(est)
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

    def _require_estimators(self, plan: _Plan | None = None) -> None:
        if not self.estimators and plan is not None:
            stored = [layer.estimator() for layer in plan.layers]
            if all(est is not None for est in stored):  # statistics saved in the model
                self.estimators = stored
        iba.estimator.require_estimators(self.estimators, self.targets)

    # -- analysis ----------------------------------------------------------------------------

    def analyze(
        self,
        model: keras.Model,
        x: Any,
        target: int | Iterable[int] | None = None,
        loss_fn: Callable[[Any], Any] | None = None,
        noise: Any = None,
        seed: int | None = None,
        details: bool = False,
    ) -> np.ndarray | iba.Explanation:
        """Heatmaps of ``N`` inputs ``x``, in bits (SPEC section 2; CoIBA: section 4).

        Args:
            x: a batch of ``N >= 1`` inputs in the model's layout.
            target: class index, or one per input: the model loss is the mean over noise samples
                of ``-log_softmax(outputs)[target]`` (``-log(outputs)[target]`` for a model that
                ends in a softmax).
            loss_fn: ``outputs -> loss per row`` (``N * B`` rows, input-major), written with
                ``keras.ops``; instead of ``target``.
            noise: ``iba.draw_noise(seed, steps, batch_size, F, n_inputs=N)`` (a list, one per
                target, for several targets) to run on the same draws as another backend.
            seed: seeds ``keras.random`` instead (``noise`` and ``seed`` both ``None``: seed 0).
            details: return an ``iba.Explanation`` (capacity, alpha, lam, alphas, losses, heatmap).

        Returns:
            ``(N, H, W)`` at the input's size for images, ``(N, T)`` per token for token features.
        """
        if (target is None) == (loss_fn is None):
            raise ValueError("pass exactly one of target= (class index per input) or loss_fn=")
        if noise is not None and seed is not None:
            raise ValueError("pass noise= or seed=, not both")
        plan = self._plan(model)
        self._require_estimators(plan)
        config = self.config
        x = to_tensors(x)
        n_inputs = _rows(x)
        if n_inputs < 1:
            raise ValueError("x holds no inputs")
        labels = None if target is None else _labels(target, n_inputs)

        with _backend.no_grad():
            features = plan.features(x, 1)[0]
        layers = plan.layers
        layout = layer_layout(layers[0])
        dtype = keras.backend.standardize_dtype(features.dtype)
        stats = self._statistics(layers, dtype)
        shared = len(layers) > 1
        a_shape = iba.alpha_shape(layers[0].feature_shape, layout, shared)
        for layer in layers[1:]:
            check_alpha_shape(a_shape, layer.feature_shape, layer_layout(layer))
        draws = self._noise(noise, seed, n_inputs, layers, dtype)

        batch = config.batch_size
        if plan.head is not None:
            runner, inputs = plan.head, ops.repeat(features, batch, axis=0)
        else:
            runner = plan.model
            inputs = keras.tree.map_structure(lambda a: ops.repeat(a, batch, axis=0), x)
        rows = ops.convert_to_tensor(
            np.zeros(1, np.int32) if labels is None else np.repeat(labels, batch)
        )
        key = (id(plan), loss_fn)  # the function itself: an id could be reused after it is freed
        if key not in self._steps:
            objective = _objective(plan, runner, config, loss_fn)
            self._steps[key] = _backend.make_step(objective, config.lr, runner.variables)
        step = self._steps[key]

        if labels is not None:
            _check_labels(labels, plan.n_classes(x))
        flat_stats = [t for s in stats for t in s]
        alpha = ops.full((n_inputs, *a_shape), config.initial_alpha, dtype=dtype)
        mu, nu = ops.zeros_like(alpha), ops.zeros_like(alpha)
        alphas, losses = [ops.convert_to_numpy(alpha)], []
        switches = [ops.convert_to_numpy(layer.bottleneck_on.value) for layer in layers]
        try:
            for layer in layers:
                layer.bottleneck_on.assign(1)
            for i in range(config.updates):
                count = ops.convert_to_tensor(float(i + 1), dtype)
                step_noise = [draw(i) for draw in draws]
                alpha, mu, nu, loss = step(
                    alpha, mu, nu, count, inputs, features, rows, *flat_stats, *step_noise
                )
                alphas.append(ops.convert_to_numpy(alpha))
                losses.append(ops.convert_to_numpy(loss))
        finally:
            for layer, switch in zip(layers, switches):
                layer._hook = None
                layer.bottleneck_on.assign(switch)

        with _backend.no_grad():
            lam = _ops.damping(alpha, layout, config.sigma)
            cap = _ops.capacity(features, lam, *stats[0])
        capacity = ops.convert_to_numpy(cap).astype(np.float64)
        maps = iba.heatmap(capacity, layout, _input_size(x, layout))
        if not details:
            return maps
        return iba.Explanation(
            capacity=capacity,
            alpha=alphas[-1],
            lam=ops.convert_to_numpy(lam),
            alphas=np.stack(alphas),
            losses=np.stack(losses) if losses else np.zeros((0, n_inputs)),
            heatmap=maps,
        )

    def _statistics(self, layers: list[IBALayer], dtype: str) -> list[_ops.LayerStats]:
        iba.estimator.require_estimators(self.estimators, [layer.name for layer in layers])
        stats = []
        for layer, est in zip(layers, self.estimators):
            try:
                est.check(layer.feature_shape, layer_layout(layer))
            except ValueError as err:
                raise ValueError(f"target {layer.name!r}: {err}") from None
            s = est.statistics(self.config.min_std, self.config.active_threshold)
            mask = s.active if len(layers) == 1 else np.ones(())
            stats.append(
                _ops.LayerStats(*(ops.convert_to_tensor(a, dtype) for a in (s.mean, s.std, mask)))
            )
        return stats

    def _noise(self, noise, seed, n_inputs, layers, dtype) -> list[Callable[[int], Any]]:
        """Per target layer, ``step -> (N, B, *F)`` standard-normal draws."""
        config = self.config
        if noise is None:
            gen = keras.random.SeedGenerator(0 if seed is None else int(seed))

            def draw(layer):
                shape = (n_inputs, config.batch_size, *layer.feature_shape)
                return lambda step: keras.random.normal(shape, dtype=dtype, seed=gen)

            return [draw(layer) for layer in layers]
        arrays = list(noise) if isinstance(noise, (list, tuple)) else [noise]
        if len(arrays) != len(layers):
            raise ValueError(
                f"{len(layers)} target(s) need {len(layers)} noise array(s), got {len(arrays)}"
            )
        checked = [
            check_noise(n, config.steps, n_inputs, config.batch_size, layer.feature_shape)
            for n, layer in zip(arrays, layers)
        ]
        return [lambda step, n=n: ops.convert_to_tensor(n[step], dtype) for n in checked]


def layer_layout(layer: IBALayer) -> str:
    """The ``iba`` layout of a built ``IBALayer``'s features."""
    if not layer.built:
        raise ValueError(
            f"IBALayer {layer.name!r} is not built: call the model on data once before explaining"
        )
    return layer.layout


def _objective(plan: _Plan, runner: keras.Model, config: iba.Config, loss_fn) -> Callable:
    """``(alpha, inputs, features, labels, *stats, *noise) -> (total loss, loss per input)``.

    ``iba.optimize.objective`` in ``keras.ops``: the model loss (mean over the noise samples) plus
    ``beta * mean(capacity)`` of the first target, per input; the total is their sum.
    """
    layers = plan.layers
    n_layers = len(layers)
    layout = layer_layout(layers[0])
    probabilities = _graph.output_is_probability(plan.model)

    def objective(alpha, inputs, features, labels, *rest):
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
                z = _ops.bottleneck(r, lam_rows, eps, s.mask, config.relu)
                return ops.cast(ops.reshape(z, (n_inputs * batch, *shape)), r_dtype)

            return hook

        try:
            for layer, s, n in zip(layers, stats, noise):
                layer._hook = hook_for(s, n, layer.feature_shape)
            outputs = runner(inputs, training=False)
        finally:
            for layer in layers:
                layer._hook = None
        if loss_fn is None:
            model_loss = _ops.classification_loss(outputs, labels, n_inputs, probabilities)
        else:
            model_loss = _ops.user_loss(loss_fn(outputs), n_inputs)
        model_loss = ops.cast(model_loss, lam.dtype)
        cap = _ops.capacity(features, lam, *stats[0])
        per_input = model_loss + config.beta * _ops.mean(ops.reshape(cap, (n_inputs, -1)), axis=1)
        return ops.sum(per_input), per_input

    return objective


def _check_labels(labels: np.ndarray, n_classes: int | None) -> None:
    """Raise if a target class is out of range of the model's outputs."""
    values = np.asarray(labels)
    if n_classes is not None and (values.min() < 0 or values.max() >= n_classes):
        raise ValueError(
            f"target {sorted(set(values.tolist()))} out of range for {n_classes} model outputs"
        )


class _Plan:
    """How to run one model for an explainer's targets: which ``IBALayer``s, how to cut it."""

    def __init__(self, model: keras.Model, targets: list, layout: str | None):
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
            model = _graph.insert_after(model, bottlenecks)
            found = [bottlenecks.get(layer.name, layer) for layer in found]
        if len({id(layer) for layer in found}) != len(found):
            raise ValueError("the same target layer is named twice")
        self.model = model
        self.layers: list[IBALayer] = found
        self.graph = _graph.is_graph(model)
        self._prefix: dict[int, keras.Model | None] = {}
        self.head = None
        if self.graph:
            self.head = _graph.submodel(_graph.layer_input(model, found[0]), model.outputs)

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
        many equal-sized batches of ``estimate``); otherwise eagerly (one call in ``analyze``:
        no compilation for every new number of inputs).
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
        if len(captured) < n:
            names = [layer.name for i, layer in enumerate(self.layers[:n]) if i not in captured]
            raise ValueError(
                f"the forward pass of {self.model.name!r} never called the IBALayer(s) {names}: "
                "call them in the model's call()"
            )
        return [captured[i] for i in range(n)]


def _batches(data: Any) -> Iterator[Any]:
    if isinstance(data, np.ndarray) or keras.ops.is_tensor(data):
        for start in range(0, int(data.shape[0]), ESTIMATE_CHUNK):
            yield data[start : start + ESTIMATE_CHUNK]
        return
    if type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


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
    """``batch`` with its last row repeated up to ``rows`` rows: one compiled shape for all."""
    missing = rows - _rows(batch)
    if missing <= 0:
        return batch
    return keras.tree.map_structure(
        lambda a: np.concatenate([a, np.repeat(a[-1:], missing, axis=0)]), batch
    )


def _rows(x: Any) -> int:
    leaves = keras.tree.flatten(x)
    if not leaves or not getattr(leaves[0], "shape", ()):
        raise ValueError("inputs must be arrays with a batch axis first")
    return int(leaves[0].shape[0])


def _labels(target: Any, n_inputs: int) -> np.ndarray:
    labels = np.asarray(target)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"target must be an int or ints, got {target!r}")
    if labels.ndim == 0:
        labels = np.full(n_inputs, int(labels))
    if labels.shape != (n_inputs,):
        raise ValueError(f"target has shape {labels.shape}; expected one int or {n_inputs} ints")
    return labels.astype(np.int32)


def _input_size(x: Any, layout: str) -> tuple[int, int] | None:
    """``(H, W)`` of an image batch ``x`` (in ``keras.config.image_data_format()``), else ``None``.

    ``None`` (heatmaps at the features' size) for token features and non-image inputs.
    """
    if not is_spatial(layout) or isinstance(x, (list, tuple, dict)) or len(x.shape) != 4:
        return None
    shape = tuple(int(s) for s in x.shape)
    return shape[1:3] if keras.config.image_data_format() == "channels_last" else shape[2:4]
