"""PyTorch ports of the reference's tiny networks (same weights, same names) and an MNIST CNN."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from iba import nn as ref_nn


def tiny_cnn(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """``iba.nn.tiny_cnn(seed)`` in PyTorch: the same layers, names and weights."""
    ref = ref_nn.tiny_cnn(seed)
    layers = OrderedDict(
        conv1=nn.Conv2d(1, 4, 3, padding=1),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(4, 6, 3, padding=1),
        relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2),
        conv3=nn.Conv2d(6, 8, 3, padding=1),
        relu3=nn.ReLU(),
        flatten=nn.Flatten(),
        fc=nn.Linear(8 * 4 * 4, 10),
    )
    model = nn.Sequential(layers).to(dtype)
    load(model, {k: v for name, layer in ref.layers for k, v in _weights(name, layer).items()})
    return model.eval()


def _weights(name, layer) -> dict:
    if not hasattr(layer, "weight"):
        return {}
    return {f"{name}.weight": layer.weight, f"{name}.bias": layer.bias}


def load(model: nn.Module, weights: dict) -> None:
    """Copy NumPy arrays into the model's parameters of the same names."""
    state = model.state_dict()
    assert set(weights) == set(state), set(weights) ^ set(state)
    model.load_state_dict(
        {k: torch.as_tensor(np.asarray(v), dtype=state[k].dtype) for k, v in weights.items()}
    )


class Attention(nn.Module):
    """timm's ``Attention``: ``qkv`` then ``proj``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).reshape(n, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (d // h) ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TinyViT(nn.Module):
    """A ViT in timm's module names: ``patch_embed``, ``blocks.N.norm1``, ``norm``, ``head``."""

    def __init__(self, image=8, patch=2, channels=1, dim=16, depth=3, heads=2, mlp=32, classes=10):
        super().__init__()
        tokens = 1 + (image // patch) ** 2
        self.patch_embed = PatchEmbed(channels, dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def tiny_vit(seed: int = 0, depth: int = 2, dtype: torch.dtype = torch.float64) -> TinyViT:
    """``iba.nn.tiny_vit(seed, depth=depth)`` in PyTorch."""
    model = TinyViT(depth=depth).to(dtype)
    load(model, ref_nn.tiny_vit_params(seed, depth=depth))
    return model.eval()


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
