"""What ``iba_jax`` keeps compiled between calls (``iba_jax._cache``, docs/reliability.md).

Entries die with their model, the number kept is bounded, an entry holds no array of the model
or the data, and a ``loss_fn`` rebuilt for every call reuses the compiled function when its code
and captured values are the same (and only then); many distinct ones give one warning.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import warnings
import weakref

import flax_models as fm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from iba_jax import IBA, _cache

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")

LABELS = np.array([1, 2])
LABEL = 1  # read as a global by a loss_fn below


class NNXProbe(fm.NNXTinyCNN):
    """A model class of this file alone: its compiled functions are shared with no other test."""


class LinenProbe(fm.TinyCNN):
    """As ``NNXProbe``, in Linen."""


class TraceCount:
    """JAX traces (``jax.monitoring`` events) while the block runs."""

    def __enter__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, seconds, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            self.count += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


@pytest.fixture(scope="module")
def images():
    data = np.random.default_rng(0).standard_normal((16, 8, 8, 1)).astype(np.float32)
    return data, data[:2]


def nnx_probe(seed: int = 0) -> NNXProbe:
    return NNXProbe(nnx.Rngs(seed))


def linen_probe(images) -> tuple:
    module = LinenProbe()
    return module, module.init(jax.random.key(0), jnp.asarray(images[0][:1]))


@pytest.fixture(scope="module")
def explainer(images):
    """Estimated once on an NNX probe; the statistics fit every probe of these tests."""
    explainer = IBA("relu2", steps=2, batch_size=2)
    explainer.estimate(nnx_probe(), images[0], progress=False)
    return explainer


@pytest.fixture(scope="module")
def sensitive(explainer):
    """With a small ``beta`` and a few steps, so that the heatmaps depend on the loss."""
    return IBA("relu2", steps=4, batch_size=2, beta=1e-3, estimators=explainer.estimators)


def owned_by(model_part) -> list:
    return [key for key, entry in _cache._CACHE.items() if id(model_part) in entry.owners]


def compiled_functions(keys) -> list:
    """Weak references to the jitted functions of these entries."""
    values = [_cache._CACHE[key].value for key in keys]
    return [weakref.ref(v[0] if isinstance(v, tuple) else v) for v in values]


def per_row_loss(labels):
    """The classification loss as a loss_fn, built anew (a closure over a small array)."""
    rows = jnp.asarray(np.repeat(labels, 2))
    return lambda out: -jnp.take_along_axis(jax.nn.log_softmax(out), rows[:, None], 1)[:, 0]


class Holder:
    """An object: a loss_fn that closes over one is keyed by identity."""

    def __init__(self, labels):
        self.loss = per_row_loss(labels)


def opaque_loss(labels):
    holder = Holder(labels)
    return lambda out: holder.loss(out)


# -- entries die with their model -------------------------------------------------------------


def test_the_entries_of_an_nnx_model_die_with_it(explainer, images, monkeypatch):
    monkeypatch.setattr(_cache, "IDLE_KEPT", 0)
    model = nnx_probe()
    explainer.analyze(model, images[1], target=LABELS)
    keys = owned_by(model)
    assert [k[0] for k in keys] == ["capture", "analysis"]
    functions = compiled_functions(keys)
    del model
    gc.collect()
    assert not any(key in _cache._CACHE for key in keys)
    assert all(ref() is None for ref in functions), "a compiled function outlived its model"


def test_the_entries_of_a_linen_module_die_with_it(explainer, images, monkeypatch):
    monkeypatch.setattr(_cache, "IDLE_KEPT", 0)
    module, variables = linen_probe(images)
    explainer.analyze((module, variables), images[1], target=LABELS)
    explainer.analyze(module.bind(variables), images[1], target=LABELS)  # the same entries
    keys = owned_by(module)
    assert [k[0] for k in keys] == ["capture", "analysis"]
    functions = compiled_functions(keys)
    del module, variables
    gc.collect()
    assert not any(key in _cache._CACHE for key in keys)
    assert all(ref() is None for ref in functions)


def test_a_loop_over_new_copies_of_a_model_compiles_once(explainer, images):
    state = nnx.state(nnx_probe(1))
    with TraceCount() as traces:
        for i in range(3):
            model = nnx_probe()  # a new object each time: the previous one dies
            nnx.update(model, state)
            explainer.analyze(model, images[1], target=LABELS)
            if i == 0:
                first = traces.count
    assert first > 0 and traces.count == first  # the idle entries were picked up again
    del model
    gc.collect()
    idle = [entry for entry in _cache._CACHE.values() if entry.idle()]
    assert len(idle) <= _cache.IDLE_KEPT


def test_the_number_of_compiled_functions_is_bounded(explainer, images, monkeypatch):
    monkeypatch.setattr(_cache, "CACHE_SIZE", 3)
    model = nnx_probe()
    for beta in (1.0, 2.0, 3.0, 4.0):  # a new optimisation (config) each time
        monkeypatch.setattr(explainer, "config", dataclasses.replace(explainer.config, beta=beta))
        explainer.analyze(model, images[1], target=LABELS)
        assert len(_cache._CACHE) <= 3
    assert owned_by(model)[-1][0] == "analysis"  # the most recent one is kept


def test_an_entry_holds_no_array_of_the_model_or_the_inputs(explainer, images):
    model = nnx_probe()
    with explainer.planned(model, images[1], target=LABELS) as (run, plan):
        fn, args, _ = run.compiled(plan)
        consts = fn.trace(*args).jaxpr.consts
    params = [np.asarray(p) for p in jax.tree.leaves(nnx.state(model))]
    big = [np.shape(c) for c in consts if np.size(c) > 64]  # the smoothing matrices are 8 x 8
    assert big == [], f"constants in the compiled function: {big}"
    for const in consts:
        assert not any(np.shape(const) == p.shape and np.allclose(const, p) for p in params)


# -- loss_fn keys -------------------------------------------------------------------------------


def test_loss_keys_compare_code_and_captured_values():
    key = _cache.loss_key
    assert key(per_row_loss(LABELS)) == key(per_row_loss(LABELS))
    assert key(per_row_loss(LABELS)) != key(per_row_loss(LABELS[::-1]))
    assert key(lambda out, k=1: out[:, k]) != key(lambda out, k=2: out[:, k])
    assert key(lambda out: out[:, 1]) != key(lambda out: out[:, 1.0])  # int and float apart
    scaled = functools.partial(np.multiply, 2.0)
    assert key(functools.partial(np.multiply, 2.0)) == key(scaled)
    # objects, bound methods, large arrays: by identity
    assert isinstance(key(opaque_loss(LABELS)), _cache.ById)
    assert isinstance(key(Holder(LABELS).loss.__call__), _cache.ById)
    big = np.zeros(_cache.ARRAY_BYTES // 4 + 1, np.float32)
    assert isinstance(key(lambda out: out + big[0]), _cache.ById)
    # a mutated NumPy array gives another key (the compiled function holds the old values)
    rows = np.array([1, 2])

    def loss(out):
        return out[:, rows]

    before = key(loss)
    rows[0] = 0
    assert key(loss) != before


def test_a_rebuilt_loss_fn_reuses_the_compiled_function(sensitive, images):
    model = nnx_probe()
    first = sensitive.analyze(model, images[1], loss_fn=per_row_loss(LABELS))
    with TraceCount() as traces:
        again = sensitive.analyze(model, images[1], loss_fn=per_row_loss(LABELS))
    assert traces.count == 0
    np.testing.assert_array_equal(again, first)
    other = sensitive.analyze(model, images[1], loss_fn=per_row_loss(LABELS[::-1]))
    want = sensitive.analyze(model, images[1], target=LABELS[::-1])
    np.testing.assert_allclose(other, want, rtol=1e-5)
    assert not np.allclose(other, first)


def weighted_loss(weights, out):
    """A loss with per-input data, bound with functools.partial (as M2IB's similarity)."""
    return -(jax.nn.log_softmax(out) * jnp.repeat(weights, 2, axis=0)).sum(1)


def test_the_arrays_of_a_partial_loss_fn_are_arguments_not_constants(sensitive, images):
    """``partial(loss, data)`` with other data of the same shape runs the compiled function
    again, with the new data (the arrays are arguments: ``_cache.lift_arrays``)."""
    model = nnx_probe(3)
    first, second = np.eye(10)[[1, 2]], np.eye(10)[[2, 1]]
    a = sensitive.analyze(model, images[1], loss_fn=functools.partial(weighted_loss, first))
    with TraceCount() as traces:
        b = sensitive.analyze(model, images[1], loss_fn=functools.partial(weighted_loss, second))
    assert traces.count == 0
    np.testing.assert_allclose(a, sensitive.analyze(model, images[1], target=[1, 2]), rtol=1e-5)
    np.testing.assert_allclose(b, sensitive.analyze(model, images[1], target=[2, 1]), rtol=1e-5)
    assert not np.allclose(a, b)
    template, data = _cache.lift_arrays(functools.partial(weighted_loss, first))
    assert template.args == (_cache.LIFTED,) and data[0][0].shape == (2, 10)
    assert _cache.lift_arrays(weighted_loss) == (weighted_loss, None)


def test_a_global_that_the_loss_fn_reads_is_part_of_its_key(sensitive, images, monkeypatch):
    model = nnx_probe()
    maps = {}
    for label in (1, 3):
        monkeypatch.setitem(globals(), "LABEL", label)
        loss = lambda out: -jax.nn.log_softmax(out)[:, LABEL]  # noqa: E731 - rebuilt per call
        maps[label] = sensitive.analyze(model, images[1], loss_fn=loss)
    want = sensitive.analyze(model, images[1], target=np.array([3, 3]))
    np.testing.assert_allclose(maps[3], want, rtol=1e-5)
    assert not np.allclose(maps[1], maps[3])


def test_an_opaque_loss_fn_entry_dies_with_it(explainer, images):
    model = nnx_probe()
    loss = opaque_loss(LABELS)
    explainer.analyze(model, images[1], loss_fn=loss)
    (key,) = [k for k in owned_by(model) if k[0] == "analysis"]
    assert isinstance(key[-1], _cache.ById)
    del loss
    gc.collect()
    assert key not in _cache._CACHE


def test_many_loss_fns_on_one_model_warn_once(explainer, images, monkeypatch):
    monkeypatch.setattr(_cache, "LOSS_FN_WARN", 2)
    model = nnx_probe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            explainer.analyze(model, images[1], loss_fn=opaque_loss(LABELS))
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "pass the same loss_fn object" in str(ours[0].message).lower()
    assert ours[0].filename == __file__  # points at the caller
