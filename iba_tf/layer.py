"""``IBALayer``: the Per-Sample Bottleneck as a Keras 3 layer (docs/mathematics.md section 2).

The layer is the identity in ``fit``, ``predict`` and every ordinary call. ``iba_tf.IBA`` drives it
with per-input ``alpha`` and noise through a hook that only the explainer's own forward passes see:
the hook belongs to the thread that set it, and it is removed before the model's outputs reach
``loss_fn``, so another thread, a nested explainer or a user's ``predict`` meanwhile runs the
identity. The non-trainable switch variable ``bottleneck_on`` is the user's: it turns on the
layer's own bottleneck (its ``alpha`` weight, its statistics, noise from ``keras.random``) in any
call, compiled ones included (a Python flag would be baked into Keras' compiled JAX functions);
``analyze`` neither reads nor sets it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

import iba
from iba_tf import _ops

# The layout of the layer's config and weights in ``.keras`` files. Files without the field were
# written before it existed, with the same layout.
FORMAT_VERSION = 1
_WEIGHTS = ("alpha", "mean", "std", "nonzero_fraction", "n_samples", "bottleneck_on")
_AGAIN = (
    "load the model with the version of iba_tf that saved it, or rebuild it with this version's "
    "IBALayer and estimate() again"
)


Hook = Callable[["IBALayer", Any], Any]
_LOCAL = threading.local()  # per thread: {id(layer): hook} of the explanations it runs


def _hooks() -> dict[int, Hook]:
    """The hooks the calling thread has set (``id(layer) -> hook``)."""
    hooks = getattr(_LOCAL, "hooks", None)
    if hooks is None:
        hooks = _LOCAL.hooks = {}
    return hooks


class _DrawnSeed(keras.random.SeedGenerator):
    """A seed already drawn (a tensor), passed where ``keras.random`` expects a generator.

    The layer draws its seed outside ``ops.cond`` so that no variable is assigned inside a branch
    (which JAX's ``lax.cond`` would not allow).
    """

    def __init__(self, value: Any):  # no state of its own: deliberately no super().__init__
        self._value = value

    def next(self, ordered: bool = True) -> Any:
        return self._value


def _concrete_jax(value: Any) -> bool:
    """Whether ``value`` is a concrete array of the JAX backend (an eager call): there, an
    ``ops.cond`` is a new ``lax.cond`` compiled on every call (0.4 s and ~3 MB each)."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return not isinstance(value, jax.core.Tracer)


@keras.saving.register_keras_serializable(package="iba_tf")
class IBALayer(keras.layers.Layer):
    """Information Bottleneck Attribution at this point of a Keras model (identity by default).

    Add it after the layer whose features should be explained, for example
    ``x = keras.layers.Conv2D(32, 3, activation="relu")(x); x = iba_tf.IBALayer()(x)``, then
    ``IBA(layer).estimate(model, data)`` and ``IBA(layer).analyze(model, x, target=...)``.

    Args:
        data_format: ``"channels_last"`` (``(H, W, C)`` features) or ``"channels_first"``
            (``(C, H, W)``); default ``keras.config.image_data_format()``. Features of rank 2
            per input, ``(T, D)``, are tokens whatever this says.
        sigma, relu, min_std, active_threshold, initial_alpha: the ``iba.Config`` fields the
            layer's own bottleneck uses when ``bottleneck_on`` is set (``analyze`` uses the
            explainer's ``Config`` and ignores the switch).
        seed: seed of the layer's own noise generator (used only with ``bottleneck_on`` set).

    Weights (all non-trainable, saved in ``.keras`` files): ``alpha`` (one per feature element);
    the estimator's ``mean``, ``std`` (Bessel-corrected, before the ``min_std`` floor),
    ``nonzero_fraction`` and ``n_samples``; the switch ``bottleneck_on``.
    """

    def __init__(
        self,
        data_format: str | None = None,
        sigma: float | None = 1.0,
        relu: bool = False,
        min_std: float = 0.01,
        active_threshold: float = 0.01,
        initial_alpha: float = 5.0,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        data_format = data_format or keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}"
            )
        # validated like every other explanation's hyper-parameters
        iba.Config(
            sigma=sigma,
            relu=relu,
            min_std=min_std,
            active_threshold=active_threshold,
            initial_alpha=initial_alpha,
        )
        self.data_format = data_format
        self.sigma = sigma
        self.relu = relu
        self.min_std = min_std
        self.active_threshold = active_threshold
        self.initial_alpha = initial_alpha
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.supports_masking = True

    @property
    def _hook(self) -> Hook | None:
        """What ``call`` runs instead of the identity in this thread: set by ``iba_tf.IBA`` for
        its own forward passes only (other threads never see it)."""
        return _hooks().get(id(self))

    @_hook.setter
    def _hook(self, hook: Hook | None) -> None:
        if hook is None:
            _hooks().pop(id(self), None)
        else:
            _hooks()[id(self)] = hook

    # -- Keras layer protocol ----------------------------------------------------------------

    def build(self, input_shape: tuple) -> None:
        shape = tuple(input_shape[1:])
        if len(shape) not in (2, 3) or any(s is None for s in shape):
            raise ValueError(
                f"IBALayer {self.name!r} needs features of a known shape (H, W, C), (C, H, W) or "
                f"(T, D) per input; got {tuple(input_shape)} (batch first)"
            )
        self.feature_shape = tuple(int(s) for s in shape)
        self.layout = "tokens" if len(shape) == 2 else self.data_format

        def weight(name: str, value: float, shape=self.feature_shape, dtype=None):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=keras.initializers.Constant(value),
                trainable=False,
                dtype=dtype,
            )

        self.alpha = weight("alpha", self.initial_alpha)
        self.mean = weight("mean", 0.0)
        self.std = weight("std", 1.0)
        self.nonzero_fraction = weight("nonzero_fraction", 1.0)
        self.n_samples = weight("n_samples", 0, shape=(), dtype="int32")
        self.bottleneck_on = weight("bottleneck_on", 0, shape=(), dtype="int32")

    def call(self, inputs: Any) -> Any:
        if self._hook is not None:
            return self._hook(self, inputs)
        on = ops.greater(self.bottleneck_on, 0)
        if keras.backend.backend() == "torch" or _concrete_jax(on):  # eager: a Python branch
            return self._bottleneck(inputs, self.seed_generator) if bool(on) else inputs
        seed = _DrawnSeed(self.seed_generator.next())
        return ops.cond(on, lambda: self._bottleneck(inputs, seed), lambda: inputs)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "data_format": self.data_format,
            "sigma": self.sigma,
            "relu": self.relu,
            "min_std": self.min_std,
            "active_threshold": self.active_threshold,
            "initial_alpha": self.initial_alpha,
            "seed": self.seed,
            "format_version": FORMAT_VERSION,
        }

    @classmethod
    def from_config(cls, config: dict) -> IBALayer:
        """The layer of a saved config; a config of another version of the layer (a newer format,
        settings this version does not know, invalid values) raises a ``ValueError`` saying so."""
        config = dict(config)
        name = config.get("name")
        version = config.pop("format_version", 1)
        if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(
                f"IBALayer {name!r} was saved in layer format {version!r}; this version of iba_tf "
                f"reads format {FORMAT_VERSION}: {_AGAIN}"
            )
        try:
            return cls(**config)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"IBALayer {name!r}: the saved config does not fit this version of the layer "
                f"({err}): {_AGAIN}"
            ) from None

    def load_own_variables(self, store: Any) -> None:
        """Keras' loading of the weights, after checking that the file holds this version's six
        weights with the built shapes."""
        expected = [tuple(v.shape) for v in self.weights]
        got = [tuple(store[k].shape) for k in sorted(store.keys(), key=lambda k: (len(k), k))]
        if got != expected:
            raise ValueError(
                f"IBALayer {self.name!r}: the file holds {len(got)} weight(s) of shapes {got}; this "
                f"version of the layer has {len(expected)} ({', '.join(_WEIGHTS)}) of shapes "
                f"{expected}: {_AGAIN}"
            )
        super().load_own_variables(store)

    # -- the layer's own bottleneck (bottleneck_on set by the user) ---------------------------

    def _bottleneck(self, inputs: Any, seed: Any) -> Any:
        dtype = self.compute_dtype
        inputs = ops.cast(inputs, dtype)
        mean, std = ops.cast(self.mean, dtype), ops.cast(self.std, dtype)
        std = ops.maximum(std, ops.cast(self.min_std, dtype))
        active = ops.cast(ops.greater(self.nonzero_fraction, self.active_threshold), dtype)
        lam = _ops.damping(ops.cast(self.alpha, dtype), self.layout, self.sigma)
        noise = keras.random.normal(ops.shape(inputs), dtype=dtype, seed=seed)
        return _ops.bottleneck(inputs, lam, std * noise + mean, active, self.relu)

    # -- the estimator's state as weights ----------------------------------------------------

    def set_estimator(self, estimator: iba.Estimator) -> None:
        """Store an ``iba.Estimator``'s statistics in the layer's weights."""
        self._require_built()
        estimator.check(self.feature_shape, self.layout)
        if estimator.n_samples < 2:
            raise ValueError(
                f"IBALayer {self.name!r}: the estimator has seen {estimator.n_samples} samples; "
                "at least 2 are needed"
            )
        self.mean.assign(estimator.mean.astype(self.mean.dtype))
        self.std.assign(estimator.std.astype(self.std.dtype))
        self.nonzero_fraction.assign(estimator.nonzero_fraction.astype(self.nonzero_fraction.dtype))
        self.n_samples.assign(np.int32(min(estimator.n_samples, np.iinfo(np.int32).max)))

    def estimator(self) -> iba.Estimator | None:
        """The statistics stored in the weights as an ``iba.Estimator`` (``None`` if empty)."""
        self._require_built()
        n = int(ops.convert_to_numpy(self.n_samples.value))
        if n < 2:
            return None
        std = ops.convert_to_numpy(self.std.value).astype(np.float64)
        fraction = ops.convert_to_numpy(self.nonzero_fraction.value).astype(np.float64)
        return iba.Estimator.from_arrays(
            {
                "format_version": iba.estimator.FORMAT_VERSION,
                "layout": self.layout,
                "feature_shape": np.array(self.feature_shape, np.int64),
                "n_samples": n,
                "mean": ops.convert_to_numpy(self.mean.value).astype(np.float64),
                "m2": std**2 * (n - 1),
                "nonzero": np.rint(fraction * n).astype(np.int64),
            },
            source=f"IBALayer {self.name!r}",
        )

    def _require_built(self) -> None:
        if not self.built:
            raise ValueError(
                f"IBALayer {self.name!r} is not built yet: call the model on data (or build it "
                "with an input shape) first"
            )
