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

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
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


class Readout(shared.ReadoutExplainer):
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
    ``iba_torch.Readout``'s (both are ``iba.readout.ReadoutExplainer``): ``estimate``, ``fit``,
    ``analyze``, ``save`` / ``load`` (``iba.readout``'s file, shared with PyTorch and Keras).
    ``weights`` are the network's ``[w0, b0, w1, b1, w2, b2]`` (NumPy, ``w`` as ``(out, in)``).
    ``fit`` draws the noise from NumPy's generator seeded with ``seed`` and runs Adam (optax, the
    reference's constants), one ``jax.jit`` per step.
    """

    framework = "flax"
    layout: str  # always set (default_layout)
    default_layout = "channels_last"
    one_target = (str, tuple)
    many_targets = (list,)
    target_words = ("module path", "module paths")

    def __init__(self, bottleneck: Any, readouts: Sequence[Any], **options: Any):
        super().__init__(bottleneck, readouts, **options)
        self.engine = JaxEngine(self._targets)

    @property
    def names(self) -> list[str]:
        """The module paths, bottleneck first, ``/``-joined."""
        return [_hooks.format_path(p) for p in self.engine.paths]

    def _maps(self, features: Sequence[Any]) -> list:
        maps = [shared.as_map(f, self.layout, n) for f, n in zip(features, self.names)]
        shared.check_bottleneck_shape(tuple(maps[0].shape[1:]), self.names[0])
        return maps

    @contextlib.contextmanager
    def _estimation(self, model: Any) -> Iterator[tuple[Callable, str]]:
        with self.engine.estimation(model) as capture:
            yield (lambda batch: self._maps(capture(batch))), self.layout

    def _stats(self, dtype: Any) -> list[_math.LayerStats]:
        return [
            _math.LayerStats(*(jnp.asarray(a, dtype) for a in s))
            for s in shared.statistics(self.estimators, self.config)
        ]

    def _features(self, session: Any, x: Any) -> list:
        capture, dynamic, _ = self.engine.capture_fn(session, len(self.engine.paths))
        with driver.running_on(x):
            features = self._maps(capture(dynamic, x))
        return self._checked(features, self.names)

    # -- training --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _training(
        self, model: Any, weights: list[np.ndarray], lr: float, seed: int | None
    ) -> Iterator[shared.Step]:
        rng = np.random.default_rng(seed)
        optimizer = _math.adam(lr)
        layout = self.layout
        state: dict[str, Any] = {}
        with self.engine.session(model) as session:
            static, dynamic, _ = session.capture_parts()
            jitted = jax.jit(self._step(session.runner(static), optimizer))

            def step(x: Any, y: Any) -> float:
                x = jax.tree.map(jnp.asarray, x)
                driver.check_finite(x)
                features = self._features(session, x)
                r = features[0]
                if "params" not in state:
                    state["params"] = [jnp.asarray(w, r.dtype) for w in weights]
                    state["opt"] = optimizer.init(state["params"])
                    state["stats"] = self._stats(r.dtype)
                stats = state["stats"]
                labels = shared.check_labels(y, int(r.shape[0]))
                readin = readout_input(features[1:], stats[1:], shared.grid(r.shape[1:], layout),
                                       layout)  # fmt: skip
                noise = jnp.asarray(rng.standard_normal(r.shape), r.dtype)
                state["params"], state["opt"], loss = jitted(
                    state["params"], state["opt"], dynamic, x, r, readin, noise,
                    jnp.asarray(labels, jnp.int32), stats[0],
                )  # fmt: skip
                return float(loss)

            yield step
        if "params" in state:
            self.weights = [np.asarray(p, np.float64) for p in state["params"]]

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

    def _forward(
        self, model: Any, weights: list[np.ndarray], x: Any
    ) -> tuple[Any, Any, Any, tuple[int, int] | None]:
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
        size = None
        if isinstance(x, jax.Array) and x.ndim == 4:
            size = tuple(x.shape[1:3]) if layout == "channels_last" else tuple(x.shape[2:])
        return cap, alpha, lam, size

    # -- save / load -----------------------------------------------------------------------------

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
        return cls._from_file(path, bottleneck, readouts, layout, layout=layout)
