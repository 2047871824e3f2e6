"""``IBA``: the explainer of the common API for PyTorch models, through forward hooks.

The Per-Sample Bottleneck (Schulz et al., ICLR 2020, section 3.1; SPEC section 2) at one target
module, or CoIBA (Hong et al., CVPR 2025; SPEC section 4) at several sharing one ``alpha``.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import iba
from iba.layout import check_alpha_shape, check_layout
from iba.noise import check_noise
from iba_torch import _math, _model, _split

ESTIMATE_CHUNK = 256  # rows per forward pass when estimate() is given one tensor or array


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


class IBA:
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
        config: an ``iba.Config``; otherwise built from ``**fields`` (``iba.Config`` defaults for
            one target, ``iba.coiba_config`` defaults for several).
        **fields: fields of ``iba.Config`` (``beta``, ``steps``, ``lr``, ``batch_size``, ...).

    Example:
        >>> explainer = IBA("features.17")  # doctest: +SKIP
        >>> explainer.estimate(model, loader, n_samples=5000)  # doctest: +SKIP
        >>> heatmaps = explainer.analyze(model, x, target=243)  # doctest: +SKIP
    """

    def __init__(
        self,
        targets: str | torch.nn.Module | list[str | torch.nn.Module],
        *,
        layout: str | None = None,
        strategy: str = "auto",
        config: iba.Config | None = None,
        **fields: Any,
    ):
        self._targets = _model.to_list(targets)
        config = iba.config.for_targets(len(self._targets), config, **fields)
        if strategy not in _split.STRATEGIES:
            raise ValueError(f"strategy must be one of {_split.STRATEGIES}, got {strategy!r}")
        self.config = config
        self.layout = None if layout is None else check_layout(layout)
        self.strategy = strategy
        self.estimators: list[iba.Estimator] = []
        self.alpha: torch.Tensor | None = None
        self.last_path: str | None = None  # the path the last analyze() took, and why
        self.last_path_reason: str = ""
        self._flow = _Flow()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def targets(self) -> list[str | torch.nn.Module]:
        """The target layers as given."""
        return list(self._targets)

    def __repr__(self) -> str:
        names = [t if isinstance(t, str) else type(t).__name__ for t in self._targets]
        return f"IBA(targets={names}, config={self.config})"

    def _layout(self, shape: tuple[int, ...]) -> str:
        if self.layout is not None:
            return self.layout
        if len(shape) == 3:
            return "channels_first"
        if len(shape) == 2:
            return "tokens"
        raise ValueError(
            f"the target's features have shape {tuple(shape)} per input; IBA needs (C, H, W) or "
            "(T, D): choose another target or pass layout="
        )

    # -- estimation ------------------------------------------------------------------------------

    def estimate(
        self,
        model: torch.nn.Module,
        data: Iterable,
        n_samples: int | None = None,
        progress: bool = True,
    ) -> list[iba.Estimator]:
        """Fit one ``iba.Estimator`` per target on the features of ``data`` (SPEC section 1).

        ``data`` is a DataLoader or any iterable of input batches, ``(inputs, labels, ...)``
        tuples or dicts of keyword inputs, or one tensor / array of inputs. The model runs in eval
        mode without gradients, and each forward pass stops after the last target.
        """
        if n_samples is not None and (isinstance(n_samples, bool) or int(n_samples) < 1):
            raise ValueError(f"n_samples must be a positive int or None, got {n_samples!r}")
        modules = _model.resolve(model, self._targets)
        device, dtype = _model.model_device_dtype(model)
        total = n_samples
        if total is None:
            sized = data if isinstance(data, (torch.Tensor, np.ndarray)) else None
            sized = sized if sized is not None else getattr(data, "dataset", None)
            total = len(sized) if hasattr(sized, "__len__") else None
        estimators: list[iba.Estimator] = []
        seen = 0
        with _model.preserved(model, freeze=False):
            bar = tqdm(total=total, unit="sample", desc="IBA estimate", disable=not progress)
            with bar:
                for batch in _batches(data):
                    inputs = _model.as_inputs(batch, device, dtype)
                    rows = _model.n_rows(inputs)
                    if n_samples is not None and seen + rows > n_samples:
                        keep = n_samples - seen
                        inputs = _model.map_inputs(inputs, lambda t, k=keep: t[:k], rows)
                        rows = keep
                    _model.check_finite(inputs)
                    features = _model.capture(model, inputs, modules)
                    if not estimators:
                        estimators = [
                            iba.Estimator(layout=self._layout(tuple(f.shape[1:]))) for f in features
                        ]
                    for est, f in zip(estimators, features):
                        est.update(f.cpu().numpy())
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

    def _statistics(self, shapes: list[tuple[int, ...]], like: torch.Tensor):
        self._require_estimators()
        stats = []
        for target, est, shape in zip(self._targets, self.estimators, shapes):
            name = target if isinstance(target, str) else type(target).__name__
            try:
                est.check(shape)
            except ValueError as err:
                raise ValueError(f"target {name!r}: {err}") from None
            s = est.statistics(self.config.min_std, self.config.active_threshold)
            stats.append(_math.layer_stats(s, masked=len(self._targets) == 1, like=like))
        return stats

    # -- hooks -----------------------------------------------------------------------------------

    def _hook(self, index: int, name: str) -> Callable:
        flow, config = self._flow, self.config

        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            mode = flow.mode
            if mode is None or (mode == "first" and index != 0):
                return None
            if mode == "first":
                return _model.replace_first(output, flow.z0)
            if mode == "restrict":
                return _model.replace_first(output, self._restricted(index, output))
            if index in flow.calls:
                raise RuntimeError(
                    f"target layer {name!r} ran twice in one forward pass; a target must be a "
                    "module that runs once per forward pass"
                )
            flow.calls.append(index)
            if index == 0:
                return _model.replace_first(output, flow.z0)
            r = _model.first_tensor(output)
            n, b = flow.lam.shape[0], config.batch_size
            shape = flow.shapes[index]
            if tuple(r.shape) != (n * b, *shape):
                raise ValueError(
                    f"target layer {name!r} returned features of shape {tuple(r.shape)} on the "
                    f"noised batch; expected {(n * b, *shape)} (the estimator's feature shape)"
                )
            z = _math.noised(
                r.reshape(n, b, *shape), flow.lam, flow.stats[index], flow.eps[index], config.relu
            )
            return _model.replace_first(output, z.reshape(r.shape))

        return hook

    def _restricted(self, index: int, output: Any) -> torch.Tensor:
        flow = self._flow
        r = _model.first_tensor(output)
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
        return _math.bottleneck(r, lam, eps, mask, self.config.relu)

    def _hooks(self, modules) -> contextlib.AbstractContextManager:
        pairs = [(m, self._hook(i, n)) for i, (n, m) in enumerate(modules)]
        return _model.hooks(pairs, registry=self._handles)

    def remove_hooks(self) -> None:
        """Remove every hook this explainer has registered (normally none outlive a call)."""
        for handle in list(self._handles):
            handle.remove()
        self._handles.clear()
        self._flow.mode = None

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
        modules = _model.resolve(model, self._targets)
        like = alpha.detach().to(*[a for a in _model.model_device_dtype(model) if a is not None])
        shapes = [tuple(e.feature_shape) for e in self.estimators]
        layout = self.estimators[0].layout
        flow = self._flow
        if flow.mode is not None:
            raise RuntimeError("the explainer is in use; remove_hooks() resets it")
        with torch.no_grad():
            lam = _math.damping(like, layout, self.config.sigma)
        flow.lam, flow.stats = lam, self._statistics(shapes, like)
        flow.generator = None
        if seed is not None:
            flow.generator = torch.Generator(device=like.device).manual_seed(int(seed))
        with self._hooks(modules):
            flow.mode = "restrict"
            try:
                yield lam
            finally:
                flow.mode, flow.lam, flow.generator = None, None, None

    # -- analysis --------------------------------------------------------------------------------

    def analyze(
        self,
        model: torch.nn.Module,
        x: Any,
        target: int | Iterable[int] | torch.Tensor | None = None,
        loss_fn: Callable[[Any], torch.Tensor] | None = None,
        noise: np.ndarray | list[np.ndarray] | None = None,
        seed: int | None = None,
        details: bool = False,
        progress: bool = False,
    ) -> np.ndarray | iba.Explanation:
        """Heatmaps of the ``N`` inputs ``x``, in bits (SPEC section 2; CoIBA: section 4).

        Args:
            model: the model; left exactly as it was (weights, ``requires_grad``, train/eval
                mode, hooks), also after an exception. It runs in eval mode, on its own device
                and dtype (``x`` is moved there).
            x: a batch of ``N >= 1`` inputs: a tensor, a tuple of positional inputs, or a dict
                of keyword inputs.
            target: class index, or one per input: the model loss is the mean over noise
                samples of ``-log_softmax(logits)[target]``.
            loss_fn: ``outputs -> loss per row`` on the ``N * B`` noised rows (input-major) or,
                for ``N = 1``, a scalar; instead of ``target``.
            noise: ``iba.draw_noise(seed, steps, batch_size, F, n_inputs=N)`` (a list, one per
                target, for several targets): runs on exactly these draws.
            seed: seeds a ``torch.Generator`` instead (both ``None``: torch's global generator).
            details: return an ``iba.Explanation`` (capacity, alpha, lam, alphas, losses, heatmap).
            progress: show a progress bar over the optimisation steps.

        Returns:
            ``(N, H, W)`` at the input's size for images, ``(N, T)`` per token for token features.
        """
        self._require_estimators()
        if (target is None) == (loss_fn is None):
            raise ValueError("pass exactly one of target= (class index per input) or loss_fn=")
        if noise is not None and seed is not None:
            raise ValueError("pass noise= or seed=, not both")
        if self._flow.mode is not None:
            raise RuntimeError(
                "analyze() inside restrict_flow() or another analyze(): leave the block first"
            )
        modules = _model.resolve(model, self._targets)
        device, dtype = _model.model_device_dtype(model)
        inputs = _model.as_inputs(x, device, dtype)
        n = _model.n_rows(inputs)
        if n < 1:
            raise ValueError("x holds no inputs")
        _model.check_finite(inputs)
        config, flow = self.config, self._flow
        b, n_layers = config.batch_size, len(modules)
        labels = None if target is None else _labels(target, n)

        with _model.preserved(model), self._hooks(modules), torch.enable_grad():
            try:
                cache = self._paths.setdefault(model, {})
                path, split, why = _split.choose(
                    self.strategy, model, modules[0], [m for _, m in modules], inputs, flow, cache
                )
                self.last_path, self.last_path_reason = path, why
                with torch.no_grad():
                    run = _split.runner(path, split, model, inputs, n, b)
                    if isinstance(run, _split.SplitRunner):
                        features = run.features
                    else:
                        features = _model.capture(model, inputs, modules[:1])[0]
                if not bool(torch.isfinite(features).all()):
                    raise ValueError(
                        "the features at the first target hold NaN or infinite values; check "
                        "the input and the model"
                    )
                feature_shape = tuple(features.shape[1:])
                layout = self.estimators[0].layout
                shapes = [feature_shape] + [tuple(e.feature_shape) for e in self.estimators[1:]]
                stats = self._statistics(shapes, features)
                a_shape = iba.alpha_shape(feature_shape, layout, n_layers > 1)
                for shape in shapes[1:]:
                    check_alpha_shape(a_shape, shape, layout)
                draw = self._noise_source(noise, seed, n, shapes, features)

                alpha = torch.full(
                    (n, *a_shape), float(config.initial_alpha), dtype=features.dtype,
                    device=features.device, requires_grad=True,
                )  # fmt: skip
                optimizer = _math.adam([alpha], config.lr)
                alphas, losses = [alpha.detach().clone()], []
                first = stats[0]
                noiser = _math.Noiser(features[:, None], first)
                r_norm = (features - first.mean) / first.std  # capacity's r, computed once
                flow.stats, flow.shapes = stats, shapes
                steps = range(config.updates)
                for step in tqdm(steps, desc="IBA analyze", unit="step", disable=not progress):
                    lam = _math.damping(alpha, layout, config.sigma)
                    lam_b = lam[:, None]
                    flow.eps = [draw(step, i) for i in range(n_layers)]  # standard normal
                    z0 = noiser(lam_b, flow.eps[0], config.relu)
                    flow.z0, flow.lam = z0.reshape(n * b, *feature_shape), lam_b
                    flow.calls = [] if run.first_called_by_model else [0]
                    flow.mode = "step"
                    outputs = run(flow.z0)
                    flow.mode = None
                    if flow.calls != list(range(n_layers)):
                        raise RuntimeError(_order_error(flow.calls, modules))
                    if loss_fn is not None:
                        model_loss = _math.user_loss(loss_fn, outputs, n, b)
                    else:
                        model_loss = _math.classification_loss(outputs, labels, n)
                    cap = _math.capacity(r_norm, lam, 0.0, 1.0, first.mask)
                    loss = model_loss + config.beta * cap.reshape(n, -1).mean(1)
                    optimizer.zero_grad(set_to_none=True)
                    loss.sum().backward()
                    optimizer.step()
                    alphas.append(alpha.detach().clone())
                    losses.append(loss.detach())
            finally:
                flow.mode, flow.z0, flow.lam, flow.eps, flow.stats = None, None, None, [], []

            with torch.no_grad():
                alpha = alpha.detach()
                lam = _math.damping(alpha, layout, config.sigma)
                cap = _math.capacity(features, lam, first.mean, first.std, first.mask)
        self.alpha = alpha

        capacity = cap.cpu().double().numpy()
        maps = iba.heatmap(capacity, layout, _input_size(inputs, layout))
        if not details:
            return maps
        return iba.Explanation(
            capacity=capacity,
            alpha=alpha.cpu().double().numpy(),
            lam=lam.cpu().double().numpy(),
            alphas=torch.stack(alphas).cpu().double().numpy(),
            losses=(torch.stack(losses) if losses else alpha.new_zeros((0, n)))
            .cpu()
            .double()
            .numpy(),
            heatmap=maps,
        )

    def _noise_source(self, noise, seed, n, shapes, like) -> Callable[[int, int], torch.Tensor]:
        """``draw(step, layer) -> (N, B, *F_layer)`` standard-normal draws."""
        config = self.config
        if noise is None:
            generator = None
            if seed is not None:
                generator = torch.Generator(device=like.device).manual_seed(int(seed))

            def draw(step: int, layer: int) -> torch.Tensor:
                shape = (n, config.batch_size, *shapes[layer])
                return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)

            return draw
        arrays = list(noise) if isinstance(noise, (list, tuple)) else [noise]
        if len(arrays) != len(shapes):
            raise ValueError(
                f"{len(shapes)} target(s) need {len(shapes)} noise array(s), got {len(arrays)}"
            )
        tensors = [
            torch.as_tensor(
                check_noise(
                    a.cpu().numpy() if isinstance(a, torch.Tensor) else a,
                    config.steps, n, config.batch_size, shape,
                )[: config.updates],
                dtype=like.dtype, device=like.device,
            )
            for a, shape in zip(arrays, shapes)
        ]  # fmt: skip
        return lambda step, layer: tensors[layer][step]


