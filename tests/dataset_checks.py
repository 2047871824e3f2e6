"""What the data-set tests of every backend check of ``iba explain-dataset`` (iba.dataset): one
row per image of a folder of bundled photos and one unreadable file, the unreadable file's row,
the heatmap shards equal to ``iba explain``'s maps, the metric values recomputed from the
backend's model, and a restart after a lost block giving the same rows. Imported as
``tests.dataset_checks`` (pytest's ``pythonpath``).

A backend's test module sets ``BACKEND`` (the command line's ``--backend``) and optionally
``JOB_CONTEXT`` (a context manager the job runs in: PyTorch's one thread), and takes the fixtures
and the tests of :data:`__all__` with ``from tests.dataset_checks import *``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from iba import cli, dataset
from iba.demo import photos, runners

pytest.importorskip("pyarrow")

# Two optimisation steps of one noise sample, an estimator on 20 crops, 3 degradation points
# and 2 insertion / deletion steps: seconds per image on a CPU.
FAST = ["--samples", "20", "--steps", "2", "--noise-samples", "1", "--seed", "3", "-q"]
HALF = 224 * 112  # insertion's and deletion's pixels per step: half the image
METRIC_OPTIONS = ["--points", "3", "--pixels-per-step", str(HALF), "--block", "2"]
# file, label (ImageNet: 285 Egyptian cat, 967 espresso); the unreadable file sits in block 1.
LISTED = [
    ("chelsea.png", 285),
    ("coffee.jpg", 967),
    ("broken.jpg", 3),
    ("astronaut.png", 834),
    ("rocket.png", 812),
]
READABLE = [name for name, _ in LISTED if name != "broken.jpg"]
ROOT = Path(__file__).resolve().parents[1]  # the repository: python -m iba runs from it

# What ``from tests.dataset_checks import *`` gives a backend's test module: the fixtures and the
# tests every backend runs.
__all__ = [
    "cache",
    "job",
    "test_one_row_per_image_with_targets_predictions_and_metrics",
    "test_an_unreadable_image_gets_an_error_row_and_a_nan_map",
    "test_the_shards_hold_the_maps_of_iba_explain",
    "test_the_metric_values_are_recomputed_from_the_model_and_the_map",
    "test_a_restarted_job_redoes_the_lost_block_only_and_gives_the_same_rows",
]


class Job(NamedTuple):
    """One job of a test module: its backend, the photos' folder, its output, the estimator's
    cache, and what it printed."""

    backend: str
    folder: Path
    out: Path
    cache: Path
    printed: str


def make_folder(root: Path) -> Path:
    """The bundled photos of :data:`LISTED`, ``broken.jpg`` (not an image) and ``labels.csv``."""
    root.mkdir(parents=True)
    for name, _ in LISTED:
        if name == "broken.jpg":
            (root / name).write_text("not an image")
        else:
            Image.fromarray(np.asarray(photos.photo(name.split(".")[0]))).save(root / name)
    lines = ["file,label", *(f"{name},{label}" for name, label in LISTED)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def run_job(backend: str, folder: Path, out: Path, *extra: str) -> int:
    """``iba explain-dataset FOLDER --out OUT --backend BACKEND`` with the tiny settings."""
    argv = ["explain-dataset", str(folder), "--out", str(out), "--backend", backend]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the estimator's few samples
        return cli.main([*argv, *FAST, *METRIC_OPTIONS, *extra])


def rows(out: Path) -> list[dict]:
    """The rows without the timings (the same inputs and seed give the same rows)."""
    return [
        {k: v for k, v in row.items() if "seconds" not in k}
        for row in dataset.read_rows(out).to_pylist()
    ]


def shard(out: Path, index: int) -> np.ndarray:
    return np.load(out / dataset.MAPS / f"maps-{index:05d}.npy")


@pytest.fixture(scope="module")
def job(request, tmp_path_factory):
    """The module's ``BACKEND``'s job over the folder, its estimator cached in a temporary
    ``IBA_CACHE``, run inside the module's ``JOB_CONTEXT`` (kept until the module's end)."""
    backend = request.module.BACKEND
    root = tmp_path_factory.mktemp(f"dataset-{backend}")
    mp = pytest.MonkeyPatch()
    mp.setenv("IBA_CACHE", str(root / "cache"))
    context = getattr(request.module, "JOB_CONTEXT", contextlib.nullcontext)
    printed = io.StringIO()
    try:
        with context():
            folder = make_folder(root / "photos")
            with contextlib.redirect_stdout(printed):
                assert run_job(backend, folder, root / "out") == 0
            yield Job(backend, folder, root / "out", root / "cache", printed.getvalue())
    finally:
        mp.undo()


@pytest.fixture
def cache(job, monkeypatch):
    """The module's job's estimator cache as ``IBA_CACHE``."""
    monkeypatch.setenv("IBA_CACHE", str(job.cache))


def test_one_row_per_image_with_targets_predictions_and_metrics(job: Job) -> None:
    """One row per image in the folder's order, the labels as targets, the bundled model's
    predictions, every metric's score and curves, and the job's curves' x axes."""
    assert "5 image(s): 3 block(s) written, 0 already done, 1 unreadable" in job.printed
    found = dataset.read_rows(job.out).to_pylist()
    assert [r["id"] for r in found] == [0, 1, 2, 3, 4]
    assert [(r["file"], r["label"]) for r in found] == LISTED
    good = [r for r in found if r["error"] is None]
    assert [r["file"] for r in good] == READABLE
    assert [r["target"] for r in good] == [285, 967, 834, 812]  # the labels, not the predictions
    assert [r["prediction"] for r in good[:2]] == [285, 967]  # the cat and the espresso
    for r in good:
        assert 0 < r["probability"] <= 1
        assert np.isfinite(r["degradation"])
        assert 0 <= r["insertion"] <= 1 and 0 <= r["deletion"] <= 1
        assert len(r["degradation_morf"]) == len(r["degradation_lerf"]) == 3
        assert r["degradation_morf"][0] == pytest.approx(1.0)  # normalised: t1 -> 1, b -> 0
        assert r["degradation_morf"][-1] == pytest.approx(0.0, abs=1e-12)
        assert len(r["insertion_curve"]) == len(r["deletion_curve"]) == 3
        assert r["seconds"] > r["explain_seconds"] > 0
    record = dataset.read_job(job.out)
    assert record["settings"]["backend"] == job.backend
    assert record["fractions"]["degradation"] == [0.0, 0.5, 1.0]
    assert record["fractions"]["insertion"] == [0.0, 0.5, 1.0]


