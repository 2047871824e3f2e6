"""Flax Linen: the bottleneck enters through ``flax.linen.intercept_methods``.

The model is left untouched: an interceptor sees every module's ``__call__`` during
``module.apply`` and hands the call of a target path to the active hook. At a target, the hook
can return the bottleneck output without calling the module, so the layers that produced the
cached features are dead code in the compiled optimisation and XLA removes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import flax.linen as nn

from iba_jax import _cache, _hooks
from iba_jax._hooks import Path


class LinenSession:
    """A Linen model ``(module, variables[, apply_kwargs])`` with bottleneck targets ``paths``."""

    def __init__(
        self,
        module: nn.Module,
        variables: Mapping,
        apply_kwargs: Mapping[str, Any],
        paths: Sequence[Path],
        owner: object = None,
    ):
        self.module = module
        self.variables = variables
        self.apply_kwargs = dict(apply_kwargs)
        self.paths = list(paths)
        self._index = {_hooks.key(p): i for i, p in enumerate(self.paths)}
        # The user's object: the compiled functions live while it does (``module`` is a clone of
        # it, without variables, so that the cache does not keep the user's module alive).
        self.owner = module if owner is None else owner

    def __enter__(self) -> LinenSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _static(self, kind: str) -> Any:
        module: Any = self.module
        try:
            hash(module)
        except TypeError:  # unhashable fields: the user's module object, by identity
            module = _cache.ById(self.owner)
        try:
            kwargs = tuple(sorted(self.apply_kwargs.items()))
            static = ("linen", kind, module, kwargs, tuple(map(_hooks.key, self.paths)))
            hash(static)
        except TypeError:
            return None  # unhashable apply kwargs: compile for this call only
        return static

    def capture_parts(self) -> tuple[Any, Any, Any]:
        """``(static, dynamic, params)`` of a forward pass that captures features."""
        return self._static("capture"), self.variables, None

    def analysis_parts(self, alpha0) -> tuple[Any, Any, Any]:
        """``(static, dynamic, params)`` of the optimisation: Adam updates ``alpha`` itself."""
        return self._static("analysis"), self.variables, alpha0

    @staticmethod
    def alpha_of(params):
        return params

    def runner(self, static: Any) -> _hooks.Runner:
        """``run(variables, params, x) -> outputs``; ``run.describe(l)`` names target ``l``."""
        module, kwargs, paths, index = self.module, self.apply_kwargs, self.paths, self._index
        seen: list[tuple[str, ...]] = []

        def interceptor(next_fun, args, call_kwargs, context):
            if context.method_name != "__call__":
                return next_fun(*args, **call_kwargs)
            path = tuple(context.module.path)
            seen.append(path)
            layer = index.get(_hooks.key(path))
            hook = _hooks.current()
            if layer is None or hook is None:
                return next_fun(*args, **call_kwargs)
            return hook(layer, lambda: next_fun(*args, **call_kwargs))

        def run(variables, params, x):
            seen.clear()
            with nn.intercept_methods(interceptor):
                return module.apply(variables, x, **kwargs)

        def not_reached(layer: int) -> Exception:
            return ValueError(
                f"target {describe(layer)!r} was not reached: no module with that path ran in "
                f"{type(module).__name__}'s forward pass. Module paths are: "
                f"{_hooks.list_paths(seen)}"
            )

        def describe(layer: int) -> str:
            return _hooks.format_path(paths[layer])

        runner = cast(_hooks.Runner, run)  # the function, with its two attributes set here
        runner.describe = describe
        runner.not_reached = not_reached
        return runner


def linen_session(model: object, paths: Sequence[Path]) -> LinenSession | None:
    """The session for a Linen model, or ``None`` if ``model`` is not one."""
    if isinstance(model, nn.Module):
        if model.scope is None:
            raise TypeError(
                f"the Linen module {type(model).__name__} has no variables: pass "
                "(module, variables) or a bound module module.bind(variables)"
            )
        module, variables = model.unbind()  # a clone of the module, and its variables
        return LinenSession(module, variables, {}, paths, owner=model)
    if isinstance(model, tuple) and len(model) in (2, 3) and isinstance(model[0], nn.Module):
        kwargs = model[2] if len(model) == 3 else {}
        if not isinstance(model[1], Mapping) or not isinstance(kwargs, Mapping):
            raise TypeError(
                "a Linen model is (module, variables) or (module, variables, apply_kwargs) with "
                "dicts for variables and apply_kwargs"
            )
        return LinenSession(model[0].clone(), model[1], kwargs, paths, owner=model[0])
    return None


def param_paths(params: Mapping, prefix: str = "") -> list[str]:
    """The ``/``-joined path of every submodule in a Linen ``params`` tree, in order."""
    paths = []
    for name, value in params.items():
        if isinstance(value, Mapping):
            path = f"{prefix}{name}"
            paths += [path, *param_paths(value, path + "/")]
    return paths
