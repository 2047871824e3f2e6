"""Per-element feature statistics of one target layer (docs/mathematics.md section 1).

Mean, Bessel-corrected standard deviation and the fraction of non-zero values, accumulated in
float64 with the batched Welford / Chan merge.
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np

from iba._checks import finite_array
from iba.layout import check_feature_shape, check_layout

FORMAT_VERSION = 1
MIN_RECOMMENDED_SAMPLES = 1000
_CHUNK = 4096  # feature elements per pass: keeps the float64 work in cache


class Statistics(NamedTuple):
    """What a bottleneck needs from an estimator, ready to use: ``mu``, ``std'`` and ``active``."""

    mean: np.ndarray
    std: np.ndarray
    active: np.ndarray


class Estimator:
    """Running statistics of the features ``R`` of one layer, shape ``F`` per input.

    Args:
        feature_shape: shape of one input's features; taken from the first batch if ``None``.
        layout: ``"channels_first"``, ``"channels_last"`` or ``"tokens"`` (see ``iba.layout``).

    Example:
        >>> est = Estimator(layout="tokens")
        >>> est.update(np.ones((4, 3, 2)))
        >>> est.n_samples, est.feature_shape
        (4, (3, 2))
    """

    def __init__(
        self, feature_shape: tuple[int, ...] | None = None, layout: str = "channels_first"
    ):
        self.layout = check_layout(layout)
        self.feature_shape: tuple[int, ...] | None = None
        self.n_samples = 0
        # set together with feature_shape (by _start or from_arrays)
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._nonzero: np.ndarray | None = None
        if feature_shape is not None:
            self._start(check_feature_shape(feature_shape, layout))

    def _start(self, feature_shape: tuple[int, ...]) -> None:
        self.feature_shape = feature_shape
        self._mean = np.zeros(feature_shape, np.float64)
        self._m2 = np.zeros(feature_shape, np.float64)
        self._nonzero = np.zeros(feature_shape, np.int64)

    def update(self, batch: object) -> None:
        """Add a batch of features of shape ``(N, *F)``."""
        batch = np.asarray(batch)
        if self.feature_shape is None:
            check_feature_shape(batch.shape[1:], self.layout)
            self._start(tuple(batch.shape[1:]))
        assert self.feature_shape is not None  # _start has run
        assert self._mean is not None and self._m2 is not None and self._nonzero is not None
        if batch.shape[1:] != self.feature_shape:
            raise ValueError(
                f"batch of shape {batch.shape} does not match the estimator's feature shape "
                f"{self.feature_shape}; expected (N, {', '.join(map(str, self.feature_shape))})"
            )
        batch = finite_array("features", batch)
        n_b = batch.shape[0]
        if n_b == 0:
            return
        mean_b, m2_b, nonzero_b = _batch_moments(batch.reshape(n_b, -1))
        n_a = self.n_samples
        n = n_a + n_b
        delta = mean_b.reshape(self.feature_shape) - self._mean
        self._mean += delta * (n_b / n)
        self._m2 += m2_b.reshape(self.feature_shape) + delta**2 * (n_a * n_b / n)
        self._nonzero += nonzero_b.reshape(self.feature_shape)
        self.n_samples = n

    def _require(self, minimum: int) -> None:
        if self.n_samples < minimum:
            raise ValueError(
                f"the estimator has seen {self.n_samples} samples; at least {minimum} are needed "
                f"(feed it features with update() or estimate() first)"
            )

    @property
    def mean(self) -> np.ndarray:
        """Per-element mean ``mu`` (float64)."""
        self._require(1)
        assert self._mean is not None  # there are samples
        return self._mean.copy()

    @property
    def std(self) -> np.ndarray:
        """Per-element sample standard deviation ``sqrt(M2 / (n - 1))`` (float64)."""
        self._require(2)
        assert self._m2 is not None  # there are samples
        return np.sqrt(self._m2 / (self.n_samples - 1))

    @property
    def nonzero_fraction(self) -> np.ndarray:
        """Fraction of samples in which each element was non-zero."""
        self._require(1)
        assert self._nonzero is not None  # there are samples
        return self._nonzero / self.n_samples

    def active(self, threshold: float = 0.01) -> np.ndarray:
        """``1.0`` where an element is non-zero in more than ``threshold`` of the samples, else 0."""
        return (self.nonzero_fraction > threshold).astype(np.float64)

    def statistics(self, min_std: float = 0.01, active_threshold: float = 0.01) -> Statistics:
        """``mu``, ``std' = max(std, min_std)`` and ``active``; warns below 1,000 samples."""
        self._require(2)
        if self.n_samples < MIN_RECOMMENDED_SAMPLES:
            warnings.warn(
                f"the estimator has seen only {self.n_samples} samples; the IBA paper used "
                f"5,000-10,000, and fewer than {MIN_RECOMMENDED_SAMPLES} give noisy statistics",
                stacklevel=2,
            )
        return Statistics(self.mean, np.maximum(self.std, min_std), self.active(active_threshold))

    def check(self, feature_shape: tuple[int, ...], layout: str | None = None) -> None:
        """Raise if this estimator was fitted for features of another shape or layout."""
        if layout is not None and layout != self.layout:
            raise ValueError(f"estimator has layout {self.layout!r}, the layer has {layout!r}")
        if self.feature_shape is not None and tuple(feature_shape) != self.feature_shape:
            raise ValueError(
                f"estimator was fitted on features of shape {self.feature_shape}, but the layer "
                f"produces {tuple(feature_shape)}: estimate again for this layer"
            )

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The state as named arrays (what ``save`` writes)."""
        self._require(1)
        assert self._mean is not None and self._m2 is not None and self._nonzero is not None
        return {
            f"{prefix}format_version": np.array(FORMAT_VERSION),
            f"{prefix}layout": np.array(self.layout),
            f"{prefix}feature_shape": np.array(self.feature_shape, np.int64),
            f"{prefix}n_samples": np.array(self.n_samples, np.int64),
            f"{prefix}mean": self._mean,
            f"{prefix}m2": self._m2,
            f"{prefix}nonzero": self._nonzero,
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "", source: str = "arrays") -> Estimator:
        """Rebuild an estimator from ``to_arrays`` output (or an opened ``.npz``)."""
        try:
            version = int(arrays[f"{prefix}format_version"])
            est = cls(
                tuple(int(s) for s in arrays[f"{prefix}feature_shape"]),
                str(arrays[f"{prefix}layout"]),
            )
            est.n_samples = int(arrays[f"{prefix}n_samples"])
            est._mean = np.asarray(arrays[f"{prefix}mean"], np.float64)
            est._m2 = np.asarray(arrays[f"{prefix}m2"], np.float64)
            est._nonzero = np.asarray(arrays[f"{prefix}nonzero"], np.int64)
        except KeyError as err:
            raise ValueError(f"{source} holds no estimator {prefix!r} (missing {err})") from None
        if version != FORMAT_VERSION:
            raise ValueError(f"{source}: estimator format {version}, expected {FORMAT_VERSION}")
        for name in ("_mean", "_m2", "_nonzero"):
            if getattr(est, name).shape != est.feature_shape:
                raise ValueError(f"{source}: corrupt estimator, {name[1:]} has the wrong shape")
        return est

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics to an ``.npz`` file (no pickle)."""
        # mypy matches the ** keys against savez's allow_pickle: bool; none is named that
        np.savez(path, **self.to_arrays())  # type: ignore[arg-type]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        feature_shape: tuple[int, ...] | None = None,
        layout: str | None = None,
    ) -> Estimator:
        """Read a saved estimator; with ``feature_shape``/``layout``, check it fits that layer."""
        with np.load(path, allow_pickle=False) as data:
            est = cls.from_arrays(data, source=str(path))
        if feature_shape is not None or layout is not None:
            assert est.feature_shape is not None  # from_arrays sets it
            est.check(feature_shape if feature_shape is not None else est.feature_shape, layout)
        return est

    def __repr__(self) -> str:
        return (
            f"Estimator(feature_shape={self.feature_shape}, layout={self.layout!r}, "
            f"n_samples={self.n_samples})"
        )


