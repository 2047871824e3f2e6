"""Batched model evaluation, score selection, targets and the optional progress bar.

Every metric builds its perturbed inputs lazily, ``batch_size`` at a time, calls the model (a plain
callable from a NumPy batch ``(n, ...)`` to outputs ``(n, n_classes)``) and keeps one score per
input. tqdm draws the progress bar if it is installed; it is not a dependency of ``iba``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from iba.targets import check_range, labels

Model = Callable[[np.ndarray], Any]
"""A model: NumPy batch ``(n, ...)`` in, outputs ``(n, n_classes)`` out (anything ``np.asarray``
accepts, e.g. a NumPy array or a CPU tensor)."""

SCORES = ("softmax", "raw")
"""``softmax``: the model returns logits, the metric records the target's softmax probability;
``raw``: the metric records the target's output as it is (a probability for models that end in a
softmax, the logit for sensitivity-n)."""


class _NoBar:
    """Stands in for tqdm when it is not installed or the bar is switched off."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int, desc: str, progress: bool) -> Any:
    """A tqdm bar over ``total`` model inputs if ``progress`` and tqdm imports, else a no-op."""
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return _NoBar()
        return tqdm(total=total, desc=desc, unit="input", leave=False)
    return _NoBar()


def check_score(score: str) -> str:
    """Return ``score`` if it is one of :data:`SCORES`, else raise naming the known ones."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; scores are: {', '.join(SCORES)}")
    return score


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` as an int >= 1."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable ``log_softmax`` over the last axis (float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def model_outputs(model: Model, batch: np.ndarray) -> np.ndarray:
    """``model(batch)`` as a float64 ``(n, n_classes)`` array; raise on a wrong shape or NaN."""
    out = model(batch)
    if hasattr(out, "detach"):  # a torch tensor: no grad, on the CPU
        out = out.detach().cpu()
    out = np.asarray(out, dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != len(batch):
        raise ValueError(
            f"the model must return (n, n_classes) outputs for a batch of n = {len(batch)} inputs, "
            f"got shape {out.shape}"
        )
    if not np.all(np.isfinite(out)):
        raise ValueError("the model returned NaN or infinite outputs")
    return out


def select_scores(outputs: np.ndarray, targets: np.ndarray, score: str) -> np.ndarray:
    """The target's score per row of ``outputs``: softmax probability or the raw output."""
    check_range(targets, outputs.shape[1])
    if score == "softmax":
        outputs = np.exp(log_softmax(outputs))
    return outputs[np.arange(len(outputs)), targets]


def check_targets(targets: int | np.ndarray | None, n: int) -> np.ndarray | None:
    """One non-negative int target per input (an int is broadcast); ``None`` stays ``None``."""
    if targets is None:
        return None
    array = labels(targets, n)
    check_range(array, None)
    return array


def evaluate(
    model: Model,
    n_inputs: int,
    build: Callable[[np.ndarray], np.ndarray],
    targets: np.ndarray,
    score: str,
    batch_size: int,
    bar: Any,
) -> np.ndarray:
    """Scores of ``n_inputs`` model inputs built by ``build(indices)``, ``batch_size`` at a time.

    ``targets[j]`` is the class scored for input ``j``; returns ``(n_inputs,)`` float64.
    """
    result = np.empty(n_inputs)
    for start in range(0, n_inputs, batch_size):
        index = np.arange(start, min(n_inputs, start + batch_size))
        result[index] = select_scores(model_outputs(model, build(index)), targets[index], score)
        bar.update(len(index))
    return result


def predicted_targets(
    model: Model, build: Callable[[np.ndarray], np.ndarray], n: int, batch_size: int, bar: Any
) -> np.ndarray:
    """The model's top class on each of the ``n`` unperturbed inputs ``build(indices)``."""
    result = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch_size):
        index = np.arange(start, min(n, start + batch_size))
        result[index] = model_outputs(model, build(index)).argmax(axis=1)
        bar.update(len(index))
    return result


def resolve_targets(
    model: Model,
    targets: int | np.ndarray | None,
    build: Callable[[np.ndarray], np.ndarray],
    n: int,
    batch_size: int,
    bar: Any,
) -> np.ndarray:
    """Checked targets, or the model's predictions on the unperturbed inputs if ``None``."""
    checked = check_targets(targets, n)
    if checked is None:
        return predicted_targets(model, build, n, batch_size, bar)
    return checked


def evaluate_jobs(
    model: Model,
    x: np.ndarray,
    to_input: Callable[[np.ndarray], np.ndarray],
    targets: int | np.ndarray | None,
    job_image: np.ndarray,
    build: Callable[[np.ndarray], np.ndarray],
    score: str,
    batch_size: int,
    desc: str,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, scores)``: the checked (or predicted) target per image of ``x``, then the
    target's score on every perturbed input ``build(indices)``; input ``j`` perturbs image
    ``job_image[j]``. ``to_input`` turns images of ``x`` into the model's layout. One progress
    bar over all model inputs."""
    n, n_jobs = len(x), len(job_image)
    with progress_bar(n_jobs + (n if targets is None else 0), desc, progress) as bar:
        target = resolve_targets(model, targets, lambda i: to_input(x[i]), n, batch_size, bar)
        values = evaluate(model, n_jobs, build, target[job_image], score, batch_size, bar)
    return target, values
