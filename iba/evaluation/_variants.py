"""The metrics' variants: the library's definitions or the papers' code (docs/metrics.md).

``variant="library"`` (the default of every metric) is this library's definition
(docs/mathematics.md section 7); ``"iba-paper"`` reproduces the code behind the IBA paper's
tables (Schulz et al., ICLR 2020: degradation, sensitivity-n), ``"coiba-paper"`` the code behind
CoIBA's (Hong et al., CVPR 2025: insertion, deletion). docs/metrics.md lists every difference.
"""

from __future__ import annotations

VARIANTS = ("library", "iba-paper", "coiba-paper")
"""Every variant name; each metric accepts ``"library"`` and the paper it comes from."""


def check_variant(variant: str, metric: str, allowed: tuple[str, ...]) -> str:
    """Return ``variant`` if ``metric`` has it, else raise naming the metric's variants."""
    if variant not in allowed:
        raise ValueError(
            f"{metric}: unknown variant {variant!r}; its variants are: {', '.join(allowed)} "
            "(docs/metrics.md compares them)"
        )
    return variant
