"""PyTorch ports of ``iba.nn.tiny_cnn`` and ``iba.nn.tiny_vit`` in the reference's (and timm's)
module names, loading a case's weights (already in PyTorch's names and shapes)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn


def cnn() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
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
    """timm's names: ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks.N``, ``norm``, ``head``."""

    def __init__(self, depth: int, image=8, patch=2, channels=1, dim=16, heads=2, mlp=32):
        super().__init__()
        self.patch_embed = PatchEmbed(channels, dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image // patch) ** 2, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def model(architecture: str, weights: dict, dtype: torch.dtype, device: str) -> nn.Module:
    """The port with the case's weights, in eval mode, on ``device`` in ``dtype``."""
    if architecture == "cnn":
        net = cnn()
    else:
        net = TinyViT(depth=sum(1 for k in weights if k.endswith(".norm1.weight")))
    net = net.to(dtype=torch.float64)  # load in float64, then cast: no float32 detour
    state = net.state_dict()
    if set(weights) != set(state):
        raise ValueError(f"weights do not fit the port: {sorted(set(weights) ^ set(state))}")
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()})
    return net.to(device=device, dtype=dtype).eval()
