"""Reaching into a user's ``torch.nn.Module``: target layers, hooks, inputs, and leaving the
model exactly as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from iba import driver

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


class StopForward(Exception):
    """Raised by a hook to end a forward pass once every needed layer has run."""


def to_list(targets: object) -> list[str | torch.nn.Module]:
    """One target (a name or a module) or a list of them, as a list."""
    if isinstance(targets, (str, torch.nn.Module)):
        return [targets]
    if isinstance(targets, (list, tuple)) and targets:
        for t in targets:
            if not isinstance(t, (str, torch.nn.Module)):
                raise TypeError(
                    f"a target is a module or a dotted name from named_modules(), got {t!r}"
                )
        return list(targets)
    raise TypeError(
        "targets must be a module, a dotted name such as 'features.17', or a non-empty list of "
        f"them; got {targets!r}"
    )


def resolve(model: torch.nn.Module, targets: Sequence[str | torch.nn.Module]):
    """``[(name, module)]`` of the targets in ``model``; unknown ones raise with the known names."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in reversed(list(modules.items()))}
    resolved = []
    for target in targets:
        if isinstance(target, str):
            if target not in modules:
                available = ", ".join(repr(n) for n in modules if n)
                raise ValueError(
                    f"layer {target!r} not found in the model; layers are: {available}"
                )
            resolved.append((target, modules[target]))
        else:
            if id(target) not in names:
                raise ValueError(
                    f"the module {type(target).__name__} given as target is not part of the model"
                )
            resolved.append((names[id(target)], target))
    seen = [n for n, _ in resolved]
    if len(set(seen)) != len(seen):
        raise ValueError(f"a target layer is listed twice: {seen}")
    return resolved


def first_tensor(output: Any) -> torch.Tensor:
    """The features in a module's output: the tensor itself or a tuple's first item."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"the target layer returned {type(output).__name__}; IBA needs a tensor or a tuple whose "
        "first item is the features tensor: choose another layer"
    )


def replace_first(output: Any, z: torch.Tensor) -> Any:
    """``output`` with its features replaced by ``z`` (keeps tuples as tuples)."""
    if isinstance(output, torch.Tensor):
        return z
    return type(output)([z, *output[1:]]) if isinstance(output, list) else (z, *output[1:])


@contextlib.contextmanager
def preserved(model: torch.nn.Module, eval_mode: bool = True, freeze: bool = True) -> Iterator:
    """Run a block with ``model`` in eval mode and no weight gradients; restore all afterwards.

    Restores every module's ``training`` flag and every parameter's ``requires_grad``, also when
    the block raises. Hooks added inside the block must be removed by their owner.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if eval_mode:
            model.eval()
        if freeze:
            for p, _ in flags:
                p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def channels_last(model: torch.nn.Module) -> Iterator[bool]:
    """Run a block with the model's 4-D float32 CPU weights in channels-last memory (a
    convolutional network's; the convolutions then run channels-last: 1.7x faster for 8 images of
    EfficientNet-Lite0 on 2 cores, never slower for one, docs/performance.md), and give every
    weight back its very tensor afterwards, also when the block raises. Yields whether it changed
    anything (no such weight: nothing to do, e.g. on a GPU, in float64 or for a transformer)."""
    saved = [
        (t, t.data)
        for t in (*model.parameters(), *model.buffers())
        if t.dim() == 4 and t.device.type == "cpu" and t.dtype == torch.float32
    ]
    try:
        for t, data in saved:  # as Module.to does: also the (C, 1, k, k) depthwise kernels
            t.data = data.to(memory_format=torch.channels_last)
        yield bool(saved)
    finally:
        for t, data in saved:
            t.data = data


