"""The reference run input by input (the vectors run all inputs in one batched optimisation):
checks that explaining several inputs at once changes nothing."""

from __future__ import annotations

import numpy as np

from conformance import vectors

DTYPES = ("float64",)


def available() -> str | None:
    return None


def devices() -> list[str]:
    return ["cpu"]


def run(case: vectors.Case, dtype: str, device: str) -> dict:
    model = vectors._oracle(case.architecture)
    parts = [vectors.reference_stages(model, case, inputs=[i]) for i in range(len(case.x))]
    return {
        stage: np.concatenate([p[stage] for p in parts], axis=1 if stage == "alphas" else 0)
        for stage in parts[0]
    }