def test_an_unreadable_image_gets_an_error_row_and_a_nan_map(job: Job) -> None:
    """The unreadable file's row says why and has no values; its heatmap is NaN, its block's
    other heatmap is a map."""
    (broken,) = [r for r in dataset.read_rows(job.out).to_pylist() if r["error"] is not None]
    assert broken["id"] == 2 and broken["file"] == "broken.jpg" and broken["label"] == 3
    assert "broken.jpg: cannot read the image" in broken["error"]
    for key in ("target", "prediction", "probability", "degradation", "insertion", "deletion"):
        assert broken[key] is None, key
    assert broken["degradation_morf"] is None and broken["deletion_curve"] is None
    maps = shard(job.out, 1)
    assert maps.shape == (2, 224, 224) and maps.dtype == np.float32
    assert np.isnan(maps[0]).all() and np.isfinite(maps[1]).all()


def test_the_shards_hold_the_maps_of_iba_explain(job: Job, cache, tmp_path: Path) -> None:
    """Each shard's rows are the blocks' images; chelsea's map equals ``iba explain``'s on the
    same backend with the same options (its label is its predicted class)."""
    shards = [shard(job.out, i) for i in range(3)]
    assert [s.shape[0] for s in shards] == [2, 2, 1]
    argv = ["explain", str(job.folder / "chelsea.png"), "--out", str(tmp_path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main([*argv, "--backend", job.backend, *FAST]) == 0
    np.testing.assert_allclose(shards[0][0], np.load(tmp_path / "chelsea.npy"), rtol=1e-6)
    assert shards[0][0].min() >= 0 and shards[0][0].max() > 0  # bits per pixel


def _probability(run, image: np.ndarray, target: int) -> float:
    return float(run.predict(image[None])[0, target])


def test_the_metric_values_are_recomputed_from_the_model_and_the_map(job: Job) -> None:
    """The coffee row's values from the backend's model and the shard's map, without the job's
    code: the target's probability, the deletion curve (the top half of the pixels by the map
    set to black, then all), each score from its curves (the trapezoid rule over the job's x
    axes), and degradation by :func:`iba.evaluation.degradation`."""
    from iba import evaluation

    run = runners.runner(job.backend)
    crop = photos.center_crop(np.asarray(Image.open(job.folder / "coffee.jpg").convert("RGB")))[0]
    heat = shard(job.out, 0)[1].astype(np.float64)
    row = dataset.read_rows(job.out).to_pylist()[1]
    axes = dataset.read_job(job.out)["fractions"]
    assert row["file"] == "coffee.jpg" and row["target"] == 967
    p = _probability(run, crop, 967)
    assert row["probability"] == pytest.approx(p, rel=1e-5)
    pixels = crop.reshape(-1, 3).copy()
    pixels[np.argsort(-heat.ravel(), kind="stable")[:HALF]] = 0
    half = _probability(run, pixels.reshape(crop.shape), 967)
    black = _probability(run, np.zeros_like(crop), 967)
    np.testing.assert_allclose(row["deletion_curve"], [p, half, black], rtol=1e-4, atol=1e-7)
    assert row["insertion_curve"][-1] == pytest.approx(p, rel=1e-4)  # all pixels restored
    for name in ("insertion", "deletion"):
        area = np.trapezoid(row[f"{name}_curve"], axes[name])
        assert row[name] == pytest.approx(area, rel=1e-9, abs=1e-12)
    between = np.trapezoid(
        np.subtract(row["degradation_lerf"], row["degradation_morf"]), axes["degradation"]
    )
    assert row["degradation"] == pytest.approx(between, rel=1e-9, abs=1e-12)
    d = evaluation.degradation(
        run.logits, crop[None].astype(np.float32), heat[None], [967], n_points=3, progress=False
    )
    assert row["degradation"] == pytest.approx(float(d.scores[0]), rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(row["degradation_morf"], d.morf[0], rtol=1e-4, atol=1e-6)


def test_a_restarted_job_redoes_the_lost_block_only_and_gives_the_same_rows(
    job: Job, cache, capsys
) -> None:
    """A restart after the last block was lost (its rows unwritten, a half-written file left)
    redoes that block only and gives the same rows and heatmaps."""
    before = rows(job.out)
    maps_before = shard(job.out, 2)
    (job.out / "rows" / "part-00002.parquet").unlink()  # the block in flight when it crashed
    (job.out / "rows" / ".partial-part-00002.parquet").write_text("half written")
    capsys.readouterr()
    assert run_job(job.backend, job.folder, job.out) == 0
    assert "1 block(s) written, 2 already done, 0 unreadable" in capsys.readouterr().out
    assert not list((job.out / "rows").glob(".partial-*"))
    assert rows(job.out) == before
    np.testing.assert_array_equal(shard(job.out, 2), maps_before)
    assert dataset.done_blocks(job.out) == {0, 1, 2}
