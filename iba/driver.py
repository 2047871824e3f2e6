"""The shared driver: one explainer, whatever the framework.

Everything of an explanation that is not framework arithmetic lives here, written once: the
targets and the config, the estimate loop, estimator save/load/injection, the validation of
``analyze``'s arguments, the noise source, the statistics and the CoIBA mask rule, and the
``Explanation`` with its heatmap. A framework contributes one :class:`Engine` (the seam, in the
spirit of optax's ``GradientTransformation``: a few named operations, nothing else):

- ``estimation(model)``: a context manager yielding ``capture(batch) -> [features per target]``
  as NumPy arrays, with the model left as it was on exit;
- ``analysis(model, x, config)``: a context manager yielding an :class:`Analysis` of one batch (its
  ``n_inputs``, the targets' ``feature_shapes``, ``input_size``, and ``optimize(plan)``: the whole
  per-input optimisation of docs/mathematics.md sections 2 and 4 in the framework's idiom), with
  the model put back exactly as it was on every exit path.

Adding a backend means writing one engine and one registry line (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import operator
import os
import queue
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np

from iba import targets as _targets
from iba.config import Config, for_targets
from iba.estimator import Estimator, Statistics, load_estimators, save_estimators
from iba.heatmap import heatmap
from iba.layout import (
    alpha_shape,
    check_alpha_shape,
    check_feature_shape,
    check_layout,
    is_spatial,
)
from iba.noise import check_noise
from iba.optimize import Explanation

ESTIMATE_CHUNK = 256  # rows per forward pass when estimate() is given one array
DEFAULT_SEED = 0  # the noise of analyze() with neither noise= nor seed=, on every backend


# -- what the driver hands an engine, and what it gets back -------------------------------------


class LayerStatistics(NamedTuple):
    """The statistics one bottleneck uses, in float64 NumPy (docs/mathematics.md section 1).

    ``mask`` is the active-feature mask for a single target, ``None`` for CoIBA (section 4: no
    mask; the capacity is taken on the first target only).
    """

    mean: np.ndarray
    std: np.ndarray
    mask: np.ndarray | None


class Noise(NamedTuple):
    """Where the standard-normal draws of an optimisation come from: exactly one field is set.

    ``seed``: the framework's own generator, seeded (the default: :data:`DEFAULT_SEED`);
    ``arrays``: one ``(updates, N, B, *F)`` float64 array per target (``iba.draw_noise``), the
    same draws on every backend; ``native``: a framework object the engine accepted (a JAX key).
    """

    seed: int | None = None
    arrays: list[np.ndarray] | None = None
    native: Any = None


class Plan(NamedTuple):
    """Everything an engine's ``optimize`` needs, validated by the driver.

    ``token_mask``: for ``tokens`` features, ``(N, T)`` float64, 1 at real tokens and 0 at padding
    (``analyze``'s ``token_mask``, set by the text explainers): the capacity is zero at
    padding and the information term is the mean over the real tokens' elements
    (``iba.text.information_term``, docs/mathematics.md section 6.3). ``None``: every element
    counts.
    """

    config: Config
    layout: str
    stats: list[LayerStatistics]
    feature_shapes: list[tuple[int, ...]]
    alpha_shape: tuple[int, ...]
    noise: Noise
    labels: np.ndarray | None
    loss_fn: Callable[[Any], Any] | None
    progress: bool
    token_mask: np.ndarray | None = None


class Result(NamedTuple):
    """What an engine's ``optimize`` returns (arrays convertible by ``np.asarray``).

    ``capacity`` ``(N, *F)`` at the first target, ``alpha`` ``(N, *A)``, ``lam`` its damping,
    ``alphas`` ``(updates + 1, N, *A)``, ``losses`` ``(updates, N)``.
    """

    capacity: Any
    alpha: Any
    lam: Any
    alphas: Any
    losses: Any


class Analysis(Protocol):
    """One ``analyze`` call on one batch, as an engine runs it."""

    n_inputs: int

    def feature_shapes(self) -> list[tuple[int, ...] | None]:
        """Per target, the feature shape of one input (``None``: use the estimator's)."""
        ...

    def input_size(self, layout: str) -> tuple[int, int] | None:
        """``(H, W)`` of an image batch, to resize spatial heatmaps to; else ``None``."""
        ...

    def optimize(self, plan: Plan) -> Result:
        """The per-input optimisation (docs/mathematics.md sections 2 and 4)."""
        ...


class Engine(Protocol):
    """What a framework provides to the driver: its model access and its arithmetic.

    Attributes:
        targets: the target layers in the form the explainer shows (``IBA.targets``).
        names: one short string per target, for messages.
    """

    targets: list[Any]
    names: list[str]

    def layout_of(self, feature_shape: tuple[int, ...], index: int) -> str | None:
        """The layout of target ``index``'s features of this shape: the user's, or the one the
        framework fixes (a Keras ``IBALayer``'s), else its convention (``None``: unknown)."""
        ...

    def estimation(self, model: Any) -> contextlib.AbstractContextManager[Callable[[Any], list]]:
        """Yield ``capture(batch) -> [NumPy features of every target]``; restore the model."""
        ...

    def analysis(
        self, model: Any, x: Any, config: Config
    ) -> contextlib.AbstractContextManager[Analysis]:
        """Yield the :class:`Analysis` of ``x`` under ``config``; restore the model on every
        exit path."""
        ...

    def stored_estimators(self, model: Any) -> list[Estimator] | None:
        """Estimators the model itself carries (a Keras ``IBALayer``'s weights), if any."""
        ...

    def store_estimators(self, model: Any, estimators: list[Estimator]) -> None:
        """Keep freshly fitted estimators where the framework wants them too (may do nothing)."""
        ...

    def native_noise(self, noise: Any) -> bool:
        """Whether ``noise`` is a framework object the engine draws from itself (a JAX key)."""
        ...


class EngineBase:
    """Defaults for an :class:`Engine`: targets kept as given, the image layout of the framework's
    convention, no estimators stored in the model, no native noise objects."""

    image_layout = "channels_first"  # the layout of (., ., .) features unless the user says

    def __init__(self, targets: Any, layout: str | None = None):
        self.targets = list(targets) if isinstance(targets, (list, tuple)) else [targets]
        self.names = [t if isinstance(t, str) else type(t).__name__ for t in self.targets]
        self.layout = None if layout is None else check_layout(layout)

    def layout_of(self, feature_shape: tuple[int, ...], index: int) -> str | None:
        if self.layout is not None:
            return self.layout
        return {3: self.image_layout, 2: "tokens"}.get(len(feature_shape))

    def stored_estimators(self, model: Any) -> list[Estimator] | None:
        return None

    def store_estimators(self, model: Any, estimators: list[Estimator]) -> None:
        return None

    def native_noise(self, noise: Any) -> bool:
        return False


def check_loss_shape(shape: tuple[int, ...], n_inputs: int, batch: int) -> bool:
    """Whether a ``loss_fn`` result of this shape holds one loss per noised row (``True``) or is
    the scalar loss of one input (``False``); raise for any other shape."""
    shape = tuple(int(s) for s in shape)
    if shape == (n_inputs * batch,):
        return True
    if shape == () and n_inputs == 1:
        return False
    raise ValueError(
        f"loss_fn must return one loss per row, shape ({n_inputs * batch},) for {n_inputs} "
        f"input(s) x {batch} noise samples, or a scalar for one input; got shape {shape}"
    )


def order_error(names: list[str], reached: list[int]) -> ValueError:
    """The error for targets listed in another order than the forward pass reaches them;
    ``reached`` holds the target indices in the order they ran (up to the first one out of order).
    """
    k = next(i for i, index in enumerate(reached) if index != i)
    return ValueError(
        f"target {names[reached[k]]!r} runs before target {names[k]!r}: list the target layers "
        "in the order the forward pass reaches them"
    )


def twice_error(name: str) -> RuntimeError:
    """The error for a target layer that runs more than once in one forward pass."""
    return RuntimeError(
        f"target layer {name!r} ran twice in one forward pass; a target must be a module that "
        "runs once per forward pass"
    )


def check_finite(x: Any, name: str = "x") -> None:
    """Raise if the inputs ``x`` are not arrays of real numbers, or a floating array of them holds
    NaN or infinite values (``name``: the argument, for the message)."""
    if x is None:
        raise TypeError(f"{name} is None: pass a batch of inputs (an array or tensor, batch first)")
    for leaf in _leaves(x):
        if getattr(leaf, "shape", None) is None:
            continue
        values = to_numpy(leaf)
        if values.dtype.kind in "OUSc":
            raise TypeError(
                f"{name} holds an array of dtype {values.dtype}; a model's inputs are real numbers "
                f"(bool, int or float): convert {name} first"
            )
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise ValueError(f"{name} holds {bad} NaN or infinite value(s); check the input data")


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where ``iba`` is installed


def _ours(filename: str) -> bool:
    """Whether ``filename`` is in this library (``iba`` or an engine package ``iba_*`` beside
    it): errors raised there already say what to do."""
    path = os.path.abspath(filename)
    if not path.startswith(os.path.join(_ROOT, "")):
        return False
    package = os.path.relpath(path, _ROOT).split(os.sep)[0]
    return package == "iba" or package.startswith("iba_")


@contextlib.contextmanager
def running_on(x: Any, name: str = "x") -> Iterator[None]:
    """A block that runs the model on ``x`` for the first time: an error of the framework or the
    model there (a shape or dtype the model does not take) is raised again naming ``name``, with
    the original as its ``__cause__``; the library's own errors pass unchanged."""
    try:
        yield
    except Exception as err:
        frames = traceback.extract_tb(err.__traceback__)
        if frames and _ours(frames[-1].filename):
            raise
        kind = TypeError if isinstance(err, TypeError) else ValueError
        detail = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split())[:400]
        raise kind(
            f"the model could not run on {name} ({_describe(x)}): {type(err).__name__}: "
            f"{detail} -- check that {name} is a batch of the model's inputs (batch axis first) "
            "of the shape and dtype the model takes"
        ) from err


def _describe(x: Any) -> str:
    arrays = [leaf for leaf in _leaves(x) if getattr(leaf, "shape", None) is not None]
    if len(arrays) != 1:
        return f"{type(x).__name__} of {len(arrays)} arrays"
    return f"shape {tuple(arrays[0].shape)}, dtype {arrays[0].dtype}"


# -- the explainer -------------------------------------------------------------------------------


class Explainer:
    """Information Bottleneck Attribution at one target layer, or CoIBA at several.

    The adapters' ``IBA`` classes are this class with their framework's :class:`Engine`
    (``engine_type``).

    Args:
        targets: the target layer, or a list of them (CoIBA), named the framework's way.
        layout: layout of the targets' features (``"channels_first"``, ``"channels_last"`` or
            ``"tokens"``); by default recognised from the features' shape by the engine.
        config: an ``iba.Config``; otherwise built from ``**fields`` (``iba.Config`` defaults for
            one target, ``iba.coiba_config`` defaults for several).
        estimators: estimators to start with: a list (one per target), or the path of a file
            written by :meth:`save_estimators`.
        **fields: fields of ``iba.Config`` (``beta``, ``steps``, ``lr``, ``batch_size``, ...).
    """

    engine_type: type = EngineBase  # the adapter's engine class

    def __init__(
        self,
        targets: Any,
        *,
        layout: str | None = None,
        config: Config | None = None,
        estimators: list[Estimator] | str | os.PathLike | None = None,
        **fields: Any,
    ):
        self.engine: Engine = self.make_engine(targets, layout)
        if not self.engine.targets:
            raise ValueError("IBA needs at least one target layer")
        self.config = for_targets(len(self.engine.targets), config, **fields)
        self._estimators: list[Estimator] = []
        if estimators is not None:
            if isinstance(estimators, (str, os.PathLike)):
                self.load_estimators(estimators)
            else:
                self.estimators = estimators

    def make_engine(self, targets: Any, layout: str | None) -> Engine:
        """The engine for ``targets`` (an adapter with engine options overrides this)."""
        return self.engine_type(targets, layout)

    @property
    def layout(self) -> str | None:
        """The layout given for the targets' features (``None``: recognised by the engine)."""
        return getattr(self.engine, "layout", None)

    @property
    def targets(self) -> list[Any]:
        """The target layers."""
        return list(self.engine.targets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(targets={self.engine.names}, config={self.config})"

    # -- estimators ------------------------------------------------------------------------------

    @property
    def estimators(self) -> list[Estimator]:
        """One ``iba.Estimator`` per target (empty before :meth:`estimate`)."""
        return list(self._estimators)

    @estimators.setter
    def estimators(self, estimators: list[Estimator] | Estimator) -> None:
        if isinstance(estimators, Estimator):
            estimators = [estimators]
        estimators = list(estimators)
        for est in estimators:
            if not isinstance(est, Estimator):
                raise TypeError(
                    f"estimators must be iba.Estimator objects, got {type(est).__name__}"
                )
        if len(estimators) != len(self.engine.targets):
            raise ValueError(
                f"{len(estimators)} estimator(s) for {len(self.engine.targets)} target(s): "
                f"{self.engine.names}; give one per target, in the targets' order"
            )
        self._estimators = estimators

    def save_estimators(self, path: str | os.PathLike) -> None:
        """Write the estimators to one ``.npz`` file (no pickle)."""
        self._require_estimators()
        save_estimators(path, self._estimators)

    def load_estimators(self, path: str | os.PathLike) -> list[Estimator]:
        """Read estimators written by ``save_estimators``; checked against the layers at analysis."""
        self._estimators = load_estimators(path, self.engine.names)
        return self.estimators

    def _require_estimators(self, model: Any = None) -> None:
        if not self._estimators and model is not None:
            stored = self.engine.stored_estimators(model)
            if stored:  # statistics the model carries (saved with a Keras model)
                self._estimators = list(stored)
        if not self._estimators:
            if self.config.estimator == "prior":
                raise RuntimeError(
                    "this explainer uses the standard-normal prior (Config.estimator='prior'): "
                    "it has no estimators; analyze() makes its statistics from the features' "
                    "shapes (iba.driver.prior_statistics)"
                )
            raise RuntimeError(
                "no feature statistics yet: call estimate(model, data) or load_estimators(path) "
                "before analyze()"
            )

    # -- estimation ------------------------------------------------------------------------------

    def estimate(
        self, model: Any, data: Iterable | Any, n_samples: int | None = None, progress: bool = True
    ) -> list[Estimator]:
        """Fit one ``iba.Estimator`` per target on the features of ``data`` (docs/mathematics.md section 1).

        Args:
            model: the model; it runs in inference mode without gradients, each forward pass
                stopping after the last target where the framework allows, and is left as it was.
            data: one array or tensor of inputs (split into chunks of 256), or an iterable of
                batches: arrays, ``(inputs, labels, ...)`` tuples (the inputs are used), dicts of
                keyword inputs, a DataLoader, a ``tf.data.Dataset``.
            n_samples: stop after this many samples (default: all of ``data``).
            progress: show a progress bar of the samples seen.
        """
        with self.engine.estimation(model) as capture:
            estimators = fit_estimators(capture, data, n_samples, progress, self._layout)
        self.estimators = estimators
        self.engine.store_estimators(model, estimators)
        return self.estimators

    def _layout(self, shape: tuple[int, ...], index: int) -> str:
        layout = self.engine.layout_of(tuple(shape), index)
        if layout is None:
            raise ValueError(
                f"target {self.engine.names[index]!r} gives features of shape {tuple(shape)} per "
                "input; IBA needs image features (C, H, W) / (H, W, C) or tokens (T, D): choose "
                "another target or pass layout="
            )
        return layout

    # -- analysis --------------------------------------------------------------------------------

    def analyze(
        self,
        model: Any,
        x: Any,
        target: Any = None,
        loss_fn: Callable[[Any], Any] | None = None,
        noise: Any = None,
        seed: int | None = None,
        details: bool = False,
        progress: bool = False,
        token_mask: Any = None,
    ) -> np.ndarray | Explanation:
        """Heatmaps of the ``N`` inputs ``x``, in bits (docs/mathematics.md section 2; CoIBA: section 4).

        Args:
            model: the model; left exactly as it was, also after an exception.
            x: a batch of ``N >= 1`` inputs (an array or tensor, or the framework's structure
                of them).
            target: class index, or one per input: the model loss is the mean over noise
                samples of ``-log_softmax(logits)[target]``.
            loss_fn: ``outputs -> loss per row`` on the ``N * B`` noised rows (input-major) or,
                for ``N = 1``, a scalar; instead of ``target``.
            noise: ``iba.draw_noise(seed, steps, batch_size, F, n_inputs=N)`` (a list, one per
                target, for several targets): runs on exactly these draws, the same on every
                backend.
            seed: seeds the framework's own generator instead. With neither ``noise`` nor
                ``seed``, the seed is :data:`DEFAULT_SEED` (0) on every backend: the same call
                gives the same heatmap.
            details: return an ``iba.Explanation`` (capacity, alpha, lam, alphas, losses, heatmap).
            progress: show a progress bar over the optimisation steps (where the engine runs them
                one by one).
            token_mask: for token features ``(N, T, D)``, ``(N, T)`` with 1 at the real tokens
                and 0 at padding (e.g. the tokenizer's ``attention_mask``): padding gets no
                capacity and the information term is the mean over the real tokens' elements
                (docs/mathematics.md section 6.3).

        Returns:
            ``(N, H, W)`` at the input's size for images, ``(N, T)`` per token for token features.

        With ``Config.estimator == "sentence"`` the statistics are fitted on each input alone
        (docs/mathematics.md section 6), so the inputs are explained one after the other:
        ``loss_fn`` then sees one input's ``B`` rows at a time, ``noise`` arrays are split along
        their input axis, and ``seed`` (or a JAX key) seeds every input's run alike.
        """
        if self.config.estimator == "sentence" and n_rows(x) > 1:
            return self._analyze_each(
                model, x, target, loss_fn, noise, seed, details, progress, token_mask
            )
        with self.planned(model, x, target, loss_fn, noise, seed, progress, token_mask) as (
            run,
            plan,
        ):
            result = run.optimize(plan)
            input_size = run.input_size(plan.layout)
        return explanation(result, plan.layout, input_size, details)

    def analyze_batches(
        self,
        model: Any,
        data: Any,
        target: Any = None,
        loss_fn: Callable[[Any], Any] | None = None,
        seed: int | None = None,
        out: Any = None,
        chunk: int = 32,
        prefetch: int = 2,
        progress: bool = True,
    ) -> Any:
        """Heatmaps of every input of a data set, one ``analyze`` call per batch
        (docs/mathematics.md section 2; CoIBA: section 4).

        A background thread takes the next batches from ``data`` (loading, decoding, a
        DataLoader's workers) while the current one is optimised; a progress bar counts the
        heatmaps and shows heatmaps per second.

        Args:
            model: the model; left exactly as it was, also after an exception.
            data: one array of inputs (split into chunks of ``chunk`` rows), or an iterable of
                batches: arrays, ``(inputs, labels, ...)`` tuples, dicts of keyword inputs, a
                DataLoader, a ``tf.data.Dataset`` (as in :meth:`estimate`).
            target: a class index for every input; one per input of the whole data set (in
                order); or ``"labels"``: the second element of each ``(inputs, labels)`` batch.
            loss_fn: instead of ``target``, as in :meth:`analyze`.
            seed: every batch runs ``analyze(batch, seed=seed)`` (default :data:`DEFAULT_SEED`):
                its maps are those of that call.
            out: ``None``: return one float64 array of all maps; an array with enough rows
                (e.g. ``np.lib.format.open_memmap(path, "w+", np.float32, (n, H, W))`` to write a
                ``.npy`` file as it goes): filled in order and returned; a callable
                ``out(start, maps)``: called per batch with the index of its first input.
            chunk: rows per ``analyze`` call when ``data`` is one array.
            prefetch: batches taken ahead by the background thread (0: none, no thread).
            progress: show the progress bar.

        Returns:
            ``(n, H, W)`` (or ``(n, T)``) for ``out=None``; ``out`` for an array; else the number
            of heatmaps.
        """
        if (target is None) == (loss_fn is None):
            raise ValueError("pass exactly one of target= (class index per input) or loss_fn=")
        from_data = isinstance(target, str)
        if from_data and target != "labels":
            raise ValueError(
                f"target must be a class index, one per input, or 'labels' (the second element "
                f"of each (inputs, labels) batch); got {target!r}"
            )
        per_input = None
        if target is not None and not from_data and np.ndim(to_numpy(target)) == 1:
            per_input = np.asarray(to_numpy(target))
        if out is not None and not callable(out) and not _is_array(out):
            raise TypeError(
                f"out must be None, an array with a row per input (e.g. a np.memmap) or a "
                f"callable out(start, maps); got {type(out).__name__}"
            )
        chunk = _count("chunk", chunk) or ESTIMATE_CHUNK
        depth = _count("prefetch", prefetch, minimum=0) or 0
        items = _batches_with_labels(data, from_data, chunk)
        total = _length(data) if per_input is None else len(per_input)
        parts: list[np.ndarray] = []
        done = 0
        with progress_bar(total, progress, "IBA analyze", "heatmap") as bar:
            with _prefetched(items, depth) as ahead:
                for x, labels in ahead:
                    rows = n_rows(x)
                    if per_input is not None:
                        if done + rows > len(per_input):
                            raise ValueError(
                                f"target holds {len(per_input)} class indices; data holds more "
                                "inputs: give one per input of the whole data set"
                            )
                        labels = per_input[done : done + rows]
                    elif not from_data:
                        labels = target
                    maps = self.analyze(model, x, target=labels, loss_fn=loss_fn, seed=seed)
                    assert isinstance(maps, np.ndarray)  # details=False
                    if out is None:
                        parts.append(maps)
                    elif callable(out):
                        out(done, maps)
                    else:
                        if done + len(maps) > len(out):
                            raise ValueError(
                                f"out has {len(out)} rows; data holds more inputs: give out a "
                                "row per input"
                            )
                        out[done : done + len(maps)] = maps
                    done += len(maps)
                    bar.update(len(maps))
        if done == 0:
            raise ValueError("data holds no inputs")
        if per_input is not None and done != len(per_input):
            raise ValueError(
                f"target holds {len(per_input)} class indices for {done} inputs: give one per input"
            )
        if out is None:
            return np.concatenate(parts)
        return done if callable(out) else out

    @contextlib.contextmanager
    def planned(
        self,
        model: Any,
        x: Any,
        target: Any = None,
        loss_fn: Callable[[Any], Any] | None = None,
        noise: Any = None,
        seed: int | None = None,
        progress: bool = False,
        token_mask: Any = None,
    ) -> Iterator[tuple[Analysis, Plan]]:
        """The engine's :class:`Analysis` of ``x`` and the validated :class:`Plan` that
        ``analyze`` runs, with the model prepared (and restored when the block ends)."""
        if (target is None) == (loss_fn is None):
            raise ValueError("pass exactly one of target= (class index per input) or loss_fn=")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if noise is not None and seed is not None:
            raise ValueError("pass noise= or seed=, not both")
        seed = _count("seed", seed, minimum=0)
        config = self.config
        estimators: list[Estimator] | None = None  # None: the prior (docs/mathematics.md section 5)
        if config.estimator == "sentence":  # fitted on x itself (docs/mathematics.md section 6)
            check_finite(x)
            estimators = self._sentence_estimators(model, x)
        elif config.estimator == "prior":
            check_finite(x)
        else:
            self._require_estimators(model)
            check_finite(x)
            estimators = self._estimators
        with self.engine.analysis(model, x, config) as run:
            n = run.n_inputs
            if n < 1:
                raise ValueError("x holds no inputs")
            labels = None if target is None else _targets.labels(target, n)
            with running_on(x):  # torch and JAX run the model up to the first target here
                given = run.feature_shapes()
            if estimators is None:
                shapes = self._prior_shapes(given)
                layouts = [self._layout(shape, i) for i, shape in enumerate(shapes)]
                stats = prior_statistics(shapes)
            else:
                shapes = self._feature_shapes(given, estimators)
                layouts = [est.layout for est in estimators]
                stats = self.statistics(estimators)
            layout = layouts[0]
            a_shape = alpha_shape(shapes[0], layout, len(shapes) > 1)
            for shape, other in zip(shapes[1:], layouts[1:]):
                check_alpha_shape(a_shape, shape, other)
            plan = Plan(
                config=config,
                layout=layout,
                stats=stats,
                feature_shapes=shapes,
                alpha_shape=a_shape,
                noise=self._noise(noise, seed, n, shapes),
                labels=labels,
                loss_fn=loss_fn,
                progress=bool(progress),
                token_mask=_token_mask(token_mask, layout, n, shapes[0]),
            )
            yield run, plan

    def _prior_shapes(self, shapes: list[tuple[int, ...] | None]) -> list[tuple[int, ...]]:
        """The targets' feature shapes as the engine reports them, for the prior (no estimator
        to take a shape from), each checked against its layout."""
        checked = []
        for i, (name, given) in enumerate(zip(self.engine.names, shapes)):
            if given is None:
                raise ValueError(
                    f"target {name!r}: this engine cannot report the shape of its features "
                    "before the optimisation, which the standard-normal prior "
                    "(Config.estimator='prior') needs; with several targets on PyTorch, use "
                    "estimated statistics (estimate() and estimator='corpus') instead"
                )
            shape = tuple(int(s) for s in given)
            try:
                check_feature_shape(shape, self._layout(shape, i))
            except ValueError as err:
                raise ValueError(f"target {name!r}: {err}") from None
            checked.append(shape)
        return checked

    def _feature_shapes(
        self, shapes: list[tuple[int, ...] | None], estimators: list[Estimator]
    ) -> list[tuple[int, ...]]:
        """The targets' feature shapes, each checked against its estimator."""
        checked = []
        least = self.config.min_samples  # 2; 1 with ddof=0 (docs/mathematics.md section 6)
        for i, (name, est, given) in enumerate(zip(self.engine.names, estimators, shapes)):
            shape = est.feature_shape if given is None else tuple(int(s) for s in given)
            if shape is None or est.n_samples < least:
                raise ValueError(
                    f"target {name!r}: its estimator has seen {est.n_samples} sample(s); "
                    f"estimate() it on data first (at least {least} sample"
                    f"{'s' if least > 1 else ''})"
                )
            if est.feature_shape is not None and len(shape) != len(est.feature_shape):
                raise ValueError(
                    f"target {name!r} gives features of shape {tuple(shape)} per input, its "
                    f"estimator was fitted on {est.feature_shape}: check x's shape (a batch of "
                    "inputs, batch axis first, each input shaped as in estimate())"
                )
            try:
                est.check(shape, self.engine.layout_of(shape, i))
            except ValueError as err:
                hint = ""
                if est.feature_shape is not None and tuple(shape) != est.feature_shape:
                    hint = " (or give x inputs of the size used in estimate())"
                raise ValueError(f"target {name!r}: {err}{hint}") from None
            checked.append(tuple(shape))
        return checked

    def statistics(self, estimators: list[Estimator] | None = None) -> list[LayerStatistics]:
        """The bottlenecks' statistics (of ``estimators``, default the explainer's) under the
        config's rule, with the mask rule: a single target masks inactive features, several
        (CoIBA) do not (docs/mathematics.md sections 1, 2, 4 and 6)."""
        if estimators is None:
            self._require_estimators()
            estimators = self._estimators
        single = len(estimators) == 1
        warn = self.config.estimator != "sentence"  # one sample by design
        stats = []
        for est in estimators:
            s: Statistics = est.statistics_for(self.config, warn=warn)
            stats.append(LayerStatistics(s.mean, s.std, s.active if single else None))
        return stats

    def _sentence_estimators(self, model: Any, x: Any) -> list[Estimator]:
        """One estimator per target, fitted on the features of the single input ``x``
        (``Config.estimator == "sentence"``, docs/mathematics.md section 6)."""
        if n_rows(x) != 1:
            raise ValueError(
                "Config.estimator='sentence' fits the statistics on one input at a time: "
                f"x holds {n_rows(x)} inputs; analyze() explains them one by one, planned() "
                "takes one"
            )
        estimators = []
        with self.engine.estimation(model) as capture:
            for i, features in enumerate(to_numpy(f) for f in capture(x)):
                est = Estimator(layout=self._layout(features.shape[1:], i))
                est.update(features)
                estimators.append(est)
        return estimators

    def _analyze_each(
        self,
        model: Any,
        x: Any,
        target: Any,
        loss_fn: Callable[[Any], Any] | None,
        noise: Any,
        seed: int | None,
        details: bool,
        progress: bool,
        token_mask: Any = None,
    ) -> np.ndarray | Explanation:
        """``analyze`` input by input (``Config.estimator == "sentence"``), the results joined."""
        if (target is None) == (loss_fn is None):
            raise ValueError("pass exactly one of target= (class index per input) or loss_fn=")
        if noise is not None and seed is not None:
            raise ValueError("pass noise= or seed=, not both")
        n = n_rows(x)
        labels = None if target is None else _targets.labels(target, n)
        split = noise is not None and not self.engine.native_noise(noise)
        arrays = (list(noise) if isinstance(noise, (list, tuple)) else [noise]) if split else []
        arrays = [to_numpy(a) for a in arrays]
        for a in arrays:
            if a.ndim < 2 or a.shape[1] != n:
                raise ValueError(
                    f"noise of shape {a.shape} for {n} inputs needs their axis: (steps, {n}, "
                    f"batch_size, *F), from iba.draw_noise(..., n_inputs={n})"
                )
        parts = []
        for i in range(n):
            if split:
                each = [a[:, i] for a in arrays]
                noise_i = each if isinstance(noise, (list, tuple)) else each[0]
            else:
                noise_i = noise
            part = self.analyze(
                model,
                take_rows(x, i, i + 1),
                target=None if labels is None else int(labels[i]),
                loss_fn=loss_fn,
                noise=noise_i,
                seed=seed,
                details=True,
                progress=progress,
                token_mask=None if token_mask is None else np.asarray(token_mask)[i : i + 1],
            )
            assert isinstance(part, Explanation)  # details=True
            parts.append(part)
        maps = np.concatenate([p.heatmap for p in parts])
        if not details:
            return maps
        return Explanation(
            capacity=np.concatenate([p.capacity for p in parts]),
            alpha=np.concatenate([p.alpha for p in parts]),
            lam=np.concatenate([p.lam for p in parts]),
            alphas=np.concatenate([p.alphas for p in parts], axis=1),
            losses=np.concatenate([p.losses for p in parts], axis=1),
            heatmap=maps,
        )

    def with_noise(self, plan: Plan, noise: Any, n_inputs: int) -> Plan:
        """``plan`` with the draws ``noise`` (``analyze``'s ``noise=``: one ``(steps, N,
        batch_size, *F)`` array per target), checked against the plan's feature shapes: for
        explainers that draw their noise once the shapes are known (text, M2IB)."""
        return plan._replace(noise=self._noise(noise, None, n_inputs, plan.feature_shapes))

    def _noise(self, noise: Any, seed: int | None, n: int, shapes: list) -> Noise:
        if noise is None:
            return Noise(seed=DEFAULT_SEED if seed is None else seed)
        if self.engine.native_noise(noise):
            return Noise(native=noise)
        arrays = list(noise) if isinstance(noise, (list, tuple)) else [noise]
        if len(arrays) != len(shapes):
            raise ValueError(
                f"{len(shapes)} target(s) need {len(shapes)} noise array(s), got {len(arrays)}"
            )
        config = self.config
        checked = [
            check_noise(to_numpy(a), config.steps, n, config.batch_size, shape)[: config.updates]
            for a, shape in zip(arrays, shapes)
        ]
        return Noise(arrays=checked)


def prior_statistics(shapes: list[tuple[int, ...]]) -> list[LayerStatistics]:
    """The statistics of the standard-normal prior for targets with these feature shapes:
    ``mu = 0``, ``sigma' = 1`` and no active-feature mask (M2IB, docs/mathematics.md section 5;
    ``Config.estimator == "prior"``)."""
    return [
        LayerStatistics(np.zeros(shape, np.float64), np.ones(shape, np.float64), None)
        for shape in shapes
    ]


def _token_mask(mask: Any, layout: str, n: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """``analyze``'s ``token_mask``, checked: ``(N, T)`` float64 of zeros and ones."""
    if mask is None:
        return None
    if layout != "tokens":
        raise ValueError(
            f"token_mask is for token features (layout 'tokens'); the target's layout is {layout!r}"
        )
    array = to_numpy(mask)
    if array.shape != (n, shape[0]):
        raise ValueError(
            f"token_mask of shape {array.shape} does not fit {n} input(s) of {shape[0]} tokens: "
            f"expected ({n}, {shape[0]}), e.g. the tokenizer's attention_mask"
        )
    if not np.isin(array, (0, 1)).all():
        raise ValueError("token_mask must hold 0 (padding) and 1 (a token) only")
    return array.astype(np.float64)


def explanation(
    result: Result, layout: str, input_size: tuple[int, int] | None, details: bool
) -> np.ndarray | Explanation:
    """The heatmaps of an engine's result, or the whole ``iba.Explanation`` (float64)."""
    arrays = {name: np.asarray(to_numpy(a), np.float64) for name, a in result._asdict().items()}
    bad = np.argwhere(~np.isfinite(arrays["losses"]))
    if len(bad):  # Adam turns alpha into NaN: the heatmap would be silently meaningless
        step, row = (int(i) for i in bad[0])
        raise ValueError(
            f"the loss of input {row} is NaN or infinite at step {step + 1}: check loss_fn (or "
            "the model's outputs on x)"
        )
    maps = heatmap(arrays["capacity"], layout, input_size if is_spatial(layout) else None)
    if not details:
        return maps
    return Explanation(heatmap=maps, **arrays)


# -- data ----------------------------------------------------------------------------------------


def fit_estimators(
    capture: Callable[[Any], list],
    data: Any,
    n_samples: int | None = None,
    progress: bool = True,
    layout: Callable[[tuple[int, ...], int], str] | None = None,
    desc: str = "IBA estimate",
) -> list[Estimator]:
    """One ``iba.Estimator`` per captured layer, fitted on ``data`` (docs/mathematics.md section 1).

    ``capture(batch)`` gives the features of every layer on one batch of inputs; ``layout(shape,
    index)`` names the layout of layer ``index`` (default ``"channels_first"``). Stops after
    ``n_samples`` samples; raises if fewer than 2 were seen.
    """
    n_samples = _count("n_samples", n_samples)
    estimators: list[Estimator] = []
    seen = 0
    total = _length(data) if n_samples is None else n_samples
    with progress_bar(total, progress, desc=desc) as bar:
        for batch in batches(data):
            rows = n_rows(batch)
            if n_samples is not None and seen + rows > n_samples:
                rows = n_samples - seen
                batch = head(batch, rows)
            if rows < 1:
                break
            check_finite(batch, "data")
            with running_on(batch, "data"):
                features = [to_numpy(f) for f in capture(batch)]
            if not estimators:
                estimators = [
                    Estimator(layout=layout(f.shape[1:], i) if layout else "channels_first")
                    for i, f in enumerate(features)
                ]
            for est, f in zip(estimators, features):
                est.update(f)
            seen += rows
            bar.update(rows)
            if n_samples is not None and seen >= n_samples:
                break
    if seen < 2:
        raise ValueError(
            f"estimate() saw {seen} sample(s) in data; the statistics need at least 2 "
            "(the IBA paper used 5,000-10,000)"
        )
    return estimators


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy array of a framework array (a torch tensor on any device, a JAX or TF array)."""
    if isinstance(a, np.ndarray):
        return a
    detach = getattr(a, "detach", None)
    if detach is not None and hasattr(a, "cpu"):  # torch, without importing it
        return detach().cpu().numpy()
    return np.asarray(a)


def _is_array(data: Any) -> bool:
    return hasattr(data, "shape") and hasattr(data, "__getitem__") and len(data.shape) > 0


def batches(data: Any, chunk: int = ESTIMATE_CHUNK) -> Iterator[Any]:
    """The input batches of ``data``: chunks of one array, or the inputs of each batch yielded
    (the first element of a tuple or list, e.g. ``(images, labels)``)."""
    if _is_array(data):
        for start in range(0, int(data.shape[0]), chunk):
            yield data[start : start + chunk]
        return
    if type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()  # a tf.data.Dataset: NumPy batches, any Keras backend
    if isinstance(data, dict) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"data must be an array of inputs or an iterable of batches, got {type(data).__name__}"
        )
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _leaves(x: Any) -> list[Any]:
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in _leaves(v)]
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in _leaves(v)]
    return [x]


def n_rows(x: Any) -> int:
    """The batch size of ``x`` (an array, or a dict / tuple of them): its first leaf's rows."""
    leaves = [leaf for leaf in _leaves(x) if getattr(leaf, "shape", None) is not None]
    if not leaves or len(leaves[0].shape) == 0:
        raise ValueError("inputs must be arrays with a batch axis first")
    return int(leaves[0].shape[0])


def take_rows(x: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every array in ``x`` (an array, or a dict / tuple of them)."""
    if isinstance(x, dict):
        return {k: take_rows(v, start, stop) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(take_rows(v, start, stop) for v in x)
    return x[start:stop] if getattr(x, "shape", None) is not None and len(x.shape) else x


def pad_rows(x: Any, rows: int) -> Any:
    """``x`` (a NumPy array, or a dict / tuple of them) with its last row repeated up to ``rows``
    rows; as it is when it has that many. A compiling backend then runs one shape for batches of
    several sizes, and the rows past the real ones are dropped from its results."""
    if isinstance(x, dict):
        return {k: pad_rows(v, rows) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(pad_rows(v, rows) for v in x)
    a = np.asarray(x)
    missing = rows - len(a)
    return a if missing <= 0 else np.concatenate([a, np.repeat(a[-1:], missing, axis=0)])


def head(x: Any, rows: int) -> Any:
    """The first ``rows`` rows of every array in ``x``."""
    if isinstance(x, dict):
        return {k: head(v, rows) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(head(v, rows) for v in x)
    return x[:rows] if getattr(x, "shape", None) is not None and len(x.shape) else x


def _length(data: Any) -> int | None:
    if _is_array(data):
        return int(data.shape[0])
    dataset = getattr(data, "dataset", None)  # a torch DataLoader
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _count(name: str, value: Any, minimum: int = 1) -> int | None:
    """``value`` as an int (NumPy integers accepted, bools not), or ``None``."""
    if value is None:
        return None
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or None, got {value!r}") from None
    if number < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind} or None, got {value!r}")
    return number


@contextlib.contextmanager
def progress_bar(
    total: int | None, enabled: bool, desc: str = "IBA estimate", unit: str = "sample"
):
    """A tqdm bar (tqdm comes with every framework extra), or a silent stand-in."""
    if not enabled:
        yield _Silent()
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the numpy-only install: no bar
        yield _Silent()
        return
    with tqdm(total=total, desc=desc, unit=unit) as bar:
        yield bar


def steps(n: int, enabled: bool, desc: str = "IBA analyze") -> Iterable[int]:
    """``range(n)`` with a progress bar over the optimisation steps when ``enabled``."""
    if not enabled:
        return range(n)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return range(n)
    return tqdm(range(n), desc=desc, unit="step")


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


def _batches_with_labels(data: Any, labels: bool, chunk: int) -> Iterator[tuple[Any, Any]]:
    """``(inputs, labels or None)`` per batch of ``data`` (:meth:`Explainer.analyze_batches`)."""
    if _is_array(data):
        if labels:
            raise ValueError(
                "target='labels' takes the labels from (inputs, labels) batches; data is one "
                "array: pass target= (one class index per input) instead"
            )
        for batch in batches(data, chunk):
            yield batch, None
        return
    if type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()
    if isinstance(data, dict) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"data must be an array of inputs or an iterable of batches, got {type(data).__name__}"
        )
    for batch in data:
        pair = isinstance(batch, (tuple, list))
        if labels and not (pair and len(batch) >= 2):
            raise ValueError(
                "target='labels' needs (inputs, labels) batches; got a batch of "
                f"{type(batch).__name__}: pass target= or loss_fn= instead"
            )
        yield (batch[0], to_numpy(batch[1]) if labels else None) if pair else (batch, None)


_END = object()


@contextlib.contextmanager
def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Iterator[Any]]:
    """``items``, taken up to ``depth`` ahead by a background thread (``depth == 0``: in the
    caller's thread). An exception of ``items`` is raised in the caller; leaving the block early
    stops the thread at its next item."""
    if depth == 0:
        yield items
        return
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as err:  # handed to the caller
            put((False, err))

    def taken() -> Iterator[Any]:
        while True:
            ok, item = ahead.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item

    thread = threading.Thread(target=work, name="iba-prefetch", daemon=True)
    thread.start()
    try:
        yield taken()
    finally:
        stop.set()
        thread.join(timeout=10)
