"""IBA on an NNX CNN trained on MNIST, through module surgery. The surgery undone after every
call, errors included, is checked by tests/contract (the NNX subject's snapshot)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from iba_jax import IBA, Bottleneck


@pytest.fixture(scope="module")
def digits(mnist):
    _, _, test_x, test_y = mnist
    return test_x[4:6], test_y[4:6]


def params_of(model):
    return [np.array(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]


def no_bottleneck(model) -> bool:
    return not any(isinstance(m, Bottleneck) for _, m in nnx.iter_modules(model))


def test_heatmaps(nnx_explainer, nnx_cnn, digits):
    x, y = digits
    block, params = nnx_cnn.blocks[1], params_of(nnx_cnn)
    explanation = nnx_explainer.analyze(nnx_cnn, x, target=y, details=True)
    maps = explanation.heatmap
    assert maps.shape == (2, 28, 28)
    assert np.all(np.isfinite(maps)) and np.all(maps >= 0)
    assert explanation.capacity.shape == (2, 14, 14, 16)
    assert np.all(explanation.losses[-1] < explanation.losses[0])
    frame = np.ones((28, 28), bool)
    frame[4:-4, 4:-4] = False
    assert np.all(maps[:, 7:-7, 7:-7].mean(axis=(1, 2)) > 1.2 * maps[:, frame].mean(1))
    # a tuple path with a list index is the same target
    explainer = IBA(("blocks", 1))
    explainer.estimators = nnx_explainer.estimators
    np.testing.assert_allclose(explainer.analyze(nnx_cnn, x, target=y), maps, rtol=1e-6)
    # the surgery inside an nnx.List is undone
    assert nnx_cnn.blocks[1] is block and no_bottleneck(nnx_cnn)
    for a, b in zip(params, params_of(nnx_cnn)):
        np.testing.assert_array_equal(a, b)


def test_only_alpha_is_differentiated(nnx_explainer, nnx_cnn, digits):
    """The optimisation's parameters are the bottleneck's ``IBAAlpha`` state alone."""
    x, y = digits
    lowered = nnx_explainer.lower(nnx_cnn, x, target=y)
    assert no_bottleneck(nnx_cnn)
    params = lowered.args_info[0][1]  # (dynamic, params, x, stats, noise, labels)
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 1 and leaves[0].shape == (2, 14, 14, 16)


def test_unknown_path_lists_the_module_paths(nnx_cnn, mnist):
    with pytest.raises(ValueError, match="'blocks/5'") as err:
        IBA("blocks/5").estimate(nnx_cnn, mnist[0][:10], progress=False)
    for path in ("blocks/0", "blocks/1/conv", "head"):
        assert path in str(err.value)
    assert no_bottleneck(nnx_cnn)
