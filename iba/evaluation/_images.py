"""Image, heatmap and tile checks shared by the image metrics.

Images are batches ``(N, H, W, C)`` (``data_format="channels_last"``, the default) or
``(N, C, H, W)`` (``"channels_first"``, PyTorch's NCHW); heatmaps are ``(N, H, W)`` at the image's
size. The metrics work channels-last internally and hand the model its own layout.
"""

from __future__ import annotations

import warnings

import numpy as np

from iba._checks import finite_array

DATA_FORMATS = ("channels_last", "channels_first")


def check_data_format(data_format: str) -> str:
    """Return ``data_format`` if known, else raise naming the known ones."""
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"unknown data_format {data_format!r}; data formats are: {', '.join(DATA_FORMATS)}"
        )
    return data_format


def check_images(images: np.ndarray, data_format: str) -> np.ndarray:
    """A finite float batch of images, returned channels-last ``(N, H, W, C)``."""
    layout = "(N, H, W, C)" if check_data_format(data_format) == "channels_last" else "(N, C, H, W)"
    array = np.asarray(images)
    if array.ndim != 4:
        raise ValueError(
            f"images must be a batch {layout} for data_format={data_format!r}, got shape "
            f"{array.shape}; add a batch axis (images[None]) or a channel axis for grey images"
        )
    array = finite_array("images", array)
    if data_format == "channels_first":
        array = np.moveaxis(array, 1, -1)
    if array.shape[0] == 0:
        raise ValueError("images: the batch is empty")
    return array


def to_model(batch: np.ndarray, data_format: str) -> np.ndarray:
    """A channels-last batch in the model's ``data_format`` (contiguous)."""
    if data_format == "channels_first":
        batch = np.moveaxis(batch, -1, 1)
    return np.ascontiguousarray(batch)


def check_heatmaps(
    heatmaps: np.ndarray, shape: tuple[int, ...], name: str = "heatmaps"
) -> np.ndarray:
    """Finite float heatmaps of exactly ``shape``; the error names both shapes."""
    array = finite_array(name, heatmaps)
    if array.shape != tuple(shape):
        hint = ""
        if array.ndim == len(shape) and array.shape[0] == shape[0]:
            hint = f"; resize them first, e.g. iba.resize({name}, {tuple(shape[1:])})"
        raise ValueError(
            f"{name} of shape {array.shape} do not match the inputs: expected {tuple(shape)}{hint}"
        )
    return array


def constant_rows(maps: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: which of the ``(N, ...)`` maps hold a single value."""
    flat = maps.reshape(len(maps), int(np.prod(maps.shape[1:])))
    return np.all(flat == flat[:, :1], axis=1)


def warn_constant(
    maps: np.ndarray, metric: str, consequence: str, stacklevel: int = 3
) -> np.ndarray:
    """Warn (``RuntimeWarning``) if some maps are constant, so their ranking is arbitrary."""
    constant = constant_rows(maps)
    if constant.any():
        which = np.flatnonzero(constant)
        warnings.warn(
            f"{metric}: {len(which)} constant heatmap(s) (indices {which[:10].tolist()}"
            f"{'...' if len(which) > 10 else ''}) give no ranking; {consequence}",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    return constant


TILE_REMAINDERS = ("split", "merge")
"""Where ``tile_size`` does not divide the image: ``"split"`` cuts smaller tiles at the right and
bottom edges (the library), ``"merge"`` adds the leftover pixels to the last row / column of
tiles (the IBA paper's code, docs/metrics.md)."""


def tile_grid(
    height: int, width: int, tile_size: int, remainder: str = "split"
) -> tuple[np.ndarray, int]:
    """``(H, W)`` map of tile indices (row-major) and the number of tiles.

    Tiles are ``tile_size`` x ``tile_size`` from the top-left corner. Where the size does not
    divide the image, ``remainder="split"`` makes the last row / column of tiles smaller
    (``ceil(H / tile_size)`` rows), ``"merge"`` makes it larger (``floor(H / tile_size)`` rows,
    the IBA paper's ``GridView``). docs/mathematics.md section 7.
    """
    if int(tile_size) != tile_size or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    if tile_size > min(height, width):
        raise ValueError(f"tile_size {tile_size} is larger than the {height}x{width} image")
    if remainder not in TILE_REMAINDERS:
        raise ValueError(
            f"unknown remainder {remainder!r}; choose one of: {', '.join(TILE_REMAINDERS)}"
        )
    tile_rows = np.arange(height) // tile_size
    tile_cols = np.arange(width) // tile_size
    if remainder == "split":
        rows, cols = -(-height // tile_size), -(-width // tile_size)
    else:
        rows, cols = height // tile_size, width // tile_size
        tile_rows, tile_cols = np.minimum(tile_rows, rows - 1), np.minimum(tile_cols, cols - 1)
    return tile_rows[:, None] * cols + tile_cols[None, :], rows * cols


def tile_sums(maps: np.ndarray, tiles: np.ndarray, n_tiles: int) -> np.ndarray:
    """Sum of each ``(N, H, W)`` map inside every tile: ``(N, n_tiles)``."""
    flat = tiles.ravel()
    out = np.zeros((len(maps), n_tiles))
    for i, m in enumerate(maps):
        out[i] = np.bincount(flat, weights=m.ravel(), minlength=n_tiles)
    return out


def tile_means(maps: np.ndarray, tiles: np.ndarray, n_tiles: int) -> np.ndarray:
    """Mean of each ``(N, H, W)`` map inside every tile: ``(N, n_tiles)``."""
    counts = np.bincount(tiles.ravel(), minlength=n_tiles)
    return tile_sums(maps, tiles, n_tiles) / counts
