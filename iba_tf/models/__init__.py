"""Keras 3 ports of the models the demo explains, loading the bundled PyTorch weights.

- ``efficientnet_lite0(weights="bundled")``: EfficientNet-Lite0 (ImageNet-1k), channels last,
  one Keras layer per PyTorch module, named by ``torch_name_to_keras`` (``_blocks.4`` ->
  ``_blocks_4``).
"""

from iba_tf.models.efficientnet_lite import (
    MBConvBlock,
    efficientnet_lite0,
    load_torch_state_dict,
    torch_name_to_keras,
)

__all__ = ["MBConvBlock", "efficientnet_lite0", "load_torch_state_dict", "torch_name_to_keras"]
