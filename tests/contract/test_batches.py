"""``analyze_batches``: a data set explained batch by batch, the maps of ``analyze`` per batch."""

from __future__ import annotations

import numpy as np
import pytest

from .subjects import assert_same

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")

SIZES = (3, 1, 2)  # rows per batch: 6 inputs of the subject's data
LABELS = np.array([3, 7, 1, 0, 9, 4])


def batches(subject, with_labels=True):
    """The subject's first 6 data inputs as batches of ``SIZES`` rows (with their labels)."""
    out, start = [], 0
    for size in SIZES:
        x = subject.rows(subject.data, start, start + size)
        out.append((x, LABELS[start : start + size]) if with_labels else x)
        start += size
    return out


def per_batch(subject, explainer, **kwargs):
    """``analyze`` on each batch, joined: what ``analyze_batches`` must give."""
    parts = [
        explainer.analyze(subject.model, x, target=labels, **kwargs)
        for x, labels in batches(subject)
    ]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def seeded(subject, fitted):
    return per_batch(subject, fitted, seed=5)


def test_maps_are_those_of_analyze_per_batch(subject, fitted, seeded):
    maps = fitted.analyze_batches(
        subject.model, batches(subject), target="labels", seed=5, progress=False
    )
    assert isinstance(maps, np.ndarray) and maps.dtype == np.float64
    assert maps.shape == (6, 8, 8)
    np.testing.assert_array_equal(maps, seeded)
    # without a background thread, and with a bar: the same maps
    again = fitted.analyze_batches(
        subject.model, batches(subject), target="labels", seed=5, prefetch=0, progress=True
    )
    np.testing.assert_array_equal(again, seeded)


def test_targets_per_input_and_the_default_seed(subject, fitted):
    want = per_batch(subject, fitted)  # neither seed nor noise: DEFAULT_SEED
    got = fitted.analyze_batches(
        subject.model, batches(subject, with_labels=False), target=LABELS, progress=False
    )
    np.testing.assert_array_equal(got, want)


def test_one_array_in_chunks_into_out(subject, fitted):
    x = subject.rows(subject.data, 0, 5)
    want = np.concatenate(
        [
            fitted.analyze(subject.model, subject.rows(x, 0, 2), target=4, seed=1),
            fitted.analyze(subject.model, subject.rows(x, 2, 4), target=4, seed=1),
            fitted.analyze(subject.model, subject.rows(x, 4, 5), target=4, seed=1),
        ]
    )
    out = np.zeros((5, 8, 8), np.float32)
    got = fitted.analyze_batches(
        subject.model, x, target=4, seed=1, chunk=2, out=out, progress=False
    )
    assert got is out
    np.testing.assert_array_equal(out, want.astype(np.float32))
    seen = []
    count = fitted.analyze_batches(
        subject.model,
        x,
        target=4,
        seed=1,
        chunk=2,
        out=lambda i, m: seen.append((i, m)),
        progress=False,
    )
    assert count == 5 and [i for i, _ in seen] == [0, 2, 4]
    np.testing.assert_array_equal(np.concatenate([m for _, m in seen]), want)


def test_bad_input_raises_and_leaves_the_model(subject, fitted):
    model = subject.model
    before = subject.snapshot(model)
    data = batches(subject)
    cases = [
        ({"target": 1, "loss_fn": lambda o: o}, ValueError, "exactly one of target"),
        ({"target": "classes"}, ValueError, "or 'labels'"),
        ({"target": 1, "out": "maps.npy"}, TypeError, "out must be None, an array"),
        ({"target": 1, "out": np.zeros((4, 8, 8))}, ValueError, "out has 4 rows"),
        ({"target": LABELS[:4]}, ValueError, "target holds 4 class indices"),
        ({"target": 1, "chunk": 0}, ValueError, "chunk must be a positive int"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            fitted.analyze_batches(model, data, progress=False, **kwargs)
    with pytest.raises(ValueError, match="target='labels' needs \\(inputs, labels\\)"):
        fitted.analyze_batches(model, [subject.x], target="labels", progress=False)
    with pytest.raises(ValueError, match="data holds no inputs"):
        fitted.analyze_batches(model, [], target=1, progress=False)

    def failing():
        yield data[0]
        raise OSError("the disk is gone")

    with pytest.raises(OSError, match="the disk is gone"):
        fitted.analyze_batches(model, failing(), target="labels", progress=False)
    assert_same(before, subject.snapshot(model))
