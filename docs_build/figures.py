"""The figures of the documentation's method pages, computed by the site's build (``hooks.py``)
with the bundled models on PyTorch.

Every figure goes through the library's public API or the command line: ``iba demo`` (IBA on
the three bundled photos), ``iba demo --text`` (the MiniLM sentiment classifier), the pairs of
``iba demo --pairs`` (M2IB), the torch runner's ``IBA`` over two blocks (CoIBA) and
``iba_torch.Readout``; the drawing is ``iba.plot``'s, ``iba.textplot``'s and ``iba.pairplot``'s.
Sample counts are small so that a clean build stays within minutes on 2 CPU cores; each figure's
caption states them (:data:`FIGURES`).

Caching, under :func:`cache_dir` (``$IBA_DOCS_CACHE``, default ``.docs-cache/`` in the
repository, gitignored): the fitted estimators and the readout network (``estimators/``, also the
command line's ``IBA_CACHE`` during the build) and the figures themselves (``figures/``), each
kept with a key of its settings, its draw function and the library's source, so that a figure is
computed again only when something it depends on changed.

Run ``python -m docs_build.figures`` from the repository to compute them without MkDocs.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# What the figures are computed from (small: the build runs on 2 CPU cores).
SAMPLES = 200  # random crops the image estimators are fitted on (the command line: 1,000)
LAYER = "_blocks.4"  # the command line's default layer of EfficientNet-Lite0 (28 x 28 x 40)
COIBA_LAYERS = ("_blocks.3", "_blocks.4")  # two blocks of one size (28 x 28)
TEXT_SAMPLES = 300  # Rotten Tomatoes training snippets of the text estimator (default 2,000)
PAIRS = 4  # the first pairs of iba.demo.pairs: two photo pairs, each with one caption per half
READOUT = ("_blocks.4", ("_blocks.10", "_fc"))  # the bottleneck and the layers it reads
READOUT_TRAIN = 64  # random crops (another seed) the readout network is trained on
READOUT_EPOCHS = 2
READOUT_LR = 1e-3  # the paper's 1e-5 moves the network too little in so few steps
DPI = 80

# The library's sources the figures depend on: a change to any of them computes them again (as
# does a change of a figure's caption, which states its settings, or of its draw function).
SOURCES = ("iba", "iba_torch")


class Figure(NamedTuple):
    """One figure: its file name, its caption (Markdown) and the function that draws it."""

    name: str
    caption: str
    draw: Callable[[Context, Path], None]


def cache_dir() -> Path:
    """Where the build keeps estimators and figures: ``$IBA_DOCS_CACHE``, else ``.docs-cache/``."""
    return Path(os.environ.get("IBA_DOCS_CACHE") or ROOT / ".docs-cache")


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class Context:
    """What the figures share within one build: the torch runner of the bundled EfficientNet-Lite0,
    the demo's photos and heatmaps, and the caches."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.estimators = cache / "estimators"
        self.estimators.mkdir(parents=True, exist_ok=True)
        self._work = cache / "work"
        self._runner: Any = None
        self._demo: list[np.ndarray] | None = None

    @property
    def runner(self) -> Any:
        """The command line's torch runner (the bundled EfficientNet-Lite0)."""
        if self._runner is None:
            from iba.demo import runners

            self._runner = runners.runner("torch")
        return self._runner

    def work(self, name: str) -> Path:
        """An empty scratch folder ``name``."""
        folder = self._work / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def cli(self, argv: list[str]) -> None:
        """Run ``iba ARGV`` with the build's estimator cache; its printout is kept out of the
        build's log unless it fails."""
        from iba import cli

        printed = io.StringIO()
        with _environment("IBA_CACHE", str(self.estimators)), contextlib.redirect_stdout(printed):
            with contextlib.redirect_stderr(printed):
                status = cli.main([*argv, "--quiet"])
        if status != 0:
            raise RuntimeError(f"iba {' '.join(argv)} failed ({status}): {printed.getvalue()}")

    def crops(self) -> np.ndarray:
        """The demo's three photos, centre crops ``(3, 224, 224, 3)`` uint8."""
        from iba.demo import photos

        return np.stack([photos.center_crop(photos.photo(n))[0] for n in photos.EXPLAINED])

    def titles(self, crops: np.ndarray) -> list[str]:
        """``name: class (probability)`` of each demo photo, from the bundled classifier."""
        from iba.demo import photos

        probabilities = self.runner.predict(crops)
        classes = photos.imagenet_classes()
        return [
            f"{name}: {classes[p.argmax()]} ({p.max():.0%})"
            for name, p in zip(photos.EXPLAINED, probabilities)
        ]

    def demo_maps(self) -> list[np.ndarray]:
        """The heatmaps of ``iba demo --samples SAMPLES`` (IBA at :data:`LAYER`), bits."""
        if self._demo is None:
            from iba.demo import photos

            out = self.work("demo")
            self.cli(["demo", "--layer", LAYER, "--samples", str(SAMPLES), "--out", str(out)])
            self._demo = [np.load(out / f"{name}.npy") for name in photos.EXPLAINED]
        return self._demo

    def fitted(self, explainer: Any, key: str, n: int) -> Any:
        """``explainer`` with its estimators loaded from the cache, or fitted on ``n`` random
        crops of the bundled photos (the command line's data) and cached."""
        import iba
        from iba.demo import photos

        path = self.estimators / f"{key}_{n}.npz"
        if path.is_file():
            explainer.estimators = iba.load_estimators(path)
        else:
            self.runner.estimate(explainer, photos.random_crops(n=n), n, progress=False)
            iba.save_estimators(path, explainer.estimators)
        return explainer


