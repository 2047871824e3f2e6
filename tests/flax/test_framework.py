"""The Flax session's environment: jax computes the reference's sigmoid."""

import jax
import numpy as np

import iba


def test_jax_sigmoid_matches_reference():
    x = np.linspace(-30, 30, 101).astype("float32")
    np.testing.assert_allclose(
        np.asarray(jax.nn.sigmoid(x)), iba.sigmoid(x.astype(np.float64)), rtol=1e-6, atol=1e-7
    )


def test_iba_jax_imports_no_other_framework():
    import subprocess
    import sys

    code = (
        "import sys, iba_jax; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
