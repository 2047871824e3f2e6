"""``iba demo --backend jax`` end to end: the Flax (Linen) port of EfficientNet-Lite0,
the bundled photos, figures and heatmaps written."""

from __future__ import annotations

from tests.demo_checks import check_port_demo, check_unknown_layer


def test_demo_on_the_flax_port(tmp_path, monkeypatch, capsys):
    check_port_demo("jax", tmp_path, monkeypatch, capsys)


def test_unknown_layer_lists_the_flax_paths(tmp_path, capsys):
    check_unknown_layer("jax", tmp_path, capsys)
