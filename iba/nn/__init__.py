"""Tiny NumPy networks with manual backward passes: the oracle of tests and of conformance.

``tiny_cnn`` (channels-first CNN for 8x8 images) and ``tiny_vit`` (a ViT with timm's module
names); ``classification_head``, ``segment`` and ``classifier`` turn them into the model
callbacks of ``iba.per_sample_bottleneck``; ``capture`` reads the features at named layers.
"""

from iba.nn.callbacks import capture, classification_head, classifier, segment
from iba.nn.cnn import tiny_cnn
from iba.nn.layers import (
    AvgPool2d,
    Conv2d,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    cross_entropy,
    log_softmax,
)
from iba.nn.vit import GELU, Attention, LayerNorm, TinyViT, tiny_vit, tiny_vit_params

__all__ = [
    "GELU",
    "Attention",
    "AvgPool2d",
    "Conv2d",
    "Flatten",
    "Layer",
    "LayerNorm",
    "Linear",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "TinyViT",
    "capture",
    "classification_head",
    "classifier",
    "cross_entropy",
    "log_softmax",
    "segment",
    "tiny_cnn",
    "tiny_vit",
    "tiny_vit_params",
]
