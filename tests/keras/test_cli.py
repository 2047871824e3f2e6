"""``iba demo --backend keras`` end to end: the Keras port of EfficientNet-Lite0 on this session's
Keras backend, the bundled photos, figures and heatmaps written."""

from __future__ import annotations

from tests.demo_checks import check_port_demo, check_unknown_layer


def test_demo_on_the_keras_port(tmp_path, monkeypatch, capsys):
    check_port_demo("keras", tmp_path, monkeypatch, capsys)


def test_unknown_layer_lists_the_keras_names(tmp_path, capsys):
    check_unknown_layer("keras", tmp_path, capsys)
