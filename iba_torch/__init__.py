"""Information Bottleneck Attribution for PyTorch, on the NumPy reference ``iba``.

Models are reached through forward hooks on their modules; the layers before the first target
run once per input batch (``torch.fx`` split where the model allows it), and gradients are taken
for ``alpha`` only.

    >>> from iba_torch import IBA
    >>> explainer = IBA("features.17")                           # doctest: +SKIP
    >>> explainer.estimate(model, loader, n_samples=5000)        # doctest: +SKIP
    >>> heatmaps = explainer.analyze(model, x, target=243)       # doctest: +SKIP
"""

from iba_torch import baselines
from iba_torch.explainer import IBA
from iba_torch.m2ib import M2IB
from iba_torch.readout import Readout
from iba_torch.text import TextIBA

__all__ = ["IBA", "M2IB", "Readout", "TextIBA", "baselines"]
