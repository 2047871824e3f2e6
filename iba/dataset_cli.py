"""The command line's data-set commands (docs/dataset.md): ``iba explain-dataset FOLDER`` explains
and scores every image of a folder into Parquet rows and heatmap shards, resumably
(:mod:`iba.dataset`); ``iba summarize DIR`` prints the mean and standard error per metric (the
IBA paper's table, docs/mathematics.md section 7) and ``--plot`` draws the mean curves.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iba import dataset

CURVES_FILE = "curves.png"


def _metrics(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated metric names of :data:`iba.dataset.METRICS`."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in dataset.METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown metric(s) {', '.join(unknown) or '(none)'}; give a comma-separated list "
            f"of {', '.join(dataset.METRICS)}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text}: name each metric once")
    return names


def add_parsers(sub: Any, common: Callable[..., None]) -> None:
    """Add ``explain-dataset`` and ``summarize`` to the ``iba`` command's subparsers ``sub``
    (``common``: the options every explaining command shares, from :func:`iba.cli.parser`)."""
    from iba.cli import _whole

    p = sub.add_parser(
        "explain-dataset",
        help="explain and score every image of a folder (Parquet rows, resumable)",
        description="Explain every image of FOLDER (one subfolder per class, labels by sorted "
        f"folder name; or a flat folder, with {dataset.LABELS_FILE} of file,label lines for "
        "labels, else each image's predicted class), score the metrics, and write per block of "
        "images the rows (--out/rows/part-N.parquet) and heatmaps (--out/maps/maps-N.npy). "
        "Rerun the same command to finish an interrupted job: written blocks are skipped.",
        epilog='Needs pyarrow: pip install "iba[dataset]". Summarise with iba summarize DIR.',
    )
    p.add_argument("folder", metavar="FOLDER", help="the folder of images")
    p.add_argument(
        "--metrics",
        type=_metrics,
        default=dataset.METRICS,
        help=f"comma-separated, of {', '.join(dataset.METRICS)} (default: all)",
    )
    p.add_argument(
        "--block",
        type=_whole(1, "a block holds at least 1 image"),
        default=dataset.DEFAULT_BLOCK,
        help=f"images per written block: a crash loses at most one (default {dataset.DEFAULT_BLOCK})",
    )
    p.add_argument(
        "--tile-size",
        type=_whole(1, "tiles are at least 1 pixel"),
        default=dataset.DEFAULT_TILE_SIZE,
        help=f"degradation's tile edge in pixels (default {dataset.DEFAULT_TILE_SIZE})",
    )
    p.add_argument(
        "--points",
        type=_whole(2, "a curve needs at least 2 points"),
        default=dataset.DEFAULT_POINTS,
        help=f"degradation's points per curve (default {dataset.DEFAULT_POINTS})",
    )
    p.add_argument(
        "--pixels-per-step",
        type=_whole(1, "at least 1 pixel per step"),
        default=8 * dataset.SIZE,
        help=f"insertion's and deletion's pixels per step (default {8 * dataset.SIZE})",
    )
    p.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="your model: FUNCTION() of MODULE returns it (default: the bundled one)",
    )
    ray = p.add_argument_group('Ray Data (pip install "iba[ray]")')
    ray.add_argument(
        "--workers",
        type=_whole(0, "the number of Ray workers is a whole number >= 0 (0: no Ray)"),
        default=0,
        help="run the job on Ray Data with this many actors, each holding the model (default 0: "
        "in this process)",
    )
    ray.add_argument(
        "--address",
        help="a running Ray cluster to join (default: a local Ray); its nodes must see FOLDER "
        "and --out at the same paths",
    )
    ray.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs each Ray actor reserves (1: one actor per GPU; default 0)",
    )
    common(p)
    p.set_defaults(run=explain_dataset, text=False)
    s = sub.add_parser(
        "summarize",
        help="mean and standard error per metric of an explain-dataset folder",
        description="Print the mean and standard error (std / sqrt(n)) of each metric over the "
        "rows of DIR, written by iba explain-dataset; --plot draws the mean curves.",
    )
    s.add_argument("out", metavar="DIR", help="the --out folder of iba explain-dataset")
    s.add_argument(
        "--plot",
        action="store_true",
        help=f"draw the mean degradation (MoRF, LeRF), insertion and deletion curves in "
        f"DIR/{CURVES_FILE}",
    )
    s.set_defaults(run=summarize, verbose=False)


def explain_dataset(args: argparse.Namespace) -> int:
    """``iba explain-dataset FOLDER``: check everything, then run or finish the job."""
    from iba import cli

    if args.samples is None:
        args.samples = cli.DEFAULT_SAMPLES
    layer = args.layer or "_blocks.4"
    settings = dataset.Settings(
        args.backend,
        layer,
        cli._config(args),
        args.samples,
        args.seed,
        tuple(args.metrics),
        args.block,
        args.tile_size,
        args.points,
        args.pixels_per_step,
    )
    out = Path(args.out)
    try:
        dataset.check_settings(settings)
        dataset._pyarrow()
        if args.address and not args.workers:
            raise dataset.DatasetError("--address is a Ray cluster's: add --workers N")
        if args.workers:
            from iba import dataset_ray

            dataset_ray._ray()
        cli._check_out(out)
        if args.model:
            cli._check_model_spec(args.model)
        items, classes = dataset.scan(args.folder)
        work = dataset.prepare(
            args.backend,
            layer,
            settings,
            items,
            classes,
            model=args.model,
            quiet=args.quiet,
            verbose=args.verbose,
        )
        if args.workers:
            from iba import dataset_ray

            result = dataset_ray.run_job(
                args.folder,
                out,
                items,
                classes,
                work,
                settings,
                workers=args.workers,
                address=args.address,
                gpus_per_worker=args.gpus_per_worker,
                model=args.model,
                progress=not args.quiet,
            )
        else:
            result = dataset.run_job(
                args.folder, out, items, classes, work, settings, progress=not args.quiet
            )
    except dataset.DatasetError as err:
        raise cli.UserError(str(err)) from None
    print(
        f"{result.images} image(s): {result.written} block(s) written, {result.skipped} already "
        f"done, {result.errors} unreadable among the new; rows in {out / dataset.ROWS}"
    )
    cli._note(args, f"{result.seconds:.1f} s, {result.images_per_second:.2f} images/s")
    return 0


def summarize(args: argparse.Namespace) -> int:
    """``iba summarize DIR``: the table of mean and standard error per metric."""
    from iba import cli

    try:
        table = dataset.summarize(args.out)
        rows = dataset.read_rows(args.out)
    except dataset.DatasetError as err:
        raise cli.UserError(str(err)) from None
    errors = sum(e is not None for e in rows.column("error").to_pylist())
    print(f"{args.out}: {rows.num_rows} image(s), {errors} unreadable")
    print(f"{'metric':<12} {'mean':>8} {'sem':>8} {'n':>6}")
    for m in table:
        sem = "-" if math.isnan(m.sem) else f"{m.sem:.4f}"
        print(f"{m.metric:<12} {m.mean:>8.4f} {sem:>8} {m.n:>6}")
    if args.plot:
        path = _plot(args.out)
        print(f"wrote {path}" if path else "no curves to draw (no image has metric values)")
    return 0


def _plot(out: str) -> Path | None:
    """The mean curves of the job in ``out`` in ``out/curves.png``; ``None`` if none."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    curves = dataset.mean_curves(out)
    if not curves:
        return None
    metrics = sorted({name.split("_")[0] for name in curves})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, (x, y) in curves.items():
            if name.startswith(metric + "_"):
                label = name.split("_", 1)[1].upper() if metric == "degradation" else metric
                ax.plot(x, y, label=label)
        ax.set_title(f"mean {metric} curve")
        ax.set_xlabel("removed tiles" if metric == "degradation" else "changed pixels")
        ax.set_ylabel("normalised score" if metric == "degradation" else "target probability")
        ax.legend()
    fig.tight_layout()
    path = Path(out) / CURVES_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
