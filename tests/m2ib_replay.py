"""An independent float64 replay of M2IB (docs/mathematics.md section 5; Wang et al., NeurIPS
2023) on a tiny random ``transformers.CLIPModel``, and that model with its tokenizer.

The replay follows the spec and the authors' description, not the library: one pair at a time,
one side at a time; a forward hook on the encoder layer replaces its output by
``lam * R + (1 - lam) * n`` with ``lam = sigmoid(alpha)``, ``alpha`` of shape ``(T, D)`` starting
at 5, and keeps ``cap = -0.5 * (1 + log v - (lam R)^2 - v)``, ``v = (1 - lam)^2``; the loss is
``beta * mean(cap) - mean over the noised rows of cos(embedding, other side's embedding)`` with
``torch.optim.Adam``; the map is the capacity of the last forward pass. Image map: channel sum,
class token dropped, patch grid, ``torch.nn.functional.interpolate`` (bilinear), min-max. Text map:
channel sum per token, min-max. The noise is given as arrays, ``(steps, B, T, D)`` per pair and
side. Nothing of ``iba`` is used.
"""

from __future__ import annotations

import copy
import functools
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

WORDS = ["a", "photo", "of", "the", "dog", "cat", "on", "red", "sofa", "grass", "sun", "play"]
PIECES = ["##s", "##ing", "##py"]  # "dogs", "playing", "puppy" are two wordpieces
SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]
MAX_LENGTH = 16


@functools.cache
def tokenizer():
    """A fast WordPiece tokenizer built in memory: ``<bos> ... <eos>``, padded with ``<pad>``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*SPECIAL, *WORDS, "pup", *PIECES])}
    inner = Tokenizer(models.WordPiece(vocab, unk_token="<unk>"))
    inner.normalizer = normalizers.Lowercase()
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    inner.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=inner,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=MAX_LENGTH,
    )
    fast.model_input_names = ["input_ids", "attention_mask"]
    return fast


def tiny_clip(seed: int = 0, dtype: torch.dtype = torch.float64):
    """A random ``CLIPModel``: both encoders 2 layers of width 32; 32 px images in 8 px patches
    (16 patches and the class token); captions of at most 16 tokens; embeddings of 16."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer()),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": MAX_LENGTH,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    return CLIPModel(config).to(dtype).eval()


def images(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random pixel-value images ``(n, 3, 32, 32)`` float64."""
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32))


class Replay(NamedTuple):
    """The replay's result for one pair and one side."""

    capacity: np.ndarray  # (T, D) nats, of the last forward pass
    scores: np.ndarray  # the map: (H, W) for the image, (T,) for the caption


def _embedding(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _optimise(model, layer, run, other, noise, beta, lr, steps):
    """Train the bottleneck at ``layer`` with ``run() -> (B, P)`` embeddings; return the
    capacity ``(T, D)`` of the last forward pass."""
    batch = noise.shape[1]
    store = {}
    alpha = None

    def hook(module, args, output):
        nonlocal alpha
        r = output[0] if isinstance(output, tuple) else output
        if alpha is None:
            alpha = torch.nn.Parameter(torch.full(r.shape[1:], 5.0, dtype=r.dtype))
            store["optimizer"] = torch.optim.Adam([alpha], lr=lr)
        lam = torch.sigmoid(alpha).expand(r.shape)
        eps = torch.as_tensor(noise[store["step"]], dtype=r.dtype)
        z = lam * r + (1 - lam) * eps
        var = (1 - lam) ** 2
        store["capacity"] = -0.5 * (1 + torch.log(var) - (lam * r) ** 2 - var)
        return (z, *output[1:]) if isinstance(output, tuple) else z

    handle = layer.register_forward_hook(hook)
    try:
        for step in range(steps):
            store["step"] = step
            if "optimizer" in store:
                store["optimizer"].zero_grad()
            embeds = run()
            cos = F.cosine_similarity(embeds, other.expand(batch, -1), dim=1, eps=1e-6)
            loss = beta * store["capacity"].mean() - cos.mean()
            loss.backward()
            store["optimizer"].step()
    finally:
        handle.remove()
    return store["capacity"].mean(0).detach().numpy()


def _minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min())


def replay_pair(
    model,
    pixel_values: np.ndarray,
    input_ids: np.ndarray,
    image_layer: int,
    text_layer: int,
    image_noise: np.ndarray,
    text_noise: np.ndarray,
    beta: float = 0.1,
    lr: float = 1.0,
    steps: int = 10,
) -> tuple[Replay, Replay]:
    """M2IB of one pair: ``pixel_values`` ``(3, H, W)``, ``input_ids`` ``(T,)`` (no padding),
    noise ``(steps, B, T, D)`` per side. Runs on a copy of ``model`` (float64)."""
    model = copy.deepcopy(model).double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    batch = image_noise.shape[1]
    pixels = torch.as_tensor(pixel_values, dtype=torch.float64)[None]
    ids = torch.as_tensor(input_ids, dtype=torch.long)[None]
    with torch.no_grad():
        image_embed = _embedding(model.get_image_features(pixel_values=pixels))
        text_embed = _embedding(model.get_text_features(input_ids=ids))

    image_cap = _optimise(
        model,
        model.vision_model.encoder.layers[image_layer],
        lambda: _embedding(model.get_image_features(pixel_values=pixels.expand(batch, -1, -1, -1))),
        text_embed,
        image_noise,
        beta,
        lr,
        steps,
    )
    saliency = image_cap.sum(-1)[1:]
    side = int(round(saliency.size**0.5))
    grid = torch.as_tensor(saliency.reshape(1, 1, side, side))
    resized = F.interpolate(grid, size=pixels.shape[2:], mode="bilinear", align_corners=False)
    image = Replay(image_cap, _minmax(resized[0, 0].numpy()))

    text_cap = _optimise(
        model,
        model.text_model.encoder.layers[text_layer],
        lambda: _embedding(model.get_text_features(input_ids=ids.expand(batch, -1))),
        image_embed,
        text_noise,
        beta,
        lr,
        steps,
    )
    text = Replay(text_cap, _minmax(text_cap.sum(-1)))
    return image, text
