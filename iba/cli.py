"""The command line: ``iba demo`` and ``iba explain IMAGE...``.

``iba demo`` explains the bundled EfficientNet-Lite0 (ImageNet-1k) on three bundled photos;
``iba explain`` does the same for your images, with the bundled model or your own
(``--model module:function`` returning it). Figures and raw heatmaps go to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from iba import backends

DEFAULT_OUT = "iba-output"


class UserError(Exception):
    """A problem with the command's input; printed as one line, exit status 2."""


def cache_dir() -> Path:
    """Where fitted estimators are kept: ``$IBA_CACHE``, else ``$XDG_CACHE_HOME/iba``."""
    if os.environ.get("IBA_CACHE"):
        return Path(os.environ["IBA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iba"


def _load_image(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise UserError(f"{path}: no such file; give the path of a photo (JPEG, PNG, ...)")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError):
        raise UserError(f"{path}: not an image that Pillow can read; give a JPEG or PNG") from None


def _load_user_model(spec: str):
    import importlib

    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise UserError(f"--model {spec!r}: expected module:function, e.g. mymodels:resnet")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, function)()
    except (ImportError, AttributeError) as err:
        raise UserError(f"--model {spec!r}: {err}") from None


def _fit_or_load(run, explainer, layer: str, samples: int, model_id: str):
    import iba
    from iba.demo import photos

    path = cache_dir() / f"{model_id}_{run.name}_{run.native_layer(layer)}_{samples}.npz"
    if path.is_file():
        try:
            explainer.load_estimators(path)
            print(f"estimator: loaded from {path}")
            return
        except (ValueError, OSError) as err:
            print(f"estimator: cache {path} unusable ({err}); fitting again")
    print(f"estimator: fitting layer {layer} on {samples} crops of the bundled photos")
    start = time.perf_counter()
    run.estimate(explainer, photos.random_crops(n=samples), samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    iba.save_estimators(tmp, explainer.estimators)
    tmp.replace(path)
    print(f"estimator: {time.perf_counter() - start:.1f} s, cached in {path}")


def _explain(args, images: dict[str, np.ndarray], boxes: dict | None = None) -> int:
    from tqdm.auto import tqdm

    from iba.demo import photos, runners

    try:
        run = runners.runner(args.backend, _load_user_model(args.model) if args.model else None)
    except (runners.Unavailable, ValueError) as err:
        raise UserError(str(err)) from None
    layer = args.layer or runners.DEFAULT_LAYER
    if not run.has_layer(layer):
        names = run.layer_names()
        shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
        raise UserError(f"--layer {layer!r} not found in the model; layers are: {shown}")
    config = {k: v for k, v in (("beta", args.beta), ("steps", args.steps)) if v is not None}
    try:
        explainer = run.explainer(layer, **config)
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None

    crops = {name: photos.center_crop(image)[0] for name, image in images.items()}
    # the cache is per model: the bundled one, or the module:function that built yours
    model_id = (
        args.model.replace(":", "-").replace("/", "-") if args.model else "efficientnet-lite0"
    )
    _fit_or_load(run, explainer, layer, args.samples, model_id)

    classes = photos.imagenet_classes() if not args.model else None
    batch = np.stack(list(crops.values()))
    probabilities = run.predict(batch)
    targets = probabilities.argmax(1)
    start = time.perf_counter()
    heatmaps = []
    for i in tqdm(range(len(batch)), desc="IBA explain", unit="image"):
        heatmaps.append(run.analyze(explainer, batch[i : i + 1], targets[i : i + 1])[0])
    seconds = time.perf_counter() - start
    print(f"explained {len(batch)} image(s) in {seconds:.1f} s")

    results = []
    for (name, crop), probs, heat in zip(crops.items(), probabilities, heatmaps):
        top = np.argsort(probs)[::-1][:5]
        label = (lambda i: classes[i]) if classes else (lambda i: f"class {i}")
        print(f"{name}: " + ", ".join(f"{label(i)} {probs[i]:.1%}" for i in top))
        results.append((name, crop, heat, f"{name}: {label(top[0])} ({probs[top[0]]:.0%})"))
    _write(Path(args.out), results)
    return 0


def _write(out: Path, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    import iba.plot

    out.mkdir(parents=True, exist_ok=True)
    for name, crop, heat, title in results:
        fig = iba.plot.explanation(crop, heat, title=title)
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        np.save(out / f"{name}.npy", heat)
        print(f"  wrote {out / (name + '.png')} and {name}.npy")


def _demo(args) -> int:
    from iba.demo import photos

    images = {}
    for name in photos.EXPLAINED:
        try:
            images[name] = photos.photo(name)
        except (ImportError, FileNotFoundError) as err:
            raise UserError(f"bundled photo {name!r} is missing: {err}") from None
    return _explain(args, images)


def _explain_files(args) -> int:
    images: dict[str, np.ndarray] = {}
    for path in args.images:
        stem = Path(path).stem
        images[stem if stem not in images else f"{stem}-{len(images)}"] = _load_image(path)
    return _explain(args, images)


def _backend_help() -> str:
    """The registry's backends, ``torch (default), keras (...) or jax (...)``."""
    helps = [engine.help for engine in backends.ENGINES]
    return ", ".join(helps[:-1]) + " or " + helps[-1] if len(helps) > 1 else helps[0]


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="iba", description=__doc__.splitlines()[0])
    sub = main.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument(
            "--backend",
            default=backends.DEFAULT_ENGINE,
            metavar="{" + ",".join(backends.engine_names()) + "}",
            help=_backend_help(),
        )
        p.add_argument(
            "--layer",
            help="target layer, PyTorch's module name (default _blocks.4 of EfficientNet-Lite0; "
            "the Keras and Flax ports also take _blocks_4)",
        )
        p.add_argument("--beta", type=float, help="weight of the information term (default 10)")
        p.add_argument("--steps", type=int, help="optimisation steps (default 10)")
        p.add_argument("--samples", type=int, default=1000, help="estimator samples (1000)")
        p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")

    demo = sub.add_parser("demo", help="explain EfficientNet-Lite0 on three bundled photos")
    common(demo)
    demo.set_defaults(run=_demo, model=None)
    explain = sub.add_parser("explain", help="explain your images")
    explain.add_argument("images", nargs="+", metavar="IMAGE")
    explain.add_argument("--model", help="module:function returning your model (default: bundled)")
    common(explain)
    explain.set_defaults(run=_explain_files)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as err:
        print(f"iba: error: {err}", file=sys.stderr)
        return 2
