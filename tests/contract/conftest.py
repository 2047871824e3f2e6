"""The contract suite: one set of tests, run on the backend that ``IBA_BACKEND`` names.

Each nox test session sets ``IBA_BACKEND`` (``torch``, ``keras-tensorflow``, ``keras-jax``,
``keras-torch``, ``flax``) and has only its framework installed. With ``IBA_BACKEND=numpy`` or
unset there is no framework to test: the folder collects nothing. For Flax the contract runs on a
Linen and on an NNX model. The subjects (models, inputs, snapshots) are in ``subjects.py``.

This folder is a package (``__init__.py``): its modules do not clash with the backends' own
``conftest`` and ``test_*.py`` modules when both folders run in one pytest call.
"""

from __future__ import annotations

import os
import warnings

import pytest

BACKEND = os.environ.get("IBA_BACKEND", "").strip() or "numpy"

if BACKEND == "numpy":
    collect_ignore_glob = ["test_*.py"]
elif BACKEND.startswith("keras-"):
    os.environ.setdefault("KERAS_BACKEND", BACKEND.removeprefix("keras-"))
    if BACKEND == "keras-jax":  # tiny programs: compile time dominates (as tests/keras)
        os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

from .subjects import N_DATA, make, subject_names  # noqa: E402


def pytest_report_header(config):
    return f"contract suite: IBA_BACKEND={BACKEND}"


@pytest.fixture(scope="session", params=subject_names(BACKEND))
def subject(request):
    """The backend's subject (Flax: a Linen and an NNX one)."""
    return make(request.param)


def fit(explainer, subject, **kwargs):
    """``explainer.estimate`` on the subject's data, without the few-samples warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return explainer.estimate(subject.model, subject.data, progress=False, **kwargs)


@pytest.fixture(scope="session")
def fitted(subject):
    """An explainer at the subject's target, estimated on its ``N_DATA`` samples."""
    explainer = subject.explainer()
    fit(explainer, subject)
    assert explainer.estimators[0].n_samples == N_DATA
    return explainer


@pytest.fixture(scope="session")
def base_map(subject, fitted):
    """The heatmaps of the subject's two inputs with the default noise (neither noise nor seed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fitted.analyze(subject.model, subject.x, target=subject.labels)


@pytest.fixture(scope="session")
def coiba(subject):
    """A CoIBA explainer at the subject's two targets, estimated."""
    explainer = subject.explainer(subject.coiba)
    fit(explainer, subject)
    return explainer
