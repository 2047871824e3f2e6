"""How ``analyze`` runs the model on the noised features: three paths with identical results.

The features before the first target do not depend on ``alpha`` (docs/mathematics.md section 2), so they are
computed once per input batch, and each optimisation step runs only what follows:

- ``"fx"``: the model is traced with ``torch.fx`` (target layers kept as leaves) and cut at the
  first target into a *prefix* (run once on the ``N`` inputs) and a *tail* (run every step on the
  ``N * B`` noised rows). Values that cross the cut are repeated per noise sample if they have a
  batch axis, recomputed in the tail if they are shapes read from the batch (EfficientNet reads
  ``inputs.size(0)``), and passed as they are otherwise.
- ``"expand"``: the model runs on the ``N`` inputs and the first target's hook returns the
  ``N * B`` noised rows; only for models whose later layers accept a larger batch.
- ``"plain"``: the model runs on the inputs repeated ``B`` times, as the original implementation.

``"fx"`` and ``"expand"`` are used only after a check on the user's model and input: the
model's outputs on two copies of two inputs must equal those of the plain path. Otherwise the
next path is tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from iba_torch import _model
from iba_torch._model import Inputs

STRATEGIES = ("auto", "fx", "expand", "plain")


class Runner:
    """Runs the model on the noised rows ``z0`` that replace the first target's output."""

    name = "plain"
    first_called_by_model = True  # whether the first target's module (and hook) runs per step

    def __init__(self, model: torch.nn.Module, inputs: Inputs, n_inputs: int, batch: int):
        self.model, self.n_inputs, self.batch = model, n_inputs, batch
        self.inputs = _model.map_inputs(
            inputs, lambda t: t.repeat_interleave(batch, dim=0), n_inputs
        )

    def __call__(self, z0: torch.Tensor) -> Any:
        return _model.call(self.model, self.inputs)


class ExpandRunner(Runner):
    """The model on the ``N`` inputs; the first target's hook expands to ``N * B`` rows."""

    name = "expand"

    def __init__(self, model: torch.nn.Module, inputs: Inputs, n_inputs: int, batch: int):
        self.model, self.n_inputs, self.batch, self.inputs = model, n_inputs, batch, inputs


class SplitRunner(Runner):
    """The tail of a ``torch.fx`` split on the prefix's values, repeated per noise sample."""

    name = "fx"
    first_called_by_model = False

    def __init__(self, split: Split, inputs: Inputs, n_inputs: int, batch: int):
        self.split, self.n_inputs, self.batch = split, n_inputs, batch
        with torch.no_grad():
            values = split.run_prefix(inputs)
        self.features = _model.first_tensor(values[0]).detach()
        self.target_value = values[0]
        if not isinstance(values[0], torch.Tensor):  # a tuple: its other items, per noise sample
            self.target_value = _model.repeat_rows(values[0], n_inputs, batch)
        self.args = split.tail_args(values, n_inputs, batch)

    def __call__(self, z0: torch.Tensor) -> Any:
        return self.split.tail(_model.replace_first(self.target_value, z0), *self.args)


class _Tracer(fx.Tracer):
    """Keeps the target modules as leaves (``call_module`` nodes) so that their hooks fire."""

    def __init__(self, leaves: Sequence[torch.nn.Module]):
        super().__init__()
        self._leaves = {id(m) for m in leaves}

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self._leaves or super().is_leaf_module(m, module_qualified_name)


class _PrefixValues(fx.Interpreter):
    """Runs a graph up to ``stop`` and keeps every node's value."""

    def __init__(self, module: fx.GraphModule, stop: fx.Node):
        super().__init__(module, garbage_collect_values=False)
        self.stop = stop
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        if n is self.stop:
            raise _model.StopForward
        return out


def _bind(placeholders: Sequence[fx.Node], inputs: Inputs) -> list[Any]:
    """Positional values of a graph's placeholders from ``(args, kwargs)``."""
    args, kwargs = inputs
    values = []
    for i, node in enumerate(placeholders):
        name = str(node.target).lstrip("*")
        if i < len(args):
            values.append(args[i])
        elif name in kwargs:
            values.append(kwargs[name])
        elif node.args:
            values.append(node.args[0])
        else:
            raise TypeError(f"no value for the model's argument {name!r}")
    return values


