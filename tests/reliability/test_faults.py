"""Faults in the middle of a call, again and again: an exception in ``loss_fn``, an exception in the
model's forward pass at a later optimisation step, a ``KeyboardInterrupt`` (raised by ``loss_fn``,
or arriving like Ctrl-C at a later step, also inside compiled code), and an interrupted
``estimate``. After each: the model exactly as before (weights, hooks and interceptors, train /
eval mode, ``requires_grad``, the ``IBALayer``s' weights and switches, the NNX module tree), the
explainer at rest, nothing compiled anew, and the next call equal to a clean one."""

from __future__ import annotations

import numpy as np
import pytest
from contract.subjects import TRIPWIRE, assert_same, draw_noise

from .helpers import COMPILING, Compiled, Interrupter, explainer_state, interrupted

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore:the estimator has seen only"),
]

ROUNDS = 2  # each fault twice: the second round must find everything as the first left it


class Broken(Exception):
    pass


def raise_broken(outputs):
    raise Broken("inside the loss")


def test_faults_in_a_row_leave_nothing_behind(subject, fitted):
    model, trip = subject.model, subject.trip_model
    interrupter = Interrupter(subject, at=2)
    noise = draw_noise(subject, 0)

    def clean_calls():
        with TRIPWIRE.armed():
            return (
                fitted.analyze(model, subject.x, loss_fn=interrupter),
                fitted.analyze(trip, subject.x, target=subject.labels, noise=noise),
            )

    want = clean_calls()  # compiles what the faults below reuse
    # what the interruption relies on: compiling backends trace loss_fn once, eager ones call it
    # in every step
    assert interrupter.traced == (1 if subject.name in COMPILING else fitted.config.updates)
    before = {"model": subject.snapshot(model), "trip": subject.snapshot(trip)}
    at_rest = explainer_state(subject, fitted)
    probe = Compiled(subject.name, fitted)
    kept = probe.kept()
    try:
        for _ in range(ROUNDS):
            with pytest.raises(Broken, match="inside the loss"):
                fitted.analyze(model, subject.x, loss_fn=raise_broken)
            with TRIPWIRE.armed(at=2), pytest.raises(Exception, match="tripwire: raised on call 2"):
                fitted.analyze(trip, subject.x, target=subject.labels, noise=noise)
            assert TRIPWIRE.calls == 2
            err = interrupter.run(lambda: fitted.analyze(model, subject.x, loss_fn=interrupter))
            assert interrupted(err), f"the interruption did not stop analyze(): {err!r}"
            assert interrupter.calls >= 2  # it came at the second step, not before
            assert_same(before, {"model": subject.snapshot(model), "trip": subject.snapshot(trip)})
            assert explainer_state(subject, fitted) == at_rest
            got = clean_calls()
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
        # the failing loss compiles its own (failed) program on every call; nothing else is new
        assert probe.kept() <= kept + (0 if subject.name == "torch" else 1)
    finally:
        probe.close()


def test_keyboard_interrupt_raised_by_loss_fn(subject, fitted, clean_map):
    """``KeyboardInterrupt`` is no ``Exception``: cleanup must not depend on ``except
    Exception``. Eager backends call ``loss_fn`` in the first step, compiling ones while they
    trace it."""
    model = subject.model
    before = subject.snapshot(model)
    at_rest = explainer_state(subject, fitted)

    def interrupt(outputs):
        raise KeyboardInterrupt("from loss_fn")

    for _ in range(ROUNDS):
        with pytest.raises(KeyboardInterrupt, match="from loss_fn"):
            fitted.analyze(model, subject.x, loss_fn=interrupt)
        assert_same(before, subject.snapshot(model))
        assert explainer_state(subject, fitted) == at_rest
    np.testing.assert_array_equal(
        fitted.analyze(model, subject.x, target=subject.labels), clean_map
    )


def test_an_interrupted_estimate_changes_nothing(subject, fitted):
    explainer = subject.explainer(estimators=fitted.estimators)
    estimators = explainer.estimators
    before = subject.snapshot(subject.model)
    stored = explainer.engine.stored_estimators(subject.model)  # Keras: in the IBALayers

    def batches():
        yield subject.rows(subject.data, 0, 16)
        yield subject.rows(subject.data, 16, 32)
        raise KeyboardInterrupt("while reading the data")

    with pytest.raises(KeyboardInterrupt, match="while reading the data"):
        explainer.estimate(subject.model, batches(), progress=False)
    assert explainer.estimators == estimators  # the same objects: nothing half-fitted
    assert_same(before, subject.snapshot(subject.model))
    after = explainer.engine.stored_estimators(subject.model)
    if stored is not None:
        assert after is not None
        for a, b in zip(stored, after):
            assert_same(a.to_arrays(), b.to_arrays())
