"""Framework-free descriptions of the real models the adapters port (the lowest floor: it imports
NumPy and the standard library only, and nothing of ``iba``'s other modules or of the adapters).

- :mod:`iba.models.efficientnet_lite`: EfficientNet-Lite0's block table and constants, what
  ``iba_tf.models`` and ``iba_jax.models`` build.
- :mod:`iba.models.checkpoint`: the reader of PyTorch's legacy checkpoints, and the bundled
  EfficientNet-Lite0 weights it reads without PyTorch.
"""
