"""Flax NNX: the bottleneck enters through module surgery.

NNX has no method interceptors. For the duration of an estimation or explanation, each target
submodule is replaced by a ``Bottleneck`` module that wraps it; the original is put back
afterwards, also when an exception interrupts. The bottleneck holds ``alpha`` as an ``IBAAlpha``
variable, and the optimisation differentiates the state filtered by that type only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
from flax import nnx

from iba_jax import _hooks
from iba_jax._hooks import Path


class IBAAlpha(nnx.Variable):
    """The bottleneck's ``alpha``, ``(N, *A)``: the only state the optimisation differentiates."""


class Bottleneck(nnx.Module):
    """Wraps target ``layer``: outside an explanation it is transparent, inside it is the hook."""

    def __init__(self, inner: nnx.Module, layer: int):
        self.inner = inner
        self.layer = layer
        self.alpha = nnx.data(None)

    def __call__(self, *args, **kwargs):
        hook = _hooks.current()
        if hook is None:
            return self.inner(*args, **kwargs)
        return hook(self.layer, lambda: self.inner(*args, **kwargs))


def module_paths(model: nnx.Module) -> list[Path]:
    """Every submodule's path, in ``nnx.iter_modules`` order (the root left out)."""
    return [tuple(path) for path, _ in nnx.iter_modules(model) if len(path)]


def _child(parent: Any, name: str | int) -> Any:
    if isinstance(name, int) or not hasattr(parent, name):
        return parent[name]
    return getattr(parent, name)


def _set_child(parent: Any, name: str | int, value: Any) -> None:
    if isinstance(name, int) or not hasattr(parent, name):
        parent[name] = value
    else:
        setattr(parent, name, value)


class NNXSession:
    """An NNX model with bottleneck targets ``paths``; ``with`` performs and undoes the surgery."""

    def __init__(self, model: nnx.Module, paths: Sequence[Path]):
        self.model = model
        self.owner = model  # the compiled functions live while the model does
        self.paths = list(paths)
        self.wrappers: list[Bottleneck] = []
        self._undo: list[tuple[Any, str | int, Any]] = []

    def _resolve(self) -> list[tuple[Any, str | int, Any]]:
        available = {_hooks.key(p): p for p in module_paths(self.model)}
        sites = []
        for path in self.paths:
            found = available.get(_hooks.key(path))
            if found is None:
                raise ValueError(
                    f"target {_hooks.format_path(path)!r} is not a submodule of "
                    f"{type(self.model).__name__}. Module paths are: "
                    f"{_hooks.list_paths(module_paths(self.model))}"
                )
            parent = self.model
            for name in found[:-1]:
                parent = _child(parent, name)
            child = _child(parent, found[-1])
            if isinstance(child, Bottleneck):
                raise RuntimeError(
                    f"target {_hooks.format_path(path)!r} is already wrapped by an IBA bottleneck "
                    "(an explanation is running on this model)"
                )
            sites.append((parent, found[-1], child))
        return sites

    def __enter__(self) -> NNXSession:
        sites = self._resolve()  # all paths first: replacing one must not move another
        try:
            for layer, (parent, name, child) in enumerate(sites):
                wrapper = Bottleneck(child, layer)
                _set_child(parent, name, wrapper)
                self._undo.append((parent, name, child))
                self.wrappers.append(wrapper)
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        while self._undo:
            parent, name, child = self._undo.pop()
            _set_child(parent, name, child)
        self.wrappers = []

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def capture_parts(self) -> tuple[Any, Any, Any]:
        """``(static, dynamic, params)`` of a forward pass that captures features."""
        graphdef, state = nnx.split(self.model)
        return ("nnx", "capture", graphdef), state, None

    def analysis_parts(self, alpha0: jax.Array) -> tuple[Any, Any, Any]:
        """``(static, dynamic, params)``: ``params`` is the state of type ``IBAAlpha`` alone."""
        self.wrappers[0].alpha = IBAAlpha(alpha0)
        graphdef, params, rest = nnx.split(self.model, IBAAlpha, ...)
        return ("nnx", "analysis", graphdef), rest, params

    @staticmethod
    def alpha_of(params: nnx.State) -> jax.Array:
        (alpha,) = jax.tree.leaves(params)
        return alpha

    def runner(self, static: Any) -> _hooks.Runner:
        """``run(dynamic, params, x) -> outputs`` on a copy merged inside the traced function."""
        _, kind, graphdef = static
        paths = self.paths

        def run(dynamic, params, x):
            states = (dynamic,) if kind == "capture" else (params, dynamic)
            return nnx.merge(graphdef, *states)(x)

        def describe(layer: int) -> str:
            return _hooks.format_path(paths[layer])

        def not_reached(layer: int) -> Exception:
            return ValueError(
                f"target {describe(layer)!r} did not run in the model's forward pass: choose a "
                "submodule that __call__ uses"
            )

        runner = cast(_hooks.Runner, run)  # the function, with its two attributes set here
        runner.describe = describe
        runner.not_reached = not_reached
        return runner


def nnx_session(model: object, paths: Sequence[Path]) -> NNXSession | None:
    """The session for an NNX model, or ``None`` if ``model`` is not one."""
    return NNXSession(model, paths) if isinstance(model, nnx.Module) else None
