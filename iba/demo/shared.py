"""What makes the command line give the same map on every backend: one estimator per model, layer
and data, kept channels-first and converted to each port's layout, and the same noise draws.

The bundled EfficientNet-Lite0 is the same network on every backend (PyTorch's original, the Keras
and Flax ports with its weights), so one estimator file serves them all: whichever backend fits
it first stores it channels-first, and the channels-last ports transpose it when they load it. The
noise of every optimisation step is drawn with NumPy (``iba.draw_noise``) in the channels-first
layout and transposed the same way, so ``--backend`` changes the map only by the frameworks'
float32 arithmetic (docs/mathematics.md section 2; conformance/tolerances.py ``REAL_MODEL``).
"""

from __future__ import annotations

import math

import numpy as np

import iba
from iba.noise import draw_noise_in_layout

# The most noise elements drawn up front (float64: 512 MB); beyond, each backend seeds its own
# generator instead (the maps then differ between backends by more than float32 rounding).
MAX_NOISE_ELEMENTS = 2**26


def in_layout(estimator: iba.Estimator, layout: str) -> iba.Estimator:
    """``estimator`` for features in ``layout`` (docs/mathematics.md section 1): image statistics
    are transposed between ``(C, H, W)`` and ``(H, W, C)``; any other is returned as it is."""
    pair = {"channels_first", "channels_last"}
    if estimator.layout == layout or {estimator.layout, layout} != pair:
        return estimator
    arrays = estimator.to_arrays()
    source, destination = (0, -1) if layout == "channels_last" else (-1, 0)
    for key in ("mean", "m2", "nonzero"):
        arrays[key] = np.ascontiguousarray(np.moveaxis(arrays[key], source, destination))
    arrays["feature_shape"] = np.array(arrays["mean"].shape, np.int64)
    arrays["layout"] = np.array(layout)
    return iba.Estimator.from_arrays(arrays)


def noise(seed: int, config: iba.Config, estimator: iba.Estimator) -> np.ndarray | None:
    """The standard-normal draws ``(steps, batch_size, *F)`` of one explanation (docs/mathematics.md
    section 2), in the layout of ``estimator``'s features: drawn channels-first, so every port
    gets the same numbers.

    ``None`` where they would exceed :data:`MAX_NOISE_ELEMENTS` (then pass ``seed=`` instead).
    """
    shape = tuple(estimator.feature_shape or ())
    if config.steps * config.batch_size * math.prod(shape) > MAX_NOISE_ELEMENTS:
        return None
    return draw_noise_in_layout(seed, config.steps, config.batch_size, shape, estimator.layout)
