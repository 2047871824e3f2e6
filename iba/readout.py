"""The Readout Bottleneck's framework-free part (Schulz et al., ICLR 2020, section 3.2;
docs/mathematics.md section 3).

What every engine's ``Readout`` shares: the constants, the readout network's layer sizes and its
initial weights, the NumPy reference of the whole forward pass (read features, standardise,
bring to the bottleneck's grid, 1x1 conv network, clamp, then the bottleneck's ``lam``, capacity
and heatmap), the file format (one ``.npz`` for every backend), the iteration over labelled
batches and the checks with their error messages; and :class:`ReadoutExplainer`, the explainer
each adapter's ``Readout`` subclasses (arguments, configuration, estimators, the network's
weights, losses, the driver of ``estimate`` / ``fit`` / ``analyze``, ``save`` / ``load``,
``repr``), with small hooks for the framework: read the features, one training step, the forward
pass of ``analyze``.

The network's weights are held framework-free as a list of six arrays
``[w0, b0, w1, b1, w2, b2]``: ``w`` of shape ``(out, in)`` (a 1x1 convolution's kernel without its
spatial axes, PyTorch's order), ``b`` of shape ``(out,)``. Input channels are the readouts'
channels concatenated in the order of the readout layers, whatever the layout.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from iba.bottleneck import capacity, damping
from iba.config import Config
from iba.driver import fit_estimators, steps
from iba.estimator import Estimator, Statistics
from iba.heatmap import heatmap, resize_matrix
from iba.optimize import Explanation

FORMAT_VERSION = 1
KIND = "iba.readout"
ALPHA_BOUND = 5.0  # alpha is clamped to [-5, 5]
LAST_BIAS = 5.0  # the last conv starts at alpha = 5 ...
LAST_SCALE = 1e-3  # ... with its weights scaled by 1e-3
CONFIG_FIELDS = ("beta", "sigma", "relu", "min_std", "active_threshold")
LAYOUTS = ("channels_first", "channels_last")


# -- the network ------------------------------------------------------------------------------


def layer_sizes(in_channels: int, channels: int) -> list[tuple[int, int]]:
    """``(in, out)`` of the three 1x1 convolutions: to ``max(in // 2, 1)``, to ``2C``, to ``C``
    (docs/mathematics.md section 3, step 4)."""
    if in_channels < 1 or channels < 1:
        raise ValueError(
            f"the readout network needs at least one input and one output channel, got "
            f"{in_channels} and {channels}"
        )
    hidden = max(in_channels // 2, 1)
    return [(in_channels, hidden), (hidden, 2 * channels), (2 * channels, channels)]


def init_weights(in_channels: int, channels: int, seed: int | None = None) -> list[np.ndarray]:
    """Fresh weights ``[w0, b0, w1, b1, w2, b2]`` (float64) as PyTorch initialises a 1x1 conv
    (uniform in ``+-1/sqrt(in)``, weights and biases), the last conv's weights scaled by
    ``LAST_SCALE`` and its bias set to ``LAST_BIAS``: ``alpha`` starts near 5."""
    rng = np.random.default_rng(seed)
    weights: list[np.ndarray] = []
    for n_in, n_out in layer_sizes(in_channels, channels):
        bound = 1.0 / np.sqrt(n_in)
        weights.append(rng.uniform(-bound, bound, (n_out, n_in)))
        weights.append(rng.uniform(-bound, bound, n_out))
    weights[-2] = weights[-2] * LAST_SCALE
    weights[-1] = np.full(channels, LAST_BIAS)
    return weights


def check_weights(weights: Sequence[Any], in_channels: int, channels: int) -> list[np.ndarray]:
    """The weights as float64 arrays; a ``ValueError`` if their number or shapes do not fit a
    network from ``in_channels`` to ``channels``."""
    expected = []
    for n_in, n_out in layer_sizes(in_channels, channels):
        expected += [(n_out, n_in), (n_out,)]
    arrays = [np.asarray(w, np.float64) for w in weights]
    got = [a.shape for a in arrays]
    if got != expected:
        raise ValueError(
            f"the readout network's weights have shapes {got}; a network from {in_channels} "
            f"readout channels to {channels} bottleneck channels needs {expected} "
            "([w0, b0, w1, b1, w2, b2], w as (out, in)): estimate again or load matching weights"
        )
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("the readout network's weights hold NaN or infinite values")
    return arrays


def network(x: np.ndarray, weights: Sequence[np.ndarray], layout: str) -> np.ndarray:
    """The readout network on ``(N, C_in, H, W)`` / ``(N, H, W, C_in)`` inputs, then the clamp to
    ``[-ALPHA_BOUND, ALPHA_BOUND]``: ``alpha`` of shape ``(N, C, H, W)`` / ``(N, H, W, C)``
    (docs/mathematics.md section 3, steps 4 and 5)."""
    spec = "oi,nihw->nohw" if layout == "channels_first" else "oi,nhwi->nhwo"
    for k in range(3):
        w, b = weights[2 * k], weights[2 * k + 1]
        bias = b[:, None, None] if layout == "channels_first" else b
        x = np.einsum(spec, w, x) + bias
        if k < 2:
            x = np.maximum(x, 0.0)
    return np.clip(x, -ALPHA_BOUND, ALPHA_BOUND)


# -- features ---------------------------------------------------------------------------------


def as_map(features: Any, layout: str, name: str = "readout", reshape: Any = None) -> Any:
    """Features as ``(N, C, h, w)`` / ``(N, h, w, C)`` maps: vectors ``(N, D)`` (logits) become
    ``(N, D, 1, 1)`` / ``(N, 1, 1, D)``; any array with ``shape`` and ``reshape`` (or pass
    ``reshape(array, shape)``, e.g. ``keras.ops.reshape``)."""
    shape = tuple(int(s) for s in features.shape)
    if reshape is None:
        reshape = lambda a, new: a.reshape(*new)  # noqa: E731
    if len(shape) == 4:
        return features
    if len(shape) == 2:
        if layout == "channels_first":
            return reshape(features, (shape[0], shape[1], 1, 1))
        return reshape(features, (shape[0], 1, 1, shape[1]))
    raise ValueError(
        f"layer {name!r} gives features of shape {shape}; the Readout Bottleneck reads feature "
        "maps (N, C, H, W) / (N, H, W, C) or vectors (N, D): choose another layer"
    )


def channels(feature_shape: Sequence[int], layout: str) -> int:
    """The channels of a map's ``(C, h, w)`` / ``(h, w, C)`` feature shape."""
    return int(feature_shape[0] if layout == "channels_first" else feature_shape[-1])


def grid(feature_shape: Sequence[int], layout: str) -> tuple[int, int]:
    """``(h, w)`` of a map's feature shape."""
    shape = tuple(int(s) for s in feature_shape)
    return shape[1:] if layout == "channels_first" else shape[:2]  # type: ignore[return-value]


def statistics(estimators: Sequence[Estimator], config: Config) -> list[Statistics]:
    """Per layer (the bottleneck first), ``mu``, ``std'`` and the mask; only the bottleneck
    masks inactive features, the readouts get a mask of ones (docs/mathematics.md section 3)."""
    stats = []
    for i, est in enumerate(estimators):
        s = est.statistics(config.min_std, config.active_threshold, warn=False)
        stats.append(s if i == 0 else Statistics(s.mean, s.std, np.ones_like(s.mean)))
    return stats


def readout_input(
    readouts: Sequence[np.ndarray], stats: Sequence[Statistics], size: tuple[int, int], layout: str
) -> np.ndarray:
    """The network's input: each readout standardised with its statistics, ``1 x 1`` maps
    expanded and others resized bilinearly (``iba.resize_matrix``) to ``size``, concatenated on
    channels (docs/mathematics.md section 3, steps 2 to 4)."""
    height, width = size
    parts = []
    for f, s in zip(readouts, stats):
        f = (np.asarray(f, np.float64) - s.mean) / s.std
        h, w = grid(f.shape[1:], layout)
        if (h, w) == (1, 1):
            shape = list(f.shape)
            if layout == "channels_first":
                shape[2:] = [height, width]
            else:
                shape[1:3] = [height, width]
            parts.append(np.broadcast_to(f, shape))
            continue
        a_h, a_w = resize_matrix(h, height), resize_matrix(w, width)
        spec = "Hh,nchw,Ww->ncHW" if layout == "channels_first" else "Hh,nhwc,Ww->nHWc"
        parts.append(np.einsum(spec, a_h, f, a_w))
    return np.concatenate(parts, axis=1 if layout == "channels_first" else -1)


def reference(
    features: Sequence[np.ndarray],
    estimators: Sequence[Estimator],
    weights: Sequence[np.ndarray],
    config: Config,
    layout: str = "channels_first",
    input_size: tuple[int, int] | None = None,
) -> Explanation:
    """The NumPy reference of ``Readout.analyze`` (docs/mathematics.md section 3).

    Args:
        features: the bottleneck's features ``R`` ``(N, *F)`` first, then every readout layer's
            output (maps or vectors), from a clean forward pass.
        estimators: one per layer, in the same order.
        weights: the network's ``[w0, b0, w1, b1, w2, b2]``.
        config: ``sigma``, ``min_std``, ``active_threshold`` are read.
        layout: ``"channels_first"`` or ``"channels_last"``, of every layer.
        input_size: ``(H, W)`` the heatmap is resized to, or ``None`` (the feature grid).

    Returns:
        An ``iba.Explanation`` with ``capacity``, ``alpha`` (clamped), ``lam``, ``alphas``
        (``alpha`` alone), empty ``losses`` and the heatmap in bits.
    """
    check_layout(layout)
    maps = [np.asarray(as_map(np.asarray(f, np.float64), layout), np.float64) for f in features]
    stats = statistics(estimators, config)
    r = maps[0]
    size = grid(r.shape[1:], layout)
    x = readout_input(maps[1:], stats[1:], size, layout)
    alpha = network(x, check_weights(weights, x.shape[1 if layout == "channels_first" else -1],
                                     channels(r.shape[1:], layout)), layout)  # fmt: skip
    lam = damping(alpha, layout, config.sigma)
    first = stats[0]
    cap = capacity(r, lam, first.mean, first.std, first.active)
    return Explanation(
        capacity=cap,
        alpha=alpha,
        lam=lam,
        alphas=alpha[None],
        losses=np.zeros((0, alpha.shape[0])),
        heatmap=heatmap(cap, layout, input_size),
    )


# -- checks -----------------------------------------------------------------------------------


def check_layout(layout: str) -> str:
    """A spatial layout; the Readout Bottleneck needs ``(C, H, W)`` or ``(H, W, C)`` features."""
    if layout not in LAYOUTS:
        raise ValueError(
            f"the Readout Bottleneck needs spatial features, layout 'channels_first' or "
            f"'channels_last'; got {layout!r}"
        )
    return layout


def check_bottleneck_shape(shape: Sequence[int], name: str) -> None:
    """Raise unless the bottleneck's features are maps ``(C, H, W)`` / ``(H, W, C)``."""
    if len(shape) != 3:
        raise ValueError(
            f"the bottleneck layer {name!r} gives features of shape {tuple(shape)} per input; the "
            "Readout Bottleneck needs feature maps (C, H, W) or (H, W, C): choose a conv layer"
        )


def check_features(
    shapes: Sequence[Sequence[int]], estimators: Sequence[Estimator], names: Sequence[str]
) -> None:
    """Raise if a layer's features (per input) differ from what its estimator was fitted on."""
    for shape, est, name in zip(shapes, estimators, names):
        if tuple(shape) != est.feature_shape:
            raise ValueError(
                f"layer {name!r} produces features of shape {tuple(shape)}, the estimator was "
                f"fitted on {est.feature_shape}: estimate again"
            )


def require(estimators: Sequence[Estimator], weights: Any) -> None:
    """Raise before ``estimate`` or ``load``."""
    if not estimators or weights is None:
        raise RuntimeError(
            "no feature statistics yet: call estimate(model, data) or Readout.load(path) first"
        )


def check_fit_args(epochs: Any, lr: Any) -> tuple[int, float]:
    """``epochs`` (an int >= 1) and ``lr`` (a positive float), or a clear error."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    try:
        rate = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"lr must be a number, got {lr!r}") from None
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    return int(epochs), rate


def to_layout(est: Estimator, layout: str) -> Estimator:
    """The same statistics for features in ``layout`` (``(C, h, w)`` <-> ``(h, w, C)``): a
    readout saved by one framework is used by another."""
    check_layout(layout)
    if est.layout == layout:
        return est
    check_layout(est.layout)
    arrays = est.to_arrays()
    axes = (0, -1) if layout == "channels_last" else (-1, 0)
    for key in ("mean", "m2", "nonzero"):
        arrays[key] = np.moveaxis(arrays[key], *axes)
    arrays["feature_shape"] = np.array(arrays["mean"].shape, np.int64)
    arrays["layout"] = np.array(layout)
    return Estimator.from_arrays(arrays)


# -- data -------------------------------------------------------------------------------------


def labelled(data: Iterable) -> Iterator[tuple[Any, Any]]:
    """``(inputs, labels)`` of every batch; ``fit`` trains on labelled batches only."""
    if hasattr(data, "shape"):
        raise TypeError("fit() needs (inputs, labels) batches, e.g. a DataLoader, not one array")
    if isinstance(data, dict) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"fit() needs an iterable of (inputs, labels) batches, got {type(data).__name__}"
        )
    if type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise TypeError("fit() needs (inputs, labels, ...) batches, e.g. from a DataLoader")
        yield batch[0], batch[1]


def check_labels(labels: Any, rows: int, n_classes: int | None = None) -> np.ndarray:
    """The labels of a batch as int64 ``(rows,)``, or a clear error."""
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if y.shape != (rows,) or y.dtype.kind not in "iu":
        raise ValueError(
            f"the labels of a batch must be {rows} class indices (ints, shape ({rows},)), got "
            f"shape {y.shape} and dtype {y.dtype}"
        )
    if len(y) and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
        top = "" if n_classes is None else f" and below {n_classes}"
        raise ValueError(f"labels must be >= 0{top}; got {y.min()} to {y.max()}")
    return y.astype(np.int64)


# -- the file ---------------------------------------------------------------------------------


def config_dict(config: Config) -> dict[str, Any]:
    """The fields of ``config`` a readout keeps."""
    return {k: getattr(config, k) for k in CONFIG_FIELDS}


def save(
    path: str | os.PathLike,
    targets: Sequence[str],
    config: Config,
    estimators: Sequence[Estimator],
    weights: Sequence[np.ndarray],
    losses: Sequence[float],
    framework: str,
) -> None:
    """Write a readout to ``path`` as an ``.npz`` without pickle (the exact path: nothing is
    appended), replaced only once complete.

    Keys: ``kind``, ``format_version``, ``framework`` (who wrote it), ``targets`` (the layer
    names, bottleneck first), ``config`` (JSON), ``losses``, ``estimator/{i}/...`` (each in its
    layout) and ``network/{k}`` (the six weights, float64, ``w`` as ``(out, in)``).
    """
    if any(not isinstance(t, str) for t in targets):
        raise ValueError("save() needs the layers given by name, not as layer objects")
    arrays: dict[str, np.ndarray] = {
        "kind": np.array(KIND),
        "format_version": np.array(FORMAT_VERSION),
        "framework": np.array(framework),
        "targets": np.array(list(targets)),
        "config": np.array(json.dumps(config_dict(config))),
        "losses": np.asarray(list(losses), np.float64),
    }
    for i, est in enumerate(estimators):
        arrays.update(est.to_arrays(prefix=f"estimator/{i}/"))
    for k, w in enumerate(weights):
        arrays[f"network/{k}"] = np.asarray(w, np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # str keys, array values
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as file:
        file.write(buffer.getvalue())
    os.replace(tmp, path)


def is_readout_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``.npz`` written by :func:`save`."""
    try:
        with zipfile.ZipFile(path) as z:
            return "kind.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def load(path: str | os.PathLike, layout: str | None = None) -> dict[str, Any]:
    """Read a file of :func:`save`: ``targets``, ``config`` (an ``iba.Config``), ``estimators``
    (converted to ``layout`` if given), ``weights``, ``losses`` and ``framework``; a clear error
    for any other file."""
    source = os.fspath(path)
    if not os.path.exists(source):
        raise FileNotFoundError(f"no readout file at {source}")
    if not is_readout_file(source):
        raise ValueError(f"{source} is not a saved Readout (Readout.save writes one)")
    with np.load(source, allow_pickle=False) as file:
        data = {k: file[k] for k in file.files}
    if str(data["kind"]) != KIND or int(data["format_version"]) != FORMAT_VERSION:
        raise ValueError(
            f"{source}: readout format {data['format_version']}; this version of iba reads "
            f"format {FORMAT_VERSION}: save it again with this version"
        )
    count = sum(1 for k in data if k.startswith("estimator/") and k.endswith("/mean"))
    estimators = [
        Estimator.from_arrays(data, prefix=f"estimator/{i}/", source=source) for i in range(count)
    ]
    if layout is not None:
        estimators = [to_layout(e, layout) for e in estimators]
    targets = [str(t) for t in data["targets"]]
    if len(targets) != count or count < 2:
        raise ValueError(f"{source}: {len(targets)} layer names but {count} estimators")
    weights = [data[f"network/{k}"] for k in range(6)]
    return {
        "targets": targets,
        "config": Config(**json.loads(str(data["config"]))),
        "estimators": estimators,
        "weights": weights,
        "losses": [float(v) for v in data["losses"]],
        "framework": str(data["framework"]),
    }


def network_sizes(estimators: Sequence[Estimator]) -> tuple[int, int]:
    """``(in_channels, channels)`` of the network for fitted estimators (the bottleneck first)."""
    outs = []
    for est in estimators:
        assert est.feature_shape is not None  # fitted or loaded
        outs.append(channels(est.feature_shape, est.layout))
    return sum(outs[1:]), outs[0]


# -- the explainer every adapter shares -------------------------------------------------------


def explanation(
    capacity: Any,
    alpha: Any,
    lam: Any,
    layout: str,
    size: tuple[int, int] | None,
    details: bool,
) -> np.ndarray | Explanation:
    """``analyze``'s result from one forward pass: the heatmaps ``(N, H, W)`` in bits (resized to
    ``size`` if given), or with ``details`` an ``iba.Explanation`` (float64) whose ``alphas``
    holds the one ``alpha`` and whose ``losses`` are empty (docs/mathematics.md section 3)."""
    cap = np.asarray(capacity, np.float64)
    maps = heatmap(cap, layout, size)
    if not details:
        return maps
    alpha = np.asarray(alpha, np.float64)
    return Explanation(
        capacity=cap,
        alpha=alpha,
        lam=np.asarray(lam, np.float64),
        alphas=alpha[None],
        losses=np.zeros((0, alpha.shape[0])),
        heatmap=maps,
    )


Step = Callable[[Any, Any], float]  # one training step on (inputs, labels): the batch's loss
_Self = TypeVar("_Self", bound="ReadoutExplainer")


class ReadoutExplainer:
    """The Readout Bottleneck (docs/mathematics.md section 3): a small network predicts ``alpha``
    at ``bottleneck`` from the features of ``readouts``, in one forward pass. Subclassed per
    framework (``iba_torch.Readout``, ``iba_tf.Readout``, ``iba_jax.Readout``).

    Everything framework-free is here, once: the arguments and their checks, the configuration,
    the estimators, the network's weights, the losses, ``estimate`` / ``fit`` / ``analyze`` (their
    checks, the data, the progress bar and the result), ``save`` / ``load`` (one ``.npz`` for every
    framework) and ``repr``. An adapter says how to reach its framework: :meth:`_check_targets`
    (or the class attributes it reads), :meth:`_bind`, :meth:`_estimation`, :meth:`_training`,
    :meth:`_forward`; one that keeps the network as a framework object (PyTorch) also overrides
    :meth:`_network`, :meth:`_get_weights`, :meth:`_set_weights` and :meth:`_install`.

    Args:
        bottleneck: the layer whose output the bottleneck replaces (as the adapter names layers);
            its features must be maps ``(C, H, W)`` / ``(H, W, C)`` per input.
        readouts: the layers whose outputs predict ``alpha``: feature maps are resized to the
            bottleneck's ``H x W``, vectors ``(D,)`` (e.g. logits) are expanded.
        beta, sigma, relu, min_std, active_threshold: as in ``iba.Config``.
        layout: of every layer's features, ``"channels_first"`` or ``"channels_last"``; ``None``
            for the adapter's default (``default_layout``).
    """

    framework: ClassVar[str]  # written into saved files
    default_layout: ClassVar[str | None] = None  # None: the model decides (at bind)
    layouts: ClassVar[tuple[str, ...]] = LAYOUTS  # the layouts the adapter reads
    # what the default _check_targets accepts: a ``readouts`` of one of ``one_target``'s types is
    # one target (not a list); a ``bottleneck`` of one of ``many_targets``' types is several
    one_target: ClassVar[tuple[type, ...]] = (str,)
    many_targets: ClassVar[tuple[type, ...]] = (list, tuple)
    target_words: ClassVar[tuple[str, str]] = ("layer or layer name", "layers or layer names")

    def __init__(
        self,
        bottleneck: Any,
        readouts: Sequence[Any],
        *,
        beta: float = 10.0,
        sigma: float | None = 1.0,
        relu: bool = False,
        min_std: float = 0.01,
        active_threshold: float = 0.01,
        layout: str | None = None,
    ):
        self._targets = self._check_targets(bottleneck, readouts)
        layout = self.default_layout if layout is None else layout
        if layout is not None:
            check_layout(layout)
            if layout not in self.layouts:
                raise ValueError(
                    f"{type(self).__name__} reads features in layout {self.layouts[0]!r}; got "
                    f"layout={layout!r}"
                )
        self.layout = layout
        self.config = Config(
            beta=beta, sigma=sigma, relu=relu, min_std=min_std, active_threshold=active_threshold
        )
        self.estimators: list[Estimator] = []
        self._weights: list[np.ndarray] | None = None
        self.losses: list[float] = []

    def __repr__(self) -> str:
        names = self.names
        return f"Readout(bottleneck={names[0]!r}, readouts={names[1:]}, config={self.config})"

    @property
    def names(self) -> list[str]:
        """The layers' names, bottleneck first, as messages and saved files show them."""
        return [self._name(t) for t in self._targets]

    # -- what an adapter provides ----------------------------------------------------------------

    def _check_targets(self, bottleneck: Any, readouts: Any) -> list[Any]:
        """``[bottleneck, *readouts]``, or a ``TypeError`` naming what to pass."""
        one, many = self.target_words
        if isinstance(bottleneck, self.many_targets):
            raise TypeError(f"bottleneck must be one {one}")
        targets = [] if isinstance(readouts, self.one_target) else list(readouts)
        if not targets:
            raise TypeError(f"readouts must be a non-empty list of {many}")
        return [bottleneck, *targets]

    def _name(self, target: Any) -> str:
        """A target as text: its name, or the type of an unnamed layer object."""
        return target if isinstance(target, str) else type(target).__name__

    def _bind(self, model: Any) -> Any:
        """``model`` checked and reached as ``_training`` and ``_forward`` take it."""
        return model

    def _layout_of(self, bound: Any) -> str:
        """The layout of the features of a bound model."""
        assert self.layout is not None  # an adapter without a default layout overrides this
        return self.layout

    def _estimation(self, model: Any) -> contextlib.AbstractContextManager[Any]:
        """A block yielding ``(capture, layout)``: ``capture(batch)`` gives every layer's features
        as maps (the bottleneck first), in ``layout``; the model is left as it was."""
        raise NotImplementedError

    def _training(
        self, bound: Any, weights: list[np.ndarray], lr: float, seed: int | None
    ) -> contextlib.AbstractContextManager[Step]:
        """A block yielding one training step ``(inputs, labels) -> loss`` from ``weights`` (Adam
        at ``lr``, noise seeded with ``seed``); the trained weights are kept on a normal exit and
        the model is left as it was."""
        raise NotImplementedError

    def _forward(
        self, bound: Any, weights: list[np.ndarray], x: Any
    ) -> tuple[Any, Any, Any, tuple[int, int] | None]:
        """``(capacity, alpha, lam, size)`` of inputs ``x`` from one forward pass: arrays in the
        layout of ``bound`` and the inputs' ``(H, W)`` for the heatmap (or ``None``)."""
        raise NotImplementedError

    def _network(self) -> Any:
        """The network as held (``None`` before ``estimate`` or ``load``)."""
        return self._weights

    def _get_weights(self) -> list[np.ndarray] | None:
        return self._weights

    def _set_weights(self, weights: list[np.ndarray] | None) -> None:
        self._weights = weights

    def _install(self, weights: Sequence[Any] | None) -> None:
        """A network for the estimators' channel counts: fresh (``weights`` ``None``:
        :func:`init_weights`) or holding ``weights`` (checked)."""
        sizes = network_sizes(self.estimators)
        self._weights = init_weights(*sizes) if weights is None else check_weights(weights, *sizes)

    # -- the network's weights -------------------------------------------------------------------

    @property
    def weights(self) -> list[np.ndarray] | None:
        """The network's weights ``[w0, b0, w1, b1, w2, b2]`` (NumPy, ``w`` as ``(out, in)``)."""
        return self._get_weights()

    @weights.setter
    def weights(self, weights: list[np.ndarray] | None) -> None:
        self._set_weights(weights)

    def _require(self) -> Any:
        """The network; raises before ``estimate`` or ``load``."""
        network = self._network()
        require(self.estimators, network)
        return network

    def _ready(self, layout: str) -> list[np.ndarray]:
        """The weights, checked; the estimators converted to ``layout``."""
        self._require()
        self.estimators = [to_layout(e, layout) for e in self.estimators]
        weights = self.weights
        assert weights is not None  # after _require()
        return check_weights(weights, *network_sizes(self.estimators))

    def _checked(self, features: list, names: Sequence[str]) -> list:
        """``features`` (the bottleneck's first), if they have the estimators' shapes."""
        check_features([f.shape[1:] for f in features], self.estimators, names)
        return features

    # -- estimate, fit, analyze ------------------------------------------------------------------

    def estimate(
        self, model: Any, data: Iterable, n_samples: int | None = None, progress: bool = True
    ) -> list[Estimator]:
        """Fit the estimators of the bottleneck and of every readout layer (docs/mathematics.md
        section 1); vector readouts are kept as ``1 x 1`` maps. Builds the readout network (fresh
        weights) for the channel counts found."""
        with self._estimation(model) as (capture, layout):
            estimators = fit_estimators(
                capture,
                data,
                n_samples,
                progress,
                layout=lambda shape, i: layout,
                desc="Readout estimate",
            )
        self.estimators = estimators
        self._install(None)
        return estimators

    def fit(
        self,
        model: Any,
        data: Iterable,
        epochs: int = 10,
        lr: float = 1e-5,
        progress: bool = True,
        seed: int | None = None,
    ) -> list[float]:
        """Train the readout network over ``data`` (``(inputs, labels, ...)`` batches;
        docs/mathematics.md section 3).

        Loss per batch: cross entropy of the labels on the bottlenecked model plus ``beta *
        mean(capacity)``, one noise draw per input (seeded with ``seed``); Adam at ``lr`` on the
        network only: the model's weights are not changed and the model is left as it was.
        Returns (and appends to ``self.losses``) the loss of every batch.
        """
        bound = self._bind(model)
        weights = self._ready(self._layout_of(bound))
        epochs, lr = check_fit_args(epochs, lr)
        log: list[float] = []
        with self._training(bound, weights, lr, seed) as step:
            bar = steps(epochs, progress, desc="Readout fit")
            for _ in bar:
                for x, y in labelled(data):
                    log.append(float(step(x, y)))
                    if not np.isfinite(log[-1]):
                        raise ValueError(
                            f"the loss is NaN or infinite at batch {len(log)}: lower lr or check "
                            "the data and labels"
                        )
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{log[-1]:.4g}")
        self.losses.extend(log)
        return log

    def analyze(self, model: Any, x: Any, details: bool = False) -> np.ndarray | Explanation:
        """Heatmaps of ``x`` in bits from one forward pass (no optimisation): ``(N, H, W)``.

        With ``details=True``, an ``iba.Explanation`` with ``capacity``, ``alpha``, ``lam`` (in
        the model's layout) and the heatmap (``alphas`` holds the one ``alpha``, ``losses`` is
        empty).
        """
        bound = self._bind(model)
        layout = self._layout_of(bound)
        weights = self._ready(layout)
        capacity, alpha, lam, size = self._forward(bound, weights, x)
        return explanation(capacity, alpha, lam, layout, size, details)

    # -- save / load -----------------------------------------------------------------------------

    def _saved_names(self) -> list[str]:
        """The layer names a saved file keeps."""
        return self.names

    def save(self, path: str | os.PathLike) -> None:
        """Write the readout (network, estimators, configuration, losses) to ``path``: this
        module's ``.npz`` (no pickle), the same for every framework."""
        self._require()
        weights = self.weights
        assert weights is not None  # after _require()
        save(
            path,
            self._saved_names(),
            self.config,
            self.estimators,
            weights,
            self.losses,
            framework=self.framework,
        )

    @classmethod
    def _from_file(
        cls: type[_Self],
        path: str | os.PathLike,
        bottleneck: Any,
        readouts: Sequence[Any] | None,
        convert: str | None,
        **options: Any,
    ) -> _Self:
        """A readout read from a file of :func:`save` (statistics converted to ``convert`` if
        given); ``bottleneck`` and ``readouts`` replace the saved names unless ``None``."""
        data = load(path, layout=convert)
        targets = data["targets"]
        readout = cls(
            targets[0] if bottleneck is None else bottleneck,
            targets[1:] if readouts is None else readouts,
            **options,
            **config_dict(data["config"]),
        )
        if len(readout._targets) != len(targets):
            raise ValueError(
                f"{os.fspath(path)} reads {len(targets) - 1} readout layer(s); "
                f"{len(readout._targets) - 1} given"
            )
        readout.estimators = data["estimators"]
        readout._install(data["weights"])
        readout.losses = data["losses"]
        return readout
