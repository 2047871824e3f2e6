"""Estimator files: a failed or interrupted save never replaces a good file; a truncated, corrupt or
foreign one gets a clear error naming it (or, where the damage is harmless, loads the same
statistics), and the explainer keeps the estimators it had. (``.keras`` files:
``test_keras_files.py``.)"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iba
from iba import estimator as estimator_module

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore:the estimator has seen only"),
]

FEW = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def same_estimators(a: list[iba.Estimator], b: list[iba.Estimator]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key, value in x.to_arrays().items():
            np.testing.assert_array_equal(y.to_arrays()[key], value, err_msg=key)


def failing_savez(error: BaseException):
    """``np.savez`` that writes half an archive, then fails with ``error``."""

    def savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise error

    return savez


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "ctrl-c"],
)
@pytest.mark.parametrize("how", ["explainer", "save_estimators", "Estimator.save"])
def test_a_failed_save_keeps_the_good_file(fitted, tmp_path, monkeypatch, error, how):
    path = tmp_path / "estimators.npz"
    fitted.save_estimators(path)
    good = path.read_bytes()
    monkeypatch.setattr(estimator_module.np, "savez", failing_savez(error))
    with pytest.raises(type(error)):
        if how == "explainer":
            fitted.save_estimators(path)
        elif how == "save_estimators":
            iba.save_estimators(path, fitted.estimators)
        else:
            fitted.estimators[0].save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["estimators.npz"]  # no temporary file left behind
    same_estimators(iba.load_estimators(path), fitted.estimators)


def test_save_says_where_it_cannot_write(fitted, tmp_path):
    missing = tmp_path / "no such folder" / "estimators.npz"
    with pytest.raises(FileNotFoundError, match="cannot save the estimators to .*no such folder"):
        fitted.save_estimators(missing)
    (tmp_path / "taken.npz").mkdir()
    with pytest.raises(IsADirectoryError, match="taken.npz: a folder"):
        fitted.save_estimators(tmp_path / "taken.npz")
    with pytest.raises(ValueError, match="save_estimators got no estimators"):
        iba.save_estimators(tmp_path / "none.npz", [])
    with pytest.raises(TypeError, match="estimators must be iba.Estimator objects, got str"):
        iba.save_estimators(tmp_path / "names.npz", ["relu2"])
    assert sorted(os.listdir(tmp_path)) == ["taken.npz"]


def test_a_save_replaces_the_file_whole(fitted, tmp_path):
    """A name without ``.npz`` gets it (as ``np.savez`` does); the new file's mode follows the
    umask like any new file."""
    fitted.save_estimators(tmp_path / "stats")
    assert os.listdir(tmp_path) == ["stats.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "stats.npz").stat().st_mode & 0o777 == 0o666 & ~umask
    same_estimators(iba.load_estimators(tmp_path / "stats.npz"), fitted.estimators)


# -- corrupt and foreign files -------------------------------------------------------------------


@st.composite
def damage(draw):
    """How to damage a good file: cut it short, or overwrite bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "garbage"]))
    if kind == "truncate":
        return kind, draw(st.floats(0, 0.999)), 0
    return kind, draw(st.floats(0, 0.999)), draw(st.integers(1, 255))


@FEW
@given(how=damage())
def test_a_damaged_file_fails_clearly(subject, fitted, tmp_path, how):
    kind, where, value = how
    good = io.BytesIO()
    iba.save_estimators(good, fitted.estimators)
    data = bytearray(good.getvalue())
    at = int(where * len(data))
    if kind == "truncate":
        data = data[:at]
    elif kind == "flip":
        data[at] ^= value
    else:
        data[at : at + 64] = bytes([value]) * len(data[at : at + 64])
    path = tmp_path / f"damaged-{kind}-{at}-{value}.npz"
    path.write_bytes(bytes(data))
    explainer = subject.explainer(estimators=fitted.estimators)
    try:
        loaded = explainer.load_estimators(path)
    except ValueError as err:  # the file is named; the explainer keeps its estimators
        assert os.fspath(path) in str(err)
        assert explainer.estimators == fitted.estimators
        with pytest.raises(ValueError, match="damaged-"):
            subject.explainer(estimators=path)
    else:  # the damage hit bytes that carry no data (a header's date, say)
        same_estimators(loaded, fitted.estimators)


@pytest.mark.parametrize(
    "contents, message",
    [
        (lambda p: p.write_bytes(b"not an archive"), "is not a complete estimators file"),
        (lambda p: np.save(p, np.ones(3)), "is not a complete estimators file"),
        (lambda p: np.savez(p, count=np.array([None])), "Object arrays cannot be loaded"),
        (lambda p: np.savez(p, weights=np.ones(3)), "holds no estimator"),
        (lambda p: np.savez(p, count=np.array(0)), "holds 0 estimators"),
    ],
    ids=["text", "npy", "pickled", "foreign", "empty"],
)
def test_a_foreign_file_fails_clearly(subject, tmp_path, contents, message):
    path = tmp_path / "file.npz"
    contents(path)
    if not path.exists():  # np.save appended .npy
        os.replace(tmp_path / "file.npz.npy", path)
    with pytest.raises(ValueError, match=message) as err:
        subject.explainer().load_estimators(path)
    assert os.fspath(path) in str(err.value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("format_version", np.array(2), "estimator format 2, this version of iba reads format 1"),
        ("mean", "nan", "its mean or M2 holds NaN"),
        ("m2", "negative", "its mean or M2 holds NaN, infinite or negative"),
        ("nonzero", "too many", "non-zero counts are not between 0 and n_samples"),
        ("n_samples", np.array([1, 2]), "corrupt estimator"),
        ("layout", np.array("NCHW"), "unknown layout 'NCHW'"),
        ("feature_shape", np.array([1, 2, 3]), "do not have the feature shape"),
    ],
)
def test_inconsistent_statistics_fail_clearly(fitted, tmp_path, field, value, message):
    arrays = fitted.estimators[0].to_arrays()
    if isinstance(value, str):
        value = {
            "nan": arrays["mean"] * np.nan,
            "negative": -1 - arrays["m2"],
            "too many": arrays["nonzero"] + arrays["n_samples"] + 1,
        }[value]
    arrays[field] = value
    path = tmp_path / "est.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as err:
        iba.Estimator.load(path)
    assert os.fspath(path) in str(err.value)
