"""``import iba_tf`` pulls in the running backend's framework only (no TensorFlow under JAX/torch)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import BACKEND

SCRIPT = """
import sys
import numpy as np
import iba_tf, keras
assert keras.backend.backend() == {backend!r}
model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3, padding="same"),
                          iba_tf.IBALayer(name="iba"), keras.layers.Flatten(), keras.layers.Dense(2)])
explainer = iba_tf.IBA("iba", steps=2, batch_size=2)
explainer.estimate(model, np.random.default_rng(0).standard_normal((8, 4, 4, 1)), progress=False)
import warnings
warnings.simplefilter("ignore")
assert explainer.analyze(model, np.ones((1, 4, 4, 1)), target=1).shape == (1, 4, 4)
print(sorted(m for m in ("tensorflow", "jax", "torch") if m in sys.modules))
"""


def test_only_the_backend_framework_is_imported():
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(backend=BACKEND)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    loaded = out.strip().splitlines()[-1]
    if BACKEND != "tensorflow":
        assert "tensorflow" not in loaded, loaded
    assert BACKEND in loaded
