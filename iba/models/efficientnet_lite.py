"""EfficientNet-Lite0's architecture, framework-free: what the Keras and Flax ports build.

From ``efficientnet_lite_pytorch`` (``utils.efficientnet_lite`` with the ``efficientnet-lite0``
coefficients, which scale nothing): a 3x3 stem of 32 filters, 16 MBConv blocks in 7 stages, a 1x1
head of 1,280 filters, ReLU6 everywhere, batch norm with ``eps = 1e-3``, dropout 0.2 before the
1,000-way linear layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

# One stage per string: repeats, kernel, strides, expansion, input and output filters.
BLOCKS_ARGS = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
CLASSES = 1000
BN_EPSILON = 1e-3
DROPOUT_RATE = 0.2


def block_args() -> Iterator[dict[str, int]]:
    """The arguments of the 16 MBConv blocks, in order (each stage's repeats expanded):
    ``input_filters``, ``output_filters``, ``kernel_size``, ``stride``, ``expand_ratio``.

    A stage's first block changes the stride and the number of filters; its repeats keep them.
    """
    for text in BLOCKS_ARGS:
        options = {part[0]: part[1:] for part in text.split("_")}
        args = {
            "input_filters": int(options["i"]),
            "output_filters": int(options["o"]),
            "kernel_size": int(options["k"]),
            "stride": int(options["s"][0]),
            "expand_ratio": int(options["e"]),
        }
        for repeat in range(int(options["r"])):
            yield args
            if repeat == 0:
                args = {**args, "input_filters": args["output_filters"], "stride": 1}


def depthwise_same(x: Any, taps: Any, stride: int, pad: Callable[[Any, Any], Any]) -> Any:
    """A depthwise convolution with ``"SAME"`` padding (XLA's and TensorFlow's: the odd row and
    column at the bottom and right), written as ``k * k`` strided slices of the padded input times
    one row of taps each, for any array type that slices like NumPy.

    XLA compiles this into one fused loop, several times faster on the CPU than its grouped
    convolution (``feature_group_count = C``), which is what the JAX ports use it for; the sums
    equal the convolution's up to float rounding.

    Args:
        x: ``(N, H, W, C)`` inputs, channels-last.
        taps: ``(k, k, C)`` kernel, one ``k x k`` filter per channel.
        stride: the stride of both spatial axes.
        pad: the array library's ``pad(array, widths)`` (``np.pad``, ``jnp.pad``,
            ``keras.ops.pad``), zero padding.
    """
    k = taps.shape[0]
    h, w = x.shape[1], x.shape[2]
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - w, 0)
    x = pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    out = None
    for i in range(k):
        for j in range(k):
            term = x[:, i : i + span_h : stride, j : j + span_w : stride, :] * taps[i, j]
            out = term if out is None else out + term
    return out
