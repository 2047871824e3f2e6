"""The reliability suite (issue #17): one set of tests, run on the backend that ``IBA_BACKEND``
names, as the contract suite (``tests/contract``) whose subjects it reuses.

Attribution runs are long loops in notebooks and training scripts; these tests check what such a
loop relies on: repeated ``analyze`` calls neither grow memory nor compile anew; an exception or
an interruption leaves the model exactly as it was and the next call equal to a clean one; two
explainers, or two threads, give the results of sequential runs; bad input gets a clear error
that names the argument, and a failed save never replaces a good file. With ``IBA_BACKEND=numpy``
or unset the folder collects nothing. Every test is marked ``reliability`` (``-m reliability``).

This folder is a package (``__init__.py``), like ``tests/contract``: pytest imports both as
``contract`` and ``reliability`` from ``tests/``, so ``contract.subjects`` is one module.
"""

from __future__ import annotations

import os

import pytest

BACKEND = os.environ.get("IBA_BACKEND", "").strip() or "numpy"

if BACKEND == "numpy":
    collect_ignore_glob = ["test_*.py"]
elif not BACKEND.startswith("keras-"):
    collect_ignore = ["test_keras_files.py"]
else:  # as in tests/contract/conftest.py
    os.environ.setdefault("KERAS_BACKEND", BACKEND.removeprefix("keras-"))
    if BACKEND == "keras-jax":  # tiny programs: compile time dominates
        os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

from contract import conftest as contract  # noqa: E402

subject = contract.subject  # the backend's subject fixture (Flax: Linen and NNX), shared
fit = contract.fit


def pytest_report_header(config):
    return f"reliability suite: IBA_BACKEND={BACKEND}"


@pytest.fixture(scope="session")
def fitted(subject):
    """This suite's own explainer at the subject's target, estimated (its compiled functions are
    counted by the tests)."""
    explainer = subject.explainer()
    fit(explainer, subject)
    return explainer


@pytest.fixture(scope="session")
def clean_map(subject, fitted):
    """The heatmaps of the subject's two inputs from a clean call (default noise)."""
    return fitted.analyze(subject.model, subject.x, target=subject.labels)
