"""``iba explain-dataset`` (iba.dataset) on the Flax (Linen) port of EfficientNet-Lite0: the tests
every backend runs (tests.dataset_checks): one row per image, the unreadable file's row, the maps
of ``iba explain``, the metric values recomputed from the model, resuming after a lost block."""

from __future__ import annotations

from tests.dataset_checks import *  # noqa: F403 (the shared fixtures and tests)

BACKEND = "jax"
