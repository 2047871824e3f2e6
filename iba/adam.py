"""Adam (Kingma and Ba, 2015) as pure ``init`` / ``update`` functions, in PyTorch's arithmetic.

The backends' own Adam implementations differ in where ``eps`` enters; the adapters follow this
one so that every backend takes the same steps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

BETA1 = 0.9
BETA2 = 0.999
EPS = 1e-8


class AdamState(NamedTuple):
    """Step count and first and second moment estimates."""

    count: int  # type: ignore[assignment]  # the field shadows tuple.count; the name is public
    mu: np.ndarray
    nu: np.ndarray


def adam_init(params: np.ndarray) -> AdamState:
    """Zero moments for ``params``."""
    return AdamState(0, np.zeros_like(params), np.zeros_like(params))


def adam_update(
    grad: np.ndarray,
    state: AdamState,
    params: np.ndarray,
    lr: float,
    b1: float = BETA1,
    b2: float = BETA2,
    eps: float = EPS,
) -> tuple[np.ndarray, AdamState]:
    """One Adam step: ``params - lr / (1 - b1^t) * mu / (sqrt(nu) / sqrt(1 - b2^t) + eps)``."""
    count = state.count + 1
    mu = b1 * state.mu + (1 - b1) * grad
    nu = b2 * state.nu + (1 - b2) * grad * grad
    step_size = lr / (1 - b1**count)
    denom = np.sqrt(nu) / math.sqrt(1 - b2**count) + eps
    return params - step_size * mu / denom, AdamState(count, mu, nu)
