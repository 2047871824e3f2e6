"""The tolerances of the conformance suite, in one place.

float64: every stage within 1e-8 of the reference, relative to the stage's largest magnitude.
float32: the heatmap, normalised to its maximum, within 1e-3 absolute; the other stages are
reported for diagnosis (Adam with ``lr = 1`` amplifies float32 rounding where gradients vanish).
"""

STAGES = ("features", "lam", "capacity", "alphas", "heatmap")

TOLERANCE = {
    "float64": {stage: 1e-8 for stage in STAGES},
    "float32": {"heatmap": 1e-3},
}


def tolerance(dtype: str, stage: str) -> float | None:
    """The bound a stage must meet, or ``None`` if it is only reported."""
    return TOLERANCE[dtype].get(stage)


REAL_MODEL = {"features": 1e-4, "heatmap": 2.5e-2, "heatmap_mean": 2e-3}
"""The real-model case (EfficientNet-Lite0 in float32, against PyTorch): the features at the
target relative to their largest magnitude; the heatmaps normalised to their maximum, their largest
and their mean absolute difference. Measured on the CPU (2026-11-27): features 1.7e-6 to 2.6e-6;
heatmaps at most 7.2e-3 (Flax) to 1.7e-2 (Keras on torch), 6e-4 to 9e-4 on average. PyTorch's own
float32 heatmap differs from its float64 one by 5.1e-3: ten Adam steps at ``lr = 1`` amplify float32
rounding, in every framework."""

REAL_TEXT = {"bits": 5e-4, "bits_mean": 2.5e-4, "total": 5e-4}
"""The real-model text case (MiniLM in float32, against PyTorch's transformers), the worst of five
texts: the bits per token normalised to the text's maximum, their largest and mean absolute
difference, and the total bits relative to PyTorch's. Measured on the CPU (2026-11-30): bits
3.2e-5 to 3.3e-5, mean 2.5e-5 to 2.6e-5, total 6.1e-5 on every port (Keras on TensorFlow, JAX and
torch, Flax Linen); the bounds leave a factor of about 15."""

READOUT = 1e-8
"""The Readout Bottleneck case (``conformance/readout.py``, float64): ``alpha``, ``lam``, the
capacity and the heatmap of every backend within 1e-8 of the NumPy reference, relative to each
stage's largest magnitude."""

REAL_PAIR = {"image": 5e-3, "image_mean": 1e-3, "bits": 1e-3, "share": 5e-4, "similarity": 1e-5}
"""The real-model M2IB case (``conformance/real_pair.py``, float32, every port against PyTorch):
the image maps (in ``[0, 1]``: largest and mean absolute difference per pair), the captions' bits
per token normalised to their maximum, the share of the map on the named half, and the clean
cosine similarity. Measured (CPU, 2026-11-30, two pairs), the worst port: 2.5e-3, 7.1e-5, 2.7e-5,
8.2e-5 and 1.3e-7."""