def _kind(one: Any, two: Any) -> str:
    """How a value that crosses the cut reaches the tail, from its values on 1 and 2 rows."""
    if isinstance(one, torch.Tensor):
        batched = one.ndim > 0 and one.shape[0] == 1 and two.shape[0] == 2
        return "repeat" if batched else "const"
    if isinstance(one, (tuple, list, dict)) and any(
        isinstance(v, torch.Tensor) for v in (one.values() if isinstance(one, dict) else one)
    ):
        return "tree"
    try:
        same = bool(one == two)
    except Exception:  # noqa: BLE001 - values that cannot be compared are recomputed
        same = False
    return "const" if same else "remat"


class Split:
    """A model cut at its first target by ``torch.fx``: ``prefix`` once, ``tail`` every step."""

    def __init__(self, model: torch.nn.Module, first: str, leaves, inputs: Inputs):
        tracer = _Tracer(leaves)
        graph = tracer.trace(model)
        calls = [n for n in graph.nodes if n.op == "call_module" and n.target == first]
        if len(calls) != 1:
            raise ValueError(f"the traced graph calls {first!r} {len(calls)} times")
        target = calls[0]
        root = fx.GraphModule(tracer.root, graph)
        nodes = list(graph.nodes)
        prefix = nodes[: nodes.index(target) + 1]
        in_prefix = set(prefix)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        if any(n not in in_prefix for n in placeholders):
            raise ValueError("placeholders after the target")

        one = _model.map_inputs(inputs, lambda t: t[:1], _model.n_rows(inputs))
        two = _model.map_inputs(one, lambda t: t.repeat_interleave(2, dim=0), 1)
        values = []
        for sample in (one, two):
            interp = _PrefixValues(root, target)
            with torch.no_grad():
                try:
                    interp.run(*_bind(placeholders, sample))
                except _model.StopForward:
                    pass
            values.append(interp.values)

        kinds: dict[fx.Node, str] = {target: "target"}
        order: list[fx.Node] = []  # tail inputs, target first

        def need(n: fx.Node) -> None:
            if n in kinds:
                return
            if n.op == "get_attr":
                kinds[n] = "remat"
                return
            kind = _kind(values[0][n], values[1][n])
            if kind == "remat":
                if n.op not in ("call_function", "call_method"):
                    raise ValueError(f"cannot recompute {n.op} {n.target} after the cut")
                for a in n.all_input_nodes:
                    need(a)
            kinds[n] = kind

        tail_nodes = nodes[len(prefix) :]
        for n in tail_nodes:
            for a in n.all_input_nodes:
                if a in in_prefix:
                    need(a)
        order = [target] + [n for n in prefix if kinds.get(n) in ("repeat", "tree", "const")]
        self.kinds = [kinds[n] for n in order]

        prefix_graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for n in prefix:
            env[n] = prefix_graph.node_copy(n, lambda a: env[a])
        prefix_graph.output(tuple(env[n] for n in order))
        self.prefix = fx.GraphModule(root, prefix_graph)
        self._placeholders = placeholders

        tail_graph = fx.Graph()
        env = {}
        for i, n in enumerate(order):
            env[n] = tail_graph.placeholder(f"iba_cut_{i}")
        for n in prefix:
            if kinds.get(n) == "remat":
                env[n] = tail_graph.node_copy(n, lambda a: env[a])
        for n in tail_nodes:
            env[n] = tail_graph.node_copy(n, lambda a: env[a])
        self.tail = fx.GraphModule(root, tail_graph)

    def run_prefix(self, inputs: Inputs) -> tuple[Any, ...]:
        """The values that cross the cut, the first target's output first."""
        return self.prefix(*_bind(self._placeholders, inputs))

    def tail_args(self, values: Sequence[Any], n_inputs: int, batch: int) -> list[Any]:
        """The tail's inputs after the target's: repeated per noise sample where batched."""
        args = []
        for kind, value in zip(self.kinds[1:], values[1:]):
            if kind == "repeat":
                if value.shape[0] != n_inputs:
                    raise ValueError("a batched value has another batch size")
                value = value.repeat_interleave(batch, dim=0)
            elif kind == "tree":
                value = _model.repeat_rows(value, n_inputs, batch)
            args.append(value)
        return args


