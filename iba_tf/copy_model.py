"""``IBACopy``: explain a Functional or Sequential model you cannot edit.

The copy calls the original's layer objects, with an ``IBALayer`` after the named layer, so it
shares every weight (later training of the original shows in the copy) and the original model is
not changed. The interface follows iNNvestigate's analyzers: ``fit`` on data, then ``analyze``
with a neuron selection (``"index"``, ``"max_activation"`` or ``"all"``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

import iba
from iba_tf import _graph
from iba_tf.explainer import IBA
from iba_tf.layer import IBALayer

NEURON_SELECTION_MODES = ("index", "max_activation", "all")


class IBACopy:
    """A copy of ``model`` with an Information Bottleneck after ``layer``, and its explainer.

    Args:
        model: a built Functional or Sequential ``keras.Model`` (it is not changed).
        layer: the layer (object or name) whose output is explained.
        neuron_selection_mode: the class a heatmap explains: ``"max_activation"`` (the model's
            prediction on the clean input), ``"index"`` (given to ``analyze``) or ``"all"`` (one
            heatmap per output class).
        data_format: ``"channels_last"`` or ``"channels_first"`` features (default
            ``keras.config.image_data_format()``).
        **config: fields of ``iba.Config`` (``beta``, ``steps``, ``batch_size``, ...).

    Attributes:
        model: the copy (a Functional model that shares the original's layers).
        layer: its ``IBALayer``.
        explainer: the ``iba_tf.IBA`` explainer of ``layer``.

    Example:
        >>> analyzer = IBACopy(model, "conv2", neuron_selection_mode="max_activation")
        >>> analyzer.fit(x_train, n_samples=5000)
        >>> heatmaps = analyzer.analyze(x_test[:8])  # (8, H, W), bits
    """

    def __init__(
        self,
        model: keras.Model,
        layer: Any,
        neuron_selection_mode: str = "max_activation",
        data_format: str | None = None,
        **config: Any,
    ):
        if neuron_selection_mode not in NEURON_SELECTION_MODES:
            raise ValueError(
                f"neuron_selection_mode must be one of {NEURON_SELECTION_MODES}, "
                f"got {neuron_selection_mode!r}"
            )
        target = _graph.find_layer(model, layer)
        if isinstance(target, IBALayer):
            raise ValueError(
                f"layer {target.name!r} is already an IBALayer: explain the model with "
                "iba_tf.IBA(layer) instead of copying it"
            )
        self.original = model
        self.neuron_selection_mode = neuron_selection_mode
        self.layer = IBALayer(data_format, name=f"iba_{target.name}")
        self.model = _graph.insert_after(model, {target.name: self.layer})
        self.explainer = IBA(self.layer, **config)

    @property
    def estimators(self) -> list[iba.Estimator]:
        """The explainer's ``iba.Estimator`` (one)."""
        return self.explainer.estimators

    def fit(
        self, data: Iterable, n_samples: int | None = None, progress: bool = True
    ) -> list[iba.Estimator]:
        """Estimate the feature statistics at the layer (``IBA.estimate``)."""
        return self.explainer.estimate(self.model, data, n_samples=n_samples, progress=progress)

    estimate = fit

    def save_estimators(self, path: str | os.PathLike) -> None:
        """``IBA.save_estimators``."""
        self.explainer.save_estimators(path)

    def load_estimators(self, path: str | os.PathLike) -> list[iba.Estimator]:
        """``IBA.load_estimators``."""
        return self.explainer.load_estimators(path)

    def analyze(
        self,
        x: Any,
        neuron_selection: int | Iterable[int] | None = None,
        noise: Any = None,
        seed: int | None = None,
        details: bool = False,
    ) -> np.ndarray | iba.Explanation:
        """Heatmaps in bits of the classes chosen by ``neuron_selection_mode``.

        Args:
            x: ``N`` inputs.
            neuron_selection: the class, or one per input, for mode ``"index"`` only.
            noise, seed, details: as in ``IBA.analyze``; in mode ``"all"`` the noise is for the
                ``N * K`` explanations (input-major: input ``i``, class ``k`` is row ``i*K + k``).

        Returns:
            ``(N, H, W)`` (``(N, T)`` for tokens); mode ``"all"``: ``(N, K, H, W)`` for ``K``
            output classes.
        """
        mode = self.neuron_selection_mode
        if mode == "index":
            if neuron_selection is None:
                raise ValueError(
                    "neuron_selection_mode='index' needs analyze(x, neuron_selection=class)"
                )
            target = neuron_selection
        elif neuron_selection is not None:
            raise ValueError(
                f"neuron_selection is given to analyze() only in mode 'index', not {mode!r}"
            )
        x = ops.convert_to_tensor(x)
        if mode == "max_activation":
            target = np.argmax(ops.convert_to_numpy(self.original(x, training=False)), axis=-1)
        if mode != "all":
            return self.explainer.analyze(
                self.model, x, target=target, noise=noise, seed=seed, details=details
            )
        n_inputs = int(x.shape[0])
        n_classes = int(self.original.outputs[0].shape[-1])
        repeated = ops.repeat(x, n_classes, axis=0)
        target = np.tile(np.arange(n_classes), n_inputs)
        result = self.explainer.analyze(
            self.model, repeated, target=target, noise=noise, seed=seed, details=details
        )
        if not isinstance(result, iba.Explanation):  # details=False: the heatmaps
            return result.reshape(n_inputs, n_classes, *result.shape[1:])
        maps = result.heatmap
        assert maps is not None  # the driver's explanation() sets it
        result.heatmap = maps.reshape(n_inputs, n_classes, *maps.shape[1:])
        return result
