"""The command line end to end on the bundled EfficientNet-Lite0 and photos (PyTorch), its checks
of every argument before any work, folders of images, a user's model from the current folder,
the install hints of every backend, ``--seed``, ``--verbose``, ``--version`` and the help."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from iba import cli
from iba.demo import photos, runners
from tests.demo_checks import (
    FAST,
    check_another_seed_changes_the_map,
    check_demo,
    check_quiet_start,
    check_same_map_twice,
    check_shared_estimator,
    check_unknown_layer,
    run_demo,
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``iba demo`` once for the module (its estimator is cached for the other tests)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = run_demo("torch", tmp_path_factory.mktemp("demo"), tmp_path_factory.mktemp("cache"))
    assert not caught, [str(w.message) for w in caught]  # quiet without --verbose
    return run


def test_demo_writes_figures_and_heatmaps(demo_run):
    check_demo(demo_run)


def test_the_estimator_file_is_shared_by_every_backend(demo_run):
    check_shared_estimator(demo_run)


def test_the_same_command_gives_the_same_map(demo_run, tmp_path):
    again = run_demo("torch", tmp_path / "again", demo_run.cache)
    check_same_map_twice(demo_run, again)


def _photo_file(folder, name, photo="chelsea"):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(photos.photo(photo))).save(folder / name)
    return folder / name


def test_explain_gives_the_demos_map_and_another_seed_another(demo_run, tmp_path, monkeypatch):
    monkeypatch.setenv("IBA_CACHE", str(demo_run.cache))
    image = str(_photo_file(tmp_path, "chelsea.png"))
    assert cli.main(["explain", image, "--out", str(tmp_path / "same"), *FAST]) == 0
    np.testing.assert_allclose(
        np.load(tmp_path / "same" / "chelsea.npy"), np.load(demo_run.out / "chelsea.npy"),
        rtol=1e-6, atol=1e-12,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="seen only 60 samples"):  # --verbose: warnings shown
        argv = ["explain", image, "--seed", "1", "--verbose", "--out", str(tmp_path / "seed1")]
        assert cli.main([*argv, *FAST]) == 0
    other = demo_run._replace(out=tmp_path / "seed1")
    check_another_seed_changes_the_map(demo_run._replace(out=tmp_path / "same"), other)


def test_a_folder_is_every_image_in_it_sorted_in_batches(demo_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IBA_CACHE", str(demo_run.cache))
    monkeypatch.setattr(cli, "IMAGES_PER_BATCH", 1)
    folder = tmp_path / "photos"
    _photo_file(folder, "b.png", "coffee")
    _photo_file(folder, "a.jpg", "chelsea")
    _photo_file(folder, ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    out = tmp_path / "out"
    assert cli.main(["explain", str(folder), "--out", str(out), *FAST]) == 0
    printed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert [line for line in printed if line in ("a", "b")] == ["a", "b"]
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "a.png", "b.npy", "b.png"]


def _fails(argv, capsys, match, out, cache=None):
    """Exit status 2, one line naming the problem, nothing written and no work done."""
    assert cli.main([*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("iba: error:"), err
    assert match in err, err
    assert not out.exists()  # nothing partial written
    if cache is not None:
        assert not cache.exists()  # no estimator fitted
    return err


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--samples", "0", "--samples: 0: the estimator needs at least 2 samples"),
        ("--samples", "-5", "--samples: -5: the estimator needs at least 2 samples"),
        ("--samples", "many", "--samples: expected a whole number, got 'many'"),
        ("--steps", "0", "--steps: 0: the optimisation needs at least 1 step"),
        ("--beta", "-1", "--beta: -1: beta must be a finite number >= 0"),
        ("--beta", "nan", "--beta: nan: beta must be a finite number >= 0"),
        ("--seed", "-1", "--seed: -1: the seed is a whole number >= 0"),
        ("--backend", "mxnet", "--backend 'mxnet': unknown backend; backends are: torch"),
    ],
)
def test_bad_options_fail_before_any_work(option, value, match, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    for command in (["demo"], ["explain", str(_photo_file(tmp_path, "cat.png"))]):
        _fails([*command, option, value], capsys, match, tmp_path / "out", tmp_path / "cache")


def test_bad_images_fail_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    out, cache = tmp_path / "out", tmp_path / "cache"
    missing = str(tmp_path / "missing.jpg")
    _fails(["explain", missing], capsys, "missing.jpg: no such file or folder", out, cache)
    (tmp_path / "notes.txt").write_text("not an image")
    _fails(["explain", str(tmp_path / "notes.txt")], capsys, "not an image", out, cache)
    (tmp_path / "empty").mkdir()
    _fails(["explain", str(tmp_path / "empty")], capsys, "a folder with no images", out, cache)
    image = str(_photo_file(tmp_path, "cat.png"))
    (tmp_path / "file").write_text("")
    _fails(["explain", image], capsys, "is a file; give a folder", tmp_path / "file" / "o", cache)
    _fails(["explain", image, "--model", "nocolon"], capsys, "expected MODULE:FUNCTION", out)
    assert cli.main([]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_out_naming_a_file_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.png"
    out.write_bytes(b"a file the user keeps")
    assert cli.main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"iba: error: --out {out}: is a file; give a folder (it is made if missing)"
    assert out.read_bytes() == b"a file the user keeps" and not (tmp_path / "cache").exists()


def test_unknown_layer_lists_the_blocks_and_the_head_first(tmp_path, capsys):
    check_unknown_layer("torch", tmp_path, capsys, tmp_path / "cache")


def test_quiet_start(tmp_path):
    check_quiet_start("torch", tmp_path)


MODEL_FILE = """
import torch


