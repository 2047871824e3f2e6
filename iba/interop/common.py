"""What the interop adapters share: the engine of a model's framework, an explainer for it, and
IBA's heatmaps shaped like the inputs. NumPy only; an adapter is imported by the name the
registry gives, when a model of its framework comes in.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from iba import backends
from iba.config import Config
from iba.driver import Explainer

LAYOUTS = ("channels_first", "channels_last")
MODELS = (
    "a torch.nn.Module, a keras.Model, or a Flax model (a Linen (module, variables) pair or an "
    "nnx.Module)"
)


def framework_of(model: Any) -> str | None:
    """The command line's backend (``torch``, ``keras`` or ``jax``) whose engine explains
    ``model``, from the packages of its classes (``iba.backends.Engine.models``); ``None`` if no
    engine knows it. A Linen ``(module, variables)`` pair is recognised by its module."""
    subject = model[0] if isinstance(model, tuple) and model else model
    for cls in type(subject).__mro__:
        top = (getattr(cls, "__module__", None) or "").split(".")[0]
        for engine in backends.ENGINES:
            if top in engine.models:
                return engine.name
    return None


def _packages() -> dict[str, str]:
    """``{backend: adapter package}`` from the installed ``iba.backends`` entry points."""
    found = {}
    for point in entry_points(group=backends.ENTRY_POINT_GROUP):
        found[point.name] = point.value.split(":")[0].split(".")[0]
    return found


def backend_of_explainer(explainer: Any) -> str | None:
    """The backend whose adapter defined ``explainer``'s class, or ``None``."""
    package = type(explainer).__module__.split(".")[0]
    return next((name for name, p in _packages().items() if p == package), None)


def explainer_class(backend: str) -> type[Explainer]:
    """The ``IBA`` class of ``backend``'s adapter, imported now (the registry names it)."""
    package = _packages().get(backend)
    if package is None:
        raise RuntimeError(
            f"no adapter is registered for the {backend} backend (entry point group "
            f"{backends.ENTRY_POINT_GROUP!r}): install iba itself, pip install ."
        )
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        engine = backends.engine(backend)
        hint = engine.install if engine else "install its framework"
        raise ImportError(f"the {backend} backend needs {err.name or err}: {hint}") from err
    cls = getattr(module, "IBA", None)
    if not (isinstance(cls, type) and issubclass(cls, Explainer)):
        raise RuntimeError(f"the {backend} adapter {package!r} has no IBA explainer class")
    return cls


def explainer_for(
    model: Any,
    explainer: Explainer | None = None,
    layer: Any = None,
    data: Iterable | Any = None,
    n_samples: int | None = None,
    config: Config | None = None,
    cls: type[Explainer] | None = None,
    progress: bool = False,
    **fields: Any,
) -> Explainer:
    """The explainer that explains ``model``: ``explainer`` as given (checked against the
    model's framework), or a new one of the model's framework at ``layer``, fitted on ``data``
    (docs/mathematics.md section 1; without ``data`` only for ``estimator='prior'`` or
    ``'sentence'``, which need no corpus).

    Args:
        model: the model; never changed.
        explainer: an ``IBA`` of any adapter (``iba_torch.IBA``, ``iba_tf.IBA``,
            ``iba_jax.IBA``), estimated already; exclusive with the other arguments.
        layer: the target layer (or a list of them, CoIBA) in the framework's form.
        data: what ``IBA.estimate`` takes: an array of inputs or an iterable of batches.
        n_samples: estimate on this many samples of ``data`` at most.
        config, fields: the ``iba.Config`` of the new explainer, or its fields.
        cls: the ``IBA`` class to make it of (an adapter's own helpers); by default the one of
            the model's framework, found through the registry.
        progress: show the estimation's progress bar.
    """
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise TypeError(
            f"unknown keyword argument(s) {', '.join(unknown)}: besides explainer=, layer=, "
            "data=, n_samples= and config=, the keywords are iba.Config's fields (beta, steps, "
            "lr, batch_size, ...)"
        )
    fitting = {"layer": layer, "data": data, "n_samples": n_samples, "config": config, **fields}
    if explainer is not None:
        given = sorted(k for k, v in fitting.items() if v is not None)
        if given:
            raise ValueError(
                f"pass explainer= (fitted already) or layer= with data= (to fit one), not both: "
                f"got explainer= and {', '.join(k + '=' for k in given)}"
            )
        if not isinstance(explainer, Explainer):
            raise TypeError(
                "explainer must be an IBA explainer (iba_torch.IBA, iba_tf.IBA or iba_jax.IBA), "
                f"got {type(explainer).__name__}"
            )
        if cls is not None and not isinstance(explainer, cls):
            raise TypeError(
                f"explainer must be a {cls.__module__.split('.')[0]}.{cls.__name__}, got "
                f"{type(explainer).__module__.split('.')[0]}.{type(explainer).__name__}"
            )
        _check_match(model, explainer)
        return explainer
    if layer is None:
        raise ValueError(
            "pass explainer= (an IBA explainer, estimated) or layer= (the target layer) with "
            "data= (inputs to estimate its feature statistics on)"
        )
    if cls is None:
        backend = framework_of(model)
        if backend is None:
            raise TypeError(
                f"cannot tell the framework of the model: got {type(model).__name__}; IBA "
                f"explains {MODELS} (or pass explainer=, an IBA explainer of your framework)"
            )
        cls = explainer_class(backend)
    new = cls(layer, config=config, **fields)
    if data is None:
        if new.config.estimator == "corpus":
            raise ValueError(
                "layer= needs data= to estimate the layer's feature statistics on (an array "
                "of inputs or an iterable of batches), or pass explainer= (estimated already)"
            )
        return new
    new.estimate(model, data, n_samples=n_samples, progress=progress)
    return new


