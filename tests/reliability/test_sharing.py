"""Sharing: two explainers on one model give what each gives alone, and two threads calling
``analyze`` on two copies of a model give the results of sequential runs, or (one explainer
shared by the threads, where its engine cannot run two calls at once) a clear error."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from contract.subjects import assert_same

from .conftest import fit
from .helpers import COMPILING, new_model

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore:the estimator has seen only"),
]

CALLS = 2  # per thread
ONE_AT_A_TIME = "this explainer is running analyze() already"  # PyTorch's shared explainer


def test_two_explainers_on_one_model(subject, fitted, clean_map):
    model = subject.model
    other = subject.explainer(subject.coiba)  # CoIBA at two layers, on the same model
    fit(other, subject)
    alone = other.analyze(model, subject.x, target=subject.labels)
    before = subject.snapshot(model)
    for _ in range(2):  # interleaved
        np.testing.assert_array_equal(
            fitted.analyze(model, subject.x, target=subject.labels), clean_map
        )
        np.testing.assert_array_equal(other.analyze(model, subject.x, target=subject.labels), alone)
    assert_same(before, subject.snapshot(model))


def test_an_explainer_called_from_another_s_loss_fn(subject, fitted, clean_map):
    """Eager backends call ``loss_fn`` in every step, with the outer explainer's bottlenecks in
    place; an inner explainer on the same model must see the model as it is (Keras: the
    ``IBALayer``s run the bottleneck only in the outer explainer's own forward passes)."""
    if subject.name in COMPILING:
        pytest.skip("this backend calls loss_fn while it traces it, not in the steps")
    outer = subject.explainer(subject.coiba)
    fit(outer, subject)
    inner = []
    base = subject.per_row_loss(subject.labels)

    def loss_fn(outputs):
        if not inner:
            inner.append(fitted.analyze(subject.model, subject.x, target=subject.labels))
        return base(outputs)

    outer.analyze(subject.model, subject.x, loss_fn=loss_fn)
    np.testing.assert_array_equal(inner[0], clean_map)


def _swap(subject):
    """The subject's two inputs in the other order, with their labels."""
    x = subject.x
    flipped = x.flip(0) if hasattr(x, "flip") else x[::-1]
    return flipped, subject.labels[::-1].copy()


def _in_threads(work):
    """``work(0)`` and ``work(1)`` in two threads started together; their results or errors."""
    results: list = [None, None]
    start = threading.Barrier(2)

    def run(i):
        start.wait()
        try:
            results[i] = work(i)
        except Exception as err:  # noqa: BLE001 - reported to the test
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return results


@pytest.mark.parametrize("shared", [False, True], ids=["own-explainers", "one-explainer"])
def test_two_threads_on_two_copies(subject, fitted, shared):
    models = [new_model(subject) for _ in range(2)]
    inputs = [(subject.x, subject.labels), _swap(subject)]
    if shared:
        explainers = [subject.explainer(estimators=fitted.estimators)] * 2
    else:
        explainers = [subject.explainer(estimators=fitted.estimators) for _ in range(2)]
    want = [e.analyze(m, x, target=t) for e, m, (x, t) in zip(explainers, models, inputs)]
    before = [subject.snapshot(m) for m in models]

    def work(i):
        x, t = inputs[i]
        out = []
        for _ in range(CALLS):
            try:
                out.append(explainers[i].analyze(models[i], x, target=t))
            except RuntimeError as err:
                if not (shared and subject.name == "torch" and ONE_AT_A_TIME in str(err)):
                    raise
                out.append(err)
        return out

    results = _in_threads(work)
    for i, got in enumerate(results):
        assert not isinstance(got, Exception), f"thread {i}: {got!r}"
        for maps in got:
            if isinstance(maps, RuntimeError):  # PyTorch: the other thread held the explainer
                continue
            np.testing.assert_array_equal(maps, want[i], err_msg=f"thread {i}")
    for i, model in enumerate(models):
        assert_same(before[i], subject.snapshot(model), f"model {i}")
