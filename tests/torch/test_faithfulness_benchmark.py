"""``benchmarks/faithfulness.py`` on a tiny case, so the script cannot rot: its arguments, one
backend (PyTorch, in this process) with ``--quick``, the papers' variants, the estimator data and
the agreement check (docs/mathematics.md sections 7 and 8; docs/metrics.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--backend", "torch", "--quick", "--images", "1", "--points", "2",
    "--estimation-samples", "4", "--methods", "Random,IBA", "--threads", "2",
]  # fmt: skip

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")


@pytest.fixture(scope="session")
def bench():
    """The script as a module."""
    spec = importlib.util.spec_from_file_location(
        "faithfulness_benchmark", ROOT / "benchmarks" / "faithfulness.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Fast settings for this module's copy only: 2 IBA steps of 2 samples, 5 insertion points.
    module.IBA_CONFIG = {"steps": 2, "batch_size": 2}
    module.PIXELS_PER_STEP = 56 * 224
    return module


@pytest.fixture(scope="session")
def tiny(bench):
    """``(results, ok, printed)`` of the tiny run with the papers' variants."""
    args = bench.parse_args([*TINY, "--paper"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        results, ok = bench.run(args)
    return results, ok, out.getvalue()


def error_of(bench, argv, capsys) -> str:
    with pytest.raises(SystemExit) as raised:
        bench.parse_args(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


def test_arguments_and_settings(bench, capsys):
    args = bench.parse_args([])
    assert args.backend == "all" and args.estimator_data == "bundled" and not args.paper
    full = bench.settings_of(args)
    assert (full["images"], full["points"], full["estimation_samples"]) == (3, 100, 1000)
    assert full["methods"] == list(bench.METHODS)
    quick = bench.settings_of(bench.parse_args(["--quick", "--images", "5", "--paper"]))
    assert (quick["images"], quick["points"], quick["samples"], quick["paper"]) == (2, 20, 8, True)
    assert bench.engine_backends() == ["torch", "keras-tensorflow", "keras-jax", "keras-torch",
                                       "flax"]  # fmt: skip
    args = bench.parse_args(["--python-for", "keras-jax=/opt/py", "--methods", "IBA,Random"])
    assert args.python_overrides == {"keras-jax": "/opt/py"}
    assert bench.python_for("keras-jax", args.python_overrides) == "/opt/py"
    assert bench.settings_of(args)["methods"] == ["Random", "IBA"]  # the table's order

    assert "NAME=PATH" in error_of(bench, ["--python-for", "jax=/opt/py"], capsys)
    assert "choose from" in error_of(bench, ["--methods", "LIME"], capsys)
    assert "existing folder" in error_of(bench, ["--estimator-data", "/no/such/dir"], capsys)
    assert "invalid choice" in error_of(bench, ["--backend", "mxnet"], capsys)


def test_estimator_data(bench, tmp_path):
    from iba.demo import photos

    images, names = bench.evaluated_images(4)
    assert images.shape == (4, 224, 224, 3) and images.dtype == np.uint8
    assert names == [*photos.EXPLAINED, "crop 0"]
    np.testing.assert_array_equal(images[0], photos.center_crop(photos.photo("chelsea"))[0])
    bundled = np.concatenate(list(bench.estimator_batches("bundled", 3, 1)))
    expected = np.concatenate(list(photos.random_crops(photos.ESTIMATION, n=3, seed=0)))
    np.testing.assert_array_equal(bundled, expected)
    evaluated = np.concatenate(list(bench.estimator_batches("evaluated", 3, 1)))
    np.testing.assert_array_equal(
        evaluated, np.concatenate(list(photos.random_crops(["chelsea"], n=3, seed=0)))
    )
    from PIL import Image

    for i, size in enumerate([(60, 40), (50, 80)]):
        Image.fromarray(np.full((*size, 3), 40 * i + 10, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    crops = np.concatenate(list(bench.estimator_batches(str(tmp_path), 30, 1)))
    assert crops.shape == (30, 224, 224, 3)
    assert set(np.unique(crops)) == {10, 50}  # each crop of one of the two flat images
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no images in it"):
        bench.folder_images(empty)


def test_one_backend_quick(bench, tiny):
    results, ok, printed = tiny
    assert ok and list(results) == ["torch"]
    torch_result = results["torch"]
    np.testing.assert_array_equal(torch_result["targets"], [285])  # chelsea: Egyptian cat
    np.testing.assert_array_equal(torch_result["estimator/feature_shape"], [40, 28, 28])
    assert str(torch_result["estimator/layout"]) == "channels_first"
    expected = np.random.default_rng(0).random((1, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(torch_result["Random/maps"], expected)
    for method in ("Random", "IBA"):
        assert torch_result[f"{method}/maps"].shape == (1, 224, 224)
        for metric in bench.METRICS:
            score = torch_result[f"{method}/{metric}"]
            assert score.shape == (1,) and np.isfinite(score).all()
        for metric in ("Insertion", "Deletion"):
            assert 0 <= torch_result[f"{method}/{metric}"][0] <= 1
    assert "Saliency/maps" not in torch_result and "Grad-CAM/maps" not in torch_result
    assert (
        "(a) torch: EfficientNet-Lite0, 1 image(s), degradation 2 points, the papers' " in printed
    )
    assert "4 random crops of the bundled estimation photos" in printed
    assert "no agreement table" in printed


def test_paper_variants_change_the_scores(bench, tiny):
    """The tiny run scored with the papers' variants; the library's deletion (to the mean colour
    in the input space, not to black) differs on the same IBA map."""
    results, _, _ = tiny
    adapter = bench.Adapter("torch", 2)
    images, _ = bench.evaluated_images(1)
    maps = results["torch"]["IBA/maps"].astype(np.float64)
    targets = results["torch"]["targets"]
    paper = bench.scores(adapter, images, maps, targets, 2, True, ("Degr. 8x8", "Deletion"))
    library = bench.scores(adapter, images, maps, targets, 2, False, ("Deletion",))
    for metric in paper:
        np.testing.assert_allclose(paper[metric], results["torch"][f"IBA/{metric}"])
    assert abs(paper["Deletion"][0] - library["Deletion"][0]) > 0.01


def test_agreement(bench, tiny, capsys):
    results, _, _ = tiny
    reference = results["torch"]
    shifted = {k: (v + 0.01 if "/Deg" in k else v) for k, v in reference.items()}
    assert bench.agreement({"torch": reference, "keras-jax": shifted}, 0.02)
    printed = capsys.readouterr().out
    assert "tolerance 0.02: PASS" in printed and "keras-jax 1.0e-02" in printed
    assert not bench.agreement({"torch": reference, "flax": shifted}, 0.005)
    assert "tolerance 0.005: FAIL" in capsys.readouterr().out
    assert bench.agreement({"flax": shifted}, 0.005)  # nothing to compare with
