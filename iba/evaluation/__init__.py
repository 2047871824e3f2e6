"""Evaluation metrics for attribution maps, framework-agnostic (docs/mathematics.md section 7).

Every metric takes the model as a plain callable on NumPy batches (``(n, ...)`` in,
``(n, n_classes)`` out), so the heatmaps of every backend are evaluated the same way; perturbed
inputs are built lazily and scored ``batch_size`` at a time, with a progress bar if tqdm is
installed. Images are ``(N, H, W, C)`` by default, ``data_format="channels_first"`` for NCHW;
heatmaps are ``(N, H, W)`` at the image size. Each metric returns a small NamedTuple with the
per-input values and their mean.

- :func:`degradation`: MoRF / LeRF tile removal, area between the curves (IBA paper).
- :func:`bounding_box_ratio`: share of the top-``n`` pixels inside the ``n``-pixel box (IBA paper).
- :func:`sensitivity_n`: correlation of output drops with attribution sums (Ancona et al.).
- :func:`insertion`, :func:`deletion`: AUC of pixel insertion / deletion (RISE, CoIBA).
- :func:`confidence_drop_increase`: M2IB's confidence drop and increase for dual encoders.
- :func:`text_degradation`: target probability and accuracy after deleting the top-k tokens.

The defaults are this library's definitions (docs/mathematics.md section 7); ``variant="iba-paper"``
(degradation, sensitivity-n) and ``variant="coiba-paper"`` (insertion, deletion, with
``preprocess=``) reproduce the papers' code, and the bounding-box result also holds the IBA
paper's second ratio. docs/metrics.md lists every difference (:data:`VARIANTS`).
"""

from iba.evaluation._batching import SCORES
from iba.evaluation._variants import VARIANTS
from iba.evaluation.blur import convolution_matrix, gaussian_blur, gaussian_kernel_1d
from iba.evaluation.bounding_box import BoundingBoxResult, bounding_box_ratio, box_mask
from iba.evaluation.degradation import DegradationResult, degradation, removal_steps
from iba.evaluation.insertion_deletion import PIXELS_PER_STEP, CurveResult, auc, deletion, insertion
from iba.evaluation.m2ib import ConfidenceResult, confidence_drop_increase, cosine_similarity
from iba.evaluation.sensitivity import SensitivityNResult, sensitivity_n, subset_sizes
from iba.evaluation.text import FRACTIONS, TextDegradationResult, text_degradation

__all__ = [
    "FRACTIONS",
    "PIXELS_PER_STEP",
    "SCORES",
    "VARIANTS",
    "BoundingBoxResult",
    "ConfidenceResult",
    "CurveResult",
    "DegradationResult",
    "SensitivityNResult",
    "TextDegradationResult",
    "auc",
    "bounding_box_ratio",
    "box_mask",
    "confidence_drop_increase",
    "convolution_matrix",
    "cosine_similarity",
    "degradation",
    "deletion",
    "gaussian_blur",
    "gaussian_kernel_1d",
    "insertion",
    "removal_steps",
    "sensitivity_n",
    "subset_sizes",
    "text_degradation",
]
