"""The command line end to end on the bundled EfficientNet-Lite0 and photos."""

import numpy as np
import pytest

from iba import cli
from iba.demo import photos
from tests.demo_checks import (
    CATS,
    FAST,
    assert_figures_and_heatmaps,
    assert_quokka_inside_its_box,
    top1,
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("IBA_CACHE", str(cache))
    code = cli.main(["demo", "--out", str(out), *FAST])
    yield code, out, cache, mp
    mp.undo()


def test_demo_writes_figures_and_heatmaps(demo_run, capsys):
    code, out, cache, _ = demo_run
    assert code == 0
    assert_figures_and_heatmaps(out)
    assert len(list(cache.glob("*.npz"))) == 1


def test_demo_predicts_a_cat_for_chelsea(tmp_path, demo_run, capsys):
    _, _, _, mp = demo_run
    assert cli.main(["demo", "--out", str(tmp_path), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "estimator: loaded from" in printed  # the cached estimator is reused
    assert top1(printed, "chelsea") in CATS


def test_quokka_heatmap_falls_inside_its_box(demo_run):
    _, out, _, _ = demo_run
    assert_quokka_inside_its_box(out)


def _fails(argv, capsys, match, out):
    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("iba: error:")
    assert match in err
    assert not out.exists()  # nothing partial written


def test_bad_input_exits_with_one_line(tmp_path, capsys, demo_run):
    out = tmp_path / "out"
    _fails(["explain", str(tmp_path / "missing.jpg")], capsys, "no such file", out)
    (tmp_path / "notes.txt").write_text("not an image")
    _fails(["explain", str(tmp_path / "notes.txt")], capsys, "not an image", out)
    image = tmp_path / "cat.png"
    from PIL import Image

    Image.fromarray(np.asarray(photos.photo("chelsea"))).save(image)
    _fails(["explain", str(image), "--layer", "_blocks.99"], capsys, "layers are: _conv_stem", out)
    _fails(["explain", str(image), "--backend", "mxnet"], capsys, "unknown backend 'mxnet'", out)
    _fails(["explain", str(image), "--beta", "-1"], capsys, "beta must be >= 0", out)


def test_explain_a_users_image(tmp_path, demo_run):
    from PIL import Image

    image = tmp_path / "coffee.jpg"
    Image.fromarray(np.asarray(photos.photo("coffee"))).save(image)
    assert cli.main(["explain", str(image), "--out", str(tmp_path / "o"), *FAST]) == 0
    assert np.load(tmp_path / "o" / "coffee.npy").shape == (224, 224)


def small_cnn():
    """A user's model for ``--model test_cli:small_cnn`` (seeded: the same model every call)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    )  # fmt: skip


def test_explain_with_the_users_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "cat.png"
    from PIL import Image

    Image.fromarray(np.asarray(photos.photo("chelsea"))).save(image)
    spec = f"{__name__}:small_cnn"
    argv = ["explain", str(image), "--model", spec, "--layer", "1", "--samples", "20"]
    assert cli.main([*argv, "--steps", "2", "--out", str(tmp_path / "o")]) == 0
    assert "cat: class " in capsys.readouterr().out  # no ImageNet names for a user's model
    heat = np.load(tmp_path / "o" / "cat.npy")
    assert heat.shape == (224, 224) and heat.max() > 0
    cached = [p.name for p in (tmp_path / "cache").iterdir()]
    assert cached == [f"{spec.replace(':', '-')}_torch_1_20.npz"]
