"""The tiny CNN of the tests and of the conformance suite."""

from __future__ import annotations

import numpy as np

from iba.nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential


def tiny_cnn(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> Sequential:
    """A seeded random CNN for 8x8 inputs: conv-relu-conv-relu-maxpool-conv-relu-flatten-linear."""
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out):
        w = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))
        return Conv2d(w, 0.1 * rng.standard_normal(c_out), padding=1)

    return Sequential(
        [
            ("conv1", conv(in_channels, 4)),
            ("relu1", ReLU()),
            ("conv2", conv(4, 6)),
            ("relu2", ReLU()),
            ("pool", MaxPool2d(2)),
            ("conv3", conv(6, 8)),
            ("relu3", ReLU()),
            ("flatten", Flatten()),
            ("fc", Linear(rng.standard_normal((n_classes, 8 * 4 * 4)) * 0.2, np.zeros(n_classes))),
        ]
    )
