"""What the command-line tests of every backend check of ``iba demo``: the figures and heatmaps
written for the bundled photos, a cat for chelsea, the quokka's heatmap inside its box, the same
map from the same command, the estimator file every backend shares, one-line errors, a quiet
start, and ``iba explain --model`` with a user's model from the current folder. Imported as
``tests.demo_checks`` (pytest's ``pythonpath``).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

import iba
import iba.evaluation
from iba import cli
from iba.demo import photos

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
SAMPLES = 60
FAST = ["--samples", str(SAMPLES), "--steps", "4"]
# the bundled model's estimator file: shared by every backend, channels-first
SHARED_ESTIMATOR = f"efficientnet-lite0__blocks_4_{SAMPLES}.npz"
ROOT = Path(__file__).resolve().parents[1]


class DemoRun(NamedTuple):
    """One ``iba demo`` of a module's tests: exit status, printed text, output and cache."""

    code: int
    printed: str
    out: Path
    cache: Path


def run_demo(backend: str, out: Path, cache: Path, *extra: str) -> DemoRun:
    """``iba demo --backend BACKEND`` with small settings, the estimator cached in ``cache``
    (usable from a module-scoped fixture: it captures what is printed itself)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("IBA_CACHE", str(cache))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            code = cli.main(["demo", "--backend", backend, "--out", str(out), *FAST, *extra])
    finally:
        mp.undo()
    return DemoRun(code, printed.getvalue(), out, cache)


def top1(printed: str, photo: str) -> str:
    """The top class printed for ``photo`` (``chelsea: Egyptian cat 39.4%, ...``)."""
    line = next(line for line in printed.splitlines() if line.startswith(f"{photo}:"))
    return line.split(":", 1)[1].split(",")[0].rsplit(" ", 1)[0].strip()


def assert_figures_and_heatmaps(out: Path) -> None:
    for name in photos.EXPLAINED:
        assert (out / f"{name}.png").stat().st_size > 10_000
        heat = np.load(out / f"{name}.npy")
        assert heat.shape == (224, 224) and np.all(heat >= 0) and heat.max() > 0


def assert_quokka_inside_its_box(out: Path) -> None:
    """The share of the heatmap in the quokka's box is well above the box's share of the image."""
    box = photos.quokka_crop_box()
    heat = np.load(out / "quokka.npy")
    ratio = iba.evaluation.bounding_box_ratio(heat[None], [box], max_box_fraction=1.0).mean
    share = (box[2] - box[0]) * (box[3] - box[1]) / 224**2
    assert ratio > share + 0.2, (ratio, share)


def check_demo(run: DemoRun) -> None:
    """A demo run: status 0, a cat for chelsea, figures and heatmaps, the quokka in its box."""
    assert run.code == 0
    assert top1(run.printed, "chelsea") in CATS
    assert_figures_and_heatmaps(run.out)
    assert_quokka_inside_its_box(run.out)


def check_shared_estimator(run: DemoRun) -> None:
    """The bundled model's estimator: one file per layer and data, no backend in its name,
    stored channels-first ``(C, H, W)`` whichever backend fitted it."""
    assert [p.name for p in run.cache.iterdir()] == [SHARED_ESTIMATOR]
    (estimator,) = iba.load_estimators(run.cache / SHARED_ESTIMATOR)
    assert estimator.layout == "channels_first" and estimator.feature_shape == (40, 28, 28)
    assert estimator.n_samples == SAMPLES


def check_same_map_twice(first: DemoRun, second: DemoRun) -> None:
    """The same command again (the estimator now loaded from the cache) gives the same maps."""
    assert second.code == 0 and "estimator: loaded from" in second.printed
    for name in photos.EXPLAINED:
        np.testing.assert_allclose(
            np.load(second.out / f"{name}.npy"), np.load(first.out / f"{name}.npy"), rtol=1e-6,
            atol=1e-9 * np.load(first.out / f"{name}.npy").max(),
        )  # fmt: skip


def check_another_seed_changes_the_map(first: DemoRun, other: DemoRun) -> None:
    """Other noise, another map: by far more than the backends' float32 rounding (1e-5 of the
    maximum), if little with few steps (Adam's first steps follow the gradient's sign)."""
    assert other.code == 0
    a, b = (np.load(run.out / "chelsea.npy") for run in (first, other))
    assert np.abs(a - b).max() > 1e-4 * a.max()


def check_unknown_layer(backend: str, tmp_path: Path, capsys, cache: Path) -> None:
    """An unknown layer: exit status 2, one line listing the blocks and the head first, nothing
    written, no estimator fitted."""
    out = tmp_path / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("IBA_CACHE", str(cache))
    try:
        argv = ["demo", "--backend", backend, "--layer", "_blocks.99", "--out", str(out)]
        assert cli.main(argv) == 2
    finally:
        mp.undo()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("iba: error: --layer '_blocks.99'")
    sep = "." if backend == "torch" else "_"
    listed = err.split("layers are: ", 1)[1].split(", ")
    expected = ["_conv_stem", *(f"_blocks{sep}{i}" for i in range(16)), "_conv_head"]
    assert listed[: len(expected)] == expected
    assert listed[len(expected)].startswith("_fc")
    assert not out.exists() and not cache.exists()


def check_quiet_start(backend: str, tmp_path: Path) -> None:
    """``python -m iba`` prints nothing of the frameworks' start-up (TensorFlow's oneDNN and CUDA
    notices) unless ``--verbose``: an unknown layer, after the model is loaded, is one line."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["IBA_CACHE"] = str(tmp_path / "cache")
    argv = [sys.executable, "-m", "iba", "demo", "--backend", backend, "--layer", "nope"]
    done = subprocess.run(
        [*argv, "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iba: error: --layer 'nope'"), lines
    assert done.stdout == ""


def check_users_model(
    backend: str, source: str, layer: str, top: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """``iba explain --model MODULE:build`` with ``source`` saved as ``MODULE.py`` in the current
    folder: the map of a user's model, its own estimator file (per model and backend), and an
    unknown layer listing the model's top-level layers ``top`` first."""
    module = f"users_model_{backend}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delitem(sys.modules, module, raising=False)
    Image.fromarray(np.asarray(photos.photo("chelsea"))).save(tmp_path / "cat.png")
    argv = ["explain", "cat.png", "--backend", backend, "--model", f"{module}:build"]
    small = ["--samples", "20", "--steps", "2"]
    assert cli.main([*argv, *small, "--layer", layer, "--out", "o"]) == 0
    assert "cat: class " in capsys.readouterr().out  # no ImageNet names for a user's model
    heat = np.load(tmp_path / "o" / "cat.npy")
    assert heat.shape == (224, 224) and heat.max() > 0
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        f"{module}-build_{backend}_{layer}_20.npz"
    ]
    assert cli.main([*argv, "--layer", "nope", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"layers are: {top}" in err, err
    assert not (tmp_path / "x").exists()


class DemoTests:
    """The demo's tests of one ported backend: a test module subclasses this with ``BACKEND``
    (the ``--backend`` name), ``USERS_MODEL`` (a module's source with ``build()``) and
    ``USERS_TOP`` (its top-level layers, as the error lists them)."""

    BACKEND: str
    USERS_MODEL: str
    USERS_TOP: str
    LAYER = "_blocks_4"  # the ports' name of EfficientNet-Lite0's fifth block

    @pytest.fixture(scope="class")
    @classmethod
    def demo_run(cls, tmp_path_factory) -> DemoRun:
        cache = tmp_path_factory.mktemp("cache")
        return run_demo(cls.BACKEND, tmp_path_factory.mktemp("demo"), cache, "--layer", cls.LAYER)

    def test_demo_on_the_port(self, demo_run):
        check_demo(demo_run)

    def test_the_estimator_file_is_shared_and_channels_first(self, demo_run):
        check_shared_estimator(demo_run)

    def test_the_same_command_gives_the_same_map(self, demo_run, tmp_path):
        again = run_demo(self.BACKEND, tmp_path / "again", demo_run.cache, "--layer", self.LAYER)
        check_same_map_twice(demo_run, again)

    def test_unknown_layer_lists_the_blocks_and_the_head_first(self, tmp_path, capsys):
        check_unknown_layer(self.BACKEND, tmp_path, capsys, tmp_path / "cache")

    def test_quiet_start(self, tmp_path):
        check_quiet_start(self.BACKEND, tmp_path)

    def test_explain_with_a_users_model(self, tmp_path, monkeypatch, capsys):
        check_users_model(
            self.BACKEND, self.USERS_MODEL, "conv", self.USERS_TOP, tmp_path, monkeypatch, capsys
        )
