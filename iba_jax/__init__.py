"""Information Bottleneck Attribution for JAX / Flax (Linen and NNX), on the NumPy reference ``iba``.

Linen models are reached through ``flax.linen.intercept_methods``, NNX models through module
surgery; the whole optimisation of ``alpha`` (every step, Adam via optax) is one ``jax.jit``.

    >>> from iba_jax import IBA
    >>> explainer = IBA(("Block_1",))                       # a Linen module path
    >>> explainer.estimate((module, variables), batches)    # doctest: +SKIP
    >>> heatmaps = explainer.analyze((module, variables), x, target=3)  # doctest: +SKIP
"""

from iba_jax.explainer import IBA
from iba_jax.m2ib import M2IB
from iba_jax.nnx import Bottleneck, IBAAlpha
from iba_jax.readout import Readout
from iba_jax.text import TextIBA

__all__ = ["Bottleneck", "IBA", "IBAAlpha", "M2IB", "Readout", "TextIBA"]
