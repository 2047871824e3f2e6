"""The PyTorch tripwire layer (torch is imported here only: by the torch backend's subject)."""

from __future__ import annotations

import torch
import torch.fx

from .subjects import TRIPWIRE


def tripwire(x: torch.Tensor) -> torch.Tensor:
    """The identity; calls the tripwire in the optimisation steps (a noised batch that depends on
    ``alpha``), or on any call when it forbids all calls."""
    if (torch.is_grad_enabled() and x.requires_grad) or TRIPWIRE.forbid:
        TRIPWIRE.hit()
    return x


torch.fx.wrap("tripwire")  # a call in torch.fx graphs: the split path runs it at run time


class Trip(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tripwire(x)