def _order_error(calls: list[int], modules) -> str:
    names = [n for n, _ in modules]
    reached = [names[i] for i in calls]
    missing = [n for i, n in enumerate(names) if i not in calls]
    if missing:
        return (
            f"the forward pass on the noised batch never reached the target layer(s) {missing}: "
            "choose modules that the model's forward() calls"
        )
    return f"list the target layers in the order the forward pass reaches them: {reached}"


def _input_size(inputs: _model.Inputs, layout: str) -> tuple[int, int] | None:
    args, kwargs = inputs
    if not iba.layout.is_spatial(layout) or kwargs or len(args) != 1:
        return None
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        return None
    return tuple(x.shape[1:3]) if layout == "channels_last" else tuple(x.shape[2:])


def _batches(data: Any) -> Iterator[Any]:
    if isinstance(data, (torch.Tensor, np.ndarray)):
        for start in range(0, len(data), ESTIMATE_CHUNK):
            yield data[start : start + ESTIMATE_CHUNK]
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            yield batch[0]
        else:
            yield batch


def _labels(target: object, n_inputs: int) -> torch.Tensor:
    labels = target.cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"target must be an int or one int per input, got {target!r}")
    if labels.ndim == 0:
        labels = np.full(n_inputs, int(labels))
    if labels.shape != (n_inputs,):
        raise ValueError(f"target has shape {labels.shape}; expected one int or {n_inputs} ints")
    return torch.as_tensor(labels, dtype=torch.long)
