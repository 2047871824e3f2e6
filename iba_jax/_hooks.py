"""Where the bottleneck enters a Flax model: target paths and the hook that both APIs call.

Linen's method interceptor and NNX's wrapper module both hand a target layer's call to the active
hook, ``hook(layer, compute)``: ``compute()`` runs the layer, the hook's return value replaces its
output. Capturing features (estimation) and the bottleneck (analysis) are two such hooks.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from iba import driver

Path = tuple[str | int, ...]
Hook = Callable[[int, Callable[[], Any]], Any]

_ACTIVE: contextvars.ContextVar[Hook | None] = contextvars.ContextVar("iba_jax_hook", default=None)


def current() -> Hook | None:
    """The hook of the forward pass being traced, if any."""
    return _ACTIVE.get()


@contextlib.contextmanager
def active(hook: Hook) -> Iterator[None]:
    """Route the target layers' calls to ``hook`` while the block runs."""
    token = _ACTIVE.set(hook)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class Runner(Protocol):
    """A session's ``run(dynamic, params, x) -> outputs``, with ``describe(l)`` naming target
    ``l`` and ``not_reached(l)`` the error for a target that did not run."""

    describe: Callable[[int], str]
    not_reached: Callable[[int], Exception]

    def __call__(self, dynamic: Any, params: Any, x: Any) -> Any: ...


class StopForward(Exception):
    """Raised by the capturing hook once every target has run: the rest is never traced."""


class NotReached(Exception):
    """The forward pass ended before target ``layer`` ran (the adapter names the module paths)."""

    def __init__(self, layer: int):
        super().__init__(layer)
        self.layer = layer


def to_path(target: object) -> Path:
    """One module path: a tuple of names (and NNX list indices) or a ``/``-joined string."""
    if isinstance(target, str):
        parts = tuple(p for p in target.split("/") if p)
        if not parts:
            raise ValueError("an empty module path is not a target; name a submodule")
        return parts
    if isinstance(target, tuple) and target and all(isinstance(p, (str, int)) for p in target):
        return target
    raise TypeError(
        f"a target is a module path, a tuple such as ('Block_4', 'LayerNorm_0') or a string "
        f"such as 'Block_4/LayerNorm_0'; got {target!r}"
    )


def to_paths(targets: object) -> list[Path]:
    """A list of targets (CoIBA) or one target (a string or a tuple path)."""
    if isinstance(targets, list):
        if not targets:
            raise ValueError("IBA needs at least one target module path")
        paths = [to_path(t) for t in targets]
    else:
        paths = [to_path(targets)]
    keys = [key(p) for p in paths]
    if len(set(keys)) != len(keys):
        raise ValueError(f"the same target is listed twice: {[format_path(p) for p in paths]}")
    return paths


def key(path: Path) -> tuple[str, ...]:
    """A path compared by its names (``4`` and ``"4"`` alike)."""
    return tuple(str(p) for p in path)


def format_path(path: Sequence[object]) -> str:
    """``("Block_4", "LayerNorm_0")`` as ``'Block_4/LayerNorm_0'``."""
    return "/".join(str(p) for p in path)


def list_paths(paths: Sequence[Sequence[object]]) -> str:
    """Module paths for an error message (the root, an empty path, left out)."""
    names = [format_path(p) for p in paths if len(p)]
    return ", ".join(dict.fromkeys(names)) or "(no submodules)"


def capture(run: Callable[[], Any], n_targets: int, describe: Callable[[int], str]) -> list:
    """Run ``run()`` and return the outputs of target layers ``0 .. n_targets - 1``.

    The forward pass stops (``StopForward``) as soon as the last of them has run. ``describe(l)``
    names target ``l`` in errors.
    """
    captured: list = []

    def hook(layer: int, compute: Callable[[], Any]) -> Any:
        if layer >= n_targets:
            return compute()
        if layer < len(captured):
            raise driver.twice_error(describe(layer))
        if layer > len(captured):
            names = [describe(i) for i in range(n_targets)]
            raise driver.order_error(names, [*range(len(captured)), layer])
        out = compute()
        captured.append(out)
        if len(captured) == n_targets:
            raise StopForward
        return out

    try:
        with active(hook):
            run()
    except StopForward:
        return captured
    raise NotReached(len(captured))
