"""Importing the reference pulls in no deep-learning framework (array-api-compat's check)."""

import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "optax", "matplotlib")


def test_import_iba_imports_no_framework():
    code = (
        "import sys, iba, iba.nn, iba.optimize; "
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