def _check_match(model: Any, explainer: Explainer) -> None:
    """Raise if ``explainer`` belongs to another framework than ``model``."""
    have, want = backend_of_explainer(explainer), framework_of(model)
    if have is None or want is None or have == want:
        return
    package = _packages().get(want, f"the {want} adapter")
    raise TypeError(
        f"the explainer is a {type(explainer).__module__.split('.')[0]}.{type(explainer).__name__} "
        f"(the {have} backend) but the model is a {type(model).__name__} of the {want} "
        f"backend: use {package}.IBA"
    )


def layout_hint(explainer: Explainer) -> str | None:
    """The layout of the explainer's first target's features (``None``: not known yet), the
    guess for the inputs' channel axis where their shape does not tell."""
    estimators = explainer.estimators
    layout = estimators[0].layout if estimators else explainer.layout
    return layout if layout in LAYOUTS else None


def channel_axis(
    input_shape: tuple[int, ...], map_shape: tuple[int, ...], layout: str | None = None
) -> int | None:
    """The axis of ``input_shape`` that heatmaps of ``map_shape`` lack: the channel axis of an
    image batch, 1 (``(N, C, H, W)``) or the last (``(N, H, W, C)``); ``None`` if the heatmaps
    have the inputs' shape already (token inputs ``(N, T)``).

    ``layout`` (``"channels_first"`` or ``"channels_last"``) decides where both would fit (for
    example ``(N, 8, 8, 8)`` inputs); raise if nothing fits.
    """
    x, m = tuple(int(s) for s in input_shape), tuple(int(s) for s in map_shape)
    if not x or not m or x[0] != m[0]:
        raise ValueError(
            f"{m[0] if m else 0} heatmaps for inputs of shape {x}: one heatmap per input "
            "(batch axis first)"
        )
    if x == m:
        return None
    axes = [a for a in dict.fromkeys((1, len(x) - 1)) if a > 0 and x[:a] + x[a + 1 :] == m]
    if len(axes) > 1:
        if layout not in LAYOUTS:
            raise ValueError(
                f"inputs of shape {x}: the channel axis can be axis 1 or the last; say which "
                "(channel_first=True or False)"
            )
        axes = [1 if layout == "channels_first" else len(x) - 1]
    if len(axes) == 1:
        return axes[0]
    raise ValueError(
        f"IBA's heatmaps {m} do not fit inputs of shape {x}: heatmaps come at the inputs' size "
        "for image batches (N, C, H, W) or (N, H, W, C) and per token for (N, T) inputs; give "
        "the model such a batch"
    )


def input_shaped(
    heatmaps: np.ndarray, input_shape: tuple[int, ...], layout: str | None = None
) -> np.ndarray:
    """``heatmaps`` ``(N, H, W)`` with a channel axis of 1 where the inputs have theirs:
    ``(N, 1, H, W)`` or ``(N, H, W, 1)`` (heatmaps of the inputs' shape are returned as they
    are). See :func:`channel_axis`."""
    heatmaps = np.asarray(heatmaps)
    axis = channel_axis(tuple(input_shape), heatmaps.shape, layout)
    return heatmaps if axis is None else np.expand_dims(heatmaps, axis)
