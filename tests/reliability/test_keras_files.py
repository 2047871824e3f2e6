"""A ``.keras`` file written by another version of ``IBALayer`` (another layer format, settings or
weights this version does not have) fails to load with an error that names the layer and says
what to do; one written before the format field existed loads and explains as before. Collected
on the Keras backends only."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore:the estimator has seen only"),
    pytest.mark.filterwarnings("ignore:Skipping nested container"),  # h5py's copy of the file
]

AGAIN = "load the model with the version of iba_tf that saved it"
KNOWN = {
    "name", "trainable", "dtype", "data_format", "sigma", "relu", "min_std",
    "active_threshold", "initial_alpha", "seed", "format_version",
}  # fmt: skip


def edit_keras_file(source, target, config=None, weights=None) -> None:
    """A copy of a ``.keras`` zip with every IBALayer's config and weight group edited."""
    import h5py

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json" and config is not None:
                tree = json.loads(data)
                for layer in tree["config"]["layers"]:
                    if layer["class_name"] == "IBALayer":
                        config(layer["config"])
                data = json.dumps(tree).encode()
            if item == "model.weights.h5" and weights is not None:
                buffer = io.BytesIO(data)
                with h5py.File(buffer, "r+") as h5:
                    for name, group in h5["layers"].items():
                        if name.startswith("iba_layer"):
                            weights(group["vars"])
                data = buffer.getvalue()
            zout.writestr(item, data)


@pytest.fixture(scope="module")
def saved(subject, fitted, tmp_path_factory):
    """The subject's model, with the statistics in its IBALayers, saved as ``.keras``."""
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    subject.model.save(path)
    return path


def load_fails(path, message: str) -> None:
    import keras

    with pytest.raises((ValueError, TypeError)) as err:
        keras.models.load_model(path)
    text = str(err.value)
    assert "IBALayer 'iba_relu" in text and message in text and AGAIN in text, text


config_edits = st.one_of(
    st.integers().filter(lambda v: v != 1).map(lambda v: ("format_version", v)),
    st.sampled_from(["1", "2", None, True, 1.0]).map(lambda v: ("format_version", v)),
    st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
    .filter(lambda key: key not in KNOWN)
    .map(lambda key: (key, 0.5)),
)


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edit=config_edits)
def test_a_config_of_another_version(saved, tmp_path, edit):
    key, value = edit
    path = tmp_path / "edited.keras"
    edit_keras_file(saved, path, config=lambda c: c.update({key: value}))
    if key == "format_version":
        load_fails(path, f"was saved in layer format {value!r}; this version of iba_tf reads")
    else:
        load_fails(path, f"Unrecognized keyword arguments passed to IBALayer: {{'{key}': 0.5}}")


@pytest.mark.parametrize(
    "key, value", [("data_format", "NCHW"), ("min_std", -1.0), ("sigma", "wide")]
)
def test_invalid_settings(saved, tmp_path, key, value):
    path = tmp_path / "edited.keras"
    edit_keras_file(saved, path, config=lambda c: c.update({key: value}))
    load_fails(path, "the saved config does not fit this version of the layer")


def _drop_last(group) -> None:
    del group[str(len(group) - 1)]


def _add_one(group) -> None:
    group[str(len(group))] = np.zeros((), np.float32)


def _reshape_first(group) -> None:
    shape = group["0"].shape
    del group["0"]
    group["0"] = np.zeros((*shape[:-1], shape[-1] + 1), np.float32)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop_last, "the file holds 5 weight(s)"),
        (_add_one, "the file holds 7 weight(s)"),
        (_reshape_first, "this version of the layer has 6 (alpha, mean, std"),
    ],
    ids=["fewer", "more", "reshaped"],
)
def test_weights_of_another_version(saved, tmp_path, edit, message):
    path = tmp_path / "edited.keras"
    edit_keras_file(saved, path, weights=edit)
    load_fails(path, message)


def test_a_file_from_before_the_format_field_loads(subject, fitted, saved, tmp_path):
    """Written before ``format_version`` and ``seed`` existed: the same layout, defaults kept;
    the statistics come from the file (no ``estimate()``)."""
    import keras

    def earlier(config):
        del config["format_version"], config["seed"]

    path = tmp_path / "earlier.keras"
    edit_keras_file(saved, path, config=earlier)
    loaded = keras.models.load_model(path)
    want = fitted.analyze(subject.model, subject.x, target=subject.labels)
    got = subject.explainer().analyze(loaded, subject.x, target=subject.labels)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
