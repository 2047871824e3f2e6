"""A tiny vision transformer with timm's module names and a manual backward pass.

Names as in ``timm``'s ``VisionTransformer``: ``patch_embed``, ``blocks.{i}.norm1``,
``blocks.{i}.attn``, ``blocks.{i}.norm2``, ``blocks.{i}.mlp``, ``blocks.{i}``, ``norm``, ``head``.
Features are tokens ``(N, T, D)`` with the class token first. GELU is the tanh approximation.
"""

from __future__ import annotations

import numpy as np

from iba.nn.layers import Layer, Linear

GELU_C = float(np.sqrt(2 / np.pi))


class LayerNorm(Layer):
    """Normalise the last axis: ``(x - mean) / sqrt(var + eps) * weight + bias``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-6):
        self.weight, self.bias, self.eps = np.asarray(weight), np.asarray(bias), eps

    def forward(self, x):
        mean = x.mean(-1, keepdims=True)
        inv = 1 / np.sqrt(x.var(-1, keepdims=True) + self.eps)
        xhat = (x - mean) * inv

        def backward(g):
            gx = g * self.weight
            return inv * (
                gx - gx.mean(-1, keepdims=True) - xhat * (gx * xhat).mean(-1, keepdims=True)
            )

        return xhat * self.weight + self.bias, backward


class GELU(Layer):
    """``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``."""

    def forward(self, x):
        t = np.tanh(GELU_C * (x + 0.044715 * x**3))
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * GELU_C * (1 + 3 * 0.044715 * x**2)
        return 0.5 * x * (1 + t), lambda g: g * d


class Attention(Layer):
    """Multi-head self-attention: ``qkv`` (one linear map), softmax, ``proj``."""

    def __init__(self, qkv: Linear, proj: Linear, heads: int):
        self.qkv, self.proj, self.heads = qkv, proj, heads

    def forward(self, x):
        n, t, d = x.shape
        h = self.heads
        scale = (d // h) ** -0.5
        qkv, qkv_back = self.qkv.forward(x)
        q, k, v = qkv.reshape(n, t, 3, h, d // h).transpose(2, 0, 3, 1, 4)
        scores = q @ k.transpose(0, 1, 3, 2) * scale
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = scores / scores.sum(-1, keepdims=True)
        out = (attn @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
        y, proj_back = self.proj.forward(out)

        def backward(g):
            g_out = proj_back(g).reshape(n, t, h, d // h).transpose(0, 2, 1, 3)
            g_attn = g_out @ v.transpose(0, 1, 3, 2)
            g_v = attn.transpose(0, 1, 3, 2) @ g_out
            g_scores = attn * (g_attn - (g_attn * attn).sum(-1, keepdims=True)) * scale
            g_q, g_k = g_scores @ k, g_scores.transpose(0, 1, 3, 2) @ q
            g_qkv = np.stack([g_q, g_k, g_v]).transpose(1, 3, 0, 2, 4).reshape(n, t, 3 * d)
            return qkv_back(g_qkv)

        return y, backward


class TinyViT(Layer):
    """Patch embedding, class token, position embedding, pre-norm blocks, final norm, head."""

    def __init__(self, params: dict[str, np.ndarray], depth: int, heads: int, patch: int):
        self.params, self.depth, self.heads, self.patch = params, depth, heads, patch
        p = params

        def linear(name):
            return Linear(p[f"{name}.weight"], p[f"{name}.bias"])

        def norm(name):
            return LayerNorm(p[f"{name}.weight"], p[f"{name}.bias"])

        self.blocks = [
            {
                "norm1": norm(f"blocks.{i}.norm1"),
                "attn": Attention(
                    linear(f"blocks.{i}.attn.qkv"), linear(f"blocks.{i}.attn.proj"), heads
                ),
                "norm2": norm(f"blocks.{i}.norm2"),
                "fc1": linear(f"blocks.{i}.mlp.fc1"),
                "act": GELU(),
                "fc2": linear(f"blocks.{i}.mlp.fc2"),
            }
            for i in range(depth)
        ]
        self.norm, self.head = norm("norm"), linear("head")
        self.names = ["patch_embed"]
        for i in range(depth):
            self.names += [f"blocks.{i}.{s}" for s in ("norm1", "attn", "norm2", "mlp")]
            self.names.append(f"blocks.{i}")
        self.names += ["norm", "head"]

    def forward(self, x, inserts=None):
        """Logits of images ``(N, C, H, W)``; ``inserts`` maps names to layers run on that output."""
        inserts = dict(inserts or {})
        unknown = set(inserts) - set(self.names)
        if unknown:
            raise ValueError(
                f"layer {sorted(unknown)[0]!r} not found; layers are: {', '.join(self.names)}"
            )
        backs = []

        def run(name, layer_forward, value):
            value, back = layer_forward(value)
            backs.append(back)
            if name in inserts:
                value, back = inserts[name](value)
                backs.append(back)
            return value

        def residual(branch, value):
            start = len(backs)
            out = branch(value)
            branch_backs = backs[start:]
            del backs[start:]

            def back(g):
                gb = g
                for b in reversed(branch_backs):
                    gb = b(gb)
                return g + gb

            return value + out, back

        x = run("patch_embed", self._embed, x)
        for i, blk in enumerate(self.blocks):
            name = f"blocks.{i}"

            def attn_branch(v, blk=blk, name=name):
                v = run(f"{name}.norm1", blk["norm1"].forward, v)
                return run(f"{name}.attn", blk["attn"].forward, v)

            def mlp_branch(v, blk=blk, name=name):
                v = run(f"{name}.norm2", blk["norm2"].forward, v)
                return run(f"{name}.mlp", _sequence(blk["fc1"], blk["act"], blk["fc2"]), v)

            x = run(f"{name}.attn+", lambda v, f=attn_branch: residual(f, v), x)
            x = run(name, lambda v, f=mlp_branch: residual(f, v), x)
        x = run("norm", self.norm.forward, x)
        x = run("head", lambda v: _cls_head(self.head, v), x)

        def backward(g):
            for b in reversed(backs):
                g = b(g)
            return g

        return x, backward

    def _embed(self, x):
        n, c, height, width = x.shape
        p = self.patch
        gh, gw = height // p, width // p
        patches = x.reshape(n, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, -1)
        w = self.params["patch_embed.proj.weight"]
        proj = Linear(w.reshape(w.shape[0], -1), self.params["patch_embed.proj.bias"])
        tokens, proj_back = proj.forward(patches)
        cls = np.broadcast_to(self.params["cls_token"], (n, 1, tokens.shape[-1]))
        out = np.concatenate([cls, tokens], axis=1) + self.params["pos_embed"]

        def backward(g):
            gp = proj_back(g[:, 1:])
            return gp.reshape(n, gh, gw, c, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(x.shape)

        return out, backward


def _sequence(*layers):
    def forward(x):
        backs = []
        for layer in layers:
            x, back = layer.forward(x)
            backs.append(back)

        def backward(g):
            for back in reversed(backs):
                g = back(g)
            return g

        return x, backward

    return forward


def _cls_head(head: Linear, x):
    logits, back = head.forward(x[:, 0])

    def backward(g):
        out = np.zeros(x.shape)
        out[:, 0] = back(g)
        return out

    return logits, backward


def tiny_vit_params(
    seed: int = 0,
    image: int = 8,
    patch: int = 2,
    channels: int = 1,
    dim: int = 16,
    depth: int = 3,
    mlp: int = 32,
    n_classes: int = 10,
) -> dict[str, np.ndarray]:
    """Seeded random weights in timm's names and PyTorch's shapes (``(out, in)`` linear weights)."""
    rng = np.random.default_rng(seed)
    tokens = 1 + (image // patch) ** 2

    def w(*shape, scale=None):
        return rng.standard_normal(shape) * (scale or shape[-1] ** -0.5)

    p = {
        "patch_embed.proj.weight": w(
            dim, channels, patch, patch, scale=(channels * patch * patch) ** -0.5
        ),
        "patch_embed.proj.bias": 0.1 * rng.standard_normal(dim),
        "cls_token": 0.5 * rng.standard_normal((1, 1, dim)),
        "pos_embed": 0.5 * rng.standard_normal((1, tokens, dim)),
    }
    for i in range(depth):
        b = f"blocks.{i}"
        for norm in ("norm1", "norm2"):
            p[f"{b}.{norm}.weight"] = 1 + 0.1 * rng.standard_normal(dim)
            p[f"{b}.{norm}.bias"] = 0.1 * rng.standard_normal(dim)
        for name, (out, inp) in {
            "attn.qkv": (3 * dim, dim),
            "attn.proj": (dim, dim),
            "mlp.fc1": (mlp, dim),
            "mlp.fc2": (dim, mlp),
        }.items():
            p[f"{b}.{name}.weight"] = w(out, inp)
            p[f"{b}.{name}.bias"] = 0.1 * rng.standard_normal(out)
    p["norm.weight"] = 1 + 0.1 * rng.standard_normal(dim)
    p["norm.bias"] = 0.1 * rng.standard_normal(dim)
    p["head.weight"] = w(n_classes, dim)
    p["head.bias"] = np.zeros(n_classes)
    return p


def tiny_vit(seed: int = 0, heads: int = 2, **sizes) -> TinyViT:
    """A seeded random ViT for 8x8 single-channel images: 16 patches of 2x2 and a class token."""
    params = tiny_vit_params(seed, **sizes)
    depth = sum(1 for k in params if k.endswith(".norm1.weight"))
    return TinyViT(params, depth=depth, heads=heads, patch=sizes.get("patch", 2))
