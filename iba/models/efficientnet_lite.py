"""EfficientNet-Lite0's architecture, framework-free: what the Keras and Flax ports build.

From ``efficientnet_lite_pytorch`` (``utils.efficientnet_lite`` with the ``efficientnet-lite0``
coefficients, which scale nothing): a 3x3 stem of 32 filters, 16 MBConv blocks in 7 stages, a 1x1
head of 1,280 filters, ReLU6 everywhere, batch norm with ``eps = 1e-3``, dropout 0.2 before the
1,000-way linear layer.
"""

from __future__ import annotations

from collections.abc import Iterator

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
