"""``IBA``: the explainer of the common API for PyTorch models, through forward hooks.

The Per-Sample Bottleneck (Schulz et al., ICLR 2020, section 3.1; docs/mathematics.md section 2)
at one target module, or CoIBA (Hong et al., CVPR 2025; docs/mathematics.md section 4) at several
sharing one ``alpha``. The shared driver (``iba.driver``) does everything around the arithmetic;
this module is the PyTorch engine: hooks on the target modules, the fx split and the step.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

import iba
from iba import driver
from iba_torch import _compiled, _math, _model, _split


class _Flow:
    """What the target hooks do: nothing, replace the first target, one step, or restrict."""

    def __init__(self) -> None:
        self.mode: str | None = None  # None, "first", "step" or "restrict"
        self.z0: torch.Tensor | None = None
        self.lam: torch.Tensor | None = None
        self.eps: list[torch.Tensor] = []
        self.stats: list[_math.LayerStats] = []
        self.shapes: list[tuple[int, ...]] = []
        self.calls: list[int] = []
        self.generator: torch.Generator | None = None


class TorchEngine(driver.EngineBase):
    """The PyTorch engine of ``iba.driver`` (see ``iba.driver.Engine``): forward hooks."""

    image_layout = "channels_first"

    def __init__(
        self,
        targets: Any,
        layout: str | None = None,
        strategy: str = "auto",
        compile: str | bool = "auto",
    ):
        if strategy not in _split.STRATEGIES:
            raise ValueError(f"strategy must be one of {_split.STRATEGIES}, got {strategy!r}")
        super().__init__(_model.to_list(targets), layout)
        self.strategy = strategy
        self.compile = _compiled.check_mode(compile)
        self.last_compiled = False
        self.last_compile_reason = ""
        self.flow = _Flow()
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.alpha: torch.Tensor | None = None
        self.last_path: str | None = None
        self.last_path_reason = ""
        self._users: list[object] = []  # the analyze() calls that want ``flow``: the first has it

    @contextlib.contextmanager
    def estimation(self, model: torch.nn.Module) -> Iterator[Callable[[Any], list]]:
        modules = _model.resolve(model, self.targets)
        device, dtype = _model.model_device_dtype(model)

        def capture(batch: Any) -> list[np.ndarray]:
            inputs = _model.as_inputs(batch, device, dtype)
            if last:
                inputs = _model.channels_last_inputs(inputs)
            features = _model.capture(model, inputs, modules)
            return [f.contiguous().cpu().numpy() for f in features]

        with _model.preserved(model, freeze=False), _model.channels_last(model) as last:
            yield capture

    @contextlib.contextmanager
    def analysis(self, model: torch.nn.Module, x: Any, config: iba.Config) -> Iterator[_Analysis]:
        modules = _model.resolve(model, self.targets)
        device, dtype = _model.model_device_dtype(model)
        inputs = _model.as_inputs(x, device, dtype)
        with (
            self._claim(),
            _model.preserved(model),
            _model.channels_last(model) as last,
            self.hooks(modules),
            torch.enable_grad(),
        ):
            if last:
                inputs = _model.channels_last_inputs(inputs)
            try:
                yield _Analysis(self, model, modules, inputs, config.batch_size)
            finally:
                flow = self.flow
                flow.mode, flow.z0, flow.lam, flow.eps, flow.stats = None, None, None, [], []

    @contextlib.contextmanager
    def _claim(self) -> Iterator[None]:
        """One analyze() at a time: the hooks' state (``flow``) is the explainer's. Only the
        analyze() that holds the claim looks at ``flow``: another thread's analyze() sets it."""
        token = object()
        self._users.append(token)  # atomic: of two threads, one is first (and the explainer
        try:  # stays copyable, unlike with a lock)
            if self._users[0] is not token:
                raise RuntimeError(
                    "this explainer is running analyze() already (in another thread, or "
                    "analyze() was called from its loss_fn): use one explainer per thread"
                )
            if self.flow.mode is not None:
                raise RuntimeError(
                    "analyze() inside restrict_flow() or another analyze(): leave the block first"
                )
            yield
        finally:
            self._users.remove(token)

    # -- hooks -----------------------------------------------------------------------------------

    def hooks(self, modules) -> contextlib.AbstractContextManager:
        pairs = [(m, self._hook(i, n)) for i, (n, m) in enumerate(modules)]
        return _model.hooks(pairs, registry=self.handles)

    def _hook(self, index: int, name: str) -> Callable:
        flow = self.flow

        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            mode = flow.mode
            if mode is None or (mode == "first" and index != 0):
                return None
            if mode == "first":
                return _model.replace_first(output, flow.z0)
            if mode == "restrict":
                return _model.replace_first(output, self._restricted(index, output))
            if index in flow.calls:
                raise driver.twice_error(name)
            flow.calls.append(index)
            if index == 0:
                return _model.replace_first(output, flow.z0)
            r = _model.first_tensor(output)
            n, b = flow.eps[index].shape[:2]
            shape = flow.shapes[index]
            if tuple(r.shape) != (n * b, *shape):
                raise ValueError(
                    f"target layer {name!r} returned features of shape {tuple(r.shape)} on the "
                    f"noised batch; expected {(n * b, *shape)} (the estimator's feature shape)"
                )
            z = _math.noised(
                r.reshape(n, b, *shape),
                flow.lam,
                flow.stats[index],
                flow.eps[index],
                self.relu,
                self.log_var_clamp,
            )
            return _model.replace_first(output, z.reshape(r.shape))

        return hook

    relu = False  # set from the config before each use
    log_var_clamp: float | None = None  # likewise (docs/mathematics.md section 6)

    def _restricted(self, index: int, output: Any) -> torch.Tensor:
        flow = self.flow
        r = _model.first_tensor(output)
        assert flow.lam is not None  # restrict_flow() sets it with mode "restrict"
        lam, rows = flow.lam.to(r), r.shape[0]
        if lam.shape[0] != rows:
            if lam.shape[0] == 1:
                lam = lam.expand(rows, *lam.shape[1:])
            elif rows % lam.shape[0] == 0:
                lam = lam.repeat_interleave(rows // lam.shape[0], dim=0)
            else:
                raise ValueError(
                    f"alpha holds {lam.shape[0]} input(s) but the batch has {rows} rows: give "
                    "one row per input (or a multiple of it, input-major)"
                )
        s = flow.stats[index]
        noise = torch.randn(r.shape, generator=flow.generator, dtype=r.dtype, device=r.device)
        eps = s.std.to(r) * noise + s.mean.to(r)
        mask = s.mask.to(r) if isinstance(s.mask, torch.Tensor) else s.mask
        if self.log_var_clamp is not None:  # the clamped sampling (docs/mathematics.md section 6)
            stats = _math.LayerStats(s.mean.to(r), s.std.to(r), mask)
            return _math.noised(r, lam, stats, noise, self.relu, self.log_var_clamp)
        return _math.bottleneck(r, lam, eps, mask, self.relu)


class _Analysis:
    """One ``analyze`` call: the first target's features once, then the optimisation steps."""

    def __init__(self, engine: TorchEngine, model: torch.nn.Module, modules, inputs, batch: int):
        self.engine, self.model, self.modules, self.inputs = engine, model, modules, inputs
        self.n_inputs = _model.n_rows(inputs)
        self.batch = batch
        self._prepared: tuple[_split.Runner, torch.Tensor] | None = None

    def _prepare(self) -> tuple[_split.Runner, torch.Tensor]:
        """The runner of the fastest verified path, and the first target's features."""
        if self._prepared is not None:
            return self._prepared
        engine, model, inputs, batch = self.engine, self.model, self.inputs, self.batch
        cache = engine.paths.setdefault(model, {})
        leaves = [m for _, m in self.modules]
        path, split, why = _split.choose(
            engine.strategy, model, self.modules[0], leaves, inputs, engine.flow, cache
        )
        engine.last_path, engine.last_path_reason = path, why
        with torch.no_grad():
            run = _split.runner(path, split, model, inputs, self.n_inputs, batch)
            if isinstance(run, _split.SplitRunner):
                features = run.features
            else:
                features = _model.capture(model, inputs, self.modules[:1])[0]
        if not bool(torch.isfinite(features).all()):
            raise ValueError(
                "the features at the first target hold NaN or infinite values; check the input "
                "and the model"
            )
        self._prepared = run, features
        return self._prepared

    def feature_shapes(self) -> list[tuple[int, ...] | None]:
        features = self._prepare()[1]
        return [tuple(features.shape[1:])] + [None] * (len(self.modules) - 1)

    def input_size(self, layout: str) -> tuple[int, int] | None:
        args, kwargs = self.inputs
        if kwargs or len(args) != 1:
            return None
        x = args[0]
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            return None
        return tuple(x.shape[1:3]) if layout == "channels_last" else tuple(x.shape[2:])

    def optimize(self, plan: driver.Plan) -> driver.Result:
        engine, flow, config = self.engine, self.engine.flow, plan.config
        n, b, n_layers, layout = self.n_inputs, config.batch_size, len(self.modules), plan.layout
        run, features = self._prepare()
        engine.relu, engine.log_var_clamp = config.relu, config.log_var_clamp
        stats = [_math.layer_stats(s, like=features) for s in plan.stats]
        draw = _noise_source(plan, n, features)
        labels = None if plan.labels is None else torch.as_tensor(plan.labels, dtype=torch.long)

        alpha = torch.full(
            (n, *plan.alpha_shape), float(config.initial_alpha), dtype=features.dtype,
            device=features.device, requires_grad=True,
        )  # fmt: skip
        optimizer = _math.adam([alpha], config.lr)
        alphas, losses = [alpha.detach().clone()], []
        first = stats[0]
        noiser = _math.Noiser(features[:, None], first, config.log_var_clamp)
        r_norm = (features - first.mean) / first.std  # capacity's r, computed once
        tokens = _token_weights(plan.token_mask, features)  # (N, T, 1): real tokens, or None
        flow.stats, flow.shapes = stats, plan.feature_shapes

        def eager_loss(alpha: torch.Tensor) -> torch.Tensor:
            """The loss per input of one step on ``flow.eps``, through the hooks."""
            lam = _math.damping(alpha, layout, config.sigma)
            lam_b = lam[:, None]
            z0 = noiser(lam_b, flow.eps[0], config.relu)
            flow.z0, flow.lam = z0.reshape(n * b, *plan.feature_shapes[0]), lam_b
            flow.calls = [] if run.first_called_by_model else [0]
            flow.mode = "step"
            outputs = run(flow.z0)
            flow.mode = None
            if flow.calls != list(range(n_layers)):
                raise _order_error(flow.calls, self.modules)
            if plan.loss_fn is not None:
                model_loss = _math.user_loss(plan.loss_fn, outputs, n, b)
            else:
                model_loss = _math.classification_loss(outputs, labels, n)
            cap = _math.capacity(r_norm, lam, 0.0, 1.0, first.mask)
            return model_loss + config.beta * _information(cap, tokens)

        names = [name for name, _ in self.modules]
        stepper, engine.last_compile_reason = _compiled.stepper(
            engine.compile, run, names[0], names[1:], plan, features, stats, labels, tokens,
            eager_loss,
        )  # fmt: skip
        for step in driver.steps(config.updates, plan.progress):
            flow.eps = [draw(step, i) for i in range(n_layers)]  # standard normal
            if stepper is None:
                loss = eager_loss(alpha)
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
            else:  # the compiled step (docs/performance.md), or eager where it failed its check
                loss, alpha.grad = stepper(alpha, flow.eps)
            optimizer.step()
            alphas.append(alpha.detach().clone())
            losses.append(loss.detach())
        engine.last_compiled = stepper is not None and stepper.compiled
        if stepper is not None:
            engine.last_compile_reason = stepper.reason

        with torch.no_grad():
            alpha = alpha.detach()
            lam = _math.damping(alpha, layout, config.sigma)
            cap = _math.capacity(features, lam, first.mean, first.std, first.mask)
            if tokens is not None:  # no capacity at padding (docs/mathematics.md section 6.3)
                cap = cap * tokens
        engine.alpha = alpha
        return driver.Result(
            capacity=cap,
            alpha=alpha,
            lam=lam,
            alphas=torch.stack(alphas),
            losses=torch.stack(losses) if losses else alpha.new_zeros((0, n)),
        )


def _noise_source(plan: driver.Plan, n: int, like: torch.Tensor) -> Callable[[int, int], Any]:
    """``draw(step, layer) -> (N, B, *F_layer)`` standard-normal draws."""
    if plan.noise.arrays is not None:
        tensors = [
            torch.as_tensor(a, dtype=like.dtype, device=like.device) for a in plan.noise.arrays
        ]
        return lambda step, layer: tensors[layer][step]
    assert plan.noise.seed is not None  # no arrays and no native noise (torch has none): a seed
    generator = torch.Generator(device=like.device).manual_seed(int(plan.noise.seed))
    batch = plan.config.batch_size

    def draw(step: int, layer: int) -> torch.Tensor:
        shape = (n, batch, *plan.feature_shapes[layer])
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)

    return draw


