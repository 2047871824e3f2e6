"""Shared test vectors, regenerated from fixed seeds: models, weights, inputs, targets,
estimator statistics, noise for every step, and the reference's result at every stage.

Everything is channels-first (PyTorch's convention); ``to_channels_last`` converts for Keras and
Flax. Cases: a CNN with one bottleneck (IBA), the CNN with two bottlenecks sharing ``alpha``
(CoIBA on a CNN), and a ViT with bottlenecks after ``norm1`` of two blocks (CoIBA).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np

import iba
from iba import nn

N_INPUTS = 2
IMAGE = (1, 8, 8)
ESTIMATOR_SAMPLES = 1200


@dataclasses.dataclass(frozen=True)
class Case:
    """One conformance case; arrays are channels-first, float64."""

    name: str
    architecture: str  # "cnn" or "vit"
    weights: dict  # parameter name (PyTorch naming and shapes) -> array
    targets: tuple  # target layer names (PyTorch naming)
    layout: str  # layout of the target features in PyTorch: channels_first or tokens
    config: iba.Config
    x: np.ndarray  # (N, C, H, W)
    target: np.ndarray  # (N,) class labels
    estimators: tuple  # one iba.Estimator per target
    noise: tuple  # one (steps, N, B, *F) array per target
    expected: dict  # stage -> reference array
    token_mask: np.ndarray | None = None  # (N, T) for token features: 0 at "padding"


def cnn_weights(model: nn.Sequential) -> dict:
    """The tiny CNN's parameters in PyTorch names and shapes."""
    weights = {}
    for name, layer in model.layers:
        if hasattr(layer, "weight"):
            weights[f"{name}.weight"] = layer.weight
            weights[f"{name}.bias"] = layer.bias
    return weights


def _oracle(architecture: str):
    return nn.tiny_cnn(0) if architecture == "cnn" else nn.tiny_vit(0, depth=2)


def _fit_estimators(model, targets, layout):
    data = np.random.default_rng(100).standard_normal((ESTIMATOR_SAMPLES, *IMAGE))
    estimators = []
    for features in nn.capture(model, data, targets):
        est = iba.Estimator(layout=layout)
        est.update(features)
        estimators.append(est)
    return tuple(estimators)


def _statistics(case_estimators, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [e.statistics_for(config) for e in case_estimators]


SPECS = {
    "cnn": ("cnn", ("relu2",), "channels_first", iba.Config(relu=True)),
    "cnn-coiba": ("cnn", ("relu1", "relu2"), "channels_first", iba.coiba_config(sigma=1.0)),
    "vit-coiba": ("vit", ("blocks.0.norm1", "blocks.1.norm1"), "tokens", iba.coiba_config()),
    "vit-text": ("vit", ("blocks.1.norm1",), "tokens", iba.text_config()),  # clamp, ddof 0
    "vit-mask": ("vit", ("blocks.1.norm1",), "tokens", iba.Config()),  # analyze(token_mask=)
}
# The cases whose inputs have "padding": analyze's token_mask zeroes the last tokens of each.
PADDING = {"vit-mask": (2, 6)}  # tokens masked at the end, per input
CASES = tuple(SPECS)


def reference_stages(model, case_like, inputs=None) -> dict:
    """Run the reference on (a subset of) the case's inputs; return every stage."""
    inputs = np.arange(N_INPUTS) if inputs is None else np.asarray(inputs)
    x, target = case_like.x[inputs], case_like.target[inputs]
    features = nn.capture(model, x, case_like.targets[:1])[0]
    ex = iba.per_sample_bottleneck(
        features,
        _statistics(case_like.estimators, case_like.config),
        None,
        [n[:, inputs] for n in case_like.noise],
        case_like.config,
        layout=case_like.layout,
        model=nn.classifier(model, x, target, list(case_like.targets)),
        token_mask=None if case_like.token_mask is None else case_like.token_mask[inputs],
    )
    if case_like.architecture == "vit":
        heatmap = iba.vit_heatmap(ex.capacity, grid=(4, 4), input_size=IMAGE[1:])
    else:
        heatmap = iba.heatmap(ex.capacity, case_like.layout, input_size=IMAGE[1:])
    return {
        "features": features,
        "lam": ex.lam,
        "capacity": ex.capacity,
        "alphas": ex.alphas,
        "heatmap": heatmap,
    }


@functools.cache
def case(name: str) -> Case:
    """The case ``name`` (cached)."""
    if name not in SPECS:
        raise ValueError(f"unknown case {name!r}; cases are: {', '.join(CASES)}")
    architecture, targets, layout, config = SPECS[name]
    model = _oracle(architecture)
    weights = cnn_weights(model) if architecture == "cnn" else dict(model.params)
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.standard_normal((N_INPUTS, *IMAGE))
    target = rng.integers(0, 10, N_INPUTS)
    estimators = _fit_estimators(model, targets, layout)
    noise = tuple(
        iba.draw_noise(7 + i, config.steps, config.batch_size, e.feature_shape, n_inputs=N_INPUTS)
        for i, e in enumerate(estimators)
    )
    token_mask = None
    if name in PADDING:
        token_mask = np.ones((N_INPUTS, estimators[0].feature_shape[0]))
        for i, k in enumerate(PADDING[name]):
            token_mask[i, -k:] = 0.0
    draft = Case(
        name, architecture, weights, targets, layout, config, x, target, estimators, noise, {},
        token_mask,
    )  # fmt: skip
    return dataclasses.replace(draft, expected=reference_stages(model, draft))


def to_channels_last(array: np.ndarray, lead: int = 1) -> np.ndarray:
    """Move the channel axis of ``(*lead_axes, C, H, W)`` to the end."""
    return np.moveaxis(array, lead, -1)


def estimator_channels_last(est: iba.Estimator) -> iba.Estimator:
    """The same statistics for channels-last features ``(H, W, C)``."""
    arrays = est.to_arrays()
    for key in ("mean", "m2", "nonzero"):
        arrays[key] = np.moveaxis(arrays[key], 0, -1)
    arrays["feature_shape"] = np.array(arrays["mean"].shape)
    arrays["layout"] = np.array("channels_last")
    return iba.Estimator.from_arrays(arrays)
