"""Explain and evaluate a whole image folder, resumably (docs/dataset.md; the metrics are
docs/mathematics.md section 7).

A job reads a folder (one subfolder per class, labels by sorted folder name; or a flat folder,
with its labels in ``labels.csv``: ``file,label``), resizes and centre-crops every image to 224
pixels as ``iba explain`` does, explains it with IBA on a command-line backend (its runner,
:mod:`iba.demo.runners`), scores the chosen metrics (:mod:`iba.evaluation`) and writes, per block
of ``block`` images, one Parquet file of rows (``rows/part-NNNNN.parquet``: id, file, label,
target, prediction, metric scores and curves, seconds, error) and one ``.npy`` shard of heatmaps
(``maps/maps-NNNNN.npy``, float32 ``(n, 224, 224)``, NaN for an image that could not be read).

Each block's files are written under a temporary name and renamed when complete, heatmaps
first: a block whose rows file exists is done, and a restarted job skips it. ``job.json`` holds
the inputs and settings; a restart with other ones is refused, so nothing written is lost. The
noise is the demo's (:func:`iba.demo.shared.noise` of the seed, the same draws for every image),
so the same inputs and seed give the same rows, whatever the block size or the restarts.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from iba import driver

METRICS = ("degradation", "insertion", "deletion")
SIZE = 224  # every image is resized and centre-cropped to SIZE x SIZE, as iba explain does
LABELS_FILE = "labels.csv"
JOB_FILE = "job.json"
ROWS = "rows"
MAPS = "maps"
TEMPORARY = ".partial-"  # the prefix of files being written; removed when a job starts
DEFAULT_BLOCK = 8
DEFAULT_TILE_SIZE = 8  # degradation tiles (the IBA paper's 8 x 8)
DEFAULT_POINTS = 100  # degradation's recorded points per curve (the IBA paper's 100)
METRIC_BATCH = 16  # perturbed images per model call (fastest on a CPU, iba.evaluation)
PYARROW_HINT = 'pip install pyarrow (or pip install "iba[dataset]")'


class DatasetError(ValueError):
    """A problem with a data-set job's inputs or output folder; the message says what to do."""


class Item(NamedTuple):
    """One image of the job: its row id, its path relative to the folder, its label (or None)."""

    id: int
    file: str
    label: int | None


class Settings(NamedTuple):
    """What decides a job's rows; a restart must give the same (``job.json``)."""

    backend: str
    layer: str
    config: dict[str, Any]  # iba.Config fields: beta, steps, batch_size
    samples: int  # the estimator's random crops
    seed: int
    metrics: tuple[str, ...]
    block: int
    tile_size: int = DEFAULT_TILE_SIZE
    points: int = DEFAULT_POINTS
    pixels_per_step: int = 8 * SIZE


def _pyarrow() -> Any:
    """``pyarrow`` and ``pyarrow.parquet``, or a :class:`DatasetError` naming the install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DatasetError(
            f"the data-set rows are written to Parquet, which needs pyarrow: {PYARROW_HINT}"
        ) from None
    return pyarrow


def _image_suffixes() -> frozenset[str]:
    from iba.cli import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _images_in(folder: Path) -> list[Path]:
    suffixes = _image_suffixes()
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


def _read_labels(folder: Path) -> list[Item]:
    """The items of ``folder/labels.csv`` (``file,label`` per line; a header line is allowed)."""
    path = folder / LABELS_FILE
    items: list[Item] = []
    seen: set[str] = set()
    with open(path, newline="") as f:
        for number, line in enumerate(csv.reader(f), 1):
            if not line or not "".join(line).strip():
                continue
            if len(line) != 2:
                raise DatasetError(
                    f"{path} line {number}: expected file,label, got {','.join(line)!r}"
                )
            name, label = line[0].strip(), line[1].strip()
            if number == 1 and (name, label) == ("file", "label"):
                continue
            try:
                value = int(label)
            except ValueError:
                raise DatasetError(
                    f"{path} line {number}: label {label!r} is not a class index (a whole "
                    "number >= 0)"
                ) from None
            if value < 0:
                raise DatasetError(f"{path} line {number}: label {value} is out of range (< 0)")
            if name in seen:
                raise DatasetError(f"{path} line {number}: {name} is listed twice")
            if not (folder / name).is_file():
                raise DatasetError(f"{path} line {number}: {name} is not a file in {folder}")
            seen.add(name)
            items.append(Item(len(items), name, value))
    if not items:
        raise DatasetError(f"{path} lists no images; give file,label lines")
    return items


def scan(folder: str | Path) -> tuple[list[Item], list[str] | None]:
    """The images of ``folder`` and the class names.

    One subfolder per class: every image in them, labels by the sorted folder names (returned).
    A flat folder: the images of ``labels.csv`` with its labels, else every image, unlabelled
    (``None``: each image is explained for its predicted class). An empty folder is an error.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{folder}: no such folder; give a folder of images")
    if (root / LABELS_FILE).is_file():
        return _read_labels(root), None
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items: list[Item] = []
    if classes:
        for label, name in enumerate(classes):
            for path in _images_in(root / name):
                items.append(Item(len(items), f"{name}/{path.name}", label))
    else:
        items = [Item(i, p.name, None) for i, p in enumerate(_images_in(root))]
    if not items:
        kinds = ", ".join(sorted(s.lstrip(".") for s in _image_suffixes()))
        raise DatasetError(
            f"{folder}: no images in it ({kinds}); give a folder with one subfolder of images "
            f"per class, or a flat folder of images (with {LABELS_FILE} for labels)"
        )
    return items, classes or None


