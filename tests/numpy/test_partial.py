"""``iba._partial``: the arrays of a ``functools.partial`` loss_fn lifted out and bound back, and
the key of what remains (the engines' compiled steps take the arrays as arguments)."""

from __future__ import annotations

import functools

import numpy as np

from iba import _partial


def weighted(other, outputs, *, scale, weights=None):
    extra = 0.0 if weights is None else weights.sum()
    return scale * (outputs @ other).sum(1) + extra


def test_lift_and_bind_give_the_same_loss():
    other, weights = np.arange(6.0).reshape(3, 2), np.array([1.0, 2.0])
    loss_fn = functools.partial(weighted, other, scale=0.5, weights=weights)
    template, arrays = _partial.lift(loss_fn)
    assert template.func is weighted and template.args == (_partial.LIFTED,)
    assert template.keywords == {"scale": 0.5, "weights": _partial.LIFTED}
    assert arrays is not None and len(arrays[0]) == 1 and list(arrays[1]) == ["weights"]
    np.testing.assert_array_equal(arrays[0][0], other)
    np.testing.assert_array_equal(arrays[1]["weights"], weights)
    outputs = np.ones((4, 3))
    np.testing.assert_array_equal(_partial.bind(template, arrays)(outputs), loss_fn(outputs))
    # the converter: what an engine passes to its compiled function
    _, halves = _partial.lift(loss_fn, convert=lambda a: a.astype(np.float32))
    assert halves is not None and halves[0][0].dtype == np.float32


def test_nothing_to_lift():
    scalar = functools.partial(weighted, np.float64(2.0), scale=np.array(1.0))  # 0-d: kept
    for loss_fn in (weighted, scalar, functools.partial(weighted, scale=1.0)):
        assert _partial.lift(loss_fn) == (loss_fn, None)
    assert _partial.bind(weighted, None) is weighted


def test_template_key():
    def template(*args, **keywords):
        return _partial.lift(functools.partial(weighted, *args, **keywords))[0]

    a, b = np.zeros((2, 3)), np.ones((2, 3))
    assert _partial.template_key(template(a, scale=1)) == _partial.template_key(
        template(b, scale=1)
    )
    # another value beside the arrays, or the same number of another type: another key
    assert _partial.template_key(template(a, scale=1)) != _partial.template_key(
        template(a, scale=2)
    )
    assert _partial.template_key(template(a, scale=1)) != _partial.template_key(
        template(a, scale=1.0)
    )
    assert _partial.template_key(template(a, scale=[1])) is None  # unhashable
    assert _partial.template_key(weighted) is None
