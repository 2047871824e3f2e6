"""The arrays bound in a ``functools.partial`` ``loss_fn``, taken out so that they become
arguments of an engine's compiled optimisation (docs/mathematics.md section 5: M2IB's similarity
to each pair's other side is ``partial(loss, embeddings)``).

:func:`lift` splits ``partial(f, *args, **keywords)`` into a *template* (the same partial with
:data:`LIFTED` where an array was) and the arrays ``(args, keywords)``; :func:`bind` rebuilds the
``loss_fn`` from the template and (traced) arrays inside the compiled function. An engine keys its
compiled step by the template (:func:`template_key`, or its own description of it), so a new
partial of the same function with new arrays of the same shapes reuses the step. NumPy only:
each engine says what an array is and how to convert one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

LIFTED = "<iba: an array argument of the compiled function>"  # a placeholder, compared by value

Lifted = tuple[tuple[Any, ...], dict[str, Any]]  # the arrays: positional, then by keyword


def is_numpy_array(value: Any) -> bool:
    """Whether ``value`` is a NumPy array of at least one axis (scalars stay in the template)."""
    return isinstance(value, np.ndarray) and value.ndim > 0


def lift(
    loss_fn: Any,
    is_array: Callable[[Any], bool] = is_numpy_array,
    convert: Callable[[Any], Any] = np.asarray,
) -> tuple[Any, Lifted | None]:
    """``(template, arrays)``: the values of ``loss_fn``'s partial arguments for which
    ``is_array`` holds, taken out and passed through ``convert``.

    ``loss_fn`` itself and ``None`` when it is not a ``functools.partial`` (exactly; not a
    subclass) or binds no array.
    """
    if type(loss_fn) is not functools.partial:
        return loss_fn, None
    args = tuple(LIFTED if is_array(a) else a for a in loss_fn.args)
    keywords = {k: LIFTED if is_array(v) else v for k, v in loss_fn.keywords.items()}
    arrays = tuple(convert(a) for a in loss_fn.args if is_array(a))
    named = {k: convert(v) for k, v in loss_fn.keywords.items() if is_array(v)}
    if not arrays and not named:
        return loss_fn, None
    return functools.partial(loss_fn.func, *args, **keywords), (arrays, named)


def bind(template: Any, arrays: Lifted | None) -> Any:
    """The ``loss_fn`` of :func:`lift`'s ``template`` with ``arrays`` (traced, in a compiled
    function) back in the places of :data:`LIFTED`."""
    if arrays is None:
        return template
    positional, named = iter(arrays[0]), arrays[1]
    args = [next(positional) if is_lifted(a) else a for a in template.args]
    keywords = {k: named[k] if is_lifted(v) else v for k, v in template.keywords.items()}
    return functools.partial(template.func, *args, **keywords)


def is_lifted(value: Any) -> bool:
    """Whether ``value`` is the placeholder of a lifted array."""
    return isinstance(value, str) and value == LIFTED


def template_key(template: Any) -> tuple | None:
    """A hashable key of a :func:`lift` template: its function (by identity) and the values bound
    beside the arrays; ``None`` if one of those is unhashable (then key the ``loss_fn`` itself).

    Two partials with equal keys compute the same thing given the same arrays; a different
    function object (even with the same code) gets another key.
    """
    if type(template) is not functools.partial:
        return None
    key = (  # with each value's type: 1, 1.0 and True are equal but may compute differently
        "partial",
        template.func,
        tuple((type(a), a) for a in template.args),
        tuple((k, type(v), v) for k, v in sorted(template.keywords.items())),
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key
