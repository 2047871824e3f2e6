"""Per-element feature statistics of one target layer (docs/mathematics.md section 1).

Mean, Bessel-corrected standard deviation and the fraction of non-zero values, accumulated in
float64 with the batched Welford / Chan merge.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from iba._checks import finite_array
from iba.layout import check_feature_shape, check_layout

if TYPE_CHECKING:
    from iba.config import Config

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

    def statistics(
        self,
        min_std: float = 0.01,
        active_threshold: float | None = 0.01,
        *,
        ddof: int = 1,
        min_m2: float = 0.0,
        warn: bool = True,
    ) -> Statistics:
        """``mu``, ``std' = max(sqrt(max(M2, min_m2) / (n - ddof)), min_std)`` and ``active``.

        docs/mathematics.md section 1.2. The defaults are the project's (Bessel-corrected, floored
        at 0.01); ``ddof=0, min_m2=1e-5, min_std=0`` is the text-IBA authors' rule (section 6).
        ``active_threshold=None`` marks every element active. Warns below 1,000 samples unless
        ``warn`` is false.
        """
        if ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
        self._require(ddof + 1)
        if warn and self.n_samples < MIN_RECOMMENDED_SAMPLES:
            warnings.warn(
                f"the estimator has seen only {self.n_samples} samples; the IBA paper used "
                f"5,000-10,000, and fewer than {MIN_RECOMMENDED_SAMPLES} give noisy statistics",
                stacklevel=2,
            )
        assert self._m2 is not None  # there are samples
        if ddof == 1 and min_m2 == 0:
            std = self.std  # the project's rule, computed exactly as always
        else:
            std = np.sqrt(np.maximum(self._m2, min_m2) / (self.n_samples - ddof))
        if active_threshold is None:
            active = np.ones(self._m2.shape, np.float64)
        else:
            active = self.active(active_threshold)
        return Statistics(self.mean, np.maximum(std, min_std), active)

    def statistics_for(self, config: Config, warn: bool = True) -> Statistics:
        """:meth:`statistics` under ``config``'s rule (``min_std``, ``active_threshold``,
        ``ddof``, ``min_m2``; docs/mathematics.md sections 1.2 and 6)."""
        return self.statistics(
            config.min_std,
            config.active_threshold,
            ddof=config.ddof,
            min_m2=config.min_m2,
            warn=warn,
        )

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
        """Rebuild an estimator from ``to_arrays`` output (or an opened ``.npz``); raise a
        ``ValueError`` naming ``source`` if the arrays are missing, malformed or inconsistent."""
        try:
            version = int(np.asarray(arrays[f"{prefix}format_version"]))
            shape = tuple(int(s) for s in np.asarray(arrays[f"{prefix}feature_shape"]).ravel())
            layout = str(np.asarray(arrays[f"{prefix}layout"]))
            n_samples = int(np.asarray(arrays[f"{prefix}n_samples"]))
            mean = np.asarray(arrays[f"{prefix}mean"], np.float64)
            m2 = np.asarray(arrays[f"{prefix}m2"], np.float64)
            nonzero = np.asarray(arrays[f"{prefix}nonzero"])
        except KeyError as err:
            raise ValueError(
                f"{source} holds no estimator {prefix!r} (missing {err}): save the estimators "
                "with iba.save_estimators or Estimator.save"
            ) from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: corrupt estimator {prefix!r} ({err}){_AGAIN}") from None
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{source}: estimator format {version}, this version of iba reads format "
                f"{FORMAT_VERSION}: estimate again with this version (or read it with the version "
                "that wrote it)"
            )
        try:
            est = cls(shape, layout)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: corrupt estimator {prefix!r} ({err}){_AGAIN}") from None
        problem = None
        if any(a.shape != shape for a in (mean, m2, nonzero)):
            problem = f"its arrays do not have the feature shape {shape}"
        elif n_samples < 1:
            problem = f"it has seen {n_samples} samples"
        elif not (np.isfinite(mean).all() and np.isfinite(m2).all() and (m2 >= 0).all()):
            problem = "its mean or M2 holds NaN, infinite or negative values"
        elif nonzero.dtype.kind not in "iuf" or not np.array_equal(nonzero, np.rint(nonzero)):
            problem = f"its non-zero counts are not integers (dtype {nonzero.dtype})"
        elif nonzero.size and not (0 <= nonzero.min() and nonzero.max() <= n_samples):
            problem = f"its non-zero counts are not between 0 and n_samples = {n_samples}"
        if problem is not None:
            raise ValueError(f"{source}: corrupt estimator {prefix!r}: {problem}{_AGAIN}")
        est.n_samples = n_samples
        est._mean, est._m2, est._nonzero = mean, m2, nonzero.astype(np.int64)
        return est

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics to an ``.npz`` file (no pickle; ``.npz`` is appended to a name
        without it). The file is replaced only once the new one is complete: a failed or
        interrupted save leaves an existing file as it was."""
        _write_npz(path, self.to_arrays())

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        feature_shape: tuple[int, ...] | None = None,
        layout: str | None = None,
    ) -> Estimator:
        """Read a saved estimator; with ``feature_shape``/``layout``, check it fits that layer.

        A file of ``save_estimators`` with one estimator is read too; a truncated, corrupt or
        foreign file raises a ``ValueError`` that names it.
        """
        arrays = _read_npz(path)
        source = _name(path)
        if "count" in arrays:  # written by save_estimators
            count = _count_of(arrays, source)
            if count != 1:
                raise ValueError(
                    f"{source} holds {count} estimators: read them with iba.load_estimators(path)"
                )
            est = cls.from_arrays(arrays, prefix="0/", source=source)
        else:
            est = cls.from_arrays(arrays, source=source)
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
    """Write the estimators of several target layers to one ``.npz`` file (no pickle).

    ``.npz`` is appended to a name without it. The file is written to a temporary file in the
    same folder and moved into place: a failed or interrupted save leaves an existing file as
    it was.
    """
    if isinstance(estimators, Estimator):
        estimators = [estimators]
    estimators = list(estimators)
    if not estimators:
        raise ValueError("save_estimators got no estimators: pass one per target layer")
    for est in estimators:
        if not isinstance(est, Estimator):
            raise TypeError(f"estimators must be iba.Estimator objects, got {type(est).__name__}")
    arrays = {"count": np.array(len(estimators))}
    for i, est in enumerate(estimators):
        arrays.update(est.to_arrays(prefix=f"{i}/"))
    _write_npz(path, arrays)


