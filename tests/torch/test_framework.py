"""The PyTorch session's environment: torch computes the reference's sigmoid."""

import numpy as np
import torch

import iba


def test_torch_sigmoid_matches_reference():
    x = np.linspace(-30, 30, 101)
    np.testing.assert_allclose(
        torch.sigmoid(torch.from_numpy(x)).numpy(), iba.sigmoid(x), rtol=1e-12
    )
