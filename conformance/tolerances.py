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