def _batch_moments(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, M2 and non-zero count over axis 0 of a ``(N, K)`` batch, in float64, chunked."""
    n, k = batch.shape
    mean = np.empty(k, np.float64)
    m2 = np.empty(k, np.float64)
    nonzero = np.empty(k, np.int64)
    for start in range(0, k, _CHUNK):
        part = batch[:, start : start + _CHUNK]
        centred = part.astype(np.float64)
        part_mean = centred.mean(axis=0)
        centred -= part_mean
        mean[start : start + _CHUNK] = part_mean
        m2[start : start + _CHUNK] = np.einsum("ij,ij->j", centred, centred)
        nonzero[start : start + _CHUNK] = np.count_nonzero(part, axis=0)
    return mean, m2, nonzero


def save_estimators(path: str | os.PathLike, estimators: list[Estimator]) -> None:
    """Write the estimators of several target layers to one ``.npz`` file (no pickle)."""
    arrays = {"count": np.array(len(estimators))}
    for i, est in enumerate(estimators):
        arrays.update(est.to_arrays(prefix=f"{i}/"))
    np.savez(path, **arrays)  # type: ignore[arg-type]  # as in Estimator.save


def load_estimators(path: str | os.PathLike, targets: list | None = None) -> list[Estimator]:
    """Read the estimators written by ``save_estimators`` (or a single ``Estimator.save``).

    ``targets``: the explainer's target layers; the file must hold one estimator per target.
    """
    with np.load(path, allow_pickle=False) as data:
        if "count" not in data.files:
            estimators = [Estimator.from_arrays(data, source=str(path))]
        else:
            estimators = [
                Estimator.from_arrays(data, prefix=f"{i}/", source=str(path))
                for i in range(int(data["count"]))
            ]
    if targets is not None and len(estimators) != len(targets):
        raise ValueError(
            f"{os.fspath(path)} holds {len(estimators)} estimator(s), this explainer has "
            f"{len(targets)} target(s): {list(targets)}"
        )
    return estimators


def require_estimators(estimators: list[Estimator], targets: list) -> None:
    """Raise unless there is one estimator per target (the adapters' check before analysis)."""
    if not estimators:
        raise RuntimeError(
            "no feature statistics yet: call estimate(model, data) or load_estimators(path) "
            "before analyze()"
        )
    if len(estimators) != len(targets):
        raise ValueError(
            f"{len(estimators)} estimator(s) for {len(targets)} target(s): {list(targets)}; "
            "estimate() again or load the estimators saved for these targets"
        )
