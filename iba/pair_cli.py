"""The command line's image-caption commands (docs/mathematics.md section 5):
``iba explain-pair IMAGE CAPTION...`` and ``iba demo --pairs``.

Both run the backend's ``M2IB`` (``Runner.m2ib_explainer``) on the bundled dual encoder
(``iba.models.dual_encoder``: EfficientNet-Lite0's pooled features, MiniLM's soft retrieval of
ImageNet prompts), print each pair's similarity and top words, and write ``pairs.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import iba

IMAGE_LAYER = "_blocks.14"  # the dual encoder's image bottleneck (docs/m2ib.md)
TEXT_LAYER = 1  # MiniLM's encoder layer (0 to 5)
BETA = 0.3  # the weight of the information term on the bundled dual encoder (docs/m2ib.md)


def add_options(p: argparse.ArgumentParser, group: Any = None) -> None:
    """The M2IB options (``group``: an argument group of ``p`` to put them in)."""
    where = group if group is not None else p
    where.add_argument(
        "--image-layer",
        default=None,
        help=f"the image encoder's layer, by EfficientNet-Lite0's PyTorch name (default "
        f"{IMAGE_LAYER})",
    )
    where.add_argument(
        "--text-layer",
        default=None,
        help=f"MiniLM's encoder layer whose output is bottlenecked, 0 to 5 (default {TEXT_LAYER})",
    )


def _config(args: argparse.Namespace) -> iba.Config:
    fields = {"beta": BETA if args.beta is None else args.beta}
    for name in ("steps", "batch_size"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    return iba.m2ib_config(**fields)


def _explainer(args: argparse.Namespace) -> Any:
    """The backend's M2IB on the bundled dual encoder, or a clear error."""
    from iba.cli import UserError, _muted_stderr, _text_layer
    from iba.demo import runners
    from iba.models import dual_encoder

    text_layer = _text_layer(args.text_layer, "--text-layer", TEXT_LAYER)
    image_layer = args.image_layer or IMAGE_LAYER
    try:
        with _muted_stderr(not args.verbose):
            cls = runners.runner_class(args.backend)
            explainer = cls.m2ib_explainer(image_layer, text_layer, config=_config(args))
    except ImportError as err:
        hint = f"; the dual encoder's class names need {dual_encoder.INSTALL}"
        raise UserError(f"{runners.text_unavailable(args.backend, err)}{hint}") from None
    except (runners.Unavailable, TypeError, ValueError) as err:
        raise UserError(str(err)) from None
    return cls, explainer


def run_pairs(
    args: argparse.Namespace,
    photos: np.ndarray,
    captions: list[str],
    halves: list[str] | None = None,
) -> int:
    """Explain ``photos`` (uint8 ``(N, 224, 224, 3)``) with ``captions``, print, write the
    figure."""
    from iba import pairplot
    from iba.cli import UserError, _note
    from iba.evaluation.m2ib import half_share

    cls, explainer = _explainer(args)
    start = time.perf_counter()
    try:
        maps = explainer.explain(
            cls.pair_inputs(photos), captions, seed=args.seed, progress=not args.quiet
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    seconds = time.perf_counter() - start
    shares = None if halves is None else half_share(maps.image_maps, halves)
    titles = []
    for i, caption in enumerate(captions):
        line = f"pair {i + 1} {caption!r}: {pairplot.describe(maps, i)}"
        if shares is not None and halves is not None:
            line += f"; {shares[i]:.0%} of the image map on the {halves[i]} half"
        print(line)
        titles.append(line.split(": ", 1)[0] + f" (similarity {maps.similarity[i]:.3f})")
    if shares is not None:
        print(
            f"the named half holds most of the map in {int((shares > 0.5).sum())} of {len(shares)} pairs"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = pairplot.save_png(photos, maps, out / "pairs.png", titles=titles)
    print(f"wrote {path}")
    _note(args, f"explained {len(captions)} pair(s) in {seconds:.1f} s")
    return 0


def explain_pair(args: argparse.Namespace) -> int:
    """``iba explain-pair IMAGE CAPTION...``: one photo (short side resized to 224, centre
    crop), each caption paired with it."""
    from iba.cli import UserError, _image_files, _read_image
    from iba.demo.photos import center_crop

    files = _image_files([args.image])
    if len(files) != 1:
        raise UserError(f"{args.image}: give one image file (a folder holds {len(files)})")
    captions = [str(c) for c in args.captions]
    crop, _ = center_crop(_read_image(files[0]))
    return run_pairs(args, np.repeat(crop[None], len(captions), axis=0), captions)


def demo_pairs(args: argparse.Namespace) -> int:
    """``iba demo --pairs``: the bundled side-by-side photos, one caption per half."""
    from iba.demo import pairs

    return run_pairs(args, pairs.images(), pairs.captions(), pairs.halves())