def _save(fig: Any, path: Path) -> None:
    from matplotlib import pyplot as plt

    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _two_rows(ctx: Context, path: Path, second: list[np.ndarray], label: str) -> None:
    """The demo's photos with IBA's maps (first row) and ``second`` (second row)."""
    import iba.plot

    crops = ctx.crops()
    titles = ctx.titles(crops)
    fig = iba.plot.grid(
        [*crops, *crops],
        [*ctx.demo_maps(), *second],
        titles=[f"IBA: {t}" for t in titles] + [f"{label}: {t.split(':')[0]}" for t in titles],
        columns=len(crops),
    )
    _save(fig, path)


def draw_iba(ctx: Context, path: Path) -> None:
    """IBA (``iba demo``) on the three bundled photos."""
    import iba.plot

    crops = ctx.crops()
    _save(iba.plot.grid(list(crops), ctx.demo_maps(), ctx.titles(crops), columns=3), path)


def draw_coiba(ctx: Context, path: Path) -> None:
    """IBA at one block against CoIBA over two, on the bundled photos."""
    from iba_torch import IBA

    run = ctx.runner
    coiba = ctx.fitted(IBA(list(COIBA_LAYERS)), "coiba-" + "-".join(COIBA_LAYERS), SAMPLES)
    crops = ctx.crops()
    targets = run.predict(crops).argmax(1)
    maps = run.analyze(coiba, crops, targets)
    _two_rows(ctx, path, list(maps), "CoIBA")


def draw_readout(ctx: Context, path: Path) -> None:
    """IBA against a Readout Bottleneck trained briefly, on the bundled photos."""
    import torch

    from iba.demo import photos
    from iba_torch import Readout

    run = ctx.runner
    bottleneck, readouts = READOUT
    file = ctx.estimators / f"readout_{SAMPLES}_{READOUT_TRAIN}x{READOUT_EPOCHS}_{READOUT_LR:g}.npz"
    if file.is_file():
        readout = Readout.load(file)
    else:
        readout = Readout(bottleneck, list(readouts))
        run.estimate(readout, photos.random_crops(n=SAMPLES), SAMPLES, progress=False)
        with torch.no_grad():  # the classifier's own predictions as the labels
            labelled = [
                (x, run.model(x).argmax(1))
                for x in map(run.inputs, photos.random_crops(n=READOUT_TRAIN, seed=1))
            ]
        readout.fit(
            run.model, labelled, epochs=READOUT_EPOCHS, lr=READOUT_LR, seed=0, progress=False
        )
        readout.save(file)
    maps = readout.analyze(run.model, run.inputs(ctx.crops()))
    _two_rows(ctx, path, list(maps), "Readout")


def draw_text(ctx: Context, path: Path) -> None:
    """``iba demo --text``: four Rotten Tomatoes snippets of the test split."""
    out = ctx.work("text")
    ctx.cli(["demo", "--text", "--samples", str(TEXT_SAMPLES), "--out", str(out)])
    shutil.copyfile(out / "text.png", path)


def draw_pairs(ctx: Context, path: Path) -> None:
    """M2IB on the first :data:`PAIRS` pairs of ``iba demo --pairs``."""
    from iba import cli, pair_cli
    from iba.demo import pairs

    out = ctx.work("pairs")
    args = cli.parser().parse_args(["demo", "--pairs", "--out", str(out), "--quiet"])
    chosen = pairs.PAIRS[:PAIRS]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            pair_cli.run_pairs(args, pairs.images(chosen), pairs.captions(chosen))
        except cli.UserError as err:
            raise RuntimeError(f"iba demo --pairs: {err}") from None
    shutil.copyfile(out / "pairs.png", path)


