"""``iba demo --backend keras`` end to end: the Keras port of EfficientNet-Lite0 on this session's
Keras backend, the bundled photos, figures and heatmaps written, the same map from the same
command, the estimator file shared with the other backends, the layer list and a quiet start."""

from __future__ import annotations

import pytest

from tests.demo_checks import (
    check_demo,
    check_quiet_start,
    check_same_map_twice,
    check_shared_estimator,
    check_unknown_layer,
    check_users_model,
    run_demo,
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return run_demo("keras", tmp_path_factory.mktemp("demo"), cache, "--layer", "_blocks_4")


def test_demo_on_the_keras_port(demo_run):
    check_demo(demo_run)


def test_the_estimator_file_is_shared_and_channels_first(demo_run):
    check_shared_estimator(demo_run)


def test_the_same_command_gives_the_same_map(demo_run, tmp_path):
    again = run_demo("keras", tmp_path / "again", demo_run.cache, "--layer", "_blocks_4")
    check_same_map_twice(demo_run, again)


def test_unknown_layer_lists_the_blocks_and_the_head_first(tmp_path, capsys):
    check_unknown_layer("keras", tmp_path, capsys, tmp_path / "cache")


def test_quiet_start(tmp_path):
    check_quiet_start("keras", tmp_path)


USERS_MODEL = """
import keras


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    h = keras.layers.Conv2D(8, 3, strides=4, activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(pooled))
"""


def test_explain_with_a_users_model(tmp_path, monkeypatch, capsys):
    check_users_model(
        "keras", USERS_MODEL, "conv", "conv, pool, head", tmp_path, monkeypatch, capsys
    )
