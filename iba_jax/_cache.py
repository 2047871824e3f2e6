"""The compiled functions that ``iba_jax`` keeps between calls, and how long it keeps them.

Compiling the optimisation takes seconds, and each compiled function holds its executable (a few
MiB for a small CNN, more for a large model). The cache therefore bounds what it keeps:

- at most ``CACHE_SIZE`` compiled functions, shared by every explainer, the least recently used
  dropped first;
- each entry lives as long as a model that used it (held by weak reference: the user's NNX
  module, Linen module or bound module): when the last such model is garbage-collected, the entry
  is dropped, except for the ``IDLE_KEPT`` most recent ones, so that a loop that builds or loads
  a new copy of the same model for each call compiles once;
- a key that names an object by identity (a ``loss_fn`` that :func:`loss_key` cannot describe by
  value, a Linen module with unhashable fields) is dropped as soon as that object dies: nothing
  can look it up again;
- an entry holds the compiled function only: the model's variables, the inputs and the
  statistics are arguments, never constants of the compiled code.

``loss_key`` keys a ``loss_fn`` by its code and the values it captures where that is safe, so
that a function built anew for every call (a lambda in a loop) reuses the compiled optimisation
when it computes the same thing. ``count_loss_compile`` warns once per model and settings when
many different ``loss_fn`` functions were compiled.
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from iba import _partial

CACHE_SIZE = 16  # compiled functions kept, shared by all explainers (least recently used dropped)
IDLE_KEPT = 2  # compiled functions kept after their last model died (a loop over model copies)
SHAPES_KEPT = 64  # feature shapes kept (no compiled code: a few bytes each)
LOSS_FN_WARN = 8  # warn when this many loss_fn functions were compiled for one model

_CACHE: collections.OrderedDict[Any, _Entry] = collections.OrderedDict()
_SHAPES: collections.OrderedDict[Any, Any] = collections.OrderedDict()
_LOSS_COMPILES: collections.OrderedDict[Any, tuple[int, bool]] = collections.OrderedDict()
_LOCK = threading.Lock()  # never held while compiling or tracing
_DIED: list[Any] = []  # keys of entries whose owner or pinned object died, pruned under _LOCK


class ById:
    """A key part that stands for an object by identity without keeping it alive."""

    __slots__ = ("_ref", "_id", "__weakref__")

    def __init__(self, obj: object):
        self._id = id(obj)
        try:
            self._ref: Callable[[], object] = weakref.ref(obj)
        except TypeError:  # not weakly referable (builtins): held, as before
            self._ref = lambda: obj

    def get(self) -> object:
        """The object, or ``None`` once it died."""
        return self._ref()

    def __hash__(self) -> int:
        return self._id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ById):
            return NotImplemented
        mine = self._ref()
        return mine is not None and mine is other._ref()

    def __repr__(self) -> str:
        return f"ById({type(self._ref()).__name__} at {self._id:#x})"


class _Key(tuple):
    """A key tuple that computes its hash once (a Flax graph definition hashes slowly)."""

    _hash: int

    def __new__(cls, parts: Any) -> _Key:
        key = super().__new__(cls, parts if isinstance(parts, tuple) else (parts,))
        key._hash = tuple.__hash__(key)
        return key

    def __hash__(self) -> int:
        return self._hash


class _Entry:
    """One compiled function, the models that use it (weakly) and the objects its key names."""

    __slots__ = ("value", "owners", "owned", "pins")

    def __init__(self, value: Any):
        self.value = value
        self.owners: dict[int, weakref.ref] = {}
        self.owned = False  # some owner was weakly referable: the entry dies with its owners
        self.pins: list[weakref.ref] = []

    def idle(self) -> bool:
        return self.owned and not any(ref() is not None for ref in self.owners.values())

    def unreachable(self) -> bool:
        return any(ref() is None for ref in self.pins)


def _schedule(key: Any) -> Callable[[weakref.ref], None]:
    def died(_: weakref.ref) -> None:  # a weakref callback: any thread, any moment
        try:
            _DIED.append(key)
        except AttributeError:  # the interpreter is shutting down (module globals are None)
            return
        if _LOCK.acquire(blocking=False):  # otherwise the next cache call prunes
            try:
                _prune()
            finally:
                _LOCK.release()

    return died


def _own(entry: _Entry, key: Any, owners: Iterable[object]) -> None:
    for owner in owners:
        known = entry.owners.get(id(owner))
        if owner is None or (known is not None and known() is owner):
            continue
        try:
            entry.owners[id(owner)] = weakref.ref(owner, _schedule(key))
        except TypeError:  # not weakly referable: the entry lives by the LRU bound alone
            continue
        entry.owned = True


def _pin(entry: _Entry, key: Any) -> None:
    parts = key if isinstance(key, tuple) else (key,)
    for part in parts:
        obj = part.get() if isinstance(part, ById) else None
        if obj is not None:
            try:
                entry.pins.append(weakref.ref(obj, _schedule(key)))
            except TypeError:
                pass


def _prune() -> None:
    """Drop unreachable entries and idle ones beyond ``IDLE_KEPT``; the bound. Under ``_LOCK``."""
    died = bool(_DIED)
    while _DIED:
        key = _DIED.pop()
        entry = _CACHE.get(key)
        if entry is None:
            continue
        entry.owners = {k: r for k, r in entry.owners.items() if r() is not None}
        if entry.unreachable():
            del _CACHE[key]
    if died:  # an entry turns idle only when an owner dies
        idle = [key for key, entry in _CACHE.items() if entry.idle()]  # least recently used first
        for key in idle[: max(len(idle) - IDLE_KEPT, 0)]:
            del _CACHE[key]
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)


def cached(key: Any, make: Callable[[], Any], owners: Iterable[object] = ()) -> Any:
    """``make()``, remembered under ``key`` while one of ``owners`` lives (``None``: not kept).

    ``ById`` parts of ``key`` pin the entry: it is dropped when their object dies.
    """
    if key is None:
        return make()
    key = _Key(key)
    with _LOCK:
        _prune()
        entry = _CACHE.get(key)
        if entry is not None:
            _CACHE.move_to_end(key)
            _own(entry, key, owners)
            return entry.value
    value = make()  # outside the lock: tracing may run user code, and weakref callbacks
    with _LOCK:
        entry = _CACHE.get(key)
        if entry is None:  # another thread may have made it meanwhile: keep theirs
            entry = _CACHE[key] = _Entry(value)
            _pin(entry, key)
        _CACHE.move_to_end(key)
        _own(entry, key, owners)
        _prune()
        return entry.value


def shapes(key: Any, make: Callable[[], Any]) -> Any:
    """``make()`` (feature shapes: no compiled code), remembered under ``key``."""
    if key is None:
        return make()
    key = _Key(key)
    with _LOCK:
        if key in _SHAPES:
            _SHAPES.move_to_end(key)
            return _SHAPES[key]
    value = make()
    with _LOCK:
        _SHAPES[key] = value
        while len(_SHAPES) > SHAPES_KEPT:
            _SHAPES.popitem(last=False)
    return value


def clear() -> None:
    """Forget every compiled function (they are freed once nothing else holds them)."""
    with _LOCK:
        _CACHE.clear()
        _SHAPES.clear()
        _LOSS_COMPILES.clear()
        _DIED.clear()


# -- loss functions -----------------------------------------------------------------------------

# Modules whose functions and submodules a loss_fn may use and still be keyed by value: their
# attributes do not change between calls.
TRUSTED = frozenset(
    {"jax", "jaxlib", "numpy", "flax", "optax", "math", "operator", "functools", "builtins"}
)
ARRAY_BYTES = 1 << 16  # arrays a loss_fn captures are compared by content up to this size
_DEPTH = 4  # functions a loss_fn calls through globals or closures, followed this deep


class _Opaque(Exception):
    """A captured value that cannot be compared by value (an object, a large array, ...)."""


def loss_key(loss_fn: Any) -> Any:
    """The part of the cache key that stands for ``loss_fn``.

    A plain Python function (or a ``functools.partial`` of one) is described by its code and the
    values it reads from outside: its closure, its defaults and the module globals its code
    names. If each of those is a number, a string, ``None``, a tuple of such, an array of at most
    ``ARRAY_BYTES`` (by content), a module or function of JAX / NumPy / Flax / optax, or another
    such plain function, two functions with equal descriptions compute the same thing and share
    the compiled optimisation. Anything else (an object, a bound method, a large array, a
    tracer) keys the function by identity, held weakly: a new function object compiles anew.
    """
    if loss_fn is None:
        return None
    try:
        key = ("value", _describe(loss_fn, _DEPTH, set()))
        hash(key)
        return key
    except Exception:  # noqa: BLE001 - _Opaque, or an object that resists description
        return ById(loss_fn)


LIFTED = _partial.LIFTED  # the placeholder of a lifted array, by value (iba._partial)


def lift_arrays(loss_fn: Any) -> tuple[Any, Any]:
    """``(template, data)``: the arrays bound in a ``functools.partial`` ``loss_fn`` taken out.

    ``data`` (``(args, kwargs)`` of arrays, or ``None`` when there are none) becomes an argument
    of the compiled optimisation, and ``template`` (the partial with :data:`LIFTED` in their
    places) is what :func:`loss_key` describes: ``partial(loss, embeddings)`` with new embeddings
    of the same shape reuses the compiled function (M2IB's similarity to each pair's other side).
    :func:`bind` puts the traced arrays back (``iba._partial``)."""
    return _partial.lift(loss_fn, _is_array, jax.numpy.asarray)


bind = _partial.bind  # the loss_fn of lift_arrays' template with the (traced) arrays


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) > 0


def _trusted(obj: Any) -> bool:
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(name, str) and name.partition(".")[0] in TRUSTED


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _describe(value: Any, depth: int, seen: set[int]) -> Any:
    """A hashable description of ``value`` that is equal only for values that act alike."""
    if value is None or isinstance(value, (bool, str, bytes, type(Ellipsis))):
        return (type(value).__name__, value)
    if isinstance(value, int):
        return ("int", type(value).__name__, value)
    if isinstance(value, float):
        return ("float", type(value).__name__, value.hex())  # -0.0 and NaN kept apart or equal
    if isinstance(value, complex):
        return ("complex", value.real.hex(), value.imag.hex())
    if isinstance(value, (tuple, frozenset)) and type(value) in (tuple, frozenset):
        items = sorted(value, key=repr) if isinstance(value, frozenset) else value
        return (type(value).__name__, tuple(_describe(v, depth, seen) for v in items))
    if isinstance(value, jax.core.Tracer):
        raise _Opaque
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return _describe_array(value)
    if isinstance(value, types.ModuleType):
        if _trusted(value):
            return ("module", value.__name__)
        raise _Opaque
    if isinstance(value, functools.partial) and type(value) is functools.partial:
        return (
            "partial",
            _describe(value.func, depth, seen),
            tuple(_describe(a, depth, seen) for a in value.args),
            tuple((k, _describe(v, depth, seen)) for k, v in sorted(value.keywords.items())),
        )
    if isinstance(value, types.FunctionType) and not _trusted(value):
        return _describe_function(value, depth, seen)
    if _library_function(value):  # jnp.mean, jax.nn.log_softmax, np.exp, jnp.float32, ...
        return ("library", value)
    raise _Opaque


# The kinds of library callables that a loss_fn may name (not objects with state, such as a
# Flax module instance).
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, np.ufunc, type)
_WRAPPER_TYPES = frozenset(
    {"PjitFunction", "custom_jvp", "custom_vjp", "_ArrayFunctionDispatcher", "_ScalarMeta"}
)


def _library_function(value: Any) -> bool:
    kind = isinstance(value, _FUNCTION_TYPES) or type(value).__name__ in _WRAPPER_TYPES
    return kind and _trusted(value) and _hashable(value)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _describe_array(value: Any) -> tuple:
    array = np.asarray(value)
    if array.dtype.hasobject or array.nbytes > ARRAY_BYTES:
        raise _Opaque
    return ("array", type(value).__name__, array.shape, array.dtype.str, array.tobytes())


def _describe_function(fn: types.FunctionType, depth: int, seen: set[int]) -> tuple:
    if id(fn) in seen:  # recursion: the code is already part of the description
        return ("again", fn.__code__)
    if depth <= 0:
        raise _Opaque
    seen = seen | {id(fn)}
    closure = tuple(_describe(cell.cell_contents, depth - 1, seen) for cell in fn.__closure__ or ())
    defaults = tuple(_describe(v, depth - 1, seen) for v in fn.__defaults__ or ())
    kwdefaults = tuple(
        (k, _describe(v, depth - 1, seen)) for k, v in sorted((fn.__kwdefaults__ or {}).items())
    )
    names = fn.__globals__
    globals_ = tuple(
        (name, _describe(names[name], depth - 1, seen))
        for name in sorted(_code_names(fn.__code__))
        if name in names
    )
    return ("function", fn.__code__, closure, defaults, kwdefaults, globals_)


def count_loss_compile(base: Any) -> None:
    """Count a new compilation for one model and settings (``base``) with a ``loss_fn``; warn
    once when ``LOSS_FN_WARN`` different ones were compiled."""
    base = _Key(base)
    with _LOCK:
        count, warned = _LOSS_COMPILES.pop(base, (0, False))
        count += 1
        warn = count >= LOSS_FN_WARN and not warned
        _LOSS_COMPILES[base] = count, warned or warn
        while len(_LOSS_COMPILES) > 64:  # models and settings counted (keys of a few bytes)
            _LOSS_COMPILES.popitem(last=False)
    if warn:
        warnings.warn(
            f"iba_jax has compiled the optimisation for {count} different loss_fn functions on "
            "the same model and settings: a loss_fn built anew for each call (a lambda or a "
            "closure over objects or large arrays) compiles anew every time, which takes "
            "seconds and memory. Pass the same loss_fn object to reuse the compiled function "
            "(for one class per call, pass target= instead)",
            RuntimeWarning,
            stacklevel=_user_stacklevel(),
        )


_PACKAGES = tuple(
    str(Path(__file__).resolve().parents[1] / name) + os.sep for name in ("iba", "iba_jax")
)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points ``warnings.warn`` (called by this module's caller) at the
    first frame outside ``iba``, ``iba_jax`` and ``contextlib``."""
    frame: types.FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None:
        filename = frame.f_code.co_filename
        inside = filename.endswith("contextlib.py") or os.path.abspath(filename).startswith(
            _PACKAGES
        )
        if not inside:
            return level
        frame, level = frame.f_back, level + 1
    return 1
