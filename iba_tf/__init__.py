"""Information Bottleneck Attribution for Keras 3, on the TensorFlow, JAX and torch backends.

- ``IBALayer``: the bottleneck as a Keras layer, the identity until an explanation runs.
- ``IBA(targets, **config)``: ``estimate`` feature statistics and ``analyze`` inputs (one target:
  the Per-Sample Bottleneck of Schulz et al., ICLR 2020; several: CoIBA, Hong et al., CVPR 2025).
- ``Readout(bottleneck, readouts)``: the Readout Bottleneck (Schulz et al., section 3.2): a
  network trained to predict ``alpha`` in one forward pass.
- ``IBACopy(model, layer)``: a copy of a Functional/Sequential model with the bottleneck after a
  layer, sharing the original's weights, with an iNNvestigate-style ``fit`` / ``analyze``.

The formulas are the NumPy reference's (``iba``); only the gradient with respect to ``alpha``
comes from the running backend. Importing ``iba_tf`` imports Keras (and, through it, the
backend's framework), nothing else.
"""

from iba_tf.copy_model import NEURON_SELECTION_MODES, IBACopy
from iba_tf.explainer import IBA
from iba_tf.layer import IBALayer
from iba_tf.m2ib import M2IB
from iba_tf.readout import Readout
from iba_tf.text import TextIBA

__all__ = ["IBA", "IBACopy", "IBALayer", "M2IB", "NEURON_SELECTION_MODES", "Readout", "TextIBA"]
