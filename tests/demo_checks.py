"""What the command-line tests of every backend check of ``iba demo``: the figures and heatmaps
written for the bundled photos, a cat for chelsea, the quokka's heatmap inside its box, and a
one-line error for an unknown layer. Imported as ``tests.demo_checks`` (pytest's ``pythonpath``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import iba.evaluation
from iba import cli
from iba.demo import photos

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
FAST = ["--samples", "60", "--steps", "4"]


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


def check_port_demo(backend: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """``iba demo --backend BACKEND`` with the port's layer name, end to end."""
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    argv = ["demo", "--backend", backend, "--layer", "_blocks_4", "--out", str(out), *FAST]
    assert cli.main(argv) == 0
    assert top1(capsys.readouterr().out, "chelsea") in CATS
    assert_figures_and_heatmaps(out)
    assert_quokka_inside_its_box(out)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        f"efficientnet-lite0_{backend}__blocks_4_60.npz"
    ]


def check_unknown_layer(backend: str, tmp_path: Path, capsys) -> None:
    """An unknown layer: exit status 2, one line listing the port's names, nothing written."""
    out = tmp_path / "out"
    argv = ["demo", "--backend", backend, "--layer", "_blocks.99", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--layer '_blocks.99' not found" in err and "_blocks_4" in err
    assert not out.exists()