_ESTIMATOR = (
    f"the estimator of `{LAYER}` fitted on {SAMPLES} random crops of six other bundled photos "
    "(the command line's default is 1,000; fewer samples give noisier maps)"
)
_SETTINGS = "10 steps of Adam, 10 noise samples per step, noise seed 0"

FIGURES = (
    Figure(
        "iba-photos.png",
        f"IBA on EfficientNet-Lite0 after `{LAYER}` (`iba demo --samples {SAMPLES}`), for each "
        f"photo's predicted class: bits per pixel, `beta = 10`, {_SETTINGS}; {_ESTIMATOR}.",
        draw_iba,
    ),
    Figure(
        "coiba-photos.png",
        f"Top: IBA after `{LAYER}` (`beta = 10`). Bottom: CoIBA, one `alpha` shared by "
        f"`{COIBA_LAYERS[0]}` and `{COIBA_LAYERS[1]}` (`iba.coiba_config()`: `beta = 1`, no "
        f"smoothing). Both in bits, {_SETTINGS}, estimators fitted on {SAMPLES} random crops.",
        draw_coiba,
    ),
    Figure(
        "readout-photos.png",
        f"Top: IBA after `{LAYER}`, optimised per photo. Bottom: a Readout Bottleneck at "
        f"`{READOUT[0]}` reading `{'` and `'.join(READOUT[1])}`, one forward pass per photo. "
        f"**Trained very briefly**: {READOUT_EPOCHS} epochs over {READOUT_TRAIN} random crops "
        f"labelled with the classifier's own predictions, `lr = {READOUT_LR:g}` (the paper: "
        f"10 epochs over ImageNet at `1e-5`), estimators of {SAMPLES} crops. It shows the "
        "interface, not what a trained readout gives.",
        draw_readout,
    ),
    Figure(
        "text-snippets.png",
        f"`iba demo --text --samples {TEXT_SAMPLES}`: the bundled MiniLM sentiment classifier on "
        "four snippets of the held-out test split, bits per word after encoder layer 1 "
        f"(`beta = 10`), the corpus estimator fitted on {TEXT_SAMPLES} training snippets (the "
        "command line's default is 2,000).",
        draw_text,
    ),
    Figure(
        "m2ib-pairs.png",
        f"M2IB on the first {PAIRS} pairs of `iba demo --pairs` (the bundled dual encoder, image "
        "bottleneck after `_blocks.14`, text bottleneck after MiniLM's layer 1, `beta = 0.3`, "
        "10 steps, noise seed 0): each caption names one half of its image.",
        draw_pairs,
    ),
)


def figure(name: str) -> Figure:
    """The figure ``name`` of :data:`FIGURES`."""
    for fig in FIGURES:
        if fig.name == name:
            return fig
    raise KeyError(f"unknown figure {name!r}; figures are: {', '.join(f.name for f in FIGURES)}")


def source_key() -> str:
    """A digest of the sources the figures depend on (:data:`SOURCES`)."""
    digest = hashlib.sha256()
    for entry in SOURCES:
        path = ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        if path.is_dir():
            files += sorted((path / "models" / "data").glob("*.npz"))
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def build(cache: Path | None = None, say: Callable[[str], Any] = print) -> dict[str, Path]:
    """Compute every figure that is not cached with its current key; ``{name: PNG path}``."""
    cache = cache_dir() if cache is None else cache
    folder = cache / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    sources = source_key()
    ctx = Context(cache)
    found = {}
    for fig in FIGURES:
        path = folder / fig.name
        key_file = path.with_suffix(".key")
        own = f"{fig.caption}\n{inspect.getsource(fig.draw)}"
        key = hashlib.sha256(f"{sources}\n{own}".encode()).hexdigest()
        if path.is_file() and key_file.is_file() and key_file.read_text() == key:
            say(f"figure {fig.name}: cached")
        else:
            start = time.perf_counter()
            partial = path.with_suffix(".partial.png")
            with warnings.catch_warnings():
                # the small sample counts are the point (the captions say so)
                warnings.filterwarnings("ignore", message="the estimator has seen only")
                fig.draw(ctx, partial)
            partial.replace(path)
            key_file.write_text(key)
            say(f"figure {fig.name}: computed in {time.perf_counter() - start:.1f} s")
        found[fig.name] = path
    return found


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("MPLBACKEND", "Agg")
    build()
