"""The data-set job of :mod:`iba.dataset` on Ray Data (an optional extra: ``pip install
"iba[ray]"``): the blocks not yet written are the rows of a Ray dataset, and ``map_batches``
hands them to a pool of actors, one per worker, each holding the backend's model, the fitted
estimator and the noise. Each actor explains and scores its blocks exactly as the single-process
job does and writes them to the same files, atomically, so the output folder, the resuming and
the summary are the same (docs/dataset.md; the metrics are docs/mathematics.md section 7).

A local Ray is started by default (and stopped afterwards); ``address`` joins a running cluster,
whose nodes must see ``folder`` and ``out`` at the same paths (a shared file system).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iba import dataset

RAY_HINT = 'pip install "ray[data]" (or pip install "iba[ray]")'


def _ray() -> Any:
    """``ray`` with Ray Data, or a :class:`iba.dataset.DatasetError` naming the install."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise dataset.DatasetError(
            f"--workers runs the job on Ray Data, which is not installed: {RAY_HINT}"
        ) from None
    return ray


class BlockWorker:
    """A Ray actor: the backend's runner and explainer, built once, then blocks on demand."""

    def __init__(
        self,
        folder: str,
        out: str,
        items: list[tuple[int, str, int | None]],
        classes: list[str] | None,
        settings: dict[str, Any],
        model: str | None,
        estimator: Any,
    ) -> None:
        self.folder, self.out = Path(folder), Path(out)
        self.items = [dataset.Item(*item) for item in items]
        self.settings = dataset.Settings(**settings)
        self.work = dataset.prepare(
            self.settings.backend,
            self.settings.layer,
            self.settings,
            self.items,
            classes,
            model=model,
            quiet=True,
            estimator=estimator,
        )
        self.schema = dataset._schema(self.settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain, score and write the blocks of ``batch["block"]``; their counts."""
        size = self.settings.block
        images, errors = [], []
        for index in batch["block"].tolist():
            items = self.items[index * size : (index + 1) * size]
            rows, maps = dataset._block(self.folder, items, self.work, self.settings)
            dataset._write_block(self.out, index, rows, maps, self.schema)
            images.append(len(rows))
            errors.append(sum(row["error"] is not None for row in rows))
        return {"block": batch["block"], "images": np.array(images), "errors": np.array(errors)}


def run_job(
    folder: str | Path,
    out: str | Path,
    items: Sequence[dataset.Item],
    classes: list[str] | None,
    work: dataset.Work,
    settings: dataset.Settings,
    *,
    workers: int = 2,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    model: str | None = None,
    progress: bool = True,
) -> dataset.JobResult:
    """:func:`iba.dataset.run_job` on Ray Data with ``workers`` actors (``work``'s estimator is
    shipped to them); the same files and rows."""
    from tqdm.auto import tqdm

    import iba

    ray = _ray()
    folder, out = Path(folder).resolve(), Path(out).resolve()
    dataset._pyarrow()
    dataset._open_output(out, dataset._job_record(folder, items, classes, settings))
    n_blocks = -(-len(items) // settings.block)
    done = dataset.done_blocks(out)
    todo = [i for i in range(n_blocks) if i not in done]
    start = time.perf_counter()
    images = errors = 0
    if todo:
        started = not ray.is_initialized()
        if started:
            # the workers import this iba (a source checkout included) and use this cache
            root = str(Path(iba.__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            env = {"PYTHONPATH": path, "IBA_CACHE": str(_cache())}
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
                runtime_env={"env_vars": env},
                **({} if address else {"num_cpus": max(workers, os.cpu_count() or 1)}),
            )
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            (estimator,) = work.explainer.estimators
            blocks = ray.data.from_items([{"block": i} for i in todo])
            results = blocks.map_batches(
                BlockWorker,
                fn_constructor_kwargs={
                    "folder": str(folder),
                    "out": str(out),
                    "items": [tuple(i) for i in items],
                    "classes": classes,
                    "settings": settings._asdict(),
                    "model": model,
                    "estimator": estimator,
                },
                batch_size=1,
                concurrency=workers,
                num_cpus=1,
                **({"num_gpus": gpus_per_worker} if gpus_per_worker else {}),
            )
            with tqdm(
                total=sum(min(settings.block, len(items) - i * settings.block) for i in todo),
                desc="IBA data set (Ray)",
                unit="image",
                disable=not progress,
            ) as bar:
                for row in results.iter_rows():
                    images += int(row["images"])
                    errors += int(row["errors"])
                    bar.update(int(row["images"]))
        finally:
            if started:
                ray.shutdown()
    seconds = time.perf_counter() - start
    rate = images / seconds if seconds > 0 and images else 0.0
    return dataset.JobResult(len(items), len(todo), n_blocks - len(todo), errors, seconds, rate)


def _cache() -> Path:
    from iba.cli import cache_dir

    return cache_dir()
