"""The Flax session's environment: jax computes the reference's sigmoid."""

import jax
import numpy as np

import iba


def test_jax_sigmoid_matches_reference():
    x = np.linspace(-30, 30, 101).astype("float32")
    np.testing.assert_allclose(
        np.asarray(jax.nn.sigmoid(x)), iba.sigmoid(x.astype(np.float64)), rtol=1e-6, atol=1e-7
    )
