"""IBA as a Quantus ``explain_func``, on any backend: NumPy in, NumPy out.

Quantus (0.6) calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)``
with the user's raw model, a NumPy batch in the model's layout and the class per input, and wants
one attribution per input that it can line up with the input: ``(N, 1, H, W)`` for
channels-first images, ``(N, H, W, 1)`` for channels-last ones. This module does not import
Quantus (nor any framework): the engine comes from the model's framework through the registry.

    >>> import quantus                                                    # doctest: +SKIP
    >>> from iba.interop.quantus import explain_func                      # doctest: +SKIP
    >>> metric = quantus.MaxSensitivity(nr_samples=5)                      # doctest: +SKIP
    >>> metric(model=model, x_batch=x, y_batch=y, explain_func=explain_func,
    ...        explain_func_kwargs={"explainer": explainer})               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from iba.config import Config
from iba.driver import Explainer, check_finite, to_numpy
from iba.interop.common import explainer_for, input_shaped, layout_hint


def explain_func(
    model: Any,
    inputs: Any,
    targets: Any,
    *,
    explainer: Explainer | None = None,
    layer: Any = None,
    data: Iterable | Any = None,
    n_samples: int | None = None,
    config: Config | None = None,
    seed: int | None = None,
    channel_first: bool | None = None,
    device: Any = None,
    **fields: Any,
) -> np.ndarray:
    """IBA heatmaps of ``inputs`` as Quantus takes attributions (docs/mathematics.md section 2;
    CoIBA, section 4, when the explainer has several targets).

    Args:
        model: a torch.nn.Module, a keras.Model or a Flax model; left exactly as it was.
        inputs: a batch of inputs, batch axis first, in the model's layout (Quantus gives NumPy).
        targets: the class of each input (or one for all).
        explainer: an ``IBA`` explainer of the model's framework, estimated already: the
            statistics are fitted once, outside the metric. Or, instead:
        layer, data, n_samples, config, **fields: a new explainer at ``layer`` with this config,
            estimated on ``data`` (up to ``n_samples``) on **every** call, for metrics that
            change the model between calls (Quantus' parameter randomisation).
        seed: the seed of IBA's noise (default: ``iba.driver.DEFAULT_SEED``): the same input
            gives the same heatmap, also across the calls of a robustness metric.
        channel_first: where the inputs' channel axis is, when their shape does not say
            (``(N, 8, 8, 8)``); by default the target's feature layout.
        device: what Quantus passes when the metric gets ``device=``: unused, the model runs on
            its own device.

    Returns:
        float64 ``(N, 1, H, W)`` for channels-first image inputs, ``(N, H, W, 1)`` for
        channels-last ones, ``(N, T)`` for token inputs ``(N, T)``; in bits.
    """
    del device  # the engines run the model where its weights are
    if inputs is None:
        raise TypeError("inputs is None: pass a batch of inputs (batch axis first)")
    check_finite(inputs, "inputs")
    x = to_numpy(inputs)
    if x.ndim < 2:
        raise ValueError(
            f"inputs of shape {x.shape}: pass a batch of inputs, batch axis first (one input: "
            "inputs[None])"
        )
    if targets is None:
        raise ValueError("targets is None: IBA explains a class; pass one per input")
    use = explainer_for(model, explainer, layer, data, n_samples=n_samples, config=config, **fields)
    heatmaps = use.analyze(model, x, target=to_numpy(targets), seed=seed)
    assert isinstance(heatmaps, np.ndarray)  # details=False
    if channel_first is None:
        layout = layout_hint(use)
    else:
        layout = "channels_first" if channel_first else "channels_last"
    return input_shaped(heatmaps, x.shape, layout)
