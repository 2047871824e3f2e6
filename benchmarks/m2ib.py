"""M2IB on the real dual encoder (EfficientNet-Lite0 + MiniLM with the soft-retrieval text head,
``iba.models.dual_encoder``): localisation on side-by-side pairs and the confidence drop /
increase against gradient baselines on the same similarity score (docs/mathematics.md sections 5
and 7; the tables of docs/m2ib.md).

Prints, for one backend per run:

1. **localisation**: for the 8 pairs of ``iba.demo.pairs`` (two photos side by side, the caption
   names one half), the share of the image map's mass on the named half
   (``iba.evaluation.m2ib.half_share``) and how many pairs put most of it there;
2. **confidence drop / increase** (``iba.evaluation.m2ib.confidence_drop_increase``) on 14
   image-caption pairs (the 8 pairs and 6 single photos with a paraphrase), for M2IB and, on
   PyTorch, for a Grad-CAM-style map and a gradient (saliency) map whose score is the cosine
   similarity with the caption's embedding, and a random map; for the text side (PyTorch), M2IB
   against gradient x input on the word embeddings and random token weights.

Run from the repository root, one backend per process (about 2-5 minutes on 2 CPU cores)::

    IBA_BACKEND=torch .nox/tests-torch/bin/python benchmarks/m2ib.py --backend torch
    KERAS_BACKEND=jax .nox/tests-keras-jax/bin/python benchmarks/m2ib.py --backend keras
    .nox/tests-flax/bin/python benchmarks/m2ib.py --backend flax
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import iba  # noqa: E402
from iba.demo import pairs, photos  # noqa: E402
from iba.demo.runners import preprocess  # noqa: E402
from iba.evaluation.m2ib import confidence_drop_increase, half_share  # noqa: E402

BETA = 0.3
IMAGE_LAYER = "_blocks.14"  # PyTorch's name; the ports take it too ("_blocks_14")
TEXT_LAYER = 1  # MiniLM's encoder layer, the text IBA default (docs/text.md)
SEQUENCE_LENGTH = 32  # the Keras text model's fixed length
# Single photos with a paraphrase of their ImageNet concept (the held-out half of the eval set).
SINGLES = (
    ("chelsea", "a tabby cat lying down"),
    ("coffee", "a small cup of coffee"),
    ("rocket", "a rocket before launch"),
    ("grace_hopper", "a woman in a navy uniform"),
    ("china", "a chinese temple"),
    ("flower", "a daisy in bloom"),
)


def eval_set() -> tuple[np.ndarray, list[str]]:
    """The 14 evaluation pairs: preprocessed images ``(14, 224, 224, 3)`` and captions."""
    single = np.stack([photos.center_crop(photos.photo(name))[0] for name, _ in SINGLES])
    images = np.concatenate([pairs.images(), single])
    return preprocess(images).astype(np.float32), pairs.captions() + [c for _, c in SINGLES]


def unit_maps(maps: np.ndarray) -> np.ndarray:
    """Maps min-max normalised per input to ``[0, 1]`` (``iba.normalize``), float64."""
    maps = np.asarray(maps, np.float64)
    return np.clip(iba.normalize(maps), 0.0, 1.0)


# -- backends ------------------------------------------------------------------------------------


class Torch:
    """``iba_torch.M2IB`` on ``iba_torch.dual_encoder.dual_encoder()``, with the baselines."""

    name = "torch"

    def __init__(self, config: iba.Config):
        import torch

        import iba_torch
        from iba_torch.dual_encoder import dual_encoder

        torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        self.model = dual_encoder()
        self.explainer = iba_torch.M2IB(
            self.model,
            image_layer=f"vision_model.{IMAGE_LAYER}",
            text_layer=TEXT_LAYER,
            config=config,
        )

    def pixels(self, images: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    def explain(self, images: np.ndarray, captions: list[str]) -> Any:
        return self.explainer.explain(self.pixels(images), captions)

    def image_embed(self, images: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.get_image_features(self.pixels(images)).double().numpy()

    def tokens(self, captions: list[str]) -> dict:
        return dict(self.model.tokenizer(captions, padding=True, return_tensors="pt"))

    def text_embed(self, captions: list[str]) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.get_text_features(**self.tokens(captions)).double().numpy()

    # baselines on the cosine similarity with the other side's fixed embedding

    def _image_score(self, other: np.ndarray) -> Any:
        torch = self.torch
        model = self.model
        fixed = torch.as_tensor(other, dtype=torch.float32)

        class Similarity(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.dual = model

            def forward(self, pixel_values: Any) -> Any:
                image = self.dual.get_image_features(pixel_values)
                return torch.nn.functional.cosine_similarity(image, fixed[None], dim=1)[:, None]

        return Similarity().eval()

    def image_baselines(self, images: np.ndarray, others: np.ndarray) -> dict[str, np.ndarray]:
        from iba_torch import baselines

        found: dict[str, list[np.ndarray]] = {"grad_cam": [], "saliency": []}
        for i in range(len(images)):
            score = self._image_score(others[i])
            x = self.pixels(images[i : i + 1])
            found["grad_cam"].append(
                baselines.grad_cam(score, x, target=0, layer=f"dual.vision_model.{IMAGE_LAYER}")
            )
            found["saliency"].append(baselines.saliency(score, x, target=0))
        return {k: np.concatenate(v) for k, v in found.items()}

    def _text_score(self, other: np.ndarray) -> Any:
        torch = self.torch
        model = self.model
        fixed = torch.as_tensor(other, dtype=torch.float32)

        class Similarity(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.dual = model

            def get_input_embeddings(self) -> Any:
                return self.dual.text_model.get_input_embeddings()

            def forward(self, input_ids: Any, **inputs: Any) -> Any:
                text = self.dual.get_text_features(input_ids, **inputs)
                return torch.nn.functional.cosine_similarity(text, fixed[None], dim=1)[:, None]

        return Similarity().eval()

    def text_baselines(self, captions: list[str], others: np.ndarray) -> list[np.ndarray]:
        from iba_torch import text_baselines

        maps = []
        for caption, other in zip(captions, others):
            inputs = self.tokens([caption])
            values = text_baselines.gradient_x_input(self._text_score(other), inputs, target=0)
            maps.append(np.abs(values[0]))
        return maps

    def word_embeddings(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.tokens(captions)
        with self.torch.no_grad():
            words = self.model.text_model.get_input_embeddings()(tokens["input_ids"])
        return words.double().numpy(), tokens["attention_mask"].numpy()

    def text_embed_from_words(self, mask: np.ndarray) -> Any:
        torch, model = self.torch, self.model

        def embed(words: np.ndarray) -> np.ndarray:
            m = torch.as_tensor(mask[: len(words)])
            with torch.no_grad():
                hidden = model.text_model(
                    inputs_embeds=torch.as_tensor(words, dtype=torch.float32), attention_mask=m
                ).last_hidden_state
                w = m.to(hidden.dtype)[..., None]
                pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1e-9)
                e = pooled / pooled.norm(dim=1, keepdim=True)
                retrieval = torch.softmax(e @ model.prompts.T / model.temperature, dim=1)
                return (retrieval @ model.classes).double().numpy()

        return embed


class Keras:
    """``iba_tf.M2IB`` on ``iba_tf.models.dual_encoder.dual_encoder()`` (no baselines)."""

    def __init__(self, config: iba.Config):
        import keras

        import iba_tf
        from iba_tf.models.dual_encoder import dual_encoder

        self.name = f"keras-{keras.backend.backend()}"
        self.dual = dual_encoder(sequence_length=SEQUENCE_LENGTH)
        self.explainer = iba_tf.M2IB(
            self.dual.image_model,
            self.dual.text_model,
            self.dual.tokenizer,
            image_layer=IMAGE_LAYER,
            text_layer=TEXT_LAYER,
            config=config,
        )

    def explain(self, images: np.ndarray, captions: list[str]) -> Any:
        return self.explainer.explain(images, captions)

    def image_embed(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.dual.image_model.predict_on_batch(images), np.float64)

    def text_embed(self, captions: list[str]) -> np.ndarray:
        enc = self.dual.tokenizer(captions, length=SEQUENCE_LENGTH)
        inputs = {k: v.astype(np.int32) for k, v in enc.inputs.items()}
        return np.asarray(self.dual.text_model.predict_on_batch(inputs), np.float64)


class Flax:
    """``iba_jax.M2IB`` on ``iba_jax.models.dual_encoder.dual_encoder()`` (no baselines)."""

    name = "flax"

    def __init__(self, config: iba.Config):
        import jax

        import iba_jax
        from iba_jax.models.dual_encoder import dual_encoder

        self.dual = dual_encoder()
        self.explainer = iba_jax.M2IB(
            self.dual.image,
            self.dual.text,
            self.dual.tokenizer,
            image_layer=IMAGE_LAYER,
            text_layer=TEXT_LAYER,
            config=config,
        )
        module, variables = self.dual.image
        self._image = jax.jit(lambda x: module.apply(variables, x))

    def explain(self, images: np.ndarray, captions: list[str]) -> Any:
        return self.explainer.explain(images, captions)

    def image_embed(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._image(images), np.float64)

    def text_embed(self, captions: list[str]) -> np.ndarray:
        module, variables = self.dual.text
        enc = self.dual.tokenizer(captions)
        inputs = {k: v.astype(np.int32) for k, v in enc.inputs.items()}
        return np.asarray(module.apply(variables, inputs), np.float64)


BACKENDS = {"torch": Torch, "keras": Keras, "flax": Flax}


# -- the tables ----------------------------------------------------------------------------------


def localisation(backend: Any) -> None:
    images = pairs.preprocessed()
    captions = pairs.captions()
    start = time.perf_counter()
    maps = backend.explain(images, captions)
    seconds = time.perf_counter() - start
    halves = pairs.halves()
    share = half_share(maps.image_maps, halves)
    share_bits = half_share(maps.image_bits, halves)
    print(f"\n## Localisation: {backend.name}, M2IB beta {BETA} at {IMAGE_LAYER} ({seconds:.0f} s)")
    print("\n| pair (left + right) | caption | named half | share of the map | share of bits |")
    print("|---|---|---|---|---|")
    for pair, s, b in zip(pairs.PAIRS, share, share_bits):
        print(f"| {pair.left} + {pair.right} | {pair.caption} | {pair.half} | {s:.3f} | {b:.3f} |")
    print(
        f"\nmost of the map on the named half: {(share > 0.5).sum()} of {len(share)} "
        f"(bits: {(share_bits > 0.5).sum()} of {len(share)}); mean share {share.mean():.3f}"
    )


def confidence_row(name: str, result: Any) -> str:
    return f"| {name} | {result.drop:.4f} | {result.increase:.1f} |"


def confidence(backend: Any) -> None:
    images, captions = eval_set()
    text = backend.text_embed(captions)
    image = backend.image_embed(images)
    start = time.perf_counter()
    maps = backend.explain(images, captions)
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    layout = "channels_last"
    embed = backend.image_embed

    def score(m: np.ndarray, normalize: bool = True) -> Any:
        weights = unit_maps(m) if normalize else m
        return confidence_drop_increase(
            embed, images, weights, text, data_format=layout, batch_size=14, progress=False
        )

    rows = [confidence_row("M2IB", score(maps.image_maps))]
    if hasattr(backend, "image_baselines"):
        found = backend.image_baselines(images, text)
        rows.append(
            confidence_row(f"Grad-CAM (similarity, {IMAGE_LAYER})", score(found["grad_cam"]))
        )
        rows.append(confidence_row("gradient (saliency, similarity)", score(found["saliency"])))
    rows.append(confidence_row("random", score(rng.random(maps.image_maps.shape))))
    rows.append(confidence_row("all ones (unmasked)", score(np.ones(maps.image_maps.shape), False)))
    print(
        f"\n## Confidence, image side: {backend.name}, {len(captions)} pairs (M2IB {seconds:.0f} s)"
    )
    print("\n| map | confidence drop (lower is better) | increase % (higher is better) |")
    print("|---|---|---|")
    print("\n".join(rows))

    if not hasattr(backend, "text_baselines"):
        return
    words, mask = backend.word_embeddings(captions)
    embed_text = backend.text_embed_from_words(mask)
    n, length = mask.shape

    def padded(values: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((n, length))
        for i, v in enumerate(values):
            out[i, : len(v)] = unit_maps(np.asarray(v)[None])[0]
        return out

    def text_score(m: np.ndarray) -> Any:
        return confidence_drop_increase(
            embed_text, words, m, image, data_format="tokens", batch_size=n, progress=False
        )

    m2ib_tokens = [maps.token_scores(i) for i in range(n)]
    for i, v in enumerate(m2ib_tokens):
        if len(v) != int(mask[i].sum()):
            raise RuntimeError(f"caption {i}: {len(v)} token scores for {mask[i].sum()} tokens")
    baseline = backend.text_baselines(captions, image)
    random_tokens = [rng.random(int(k)) for k in mask.sum(1)]
    print(f"\n## Confidence, text side: {backend.name}, {n} captions (encoder layer {TEXT_LAYER})")
    print("\n| map | confidence drop (lower is better) | increase % (higher is better) |")
    print("|---|---|---|")
    print(confidence_row("M2IB", text_score(padded(m2ib_tokens))))
    print(confidence_row("gradient x input (similarity)", text_score(padded(baseline))))
    print(confidence_row("random", text_score(padded(random_tokens))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="torch")
    parser.add_argument("--skip-confidence", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"# M2IB on the real dual encoder: {args.backend}, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} CPU x{os.cpu_count()}"
    )
    start = time.perf_counter()
    backend = BACKENDS[args.backend](iba.m2ib_config(beta=BETA))
    print(f"model loaded in {time.perf_counter() - start:.0f} s")
    localisation(backend)
    if not args.skip_confidence:
        confidence(backend)


if __name__ == "__main__":
    main()