def _flat(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict) or hasattr(value, "values") and callable(value.values):
        return [t for v in value.values() for t in _flat(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return []


def same_outputs(a: Any, b: Any) -> bool:
    """Whether two model outputs hold the same tensors (to float rounding)."""
    fa, fb = _flat(a), _flat(b)
    if not fa or len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point():
            tol = 1e-9 if x.dtype == torch.float64 else 1e-4
            scale = float(y.abs().max()) if y.numel() else 0.0
            if not torch.allclose(x, y, rtol=tol, atol=tol * max(scale, 1.0)):
                return False
        elif not torch.equal(x, y):
            return False
    return True


def choose(
    strategy: str,
    model: torch.nn.Module,
    first: tuple[str, torch.nn.Module],
    leaves: Sequence[torch.nn.Module],
    inputs: Inputs,
    flow: Any,
    cache: dict,
) -> tuple[str, Split | None, str]:
    """The fastest verified path for this model and input signature: ``(name, split, why)``.

    ``flow`` is the explainer's hook state: with ``flow.mode = "first"`` the first target's hook
    returns ``flow.z0`` and the others change nothing. Results are cached in
    ``cache`` under the input signature.
    """
    if strategy == "plain":
        return "plain", None, "requested"
    key = (strategy, _signature(inputs))
    if key in cache:
        return cache[key]
    pair = _pair(inputs)
    reference = None
    reasons = []

    def plain_outputs():
        nonlocal reference
        if reference is None:
            copies = _model.map_inputs(pair, lambda t: t.repeat_interleave(2, dim=0), 2)
            with torch.no_grad():
                reference = _model.call(model, copies)
        return reference

    result: tuple[str, Split | None, str] | None = None
    if strategy in ("auto", "fx"):
        try:
            split = Split(model, first[0], leaves, inputs)
            runner = SplitRunner(split, pair, 2, 2)
            with torch.no_grad():
                out = runner(runner.features.repeat_interleave(2, dim=0))
            if same_outputs(out, plain_outputs()):
                result = ("fx", split, "verified")
            else:
                reasons.append("fx: the split model's outputs differ from the model's")
        except Exception as err:  # noqa: BLE001 - any failure means: not this path
            reasons.append(f"fx: {type(err).__name__}: {err}")
    if result is None and strategy in ("auto", "expand"):
        try:
            features = _model.capture(model, pair, [first])[0]
            flow.z0, flow.mode = features.repeat_interleave(2, 0), "first"
            try:
                with torch.no_grad():
                    out = _model.call(model, pair)
            finally:
                flow.z0, flow.mode = None, None
            if same_outputs(out, plain_outputs()):
                result = ("expand", None, "verified")
            else:
                reasons.append("expand: the expanded model's outputs differ from the model's")
        except Exception as err:  # noqa: BLE001
            reasons.append(f"expand: {type(err).__name__}: {err}")
    if result is None:
        result = ("plain", None, "; ".join(reasons))
    cache[key] = result
    return result


def _pair(inputs: Inputs) -> Inputs:
    """Two distinct inputs to check a path on: the first two, or the one and a scaled copy.

    Two (not one) so that a batch of one cannot broadcast against the noised rows.
    """
    rows = _model.n_rows(inputs)
    if rows >= 2:
        return _model.map_inputs(inputs, lambda t: t[:2], rows)

    def double(t: torch.Tensor) -> torch.Tensor:
        second = 0.5 * t if t.is_floating_point() else t
        return torch.cat([t, second])

    return _model.map_inputs(inputs, double, 1)


def _signature(inputs: Inputs) -> tuple:
    args, kwargs = inputs

    def sig(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return ("T", tuple(a.shape[1:]), a.dtype, a.device)
        return ("V", repr(a)[:50])

    return tuple(sig(a) for a in args), tuple((k, sig(v)) for k, v in sorted(kwargs.items()))


def runner(
    name: str, split: Split | None, model, inputs: Inputs, n_inputs: int, batch: int
) -> Runner:
    """The runner of path ``name``."""
    if name == "fx":
        assert split is not None  # choose() gives "fx" with its split
        return SplitRunner(split, inputs, n_inputs, batch)
    if name == "expand":
        return ExpandRunner(model, inputs, n_inputs, batch)
    return Runner(model, inputs, n_inputs, batch)
