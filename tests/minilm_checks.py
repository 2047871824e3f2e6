"""What the Keras and Flax tests of their MiniLM ports share: the texts, the corpus, the sentiment
head (the bundled one, or a seeded random one where the package does not ship it) and the check of
the sentiment model's logits against the float64 NumPy forward pass. Imported as
``tests.minilm_checks`` (pytest's ``pythonpath``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from iba.models import minilm as reference

TEXTS = (
    "A truly wonderful film.",
    "The plot was dull, predictable and far too long for its own good.",
    "Meh.",
)
CORPUS = (
    "I loved it.",
    "Terrible acting.",
    "A masterpiece of modern cinema.",
    "Not worth the ticket.",
    "It was fine, I guess.",
    "The soundtrack is great.",
    "Boring.",
    "What a ride!",
)


def int32(encoding: reference.Encoding) -> dict[str, np.ndarray]:
    """The encoding's inputs as int32 arrays, as the ports take them."""
    return {k: v.astype(np.int32) for k, v in encoding.inputs.items()}


def head() -> Any:
    """The bundled sentiment head (``"bundled"``), or a random one where it is not shipped."""
    if reference.SENTIMENT_HEAD.exists():
        return "bundled"
    rng = np.random.default_rng(0)
    return {"weight": 0.1 * rng.standard_normal((2, 384)), "bias": np.zeros(2)}


def check_sentiment_logits(
    logits: np.ndarray, head: Any, weights: dict, encoding: reference.Encoding
) -> None:
    """The port's logits of :data:`TEXTS` equal the NumPy forward pass's, and the bundled head
    calls the first text fresh and the others rotten."""
    assert logits.shape == (3, 2)
    hidden = reference.numpy_forward(weights, encoding.input_ids, encoding.attention_mask)
    weight, bias = reference.read_head(head)
    expected = reference.mean_pooling(hidden, encoding.attention_mask) @ weight.T + bias
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    if head == "bundled":
        np.testing.assert_array_equal(logits.argmax(1), [1, 0, 0])  # fresh, rotten, rotten