def check_labels(items: Sequence[Item], n_classes: int, classes: list[str] | None) -> None:
    """Every label must be a class of the model (``0 .. n_classes - 1``)."""
    if classes is not None and len(classes) > n_classes:
        raise DatasetError(
            f"the folder has {len(classes)} class subfolders but the model has {n_classes} "
            "classes; give at most that many (labels are the sorted folder names' positions)"
        )
    bad = [item for item in items if item.label is not None and item.label >= n_classes]
    if bad:
        raise DatasetError(
            f"{bad[0].file}: label {bad[0].label} is out of range; the model has {n_classes} "
            f"classes (0 to {n_classes - 1}); {len(bad)} label(s) in all"
        )


def fractions(settings: Settings) -> dict[str, list[float]]:
    """The x axis of each metric's curves (docs/mathematics.md sections 7.1 and 7.4)."""
    from iba.evaluation import removal_steps

    out: dict[str, list[float]] = {}
    if "degradation" in settings.metrics:
        n_tiles = math.ceil(SIZE / settings.tile_size) ** 2
        out["degradation"] = (removal_steps(n_tiles, settings.points) / n_tiles).tolist()
    pixels = SIZE * SIZE
    counts = np.minimum(
        np.arange(-(-pixels // settings.pixels_per_step) + 1) * settings.pixels_per_step, pixels
    )
    for name in ("insertion", "deletion"):
        if name in settings.metrics:
            out[name] = (counts / pixels).tolist()
    return out


# -- the output folder ---------------------------------------------------------------------------


def _block_name(kind: str, index: int) -> str:
    return f"part-{index:05d}.parquet" if kind == ROWS else f"maps-{index:05d}.npy"


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` atomically: to a temporary name in its folder, then renamed."""
    temporary = path.with_name(TEMPORARY + path.name)
    write(temporary)
    os.replace(temporary, path)


def _job_record(
    folder: Path, items: Sequence[Item], classes: list[str] | None, settings: Settings
) -> dict[str, Any]:
    return {
        "folder": str(folder.resolve()),
        "files": [item.file for item in items],
        "labels": [item.label for item in items],
        "classes": classes,
        "settings": settings._asdict() | {"metrics": list(settings.metrics)},
        "fractions": fractions(settings),
    }


def _open_output(out: Path, record: dict[str, Any]) -> None:
    """Make ``out`` (or check that its job is this one) and remove half-written files."""
    path = out / JOB_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: unreadable ({err}); give another --out") from None
        for key in ("files", "labels", "settings"):
            if old.get(key) != record[key]:
                what = {"files": "other images", "labels": "other labels"}.get(key)
                if key == "settings":
                    changed = sorted(k for k in record[key] if old[key].get(k) != record[key][k])
                    what = "other settings (" + ", ".join(changed) + ")"
                raise DatasetError(
                    f"{out} holds a job of {what}; give another --out, or the same inputs and "
                    "options to finish that job (nothing in it is changed)"
                )
    elif out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: a folder with other files in it; give a new or empty --out")
    for sub in (ROWS, MAPS):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob(TEMPORARY + "*"):
            stale.unlink()
    if not path.is_file():
        text = json.dumps(record, indent=1)
        _replace(path, lambda p: p.write_text(text))


def done_blocks(out: str | Path) -> set[int]:
    """The blocks of the job in ``out`` whose rows (and heatmaps) are written."""
    found = set()
    for path in (Path(out) / ROWS).glob("part-*.parquet"):
        index = int(path.stem.split("-")[1])
        if (Path(out) / MAPS / _block_name(MAPS, index)).is_file():
            found.add(index)
    return found


def read_rows(out: str | Path) -> Any:
    """The rows written in ``out`` so far, one ``pyarrow.Table`` sorted by ``id``."""
    pa = _pyarrow()
    parts = sorted((Path(out) / ROWS).glob("part-*.parquet"))
    if not parts:
        raise DatasetError(f"{out}: no rows in it (rows/part-*.parquet); run iba explain-dataset")
    table = pa.concat_tables([pa.parquet.read_table(p) for p in parts])
    return table.sort_by("id")


def read_job(out: str | Path) -> dict[str, Any]:
    """The ``job.json`` of ``out``: inputs, settings and the curves' x axes."""
    path = Path(out) / JOB_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise DatasetError(
            f"{path}: cannot read it ({err}); give a folder that iba explain-dataset wrote"
        ) from None


# -- the work ------------------------------------------------------------------------------------


class Work(NamedTuple):
    """What a block needs: the backend's runner, the explainer with its estimator, the noise."""

    run: Any
    explainer: Any
    options: dict[str, Any]  # noise= or seed= of analyze
    cached: Path  # the estimator's file


def _read(folder: Path, item: Item) -> np.ndarray:
    from iba.cli import _read_image
    from iba.demo import photos

    return photos.center_crop(_read_image(folder / item.file), SIZE)[0]


def padded(model: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` on batches padded to a power of two of rows (the last image repeated, its rows
    dropped from the output): a compiling backend (JAX's jit, Keras on JAX) then builds one
    program per size 1, 2, 4, ... instead of one per batch size the job meets (docs/dataset.md)."""

    def call(batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        size = 1 << max(n - 1, 0).bit_length()  # pad_rows leaves a batch of that size as it is
        return np.asarray(model(driver.pad_rows(batch, size)))[:n]

    return call


def _scores(
    work: Work, settings: Settings, crops: np.ndarray, maps: np.ndarray, targets: np.ndarray
) -> dict[str, np.ndarray]:
    """Each metric's per-image scores and curves (pixels perturbed in [0, 255], then the
    runner's preprocessing)."""
    from iba import evaluation

    images = crops.astype(np.float32)
    common: dict[str, Any] = {"batch_size": METRIC_BATCH, "progress": False}
    model = padded(work.run.logits)
    out: dict[str, np.ndarray] = {}
    for name in settings.metrics:
        if name == "degradation":
            d = evaluation.degradation(
                model,
                images,
                maps,
                targets,
                tile_size=settings.tile_size,
                n_points=settings.points,
                **common,
            )
            out["degradation"], out["degradation_morf"], out["degradation_lerf"] = (
                d.scores,
                d.morf,
                d.lerf,
            )
        else:
            metric = evaluation.insertion if name == "insertion" else evaluation.deletion
            c = metric(
                model, images, maps, targets, pixels_per_step=settings.pixels_per_step, **common
            )
            out[name], out[f"{name}_curve"] = c.scores, c.curves
    return out


def _block(
    folder: Path,
    items: Sequence[Item],
    work: Work,
    settings: Settings,
    tick: Callable[[int], object] = lambda n: None,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows and heatmaps of one block; an image that cannot be read gets an ``error``.
    ``tick(n)`` is called as images are read (unreadable ones) and explained."""
    from iba.cli import UserError

    rows: list[dict[str, Any]] = [
        {
            "id": item.id,
            "file": item.file,
            "label": item.label,
            "target": None,
            "prediction": None,
            "probability": None,
            "explain_seconds": None,
            "seconds": 0.0,
            "error": None,
        }
        for item in items
    ]
    maps = np.full((len(items), SIZE, SIZE), np.nan, np.float32)
    crops, good = [], []
    for i, item in enumerate(items):
        try:
            crops.append(_read(folder, item))
            good.append(i)
        except (UserError, OSError, ValueError) as err:
            rows[i]["error"] = str(err)
            tick(1)
    if not good:
        return rows, maps
    images = np.stack(crops)
    probabilities = padded(work.run.predict)(images)
    predictions = probabilities.argmax(1)
    targets = np.array(
        [predictions[j] if items[i].label is None else items[i].label for j, i in enumerate(good)]
    )
    for j, i in enumerate(good):
        start = time.perf_counter()
        try:
            (heat,) = work.run.analyze(
                work.explainer, images[j : j + 1], targets[j : j + 1], **work.options
            )
        except ValueError as err:  # a cached estimator of another model or layer
            raise DatasetError(f"{err} (delete {work.cached} to fit it again)") from None
        maps[i] = heat
        tick(1)
        seconds = time.perf_counter() - start
        rows[i].update(
            target=int(targets[j]),
            prediction=int(predictions[j]),
            probability=float(probabilities[j, targets[j]]),
            explain_seconds=seconds,
            seconds=seconds,
        )
    start = time.perf_counter()
    scores = _scores(work, settings, images, maps[good].astype(np.float64), targets)
    share = (time.perf_counter() - start) / len(good)
    for j, i in enumerate(good):
        rows[i]["seconds"] += share
        for key, values in scores.items():
            rows[i][key] = values[j].tolist()
    return rows, maps


def _schema(settings: Settings) -> Any:
    pa = _pyarrow()
    fields = [
        ("id", pa.int64()),
        ("file", pa.string()),
        ("label", pa.int64()),
        ("target", pa.int64()),
        ("prediction", pa.int64()),
        ("probability", pa.float64()),
    ]
    for name in settings.metrics:
        fields.append((name, pa.float64()))
        curves = ("morf", "lerf") if name == "degradation" else ("curve",)
        fields += [(f"{name}_{c}", pa.list_(pa.float64())) for c in curves]
    fields += [("explain_seconds", pa.float64()), ("seconds", pa.float64())]
    fields += [("error", pa.string())]
    return pa.schema(fields)


def _write_block(
    out: Path, index: int, rows: list[dict[str, Any]], maps: np.ndarray, schema: Any
) -> None:
    """The block's heatmaps, then its rows, each atomically (the rows mark the block done)."""
    pa = _pyarrow()

    def save_maps(path: Path) -> None:
        with open(path, "wb") as f:
            np.save(f, maps)

    _replace(out / MAPS / _block_name(MAPS, index), save_maps)
    table = pa.Table.from_pylist(rows, schema=schema)
    _replace(out / ROWS / _block_name(ROWS, index), lambda p: pa.parquet.write_table(table, p))


class JobResult(NamedTuple):
    """What a job did: images in all, blocks written now and before, the time and rate."""

    images: int
    written: int
    skipped: int
    errors: int
    seconds: float
    images_per_second: float


def run_job(
    folder: str | Path,
    out: str | Path,
    items: Sequence[Item],
    classes: list[str] | None,
    work: Work,
    settings: Settings,
    progress: bool = True,
) -> JobResult:
    """Explain and score ``items`` of ``folder`` block by block into ``out``, skipping the
    blocks already written (docs/dataset.md)."""
    from tqdm.auto import tqdm

    folder, out = Path(folder), Path(out)
    _pyarrow()
    _open_output(out, _job_record(folder, items, classes, settings))
    schema = _schema(settings)
    blocks = [items[i : i + settings.block] for i in range(0, len(items), settings.block)]
    done = done_blocks(out)
    todo = [i for i in range(len(blocks)) if i not in done]
    errors = written = 0
    start = time.perf_counter()
    total = sum(len(blocks[i]) for i in todo)
    with tqdm(total=total, desc="IBA data set", unit="image", disable=not progress) as bar:
        for index in todo:
            rows, maps = _block(folder, blocks[index], work, settings, bar.update)
            _write_block(out, index, rows, maps, schema)
            errors += sum(row["error"] is not None for row in rows)
            written += 1
    seconds = time.perf_counter() - start
    return JobResult(
        len(items),
        written,
        len(blocks) - len(todo),
        errors,
        seconds,
        total / seconds if seconds > 0 and total else 0.0,
    )


def prepare(
    backend: str,
    layer: str,
    settings: Settings,
    items: Sequence[Item],
    classes: list[str] | None,
    *,
    model: str | None = None,
    quiet: bool = False,
    verbose: bool = False,
    estimator: Any = None,
) -> Work:
    """The backend's runner (the labels checked against its model's classes), its explainer
    with ``estimator`` (default: loaded from the command line's cache or fitted and cached,
    ``iba.cli``), and the demo's noise of ``settings.seed``."""
    from iba import cli
    from iba.demo import runners, shared

    try:
        with cli._muted_stderr(not verbose):
            run = runners.runner(backend, cli._load_user_model(model) if model else None)
    except (runners.Unavailable, ValueError) as err:
        raise DatasetError(str(err)) from None
    check_labels(items, n_classes(run), classes)
    if not run.has_layer(layer):
        raise DatasetError(str(cli._layer_error(run, layer)))
    try:
        explainer = run.explainer(layer, **settings.config)
    except (TypeError, ValueError) as err:
        raise DatasetError(str(err)) from None
    args = argparse.Namespace(samples=settings.samples, model=model, quiet=quiet)
    if estimator is None:
        cached = cli._fit_or_load(args, run, explainer, layer)
        (estimator,) = explainer.estimators
    else:
        cached = cli._cache_file(args, run, layer)
        explainer.estimators = [estimator]
    drawn = shared.noise(settings.seed, explainer.config, estimator)
    options = {"noise": drawn} if drawn is not None else {"seed": settings.seed}
    return Work(run, explainer, options, cached)


def n_classes(run: Any) -> int:
    """The number of classes of the runner's model (one call on a grey image)."""
    return int(run.logits(np.full((1, SIZE, SIZE, 3), 128, np.uint8)).shape[-1])


def explain_dataset(
    folder: str | Path,
    out: str | Path,
    *,
    backend: str = "torch",
    layer: str = "_blocks.4",
    metrics: Sequence[str] = METRICS,
    block: int = DEFAULT_BLOCK,
    seed: int = 0,
    samples: int = 1000,
    config: dict[str, Any] | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    points: int = DEFAULT_POINTS,
    pixels_per_step: int = 8 * SIZE,
    progress: bool = True,
) -> JobResult:
    """Explain every image of ``folder`` with IBA on ``backend`` and score ``metrics``, into
    ``out`` (Parquet rows and ``.npy`` heatmap shards); rerun to finish an interrupted job.

    Args:
        folder: one subfolder of images per class, or a flat folder (with ``labels.csv``).
        config: ``iba.Config`` fields (``beta``, ``steps``, ``batch_size``).
        samples: random crops of the bundled photos the estimator is fitted on (cached).
        tile_size, points: degradation's tiles and recorded points; ``pixels_per_step``:
            insertion's and deletion's.

    Returns:
        :class:`JobResult`. Raises :class:`DatasetError` on bad inputs, before any work.
    """
    settings = check_settings(
        Settings(
            backend,
            layer,
            dict(config or {}),
            samples,
            seed,
            tuple(metrics),
            block,
            tile_size,
            points,
            pixels_per_step,
        )
    )
    _pyarrow()
    items, classes = scan(folder)
    work = prepare(backend, layer, settings, items, classes, quiet=not progress)
    return run_job(folder, out, items, classes, work, settings, progress)


def check_settings(settings: Settings) -> Settings:
    """The settings, checked before any work (a clear error for each)."""
    unknown = [m for m in settings.metrics if m not in METRICS]
    if unknown or not settings.metrics:
        raise DatasetError(
            f"unknown metric(s) {', '.join(unknown) or '(none)'}; metrics are: {', '.join(METRICS)}"
        )
    if len(set(settings.metrics)) != len(settings.metrics):
        raise DatasetError(f"metrics {', '.join(settings.metrics)}: each at most once")
    for name, value, least in (
        ("block", settings.block, 1),
        ("points", settings.points, 2),
        ("tile size", settings.tile_size, 1),
        ("pixels per step", settings.pixels_per_step, 1),
    ):
        if int(value) != value or value < least:
            raise DatasetError(f"{name} must be a whole number >= {least}, got {value!r}")
    if settings.tile_size > SIZE:
        raise DatasetError(f"tile size {settings.tile_size} is larger than the {SIZE}-pixel images")
    import iba

    try:
        iba.Config(**settings.config)
    except (TypeError, ValueError) as err:
        raise DatasetError(str(err)) from None
    return settings


# -- the summary ---------------------------------------------------------------------------------


class MetricSummary(NamedTuple):
    """One metric over the images that have it: mean, standard error of the mean, count."""

    metric: str
    mean: float
    sem: float
    n: int


def summarize(out: str | Path) -> list[MetricSummary]:
    """Mean and standard error (``std / sqrt(n)``, ``ddof=1``) per metric of a job's rows."""
    table = read_rows(out)
    metrics = read_job(out)["settings"]["metrics"]
    found = []
    for name in metrics:
        values = np.array([v for v in table.column(name).to_pylist() if v is not None], float)
        n = len(values)
        sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        found.append(MetricSummary(name, float(values.mean()) if n else math.nan, sem, n))
    return found


def mean_curves(out: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each curve's ``(fractions, mean curve)`` over the images that have it: ``degradation_morf``,
    ``degradation_lerf``, ``insertion_curve``, ``deletion_curve``."""
    table = read_rows(out)
    axes = read_job(out)["fractions"]
    curves = {}
    for name in table.column_names:
        metric = name.split("_")[0]
        if metric in axes and name != metric:
            values = [v for v in table.column(name).to_pylist() if v is not None]
            if values:
                curves[name] = (np.asarray(axes[metric]), np.mean(np.asarray(values), axis=0))
    return curves
