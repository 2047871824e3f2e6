"""``iba explain-dataset`` and ``iba summarize`` (iba.dataset) on four bundled photos and one
unreadable file, with tiny settings: the rows and heatmap shards, the same map as ``iba explain``,
the metric values recomputed, resuming after a lost block, and the errors on bad inputs."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from iba import cli, dataset
from iba.demo import photos

pytest.importorskip("pyarrow")

# Two optimisation steps of one noise sample, an estimator on 20 crops, 3 degradation points
# and 2 insertion / deletion steps: seconds per image on a CPU.
FAST = ["--samples", "20", "--steps", "2", "--noise-samples", "1", "--seed", "3", "-q"]
METRIC_OPTIONS = ["--points", "3", "--pixels-per-step", str(224 * 112), "--block", "2"]
# file, label (ImageNet: 285 Egyptian cat, 967 espresso); the unreadable file sits in block 1.
LISTED = [
    ("chelsea.png", 285),
    ("coffee.jpg", 967),
    ("broken.jpg", 3),
    ("astronaut.png", 834),
    ("rocket.png", 812),
]


def _folder(root):
    root.mkdir(parents=True)
    for name, _ in LISTED:
        if name == "broken.jpg":
            (root / name).write_text("not an image")
        else:
            Image.fromarray(np.asarray(photos.photo(name.split(".")[0]))).save(root / name)
    lines = ["file,label", *(f"{name},{label}" for name, label in LISTED)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _run(folder, out, *extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the estimator's few samples
        return cli.main(
            ["explain-dataset", str(folder), "--out", str(out), *FAST, *METRIC_OPTIONS, *extra]
        )


def _rows(out):
    """The rows without the timings (the same inputs and seed give the same rows)."""
    return [
        {k: v for k, v in row.items() if "seconds" not in k}
        for row in dataset.read_rows(out).to_pylist()
    ]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One job over the folder, its estimator cached in a temporary IBA_CACHE."""
    root = tmp_path_factory.mktemp("dataset")
    mp = pytest.MonkeyPatch()
    mp.setenv("IBA_CACHE", str(root / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray actor runs: the same float32 sums, the same rows
    try:
        folder = _folder(root / "photos")
        assert _run(folder, root / "out") == 0
        yield folder, root / "out", root / "cache"
    finally:
        torch.set_num_threads(threads)
        mp.undo()


@pytest.fixture
def cache(job, monkeypatch):
    monkeypatch.setenv("IBA_CACHE", str(job[2]))


def test_one_row_per_image_with_targets_predictions_and_metrics(job):
    _, out, _ = job
    rows = dataset.read_rows(out).to_pylist()
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
    assert [(r["file"], r["label"]) for r in rows] == LISTED
    good = [r for r in rows if r["error"] is None]
    assert [r["file"] for r in good] == ["chelsea.png", "coffee.jpg", "astronaut.png", "rocket.png"]
    assert [r["target"] for r in good] == [285, 967, 834, 812]  # the labels, not the predictions
    assert [r["prediction"] for r in good[:2]] == [285, 967]  # the cat and the espresso
    for r in good:
        assert 0 < r["probability"] <= 1
        assert (
            np.isfinite(r["degradation"]) and 0 <= r["insertion"] <= 1 and 0 <= r["deletion"] <= 1
        )
        assert len(r["degradation_morf"]) == len(r["degradation_lerf"]) == 3
        assert r["degradation_morf"][0] == pytest.approx(1.0)  # normalised: t1 -> 1, b -> 0
        assert r["degradation_morf"][-1] == pytest.approx(0.0, abs=1e-12)
        assert len(r["insertion_curve"]) == len(r["deletion_curve"]) == 3
        assert r["seconds"] > r["explain_seconds"] > 0
    job_file = json.loads((out / dataset.JOB_FILE).read_text())
    assert job_file["fractions"]["degradation"] == [0.0, 0.5, 1.0]
    assert job_file["fractions"]["insertion"] == [0.0, 0.5, 1.0]


def test_an_unreadable_image_gets_an_error_row_and_a_nan_map(job):
    _, out, _ = job
    (broken,) = [r for r in dataset.read_rows(out).to_pylist() if r["error"] is not None]
    assert broken["file"] == "broken.jpg" and "cannot read the image" in broken["error"]
    assert broken["target"] is None and broken["degradation"] is None
    shard = np.load(out / "maps" / "maps-00001.npy")
    assert shard.shape == (2, 224, 224) and shard.dtype == np.float32
    assert np.isnan(shard[0]).all() and np.isfinite(shard[1]).all()


def test_the_shards_hold_the_maps_of_iba_explain(job, cache, tmp_path):
    folder, out, _ = job
    shards = [np.load(out / "maps" / f"maps-{i:05d}.npy") for i in range(3)]
    assert [s.shape[0] for s in shards] == [2, 2, 1]
    argv = ["explain", str(folder / "chelsea.png"), "--out", str(tmp_path), *FAST]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(argv) == 0
    # iba explain explains the predicted class: 285, chelsea's label too
    np.testing.assert_allclose(shards[0][0], np.load(tmp_path / "chelsea.npy"), rtol=1e-6)
    assert shards[0][0].min() >= 0 and shards[0][0].max() > 0  # bits per pixel


def test_the_metric_values_are_the_evaluation_modules(job):
    from iba import evaluation
    from iba.demo import runners

    folder, out, _ = job
    run = runners.runner("torch")
    crop = photos.center_crop(np.asarray(Image.open(folder / "coffee.jpg").convert("RGB")))[0]
    heat = np.load(out / "maps" / "maps-00000.npy")[1].astype(np.float64)
    row = dataset.read_rows(out).to_pylist()[1]
    d = evaluation.degradation(
        run.logits,
        crop[None].astype(np.float32),
        heat[None],
        [967],
        n_points=3,
        batch_size=16,
        progress=False,
    )
    assert row["degradation"] == pytest.approx(float(d.scores[0]), rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(row["degradation_morf"], d.morf[0], rtol=1e-5, atol=1e-7)


def test_a_restarted_job_redoes_the_lost_block_only_and_gives_the_same_rows(job, cache, capsys):
    folder, out, _ = job
    before = _rows(out)
    maps_before = np.load(out / "maps" / "maps-00002.npy")
    (out / "rows" / "part-00002.parquet").unlink()  # the block in flight when it crashed
    (out / "rows" / ".partial-part-00002.parquet").write_text("half written")
    capsys.readouterr()
    assert _run(folder, out) == 0
    assert "1 block(s) written, 2 already done, 0 unreadable" in capsys.readouterr().out
    assert not list((out / "rows").glob(".partial-*"))
    assert _rows(out) == before
    np.testing.assert_array_equal(np.load(out / "maps" / "maps-00002.npy"), maps_before)
    assert dataset.done_blocks(out) == {0, 1, 2}


def test_summarize_prints_mean_and_standard_error_and_plots(job, capsys):
    _, out, _ = job
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
    folder, out, _ = job
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
    folder, out, _ = job
    ray_out = tmp_path / "ray"
    assert _run(folder, ray_out, "--workers", "2") == 0
    assert "3 block(s) written, 0 already done, 1 unreadable" in capsys.readouterr().out
    assert _rows(ray_out) == _rows(out)  # one thread per actor, one here: the same sums
    for k in range(3):
        np.testing.assert_array_equal(
            np.load(ray_out / "maps" / f"maps-{k:05d}.npy"),
            np.load(out / "maps" / f"maps-{k:05d}.npy"),
        )


def test_without_ray_the_error_names_the_install(job, capsys, monkeypatch):
    folder, _, _ = job
    monkeypatch.setitem(sys.modules, "ray", None)
    err = _error(capsys, ["explain-dataset", str(folder), "--workers", "2"])
    assert 'runs the job on Ray Data, which is not installed: pip install "ray[data]"' in err
    err = _error(capsys, ["explain-dataset", str(folder), "--address", "ray://head:10001"])
    assert "--address is a Ray cluster's: add --workers N" in err