def _token_weights(mask: Any, like: torch.Tensor) -> torch.Tensor | None:
    """The plan's ``(N, T)`` token mask as ``(N, T, 1, ...)`` on ``like``, or ``None``."""
    if mask is None:
        return None
    weights = torch.as_tensor(np.asarray(mask), dtype=like.dtype, device=like.device)
    if tuple(weights.shape) != tuple(like.shape[:2]):
        raise ValueError(
            f"token_mask of shape {tuple(weights.shape)} does not fit features "
            f"{tuple(like.shape)}: expected {tuple(like.shape[:2])} (N, T)"
        )
    return weights.reshape(*weights.shape, *[1] * (like.ndim - 2))


def _information(cap: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    """The information term per input: the mean capacity over all elements, or over the real
    tokens' elements (``iba.text.information_term``, docs/mathematics.md sections 2.5 and 6.3)."""
    n = cap.shape[0]
    if tokens is None:
        return cap.reshape(n, -1).mean(1)
    count = tokens.expand_as(cap).reshape(n, -1).sum(1).clamp_min(1.0)
    return (cap * tokens).reshape(n, -1).sum(1) / count


def _order_error(calls: list[int], modules) -> Exception:
    names = [n for n, _ in modules]
    missing = [n for i, n in enumerate(names) if i not in calls]
    if missing:
        return RuntimeError(
            f"the forward pass on the noised batch never reached the target layer(s) {missing}: "
            "choose modules that the model's forward() calls"
        )
    return driver.order_error(names, calls)


class IBA(driver.Explainer):
    """Information Bottleneck Attribution at one PyTorch module, or CoIBA at several.

    Args:
        targets: a module of the model or its dotted name from ``named_modules()``
            (``"features.17"``, ``"blocks.4.norm1"``); a **list** of them shares one ``alpha``
            over channels and layers (CoIBA), listed in the order the forward pass reaches them.
        layout: layout of the targets' features; by default ``"channels_first"`` for
            ``(C, H, W)`` and ``"tokens"`` for ``(T, D)`` per input.
        strategy: how ``analyze`` runs the layers after the first target (see
            ``iba_torch._split``): ``"auto"`` (the fastest path verified on the model:
            ``torch.fx`` split, then hook expansion, then the plain loop), ``"fx"``,
            ``"expand"`` or ``"plain"``. Every path gives the same heatmap.
        compile: whether each optimisation step runs as one ``torch.compile``-d function
            (``iba_torch._compiled``; docs/performance.md, "PyTorch compiled path") on the
            ``"fx"`` path: ``"auto"`` (the default) on the devices where it pays off
            (``iba_torch._compiled.AUTO_DEVICES``; today none: on the CPU it is no faster than
            the eager step and compiles for long, and CUDA, where it uses CUDA graphs, is
            unmeasured), ``True`` wherever it compiles, ``False`` never. A compiled step is
            checked against the eager step on its first use and reused by later calls of the
            same shapes; where it cannot compile or differs, the eager step runs, without error
            (``last_compiled``, ``last_compile_reason`` say which ran and why).
        config: an ``iba.Config``; otherwise built from ``**fields`` (``iba.Config`` defaults for
            one target, ``iba.coiba_config`` defaults for several).
        estimators: estimators to start with (a list, one per target, or a saved file's path).
        **fields: fields of ``iba.Config`` (``beta``, ``steps``, ``lr``, ``batch_size``, ...).

    ``estimate`` and ``analyze`` are those of ``iba.driver.Explainer``: the model runs in eval
    mode on its own device and dtype (inputs are moved there) and is left exactly as it was
    (weights, ``requires_grad``, train/eval mode, hooks), also after an exception.

    Example:
        >>> explainer = IBA("features.17")  # doctest: +SKIP
        >>> explainer.estimate(model, loader, n_samples=5000)  # doctest: +SKIP
        >>> heatmaps = explainer.analyze(model, x, target=243)  # doctest: +SKIP
    """

    engine: TorchEngine
    engine_type = TorchEngine

    def __init__(
        self,
        targets: str | torch.nn.Module | list[str | torch.nn.Module],
        *,
        layout: str | None = None,
        strategy: str = "auto",
        compile: str | bool = "auto",
        config: iba.Config | None = None,
        estimators: list[iba.Estimator] | str | os.PathLike | None = None,
        **fields: Any,
    ):
        self._strategy = strategy
        self._compile = _compiled.check_mode(compile)
        super().__init__(targets, layout=layout, config=config, estimators=estimators, **fields)

    def make_engine(self, targets: Any, layout: str | None) -> TorchEngine:
        return TorchEngine(targets, layout, self._strategy, self._compile)

    @property
    def compile(self) -> str | bool:
        """Whether the steps run compiled: ``"auto"``, ``True`` or ``False``."""
        return self.engine.compile

    @compile.setter
    def compile(self, mode: str | bool) -> None:
        self.engine.compile = _compiled.check_mode(mode)

    @property
    def last_compiled(self) -> bool:
        """Whether the last ``analyze`` ran the compiled step."""
        return self.engine.last_compiled

    @property
    def last_compile_reason(self) -> str:
        """Why the last ``analyze`` ran the compiled or the eager step."""
        return self.engine.last_compile_reason

    @property
    def strategy(self) -> str:
        """How ``analyze`` runs the layers after the first target."""
        return self.engine.strategy

    @strategy.setter
    def strategy(self, strategy: str) -> None:
        if strategy not in _split.STRATEGIES:
            raise ValueError(f"strategy must be one of {_split.STRATEGIES}, got {strategy!r}")
        self.engine.strategy = strategy

    @property
    def alpha(self) -> torch.Tensor | None:
        """The last ``analyze``'s ``alpha``, ``(N, *A)``."""
        return self.engine.alpha

    @property
    def last_path(self) -> str | None:
        """The path the last ``analyze`` took (``"fx"``, ``"expand"`` or ``"plain"``)."""
        return self.engine.last_path

    @property
    def last_path_reason(self) -> str:
        """Why the last ``analyze`` took its path."""
        return self.engine.last_path_reason

    def remove_hooks(self) -> None:
        """Remove every hook this explainer has registered (normally none outlive a call)."""
        for handle in list(self.engine.handles):
            handle.remove()
        self.engine.handles.clear()
        self.engine.flow.mode = None

    @contextlib.contextmanager
    def restrict_flow(
        self, model: torch.nn.Module, alpha: torch.Tensor | None = None, seed: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Within the block, the targets pass only the information that ``alpha`` allows.

        The model's outputs are those of the noised model (fresh noise on every call), for
        example to see how the decision changes. ``alpha`` defaults to the last ``analyze``'s,
        ``(N, *A)``; the model must then be called with ``N`` rows (or ``k * N``, input-major; any
        number if ``N = 1``). Yields ``lam``. The model's mode is left as it is; the hooks are
        removed at the end of the block.
        """
        self._require_estimators()
        alpha = self.alpha if alpha is None else torch.as_tensor(alpha)
        if alpha is None:
            raise RuntimeError("no alpha yet: call analyze() first or pass alpha=")
        engine, flow = self.engine, self.engine.flow
        modules = _model.resolve(model, engine.targets)
        like = alpha.detach().to(*[a for a in _model.model_device_dtype(model) if a is not None])
        layout = self.estimators[0].layout
        if flow.mode is not None:
            raise RuntimeError("the explainer is in use; remove_hooks() resets it")
        with torch.no_grad():
            lam = _math.damping(like, layout, self.config.sigma)
        flow.lam = lam
        flow.stats = [_math.layer_stats(s, like=like) for s in self.statistics()]
        flow.generator = None
        if seed is not None:
            flow.generator = torch.Generator(device=like.device).manual_seed(int(seed))
        engine.relu, engine.log_var_clamp = self.config.relu, self.config.log_var_clamp
        with engine.hooks(modules):
            flow.mode = "restrict"
            try:
                yield lam
            finally:
                flow.mode, flow.lam, flow.generator = None, None, None
