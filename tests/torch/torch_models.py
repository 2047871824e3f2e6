"""The reference's tiny networks in PyTorch (the conformance suite's ports, ``conformance.ports``),
variants of them, and small CNNs for MNIST and the adapters' edge cases."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from conformance.ports import torch_ports
from conformance.ports.torch_ports import TinyViT
from conformance.vectors import cnn_weights
from iba import nn as ref_nn


def tiny_cnn(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """``iba.nn.tiny_cnn(seed)`` in PyTorch: the conformance suite's port, same names and weights."""
    return torch_ports.model("cnn", cnn_weights(ref_nn.tiny_cnn(seed)), dtype, "cpu")


def tiny_vit(seed: int = 0, depth: int = 2, dtype: torch.dtype = torch.float64) -> TinyViT:
    """``iba.nn.tiny_vit(seed, depth=depth)`` in PyTorch (the conformance suite's port)."""
    return torch_ports.model("vit", ref_nn.tiny_vit_params(seed, depth=depth), dtype, "cpu")


def load(model: nn.Module, weights: dict) -> None:
    """Copy NumPy arrays into the model's parameters of the same names."""
    state = model.state_dict()
    assert set(weights) == set(state), set(weights) ^ set(state)
    model.load_state_dict(
        {k: torch.as_tensor(np.asarray(v), dtype=state[k].dtype) for k, v in weights.items()}
    )


class TupleBlock(nn.Module):
    """A layer that returns a tuple, as Hugging Face encoder layers did before transformers 5."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return (self.inner(x), None)


class TupleViT(TinyViT):
    """``TinyViT`` whose blocks return ``(hidden_states, None)``."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.blocks = nn.ModuleList([TupleBlock(b) for b in self.blocks])

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)[0]
        return self.head(self.norm(x)[:, 0])


class MnistCNN(nn.Module):
    """A small CNN for 28x28 digits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class BatchSizeCNN(nn.Module):
    """Reads the batch size from its input, as EfficientNet: the expand path fails on it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        bs = x.size(0)
        x = self.conv2(self.act(self.conv1(x))) + x
        return self.fc(x.view(bs, -1))
