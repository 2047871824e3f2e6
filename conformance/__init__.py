"""Cross-backend conformance: every backend's explanation equals the NumPy reference's.

Shared test vectors (``vectors.py``) are regenerated from fixed seeds; every backend in
``backends/`` builds the same architectures with the same weights, runs on the same noise, and
reports each stage (features at the target, ``lam``, capacity, ``alpha`` after every step,
heatmap); ``compare.py`` holds the tolerances and the comparison. ``python -m conformance``
prints the table.
"""
