"""``iba demo --backend jax`` end to end: the Flax (Linen) port of EfficientNet-Lite0,
the bundled photos, figures and heatmaps written."""

from __future__ import annotations

import numpy as np

import iba.evaluation
from iba import cli
from iba.demo import photos

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def test_demo_on_the_flax_port(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    argv = ["demo", "--backend", "jax", "--layer", "_blocks_4", "--out", str(out)]
    assert cli.main([*argv, "--samples", "60", "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    chelsea = next(line for line in printed.splitlines() if line.startswith("chelsea:"))
    assert chelsea.split(":", 1)[1].split(",")[0].rsplit(" ", 1)[0].strip() in CATS
    for name in photos.EXPLAINED:
        assert (out / f"{name}.png").stat().st_size > 10_000
        heat = np.load(out / f"{name}.npy")
        assert heat.shape == (224, 224) and np.all(heat >= 0) and heat.max() > 0
    box = photos.quokka_crop_box()
    ratio = iba.evaluation.bounding_box_ratio(
        np.load(out / "quokka.npy")[None], [box], max_box_fraction=1.0
    ).mean
    share = (box[2] - box[0]) * (box[3] - box[1]) / 224**2
    assert ratio > share + 0.2, (ratio, share)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        "efficientnet-lite0_jax__blocks_4_60.npz"
    ]


def test_unknown_layer_lists_the_flax_paths(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--backend", "jax", "--layer", "_blocks.99", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--layer '_blocks.99' not found" in err and "_blocks_4" in err
    assert not out.exists()
