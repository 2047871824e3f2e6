"""Separable Gaussian blur with reflect padding, as matrices (the insertion metric's start image).

The same construction as ``iba.smoothing`` (one matrix per spatial axis built by reflect-padding
an identity), for any 1-D kernel: ``blur(x) = A_h @ x @ A_w.T`` per channel equals the 2-D
convolution with the outer-product kernel on a reflect-padded image (``numpy.pad(mode="reflect")``,
the edge is not repeated; torchvision's ``gaussian_blur`` pads the same way).
"""

from __future__ import annotations

import functools
from typing import cast

import numpy as np


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps and std ``sigma`` (torchvision's kernel).

    Unlike ``iba.gaussian_kernel`` the size is given, not derived from ``sigma``: the insertion
    metric uses 51 taps of std 50.
    """
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * float(sigma) ** 2))
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=32)
def _convolution_matrix(size: int, kernel: tuple[float, ...]) -> np.ndarray:
    pad = (len(kernel) - 1) // 2
    padded = np.pad(np.eye(size), ((pad, pad), (0, 0)), mode="reflect")
    # an array: the kernel is never empty (sum() of nothing would be 0)
    matrix = cast(np.ndarray, sum(k * padded[i : i + size] for i, k in enumerate(kernel)))
    matrix.setflags(write=False)
    return matrix


def convolution_matrix(size: int, kernel: np.ndarray) -> np.ndarray:
    """``(size, size)`` matrix of the 1-D convolution with the odd ``kernel``, reflect padding.

    Row ``i`` holds the weights of the inputs that output ``i`` averages. Pads wider than the
    axis reflect repeatedly (``numpy.pad``).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 1 or len(kernel) % 2 == 0:
        raise ValueError(f"the kernel must be 1-D with an odd length, got shape {kernel.shape}")
    return _convolution_matrix(int(size), tuple(kernel.tolist()))


def gaussian_blur(images: np.ndarray, kernel_size: int = 51, sigma: float = 50.0) -> np.ndarray:
    """Blur channels-last images ``(N, H, W, C)`` with a separable Gaussian, reflect padding."""
    images = np.asarray(images)
    kernel = gaussian_kernel_1d(kernel_size, sigma)
    a_h = convolution_matrix(images.shape[1], kernel)
    a_w = convolution_matrix(images.shape[2], kernel)
    blurred = np.einsum("hH,nHWc,wW->nhwc", a_h, images, a_w, optimize=True)
    return blurred.astype(images.dtype if np.issubdtype(images.dtype, np.floating) else np.float64)
