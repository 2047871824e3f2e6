"""Flax Linen ports of real image classifiers, with weights converted from their PyTorch releases."""

from iba_jax.models.efficientnet_lite import (
    EfficientNetLite0,
    MBConvBlock,
    efficientnet_lite0,
    flax_path,
    variables_from_torch,
)

__all__ = [
    "EfficientNetLite0",
    "MBConvBlock",
    "efficientnet_lite0",
    "flax_path",
    "variables_from_torch",
]
