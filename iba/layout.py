"""Feature layouts: which axes of a feature tensor are channels, space or tokens.

A feature tensor ``R`` of one input has shape ``F``:
``channels_first`` is ``(C, H, W)``, ``channels_last`` is ``(H, W, C)``, ``tokens`` is ``(T, D)``.
"""

from __future__ import annotations

LAYOUTS = ("channels_first", "channels_last", "tokens")


def check_layout(layout: str) -> str:
    """Return ``layout`` if known, else raise a ValueError that lists the known ones."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; layouts are: {', '.join(LAYOUTS)}")
    return layout


def feature_ndim(layout: str) -> int:
    """Number of axes of one input's features: 3 for images, 2 for tokens."""
    return 2 if check_layout(layout) == "tokens" else 3


def channel_axis(layout: str) -> int:
    """Axis of the channels, counted from the end of the feature shape (negative)."""
    return -3 if check_layout(layout) == "channels_first" else -1


def is_spatial(layout: str) -> bool:
    """Whether the features have two spatial axes (and ``lam`` is smoothed)."""
    return check_layout(layout) != "tokens"


def spatial_shape(feature_shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """``(H, W)`` for images, ``(T,)`` for tokens."""
    check_feature_shape(feature_shape, layout)
    if layout == "channels_first":
        return tuple(feature_shape[1:])
    return tuple(feature_shape[:-1])


def check_feature_shape(feature_shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """Validate the feature shape of one input against its layout."""
    feature_shape = tuple(int(s) for s in feature_shape)
    expected = feature_ndim(layout)
    if len(feature_shape) != expected:
        axes = {"channels_first": "(C, H, W)", "channels_last": "(H, W, C)", "tokens": "(T, D)"}
        raise ValueError(
            f"features of layout {layout!r} have shape {axes[layout]} per input, "
            f"got shape {feature_shape}"
        )
    if min(feature_shape) < 1:
        raise ValueError(f"feature shape {feature_shape} has an empty axis")
    return feature_shape


def alpha_shape(
    feature_shape: tuple[int, ...], layout: str, shared: bool = False
) -> tuple[int, ...]:
    """Shape of ``alpha`` for one input: per element, or ``shared`` over channels (size 1 there)."""
    shape = list(check_feature_shape(feature_shape, layout))
    if shared:
        shape[channel_axis(layout)] = 1
    return tuple(shape)


def check_alpha_shape(shape: tuple[int, ...], feature_shape: tuple[int, ...], layout: str) -> None:
    """Raise unless ``shape`` is per element or shared over channels for ``feature_shape``."""
    allowed = {alpha_shape(feature_shape, layout), alpha_shape(feature_shape, layout, shared=True)}
    if tuple(shape) not in allowed:
        raise ValueError(
            f"alpha of shape {tuple(shape)} does not fit features {tuple(feature_shape)} "
            f"({layout}); expected one of {sorted(allowed)}"
        )
