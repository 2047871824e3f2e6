"""The Gaussian smoothing of ``lam`` over H and W (docs/mathematics.md section 2).

The 2-D kernel is the normalised outer product of a 1-D Gaussian, so smoothing with reflect
padding equals ``A_h @ lam @ A_w.T`` with one matrix per spatial axis. Backends use these
matrices (constants) instead of a padded convolution: same numbers, any feature size.
"""

from __future__ import annotations

import functools

import numpy as np

from iba.layout import check_layout


def kernel_size(sigma: float) -> int:
    """``int(round(2 * sigma)) * 2 + 1``: 5 for ``sigma = 1``."""
    return int(round(2 * sigma)) * 2 + 1


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of std ``sigma``; its outer product with itself is the 2-D kernel."""
    if not sigma or sigma < 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    size = kernel_size(sigma)
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=64)
def _smoothing_matrix(size: int, sigma: float) -> np.ndarray:
    kernel = gaussian_kernel(sigma)
    pad = (len(kernel) - 1) // 2
    padded = np.pad(np.eye(size), ((pad, pad), (0, 0)), mode="reflect")
    matrix = sum(k * padded[i : i + size] for i, k in enumerate(kernel))
    matrix.setflags(write=False)
    return matrix


def smoothing_matrix(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` matrix of 1-D Gaussian smoothing with reflect padding of ``(k - 1) // 2``.

    Row ``i`` holds the weights of the inputs that output ``i`` averages; padding mirrors without
    repeating the edge (``numpy.pad(mode="reflect")``).
    """
    return _smoothing_matrix(int(size), float(sigma))


def _spatial_last(x: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(x, -1, -3) if layout == "channels_last" else x


def _spatial_back(x: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(x, -3, -1) if layout == "channels_last" else x


def smooth(x: np.ndarray, sigma: float, layout: str, transpose: bool = False) -> np.ndarray:
    """Smooth ``x`` of shape ``(..., *F)`` over its spatial axes, each channel alike.

    ``transpose=True`` applies the adjoint map (the vector-Jacobian product of smoothing).
    """
    if check_layout(layout) == "tokens":
        raise ValueError("token features are not smoothed")
    y = _spatial_last(np.asarray(x), layout)
    a_h = smoothing_matrix(y.shape[-2], sigma)
    a_w = smoothing_matrix(y.shape[-1], sigma)
    if transpose:
        a_h, a_w = a_h.T, a_w.T
    return _spatial_back(a_h @ y @ a_w.T, layout)