def not_a_model():
    return "a string"


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    )
"""


def test_explain_with_a_model_from_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    module = "mymodels_in_cwd"
    (tmp_path / f"{module}.py").write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, module, raising=False)
    path_before = list(sys.path)
    image = str(_photo_file(tmp_path, "cat.png"))
    argv = ["explain", image, "--model", f"{module}:build", "--samples", "20", "--steps", "2"]
    assert cli.main([*argv, "--layer", "1", "--out", "o"]) == 0
    assert sys.path == path_before  # the current folder was searched for the import only
    assert "cat: class " in capsys.readouterr().out  # no ImageNet names for a user's model
    heat = np.load(tmp_path / "o" / "cat.npy")
    assert heat.shape == (224, 224) and heat.max() > 0
    cached = [p.name for p in (tmp_path / "cache").iterdir()]
    assert cached == [f"{module}-build_torch_1_20.npz"]  # per model and backend
    # an unknown layer of a user's model lists its top-level layers
    err = _fails([*argv, "--layer", "conv"], capsys, "layers are: 0, 1, 2, 3, 4", tmp_path / "x")
    assert err.endswith("layers are: 0, 1, 2, 3, 4")
    _fails(["explain", image, "--model", "no_such_module_here:build"], capsys,
           "cannot import no_such_module_here", tmp_path / "x")  # fmt: skip
    _fails(["explain", image, "--model", f"{module}:nope"], capsys,
           f"{module} has no function nope()", tmp_path / "x")  # fmt: skip
    _fails(["explain", image, "--model", f"{module}:not_a_model"], capsys,
           "the torch backend explains a torch.nn.Module, got str", tmp_path / "x")  # fmt: skip


class _MissingFramework:
    """An entry point whose runner's import fails as when ``module`` is not installed."""

    def __init__(self, module):
        self.module = module

    def load(self):
        raise ModuleNotFoundError(f"No module named {self.module!r}", name=self.module)


@pytest.mark.parametrize(
    ("backend", "keras_backend", "missing", "package", "line"),
    [
        ("torch", None, "efficientnet_lite_pytorch", "efficientnet-lite-pytorch",
         'pip install torch==2.13.0 ".[demo]"'),
        ("keras", "tensorflow", "tensorflow", "tensorflow>=2.16", 'pip install ".[tf,demo-data]"'),
        ("keras", "jax", "jax", "jax>=0.4.30",
         'pip install ".[demo-data]" "keras>=3.3" "jax>=0.4.30" tqdm'),
        ("keras", "torch", "torch", "torch==2.13.0",
         'pip install torch==2.13.0 ".[demo-data]" "keras>=3.3" tqdm'),
        ("keras", "jax", "keras", "keras>=3.3",
         'pip install ".[demo-data]" "keras>=3.3" "jax>=0.4.30" tqdm'),
        ("jax", None, "flax", "flax>=0.10", 'pip install ".[jax,demo-data]"'),
    ],
)  # fmt: skip
def test_a_missing_framework_is_named_with_its_install_line(
    backend, keras_backend, missing, package, line, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(runners, "_entry_points", lambda: {backend: _MissingFramework(missing)})
    if keras_backend:
        monkeypatch.setenv("KERAS_BACKEND", keras_backend)
    err = _fails(["demo", "--backend", backend], capsys, f"needs {missing}:", tmp_path / "o")
    assert err.endswith(f'needs {missing}: pip install "{package}" (all it needs: {line})')
    if backend == "keras":
        assert f"(KERAS_BACKEND={keras_backend})" in err
        assert ("[tf," in err) == (keras_backend == "tensorflow")


def test_an_unknown_keras_backend_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "mxnet")
    err = _fails(["demo", "--backend", "keras"], capsys, "KERAS_BACKEND='mxnet'", tmp_path / "o")
    assert "tensorflow, jax, torch" in err


def test_version_and_plain_text_help(capsys):
    import iba

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"iba {iba.__version__}"
    for argv in (["--help"], ["demo", "--help"], ["explain", "--help"]):
        assert cli.main(argv) == 0
        text = capsys.readouterr().out
        assert "usage: iba" in text and "--seed" in text or argv == ["--help"]
        assert "``" not in text and ":func:" not in text and ":mod:" not in text
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "iba demo" in text and "iba explain IMAGE" in text and "--version" in text
