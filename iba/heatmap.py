"""From capacity to a heatmap in bits (docs/mathematics.md sections 2, 4, 5).

The capacity is summed over channels, converted to bits, scaled by ``(h * w) / (H * W)`` so the
total stays about the same, and resized with bilinear interpolation (half-pixel centres, edge
clamping: PyTorch's ``align_corners=False``). The original IBA code resizes with mirrored edges
(scikit-image), which differs only in the outermost pixels.
"""

from __future__ import annotations

import functools

import numpy as np

from iba.layout import channel_axis, check_layout

LN2 = float(np.log(2.0))


def to_bits(nats: np.ndarray) -> np.ndarray:
    """Convert nats to bits."""
    return np.asarray(nats) / LN2


def channel_sum(capacity: np.ndarray, layout: str) -> np.ndarray:
    """Sum ``(N, *F)`` over the channel axis (NaN-safe): ``(N, h, w)`` or ``(N, T)``."""
    return np.nansum(capacity, axis=channel_axis(layout))


@functools.lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = src - low
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), low), 1 - frac)
    np.add.at(matrix, (np.arange(n_out), high), frac)
    matrix.setflags(write=False)
    return matrix


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of 1-D linear interpolation, half-pixel centres, clamped edges."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"cannot resize {n_in} to {n_out} pixels")
    return _resize_matrix(int(n_in), int(n_out))


def resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(..., h, w)`` to ``(..., H, W)``."""
    maps = np.asarray(maps, dtype=np.float64)
    height, width = size
    return resize_matrix(maps.shape[-2], height) @ maps @ resize_matrix(maps.shape[-1], width).T


def heatmap(
    capacity: np.ndarray, layout: str, input_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Heatmaps in bits from per-element capacity in nats of shape ``(N, *F)``.

    Spatial layouts give ``(N, H, W)`` at ``input_size`` (or the feature size if ``None``);
    tokens give ``(N, T)``, bits per token.
    """
    maps = to_bits(channel_sum(capacity, layout))
    if check_layout(layout) == "tokens" or input_size is None:
        return maps
    h, w = maps.shape[-2:]
    height, width = int(input_size[0]), int(input_size[1])
    return resize(maps, (height, width)) * (h * w) / (height * width)


def normalize(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each map of ``(N, ...)`` to ``[0, 1]`` (a constant map becomes 0)."""
    maps = np.asarray(maps, dtype=np.float64)
    flat = maps.reshape(maps.shape[0], -1)
    low = np.nanmin(flat, axis=1, keepdims=True)
    span = np.nanmax(flat, axis=1, keepdims=True) - low
    span[span == 0] = 1.0
    return ((flat - low) / span).reshape(maps.shape)


def token_grid(
    token_maps: np.ndarray, grid: tuple[int, int], n_prefix_tokens: int = 1
) -> np.ndarray:
    """``(N, T)`` per-token maps to ``(N, gh, gw)`` patch grids, dropping class/prefix tokens."""
    token_maps = np.asarray(token_maps)
    expected = n_prefix_tokens + grid[0] * grid[1]
    if token_maps.shape[-1] != expected:
        raise ValueError(
            f"{token_maps.shape[-1]} tokens do not make {n_prefix_tokens} prefix token(s) plus a "
            f"{grid[0]}x{grid[1]} patch grid ({expected} tokens)"
        )
    return token_maps[:, n_prefix_tokens:].reshape(token_maps.shape[0], *grid)


def vit_heatmap(
    capacity: np.ndarray,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    n_prefix_tokens: int = 1,
) -> np.ndarray:
    """CoIBA / M2IB image map: token capacity ``(N, T, D)`` to a min-max normalised ``(N, H, W)``."""
    maps = token_grid(to_bits(channel_sum(capacity, "tokens")), grid, n_prefix_tokens)
    return normalize(resize(maps, input_size))
