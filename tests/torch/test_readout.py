"""The Readout Bottleneck (docs/mathematics.md section 3) on the MNIST CNN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_model_state import assert_same, snapshot

from iba_torch import Readout
from iba_torch.readout import readout_network


def test_network_starts_at_alpha_5():
    net = readout_network(10, 4)
    alpha = net(torch.randn(2, 10, 5, 5))
    assert alpha.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(alpha.detach().numpy(), 5.0, atol=0.05)
    assert net[0].out_channels == 5 and net[2].out_channels == 8


def test_readout_trains_saves_and_loads(mnist, mnist_cnn, tmp_path):
    x, y, tx, ty = mnist
    readout = Readout("features.4", ["features.7", "classifier.1"], beta=10.0, relu=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        readout.estimate(mnist_cnn, x[:1000], progress=False)
    assert [e.feature_shape for e in readout.estimators] == [(32, 14, 14), (32, 7, 7), (10, 1, 1)]
    assert readout.network[0].in_channels == 42

    before = snapshot(mnist_cnn)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x[:1000], y[:1000]), batch_size=50, shuffle=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        losses = readout.fit(mnist_cnn, loader, epochs=1, lr=1e-2, progress=True, seed=0)
    assert len(losses) == 20 and readout.losses == losses
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert_same(before, snapshot(mnist_cnn))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explanation = readout.analyze(mnist_cnn, tx[:6], details=True)
    maps = explanation.heatmap
    assert maps.shape == (6, 28, 28) and np.all(maps >= 0)
    assert np.all(np.abs(explanation.alpha) <= 5)
    images = tx[:6, 0].numpy()
    near = torch.nn.functional.max_pool2d(torch.as_tensor(images > 0).float(), 7, 1, 3) > 0
    digit, background = images > 0.5, ~near.numpy()
    ratios = [maps[i][digit[i]].mean() / maps[i][background[i]].mean() for i in range(6)]
    assert np.median(ratios) > 1.05, ratios  # a short training: the digit already gets more
    assert_same(before, snapshot(mnist_cnn))

    path = tmp_path / "readout.pt"
    readout.save(path)
    with np.load(path, allow_pickle=False) as file:  # iba.readout's format, no pickle
        assert str(file["framework"]) == "torch" and file["network/0"].shape == (21, 42)
    loaded = Readout.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = loaded.analyze(mnist_cnn, tx[:6])
    np.testing.assert_allclose(again, maps, rtol=1e-6)
    assert loaded.losses == losses


def test_readout_errors(mnist_cnn):
    readout = Readout("features.4", ["classifier.1"])
    with pytest.raises(RuntimeError, match="call estimate"):
        readout.analyze(mnist_cnn, torch.zeros(1, 1, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        readout.estimate(mnist_cnn, torch.rand(20, 1, 28, 28), progress=False)
    with pytest.raises(TypeError, match=r"\(inputs, labels"):
        readout.fit(mnist_cnn, torch.rand(20, 1, 28, 28))
    with pytest.raises(ValueError, match="layer 'fc9' not found"):
        Readout("features.4", ["fc9"]).estimate(mnist_cnn, torch.rand(4, 1, 28, 28))