def load_estimators(path: str | os.PathLike, targets: list | None = None) -> list[Estimator]:
    """Read the estimators written by ``save_estimators`` (or a single ``Estimator.save``).

    ``targets``: the explainer's target layers; the file must hold one estimator per target.
    A truncated, corrupt or foreign file raises a ``ValueError`` that names it.
    """
    arrays = _read_npz(path)
    source = _name(path)
    if "count" not in arrays:
        estimators = [Estimator.from_arrays(arrays, source=source)]
    else:
        estimators = [
            Estimator.from_arrays(arrays, prefix=f"{i}/", source=source)
            for i in range(_count_of(arrays, source))
        ]
    if targets is not None and len(estimators) != len(targets):
        raise ValueError(
            f"{source} holds {len(estimators)} estimator(s), this explainer has "
            f"{len(targets)} target(s): {list(targets)}; load the file saved for these targets, "
            "or estimate() again"
        )
    return estimators


_AGAIN = ": estimate() again and save the estimators anew"


def _name(path: object) -> str:
    """How messages name a file: its path, or the file object."""
    try:
        return os.fsdecode(path)  # type: ignore[arg-type]  # a file object: TypeError
    except TypeError:
        return repr(path)


def _count_of(arrays: dict[str, np.ndarray], source: str) -> int:
    """The number of estimators a ``save_estimators`` file says it holds (at least 1)."""
    try:
        count = int(np.asarray(arrays["count"]))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: corrupt estimators file ({err}){_AGAIN}") from None
    if count < 1:
        raise ValueError(f"{source} holds {count} estimators{_AGAIN}")
    return count


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read at once (no pickle).

    A missing file or folder raises the ``OSError``; anything that is not a complete ``.npz``
    archive of plain arrays (truncated, corrupt, pickled, an ``.npy``) a ``ValueError``.
    """
    source = _name(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except OSError:
        raise
    except Exception as err:
        detail = str(err).rstrip(".")
        raise ValueError(
            f"{source} is not a complete estimators file ({type(err).__name__}: {detail}): it "
            f"may be truncated (an interrupted copy) or not an .npz written by iba{_AGAIN}"
        ) from None


def _write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez(path, **arrays)`` through a temporary file in the same folder and
    ``os.replace``: an existing file is replaced only by a complete new one."""
    if hasattr(path, "write"):  # a file object: the caller owns it
        np.savez(path, **arrays)  # type: ignore[arg-type]  # no key is named allow_pickle
        return
    target = os.fsdecode(path)
    if not target.endswith(".npz"):
        target += ".npz"  # as np.savez names it
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, f"cannot save the estimators to {target}: a folder")
    folder, base = os.path.split(os.path.abspath(target))
    temporary = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:  # created like any new file (the umask applies); fails if the folder is missing
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise type(err)(
            err.errno, f"cannot save the estimators to {target}: {err.strerror}"
        ) from None
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]  # as above
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:  # also KeyboardInterrupt: no partial file is left behind
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


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
