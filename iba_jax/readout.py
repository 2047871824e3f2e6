"""The Readout Bottleneck for Flax Linen and NNX (Schulz et al., ICLR 2020, section 3.2;
docs/mathematics.md section 3).

A small network of 1x1 convolutions predicts ``alpha`` from features read at several module
paths, in one forward pass; it is trained over a data set to minimise cross entropy plus ``beta``
times the bottleneck's mean capacity. What does not depend on JAX (constants, layer sizes, the
NumPy reference, the file format, the checks) is ``iba.readout``; the arithmetic here is its
translation into ``jax.numpy`` with the bottleneck of ``iba_jax._math``. The model is reached as
``iba_jax.IBA`` reaches it (Linen method interceptors, NNX module surgery undone on exit); each
training step is one ``jax.jit``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import iba
from iba import driver
from iba import readout as shared
from iba.readout import ALPHA_BOUND, LAST_BIAS, LAST_SCALE
from iba_jax import _hooks, _math
from iba_jax.explainer import JaxEngine

__all__ = ["ALPHA_BOUND", "LAST_BIAS", "LAST_SCALE", "Readout"]

HIGHEST = jax.lax.Precision.HIGHEST


def network(params: Sequence[jax.Array], x: jax.Array, layout: str) -> jax.Array:
    """``iba.readout.network`` in ``jnp``: three 1x1 convolutions, ReLUs, the clamp to
    ``[-5, 5]`` (gradient 1 at the bounds, as ``torch.clamp``)."""
    spec = "oi,nihw->nohw" if layout == "channels_first" else "oi,nhwi->nhwo"
    for k in range(3):
        bias = params[2 * k + 1]
        if layout == "channels_first":
            bias = bias[:, None, None]
        x = jnp.einsum(spec, params[2 * k], x, precision=HIGHEST) + bias
        if k < 2:
            x = jax.nn.relu(x)
    return x - jax.nn.relu(x - ALPHA_BOUND) + jax.nn.relu(-ALPHA_BOUND - x)


def readout_input(readouts: Sequence[jax.Array], stats, size, layout: str) -> jax.Array:
    """``iba.readout.readout_input`` in ``jnp``: standardise, expand ``1 x 1`` maps, resize the
    others with ``iba.resize_matrix``, concatenate on channels."""
    height, width = size
    first = layout == "channels_first"
    parts = []
    for f, s in zip(readouts, stats):
        f = (f - s.mean) / s.std
        h, w = shared.grid(f.shape[1:], layout)
        if (h, w) == (1, 1):
            shape = list(f.shape)
            if first:
                shape[2:] = [height, width]
            else:
                shape[1:3] = [height, width]
            parts.append(jnp.broadcast_to(f, shape))
            continue
        a_h = jnp.asarray(iba.resize_matrix(h, height), f.dtype)
        a_w = jnp.asarray(iba.resize_matrix(w, width), f.dtype)
        spec = "Hh,nchw,Ww->ncHW" if first else "Hh,nhwc,Ww->nHWc"
        parts.append(jnp.einsum(spec, a_h, f, a_w, precision=HIGHEST))
    return jnp.concatenate(parts, axis=1 if first else -1)


class Readout:
    """A Readout Bottleneck at module path ``bottleneck`` that reads ``readouts`` (Flax).

    Args:
        bottleneck: the module path whose output the bottleneck replaces (a tuple or a
            ``/``-joined string, as in ``iba_jax.IBA``); its features must be maps ``(H, W, C)``.
        readouts: module paths whose outputs predict ``alpha``, in the order the forward pass runs
            them: feature maps are resized to the bottleneck's ``H x W``, vectors ``(D,)`` (e.g.
            logits) are expanded.
        beta, sigma, relu, min_std, active_threshold: as in ``iba.Config``.
        layout: of every layer's features, ``"channels_last"`` (default) or ``"channels_first"``.

    The model is a Linen ``(module, variables)`` pair (or a triple with ``apply_kwargs``), a bound
    Linen module or an ``nnx.Module``, as for ``iba_jax.IBA``; it is left as it was. The API is
    ``iba_torch.Readout``'s: ``estimate``, ``fit``, ``analyze``, ``save`` / ``load``
    (``iba.readout``'s file, shared with PyTorch and Keras). ``weights`` are the network's
    ``[w0, b0, w1, b1, w2, b2]`` (NumPy, ``w`` as ``(out, in)``).
    """

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
        layout: str = "channels_last",
    ):
        if isinstance(bottleneck, list):
            raise TypeError("bottleneck must be one module path")
        if isinstance(readouts, (str, tuple)) or not list(readouts):
            raise TypeError("readouts must be a non-empty list of module paths")
        self.engine = JaxEngine([bottleneck, *readouts])
        self.layout = shared.check_layout(layout)
        self.config = iba.Config(
            beta=beta, sigma=sigma, relu=relu, min_std=min_std, active_threshold=active_threshold
        )
        self.estimators: list[iba.Estimator] = []
        self.weights: list[np.ndarray] | None = None
        self.losses: list[float] = []

    @property
    def names(self) -> list[str]:
        """The module paths, bottleneck first, ``/``-joined."""
        return [_hooks.format_path(p) for p in self.engine.paths]

    def __repr__(self) -> str:
        names = self.names
        return f"Readout(bottleneck={names[0]!r}, readouts={names[1:]}, config={self.config})"

    def _maps(self, features: Sequence[Any]) -> list:
        maps = [shared.as_map(f, self.layout, n) for f, n in zip(features, self.names)]
        shared.check_bottleneck_shape(tuple(maps[0].shape[1:]), self.names[0])
        return maps

    # -- statistics ------------------------------------------------------------------------------

    def estimate(
        self, model: Any, data: Iterable, n_samples: int | None = None, progress: bool = True
    ) -> list[iba.Estimator]:
        """Fit the estimators of the bottleneck and of every readout layer (docs/mathematics.md
        section 1); vector readouts are kept as ``1 x 1`` maps. Builds the readout network (fresh
        weights, ``iba.readout.init_weights``) for the channel counts found."""
        with self.engine.estimation(model) as capture:
            self.estimators = driver.fit_estimators(
                lambda batch: self._maps(capture(batch)),
                data,
                n_samples,
                progress,
                layout=lambda shape, i: self.layout,
                desc="Readout estimate",
            )
        self.weights = shared.init_weights(*shared.network_sizes(self.estimators))
        return self.estimators

    def _ready(self) -> list[np.ndarray]:
        shared.require(self.estimators, self.weights)
        assert self.weights is not None
        self.estimators = [shared.to_layout(e, self.layout) for e in self.estimators]
        return shared.check_weights(self.weights, *shared.network_sizes(self.estimators))

    def _stats(self, dtype: Any) -> list[_math.LayerStats]:
        return [
            _math.LayerStats(*(jnp.asarray(a, dtype) for a in s))
            for s in shared.statistics(self.estimators, self.config)
        ]

    def _features(self, session: Any, x: Any) -> list:
        capture, dynamic, _ = self.engine.capture_fn(session, len(self.engine.paths))
        with driver.running_on(x):
            features = self._maps(capture(dynamic, x))
        shared.check_features([f.shape[1:] for f in features], self.estimators, self.names)
        return features

    # -- training --------------------------------------------------------------------------------

    def fit(
        self,
        model: Any,
        data: Iterable,
        epochs: int = 10,
        lr: float = 1e-5,
        progress: bool = True,
        seed: int | None = None,
    ) -> list[float]:
        """Train the readout network over ``data`` (``(inputs, labels, ...)`` batches).

        Loss per batch: cross entropy of the labels on the bottlenecked model plus ``beta *
        mean(capacity)``, one noise draw per input (NumPy's generator seeded with ``seed``); Adam
        (optax, the reference's constants) on the network only, one ``jax.jit`` per step. The
        model is left as it was. Returns (and appends to ``self.losses``) the loss of every batch.
        """
        weights = self._ready()
        epochs, lr = shared.check_fit_args(epochs, lr)
        rng = np.random.default_rng(seed)
        optimizer = _math.adam(lr)
        log: list[float] = []
        params: list[jax.Array] | None = None
        with self.engine.session(model) as session:
            static, dynamic, _ = session.capture_parts()
            step = jax.jit(self._step(session.runner(static), optimizer))
            opt_state = None
            for _ in driver.steps(epochs, progress, desc="Readout fit"):
                for x, y in shared.labelled(data):
                    x = jax.tree.map(jnp.asarray, x)
                    driver.check_finite(x)
                    features = self._features(session, x)
                    r = features[0]
                    if params is None:
                        params = [jnp.asarray(w, r.dtype) for w in weights]
                        opt_state = optimizer.init(params)
                        stats = self._stats(r.dtype)
                    labels = shared.check_labels(y, int(r.shape[0]))
                    size = shared.grid(r.shape[1:], self.layout)
                    readin = readout_input(features[1:], stats[1:], size, self.layout)
                    noise = jnp.asarray(rng.standard_normal(r.shape), r.dtype)
                    params, opt_state, loss = step(
                        params, opt_state, dynamic, x, r, readin, noise,
                        jnp.asarray(labels, jnp.int32), stats[0],
                    )  # fmt: skip
                    log.append(float(loss))
                    if not np.isfinite(log[-1]):
                        raise ValueError(
                            f"the loss is NaN or infinite at batch {len(log)}: lower lr or check "
                            "the data and labels"
                        )
        if params is not None:
            self.weights = [np.asarray(p, np.float64) for p in params]
        self.losses.extend(log)
        return log

    def _step(self, run: _hooks.Runner, optimizer: optax.GradientTransformation) -> Callable:
        """``(params, opt_state, dynamic, x, r, readin, noise, labels, stats) -> (params,
        opt_state, loss)``: the loss, its gradient for the network's ``params``, one Adam update."""
        config, layout = self.config, self.layout

        def objective(params, dynamic, x, r, readin, noise, labels, stats):
            lam = _math.damping(network(params, readin, layout), layout, config.sigma)
            z = _math.bottleneck(r, lam, stats.std * noise + stats.mean, stats.mask, config.relu)

            def hook(layer: int, compute: Callable[[], Any]) -> Any:
                return z.astype(r.dtype) if layer == 0 else compute()

            with _hooks.active(hook):
                outputs = run(dynamic, None, x)
            n = r.shape[0]
            cross_entropy = jnp.mean(_math.classification_loss(outputs, labels, n))
            cap = _math.capacity(r, lam, stats.mean, stats.std, stats.mask)
            return cross_entropy + config.beta * jnp.mean(cap)

        def step(params, opt_state, dynamic, x, r, readin, noise, labels, stats):
            loss, grads = jax.value_and_grad(objective)(
                params, dynamic, x, r, readin, noise, labels, stats
            )
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        return step

    # -- heatmaps --------------------------------------------------------------------------------

    def analyze(self, model: Any, x: Any, details: bool = False) -> np.ndarray | iba.Explanation:
        """Heatmaps of ``x`` in bits from one forward pass (no optimisation): ``(N, H, W)``.

        With ``details=True``, an ``iba.Explanation`` with ``capacity``, ``alpha``, ``lam`` (in
        the model's layout) and the heatmap (``alphas`` holds the one ``alpha``, ``losses`` is
        empty).
        """
        weights = self._ready()
        driver.check_finite(x)
        x = jax.tree.map(jnp.asarray, x)
        layout = self.layout
        with self.engine.session(model) as session:
            features = self._features(session, x)
        r = features[0]
        stats = self._stats(r.dtype)
        params = [jnp.asarray(w, r.dtype) for w in weights]
        readin = readout_input(features[1:], stats[1:], shared.grid(r.shape[1:], layout), layout)
        alpha = network(params, readin, layout)
        lam = _math.damping(alpha, layout, self.config.sigma)
        cap = _math.capacity(r, lam, *stats[0])
        capacity = np.asarray(cap, np.float64)
        size = None
        if isinstance(x, jax.Array) and x.ndim == 4:
            size = tuple(x.shape[1:3]) if layout == "channels_last" else tuple(x.shape[2:])
        maps = iba.heatmap(capacity, layout, size)
        if not details:
            return maps
        alpha_np = np.asarray(alpha, np.float64)
        return iba.Explanation(
            capacity=capacity,
            alpha=alpha_np,
            lam=np.asarray(lam, np.float64),
            alphas=alpha_np[None],
            losses=np.zeros((0, alpha_np.shape[0])),
            heatmap=maps,
        )

    # -- save / load -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the readout to ``path`` (``iba.readout``'s ``.npz``, no pickle, the same for
        every framework; module paths ``/``-joined)."""
        shared.require(self.estimators, self.weights)
        assert self.weights is not None
        shared.save(
            path, self.names, self.config, self.estimators, self.weights, self.losses, "flax"
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        bottleneck: Any = None,
        readouts: Sequence[Any] | None = None,
        layout: str = "channels_last",
    ) -> Readout:
        """Read a readout written by ``save`` of any framework; ``bottleneck`` and ``readouts``
        replace the saved layer names (a file of another framework names its layers), and the
        statistics are converted to ``layout``."""
        data = shared.load(path, layout=layout)
        targets = data["targets"]
        readout = cls(
            targets[0] if bottleneck is None else bottleneck,
            targets[1:] if readouts is None else list(readouts),
            layout=layout,
            **shared.config_dict(data["config"]),
        )
        if len(readout.engine.paths) != len(targets):
            raise ValueError(
                f"{os.fspath(path)} reads {len(targets) - 1} readout layer(s); "
                f"{len(readout.engine.paths) - 1} given"
            )
        readout.estimators = data["estimators"]
        readout.weights = shared.check_weights(
            data["weights"], *shared.network_sizes(readout.estimators)
        )
        readout.losses = data["losses"]
        return readout
