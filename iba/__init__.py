"""Information Bottleneck Attribution: the NumPy reference.

Every formula of the project is defined here, once (see docs/mathematics.md sections 1-4); the adapters
``iba_torch``, ``iba_tf`` and ``iba_jax`` translate it into their framework. Importing ``iba``
imports NumPy and nothing else.
"""

from iba.adam import AdamState, adam_init, adam_update
from iba.bottleneck import (
    bottleneck,
    capacity,
    capacity_vjp,
    damping,
    damping_vjp,
    noise_like,
    sigmoid,
)
from iba.config import Config, coiba_config, m2ib_config, text_config
from iba.estimator import Estimator, Statistics, load_estimators, save_estimators
from iba.heatmap import (
    heatmap,
    normalize,
    resize,
    resize_matrix,
    to_bits,
    token_grid,
    vit_heatmap,
)
from iba.layout import LAYOUTS, alpha_shape
from iba.noise import draw_noise
from iba.optimize import Explanation, per_sample_bottleneck
from iba.smoothing import gaussian_kernel, kernel_size, smooth, smoothing_matrix

__version__ = "0.1.0"

__all__ = [
    "LAYOUTS",
    "AdamState",
    "Config",
    "Estimator",
    "Explanation",
    "Statistics",
    "adam_init",
    "adam_update",
    "alpha_shape",
    "bottleneck",
    "capacity",
    "capacity_vjp",
    "coiba_config",
    "damping",
    "damping_vjp",
    "draw_noise",
    "gaussian_kernel",
    "heatmap",
    "load_estimators",
    "kernel_size",
    "m2ib_config",
    "noise_like",
    "normalize",
    "per_sample_bottleneck",
    "resize",
    "resize_matrix",
    "save_estimators",
    "sigmoid",
    "smooth",
    "smoothing_matrix",
    "text_config",
    "to_bits",
    "token_grid",
    "vit_heatmap",
]
