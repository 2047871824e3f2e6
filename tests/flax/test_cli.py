"""``iba demo --backend jax`` end to end: the Flax (Linen) port of EfficientNet-Lite0, the bundled
photos, figures and heatmaps written, the same map from the same command, the estimator file
shared with the other backends, the layer list, a quiet start and a user's model
(``tests/demo_checks.py``)."""

from __future__ import annotations

from tests.demo_checks import DemoTests

USERS_MODEL = """
import jax
import jax.numpy as jnp
from flax import linen as nn


class Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=4, name="conv")(x))
        return nn.Dense(5, name="head")(x.mean(axis=(1, 2)))


def build():
    module = Small()
    return module, module.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
"""


class TestFlaxDemo(DemoTests):
    BACKEND, USERS_MODEL, USERS_TOP = "jax", USERS_MODEL, "conv, head"
