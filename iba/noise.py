"""A seeded source of standard-normal noise that every backend accepts in place of its own RNG.

Running two backends on the same draws makes their explanations comparable number for number.
"""

from __future__ import annotations

import numpy as np


def draw_noise(
    seed: int,
    steps: int,
    batch_size: int,
    feature_shape: tuple[int, ...],
    n_inputs: int | None = None,
) -> np.ndarray:
    """Standard-normal draws, float64, for every step and noise sample.

    Returns shape ``(steps, batch_size, *F)``, or ``(steps, n_inputs, batch_size, *F)`` for an
    explanation of several inputs at once. The same ``seed`` gives the same draws on every machine.
    For several target layers (CoIBA), draw once per layer with different seeds.
    """
    lead = (steps, batch_size) if n_inputs is None else (steps, n_inputs, batch_size)
    shape = (*lead, *(int(s) for s in feature_shape))
    return np.random.default_rng(seed).standard_normal(shape)


def draw_noise_in_layout(
    seed: int, steps: int, batch_size: int, feature_shape: tuple[int, ...], layout: str
) -> np.ndarray:
    """:func:`draw_noise` ``(steps, batch_size, *F)`` for features in ``layout``, drawn
    channels-first: a ``(H, W, C)`` layer gets the ``(C, H, W)`` draws with the channels moved
    last, so the ports of one network get the same number at the same feature."""
    shape = tuple(int(s) for s in feature_shape)
    if layout != "channels_last":
        return draw_noise(seed, steps, batch_size, shape)
    drawn = draw_noise(seed, steps, batch_size, (shape[-1], *shape[:-1]))
    return np.ascontiguousarray(np.moveaxis(drawn, 2, -1))


def check_noise(
    noise: object, steps: int, n_inputs: int, batch_size: int, feature_shape: tuple[int, ...]
) -> np.ndarray:
    """``noise`` as ``(steps, n_inputs, batch_size, *F)``; raise a clear error if it does not fit."""
    dtype = np.asarray(noise).dtype
    if dtype.kind in "OUSc":
        raise TypeError(
            f"noise must hold real numbers, got dtype {dtype}; draw it with "
            f"iba.draw_noise(seed, {steps}, {batch_size}, {tuple(feature_shape)}, "
            f"n_inputs={n_inputs})"
        )
    noise = np.asarray(noise, dtype=np.float64)
    full = (steps, n_inputs, batch_size, *feature_shape)
    if n_inputs == 1 and noise.shape == (steps, batch_size, *feature_shape):
        noise = noise[:, None]
    if noise.shape != full:
        raise ValueError(
            f"noise of shape {noise.shape} does not fit {n_inputs} input(s) with features "
            f"{tuple(feature_shape)}: expected {full} (steps, inputs, batch_size, *F); "
            f"draw it with iba.draw_noise(seed, {steps}, {batch_size}, {tuple(feature_shape)}, "
            f"n_inputs={n_inputs})"
        )
    if not np.all(np.isfinite(noise)):
        raise ValueError("noise holds NaN or infinite values")
    return noise
