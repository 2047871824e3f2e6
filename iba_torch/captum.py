"""IBA in Captum's API: an attribution class that Captum's ``NoiseTunnel`` and
``visualization.visualize_image_attr`` accept.

    >>> from captum.attr import NoiseTunnel                                 # doctest: +SKIP
    >>> from iba_torch.captum import IBA                                    # doctest: +SKIP
    >>> ib = IBA(model, model.layer2, data=loader, n_samples=1000)          # doctest: +SKIP
    >>> attributions = ib.attribute(x, target=labels)                       # (N, C, H, W)
    >>> smooth = NoiseTunnel(ib).attribute(x, target=labels, nt_samples=8, stdevs=0.1)

The attribution is IBA's heatmap (``iba_torch.IBA.analyze``, in bits; docs/mathematics.md
section 2) at the input's size, broadcast over the input's channels, so it has the input's shape
as Captum's input attributions do. Captum is optional: this module imports it when it is
installed (``pip install ".[interop]"``), and ``import iba_torch`` never imports this module.
Without Captum, :class:`IBA` works alike as a plain class, but ``NoiseTunnel`` needs Captum's
base class.

``NoiseTunnel(IBA(...))`` adds Gaussian noise to the inputs (``stdevs``), ``nt_samples`` copies
per input, and averages IBA's heatmaps of the noisy copies: each copy gets its own bottleneck
optimisation (``nt_samples`` times the cost). IBA's own noise in the bottleneck is separate and
seeded (``seed=``, default 0), as in ``iba_torch.IBA.analyze``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

import iba
from iba.interop.common import explainer_for, input_shaped, layout_hint
from iba_torch.explainer import IBA as _Explainer

try:
    from captum.attr import Attribution as _Base
    from captum.log import log_usage as _log_usage

    HAVE_CAPTUM = True
except ImportError:  # Captum is optional: a plain class then
    _Base = object
    HAVE_CAPTUM = False

    def _log_usage(*args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        return lambda func: func


class IBA(_Base):
    """Information Bottleneck Attribution as a Captum attribution method.

    Args:
        forward_func: the model, a ``torch.nn.Module`` (IBA hooks its layers); never changed.
        layer: the target layer: a module of the model or its dotted name from
            ``named_modules()`` (a list of them: CoIBA, docs/mathematics.md section 4).
        explainer: an ``iba_torch.IBA`` estimated already, instead of ``layer`` and ``data``.
        data: what ``iba_torch.IBA.estimate`` takes (a tensor of inputs, a DataLoader, an
            iterable of batches): the layer's feature statistics are fitted on it here, once
            (docs/mathematics.md section 1).
        n_samples: estimate on this many samples of ``data`` at most.
        progress: show the estimation's progress bar.
        config, **fields: the ``iba.Config`` of the new explainer, or its fields (``beta``,
            ``steps``, ...).

    ``explainer`` is the ``iba_torch.IBA`` that runs the explanations.
    """

    def __init__(
        self,
        forward_func: torch.nn.Module,
        layer: Any = None,
        *,
        explainer: _Explainer | None = None,
        data: Iterable | Any = None,
        n_samples: int | None = None,
        progress: bool = False,
        config: iba.Config | None = None,
        **fields: Any,
    ) -> None:
        if not isinstance(forward_func, torch.nn.Module):
            raise TypeError(
                "IBA hooks the model's layers: forward_func must be the model, a "
                f"torch.nn.Module, got {type(forward_func).__name__} (wrap a function in a "
                "torch.nn.Module whose forward() calls the model)"
            )
        chosen = explainer_for(
            forward_func,
            explainer,
            layer,
            data,
            n_samples=n_samples,
            config=config,
            cls=_Explainer,
            progress=progress,
            **fields,
        )
        if HAVE_CAPTUM:
            _Base.__init__(self, forward_func)
        else:
            self.forward_func = forward_func
        self.explainer: _Explainer = chosen  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(explainer={self.explainer!r})"

    @_log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor],
        target: Any = None,
        additional_forward_args: Any = None,
        seed: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor]:
        """IBA's heatmaps of ``inputs``, shaped like them (docs/mathematics.md section 2).

        Args:
            inputs: a batch of images ``(N, C, H, W)`` (or a 1-tuple of it, as Captum allows);
                token inputs ``(N, T)`` give ``(N, T)``.
            target: the class of each input: an int, a list of ints or a 1-D tensor (of one
                element: the class of every input, as in Captum).
            additional_forward_args: not supported (IBA calls the model with the inputs
                alone); must be ``None``.
            seed: the seed of IBA's noise in the bottleneck (default 0).

        Returns:
            the heatmaps, in bits, broadcast over the channel axis: the inputs' shape, their
            dtype (float64 for integer inputs) and device; a 1-tuple for a 1-tuple of inputs.
        """
        if additional_forward_args is not None:
            raise ValueError(
                "IBA calls the model with the inputs alone: additional_forward_args is not "
                "supported; bind the extra arguments in a torch.nn.Module that wraps the model"
            )
        single = isinstance(inputs, torch.Tensor)
        x: torch.Tensor
        if single:
            x = inputs
        elif isinstance(inputs, tuple) and len(inputs) == 1 and isinstance(inputs[0], torch.Tensor):
            x = inputs[0]
        else:
            raise TypeError(
                "inputs must be a tensor (or a 1-tuple of one), batch axis first; IBA explains "
                f"models of one input, got {_describe(inputs)}"
            )
        labels = _labels(target)
        explainer = self.explainer
        heatmaps = explainer.analyze(self.forward_func, x, target=labels, seed=seed)
        assert isinstance(heatmaps, np.ndarray)  # details=False
        shaped = input_shaped(heatmaps, tuple(x.shape), layout_hint(explainer))
        dtype = x.dtype if x.is_floating_point() else torch.float64
        out = torch.as_tensor(shaped).to(device=x.device, dtype=dtype)
        out = out.expand(x.shape).contiguous()  # the heatmap on every channel
        return out if single else (out,)


def _labels(target: Any) -> Any:
    """Captum's ``target`` as one class per input (or one for all); refuse the forms that index
    a multi-dimensional output."""
    if target is None:
        raise ValueError(
            "IBA explains one class per input: pass target= (an int, a list of ints or a 1-D "
            "tensor)"
        )
    if isinstance(target, tuple) or (
        isinstance(target, list) and any(isinstance(t, tuple) for t in target)
    ):
        raise TypeError(
            "tuple targets index a multi-dimensional model output; IBA explains classifiers "
            "(outputs (N, classes)): pass an int, a list of ints or a 1-D tensor"
        )
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.ndim > 1:
            raise TypeError(
                f"target tensor of dtype {target.dtype} and shape {tuple(target.shape)}: pass "
                "class indices, an integer tensor of one per input"
            )
        if target.numel() == 1:  # Captum's rule: one class for every input (not expanded)
            return int(target.item())
        return target.detach().cpu().numpy()
    return target


def _describe(inputs: Any) -> str:
    if isinstance(inputs, (tuple, list)):
        kinds = ", ".join(type(a).__name__ for a in inputs)
        return f"a {type(inputs).__name__} of {len(inputs)} ({kinds})"
    return type(inputs).__name__