def channels_last_inputs(inputs: Inputs) -> Inputs:
    """``inputs`` with every 4-D float tensor in channels-last memory (the same values)."""

    def convert(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.dim() == 4 and a.is_floating_point():
            return a.contiguous(memory_format=torch.channels_last)
        return a

    args, kwargs = inputs
    return tuple(convert(a) for a in args), {k: convert(v) for k, v in kwargs.items()}


@contextlib.contextmanager
def hooks(pairs: Iterable[tuple[torch.nn.Module, Callable]], registry: list | None = None):
    """Register forward hooks ``(module, hook)`` for a block; removed afterwards in any case."""
    handles = []
    try:
        for module, hook in pairs:
            handle = module.register_forward_hook(hook)
            handles.append(handle)
            if registry is not None:
                registry.append(handle)
        yield
    finally:
        for handle in handles:
            handle.remove()
            if registry is not None and handle in registry:
                registry.remove(handle)


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """The device and floating dtype of the model's first parameter (or buffer), if any."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.device, t.dtype
    return None, None


def as_inputs(x: Any, device, dtype) -> Inputs:
    """Model inputs as ``(args, kwargs)``: a tensor (or array), a tuple of them, or a dict.

    Tensors move to the model's device; floating tensors take its floating dtype.
    """

    def convert(a: Any) -> Any:
        if isinstance(a, np.ndarray):
            a = torch.from_numpy(a)
        if isinstance(a, torch.Tensor):
            if device is not None and a.device != device:
                a = a.to(device)
            if dtype is not None and a.is_floating_point() and a.dtype != dtype:
                a = a.to(dtype)
        return a

    if isinstance(x, dict):
        return (), {k: convert(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(convert(a) for a in x), {}
    return (convert(x),), {}


def leaves(inputs: Inputs) -> list[torch.Tensor]:
    """The tensors of ``inputs``."""
    args, kwargs = inputs
    return [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]


def n_rows(inputs: Inputs) -> int:
    """The batch size of ``inputs`` (the first axis of its first tensor)."""
    tensors = leaves(inputs)
    if not tensors or tensors[0].ndim == 0:
        raise ValueError("the model inputs must hold a tensor with a batch axis first")
    return int(tensors[0].shape[0])


def check_finite(inputs: Inputs) -> None:
    """Raise if a floating input holds NaN or infinite values."""
    for t in leaves(inputs):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(
                f"the input holds {bad} NaN or infinite value(s); check the input data"
            )


def map_inputs(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor], rows: int) -> Inputs:
    """Apply ``fn`` to every tensor of ``inputs`` whose first axis has ``rows`` entries."""

    def apply(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.ndim > 0 and a.shape[0] == rows:
            return fn(a)
        return a

    args, kwargs = inputs
    return tuple(apply(a) for a in args), {k: apply(v) for k, v in kwargs.items()}


def repeat_rows(value: Any, rows: int, copies: int) -> Any:
    """Repeat each row of every batch tensor in ``value`` ``copies`` times (input-major)."""
    if isinstance(value, torch.Tensor):
        if value.ndim > 0 and value.shape[0] == rows:
            return value.repeat_interleave(copies, dim=0)
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(repeat_rows(v, rows, copies) for v in value)
    if isinstance(value, dict):
        return {k: repeat_rows(v, rows, copies) for k, v in value.items()}
    return value


def call(model: Callable, inputs: Inputs) -> Any:
    """``model(*args, **kwargs)``."""
    args, kwargs = inputs
    return model(*args, **kwargs)


def capture(
    model: torch.nn.Module,
    inputs: Inputs,
    modules: Sequence[tuple[str, torch.nn.Module]],
    ordered: bool = True,
) -> list[torch.Tensor]:
    """The features of ``modules`` on ``inputs`` (no gradient); stops after the last one runs.

    Raises if a target is not reached, runs twice, or (if ``ordered``) the targets run in
    another order than listed.
    """
    seen: dict[int, torch.Tensor] = {}
    order: list[int] = []

    def make(i: int, name: str):
        def hook(module, args, output):
            if i in seen:
                raise driver.twice_error(name)
            seen[i] = first_tensor(output).detach()
            order.append(i)
            if len(seen) == len(modules):
                raise StopForward

        return hook

    with hooks([(m, make(i, n)) for i, (n, m) in enumerate(modules)]), torch.no_grad():
        try:
            call(model, inputs)
        except StopForward:
            pass
    missing = [modules[i][0] for i in range(len(modules)) if i not in seen]
    if missing:
        raise RuntimeError(
            f"the forward pass never reached the target layer(s) {missing}: choose modules that "
            "the model's forward() calls"
        )
    if ordered and order != sorted(order):
        raise driver.order_error([n for n, _ in modules], order)
    return [seen[i] for i in range(len(modules))]
