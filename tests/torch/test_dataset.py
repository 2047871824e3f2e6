"""``iba explain-dataset`` and ``iba summarize`` (iba.dataset) on PyTorch: the tests every backend
runs (tests.dataset_checks: rows, the unreadable file, the maps of ``iba explain``, the metric
values recomputed, resuming after a lost block), a job killed halfway and rerun, the summary, the
errors on bad inputs, and Ray Data."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from iba import cli, dataset
from iba.demo import photos
from tests.dataset_checks import *  # noqa: F403 (the shared fixtures and tests)
from tests.dataset_checks import FAST, METRIC_OPTIONS, ROOT, rows, run_job, shard

BACKEND = "torch"


@contextlib.contextmanager
def JOB_CONTEXT():
    """One thread, as a Ray actor runs: the same float32 sums, the same rows."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_a_job_killed_after_its_first_block_finishes_on_a_rerun_with_the_same_rows(
    job, cache, tmp_path, capsys
):
    """``python -m iba explain-dataset`` killed (SIGKILL) once block 0 is on disk, then the same
    command again: the rows and heatmaps of the uninterrupted job."""
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "iba", "explain-dataset", str(job.folder), "--out", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [*argv, "--backend", BACKEND, *FAST, *METRIC_OPTIONS],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first = out / "rows" / "part-00000.parquet"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert running and first.exists(), stderr.decode()
    assert process.returncode == -signal.SIGKILL
    done = dataset.done_blocks(out)
    assert 0 in done and done != {0, 1, 2}  # killed halfway
    capsys.readouterr()
    assert run_job(BACKEND, job.folder, out) == 0
    printed = capsys.readouterr().out
    assert f"{3 - len(done)} block(s) written, {len(done)} already done" in printed
    assert not list(out.rglob(".partial-*"))
    assert rows(out) == rows(job.out)
    for k in range(3):
        np.testing.assert_array_equal(shard(out, k), shard(job.out, k))


def test_summarize_prints_mean_and_standard_error_and_plots(job, capsys):
    out = job.out
    assert cli.main(["summarize", str(out), "--plot"]) == 0
    printed = capsys.readouterr().out
    values = [r["insertion"] for r in dataset.read_rows(out).to_pylist() if r["error"] is None]
    mean, sem = np.mean(values), np.std(values, ddof=1) / 2
    assert f"insertion      {mean:.4f}   {sem:.4f}      4" in printed
    assert "5 image(s), 1 unreadable" in printed
    assert (out / "curves.png").stat().st_size > 10_000
    means = dataset.mean_curves(out)
    assert set(means) == {
        "degradation_morf",
        "degradation_lerf",
        "insertion_curve",
        "deletion_curve",
    }
    np.testing.assert_allclose(means["degradation_morf"][0], [0.0, 0.5, 1.0])


def _error(capsys, argv):
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_bad_inputs_are_clear_errors_and_nothing_written_is_lost(job, cache, tmp_path, capsys):
    folder, out = job.folder, job.out
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (tmp_path / "empty").mkdir()
    err = _error(capsys, ["explain-dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert "no images in it" in err and "subfolder" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.asarray(photos.photo("chelsea"))).save(bad / "a.png")
    (bad / "labels.csv").write_text("a.png,cat\n")
    err = _error(capsys, ["explain-dataset", str(bad), "--out", str(tmp_path / "o")])
    assert "label 'cat' is not a class index" in err
    (bad / "labels.csv").write_text("a.png,1000\n")
    err = _error(capsys, ["explain-dataset", str(bad), "--out", str(tmp_path / "o"), *FAST])
    assert "label 1000 is out of range; the model has 1000 classes (0 to 999)" in err
    assert not (tmp_path / "o").exists()
    err = _error(
        capsys,
        ["explain-dataset", str(folder), "--out", str(out), *FAST, *METRIC_OPTIONS, "--seed", "4"],
    )
    assert "holds a job of other settings (seed)" in err
    err = _error(capsys, ["explain-dataset", str(folder), "--metrics", "degradation,auc"])
    assert "unknown metric(s) auc" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written


def test_class_subfolders_give_labels_by_sorted_name(tmp_path):
    for name, photo in (("b_espresso", "coffee"), ("a_cat", "chelsea")):
        (tmp_path / name).mkdir()
        Image.fromarray(np.asarray(photos.photo(photo))).save(tmp_path / name / f"{photo}.png")
    items, classes = dataset.scan(tmp_path)
    assert classes == ["a_cat", "b_espresso"]
    assert items == [
        dataset.Item(0, "a_cat/chelsea.png", 0),
        dataset.Item(1, "b_espresso/coffee.png", 1),
    ]
    with pytest.raises(dataset.DatasetError, match="2 class subfolders but the model has 1 "):
        dataset.check_labels(items, 1, classes)


def test_without_pyarrow_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(dataset.DatasetError, match=r"needs pyarrow: pip install pyarrow"):
        dataset.read_rows("anywhere")


def test_ray_data_with_two_workers_gives_the_same_rows_and_maps(job, cache, tmp_path, capsys):
    pytest.importorskip("ray.data")
    ray_out = tmp_path / "ray"
    assert run_job(BACKEND, job.folder, ray_out, "--workers", "2") == 0
    assert "3 block(s) written, 0 already done, 1 unreadable" in capsys.readouterr().out
    assert rows(ray_out) == rows(job.out)  # one thread per actor, one here: the same sums
    for k in range(3):
        np.testing.assert_array_equal(shard(ray_out, k), shard(job.out, k))


def test_without_ray_the_error_names_the_install(job, capsys, monkeypatch):
    folder = job.folder
    monkeypatch.setitem(sys.modules, "ray", None)
    err = _error(capsys, ["explain-dataset", str(folder), "--workers", "2"])
    assert 'runs the job on Ray Data, which is not installed: pip install "ray[data]"' in err
    err = _error(capsys, ["explain-dataset", str(folder), "--address", "ray://head:10001"])
    assert "--address is a Ray cluster's: add --workers N" in err
