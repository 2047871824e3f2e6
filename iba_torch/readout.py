"""The Readout Bottleneck (Schulz et al., ICLR 2020, section 3.2; docs/mathematics.md section 3).

A small network predicts ``alpha`` from features read at several layers, in one forward pass;
it is trained over a data set to minimise cross entropy plus ``beta`` times the bottleneck's mean
capacity. The bottleneck itself is the reference's (``iba.bottleneck``, ``iba.capacity``,
``iba.damping``), written with torch operations in ``iba_torch._math``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

import iba
from iba import driver
from iba import readout as shared
from iba.readout import ALPHA_BOUND, FORMAT_VERSION, LAST_BIAS, LAST_SCALE
from iba_torch import _math, _model

__all__ = [
    "ALPHA_BOUND",
    "FORMAT_VERSION",
    "LAST_BIAS",
    "LAST_SCALE",
    "Readout",
    "network_weights",
    "readout_network",
    "set_network_weights",
]


def readout_network(in_channels: int, channels: int) -> torch.nn.Sequential:
    """1x1 conv (to ``in_channels // 2``), ReLU, 1x1 conv (to ``2C``), ReLU, 1x1 conv (to ``C``).

    The last conv starts with bias 5 and weights scaled by 1e-3, so ``alpha`` starts near 5.
    """
    (i0, o0), (i1, o1), (i2, o2) = shared.layer_sizes(in_channels, channels)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(i0, o0, 1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(i1, o1, 1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(i2, o2, 1),
    )
    with torch.no_grad():
        net[-1].weight.mul_(LAST_SCALE)
        net[-1].bias.fill_(LAST_BIAS)
    return net


def network_weights(net: torch.nn.Sequential) -> list[np.ndarray]:
    """The network's weights in ``iba.readout``'s framework-free form ``[w0, b0, w1, b1, w2, b2]``
    (float64, ``w`` as ``(out, in)``)."""
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    out: list[np.ndarray] = []
    for conv in convs:
        w = conv.weight.detach().cpu().double().numpy()
        out += [w.reshape(w.shape[0], w.shape[1]), conv.bias.detach().cpu().double().numpy()]
    return out


def set_network_weights(net: torch.nn.Sequential, weights: list) -> None:
    """Copy ``[w0, b0, w1, b1, w2, b2]`` (``iba.readout``'s form) into the network's convs."""
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    arrays = shared.check_weights(weights, convs[0].in_channels, convs[-1].out_channels)
    with torch.no_grad():
        for k, conv in enumerate(convs):
            w, b = arrays[2 * k], arrays[2 * k + 1]
            conv.weight.copy_(torch.as_tensor(w).reshape(conv.weight.shape))
            conv.bias.copy_(torch.as_tensor(b))


class _Bound(NamedTuple):
    """A model reached by a Readout: its target modules ``(name, module)``, device and dtype."""

    model: torch.nn.Module
    modules: list
    device: Any
    dtype: Any


class Readout(shared.ReadoutExplainer):
    """A Readout Bottleneck at ``bottleneck`` that reads the features of ``readouts``.

    Args:
        bottleneck: the module (or dotted name) whose output the bottleneck replaces; its
            features must be ``(C, H, W)`` per input.
        readouts: modules (or names) whose outputs predict ``alpha``: feature maps
            ``(C_l, h, w)`` are resized to ``H x W``, vectors ``(D,)`` (e.g. logits) are expanded.
        beta, sigma, relu, min_std, active_threshold: as in ``iba.Config``.

    The framework-free part (checks, estimators, ``fit`` / ``analyze``'s driver, ``save`` /
    ``load``) is ``iba.readout.ReadoutExplainer``; ``network`` is the ``torch.nn.Sequential``
    (``readout_network``) after ``estimate`` or ``load``.

    Example:
        >>> readout = Readout("layer3", ["layer4", "fc"])  # doctest: +SKIP
        >>> readout.estimate(model, loader, n_samples=5000)  # doctest: +SKIP
        >>> losses = readout.fit(model, loader, epochs=10, lr=1e-5)  # doctest: +SKIP
        >>> heatmaps = readout.analyze(model, x)  # one forward pass  # doctest: +SKIP
    """

    framework = "torch"
    layout: str  # always set (default_layout)
    default_layout = "channels_first"
    layouts = ("channels_first",)
    network: torch.nn.Sequential | None = None

    def _check_targets(self, bottleneck: Any, readouts: Any) -> list[Any]:
        targets = _model.to_list(bottleneck)[:1] + _model.to_list(readouts)
        if len(_model.to_list(bottleneck)) != 1:
            raise TypeError("bottleneck must be one module or name")
        return targets

    def _bind(self, model: torch.nn.Module) -> _Bound:
        modules = _model.resolve(model, self._targets)
        return _Bound(model, modules, *_model.model_device_dtype(model))

    # -- the network -----------------------------------------------------------------------------

    def _network(self) -> torch.nn.Sequential | None:
        return self.network

    def _get_weights(self) -> list[np.ndarray]:
        return network_weights(self._require())

    def _set_weights(self, weights: Any) -> None:
        set_network_weights(self._require(), weights)

    def _install(self, weights: Any) -> None:
        net = readout_network(*shared.network_sizes(self.estimators))
        if weights is not None:
            # float64, the file's precision; analyze and fit cast it to the model's dtype
            net = net.double()
            set_network_weights(net, weights)
            net.eval()
        self.network = net

    # -- the forward pass ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _estimation(self, model: torch.nn.Module) -> Iterator[tuple[Callable, str]]:
        bound = self._bind(model)

        def capture(batch: Any) -> list[torch.Tensor]:
            inputs = _model.as_inputs(batch, bound.device, bound.dtype)
            _model.check_finite(inputs)
            features = _model.capture(model, inputs, bound.modules, ordered=False)
            return [_as_map(f) for f in features]

        with _model.preserved(model, freeze=False):
            yield capture, "channels_first"

    def _stats(self, like: torch.Tensor) -> list[_math.LayerStats]:
        stats = []
        for i, s in enumerate(shared.statistics(self.estimators, self.config)):
            mask = s.active if i == 0 else None  # the bottleneck masks; the readouts do not
            stats.append(_math.layer_stats(driver.LayerStatistics(s.mean, s.std, mask), like))
        return stats

    def _read(self, model, inputs, modules, stats) -> tuple[torch.Tensor, torch.Tensor]:
        """The bottleneck's features ``R`` and the readout network's input (no gradient)."""
        features = [_as_map(f) for f in _model.capture(model, inputs, modules, ordered=False)]
        self._checked(features, [m[0] for m in modules])
        r = features[0]
        height, width = r.shape[-2:]
        parts = []
        for f, s in zip(features[1:], stats[1:]):
            f = (f - s.mean) / s.std
            if f.shape[-2:] == (1, 1):
                parts.append(f.expand(-1, -1, height, width))
            else:
                a_h = torch.as_tensor(np.array(iba.resize_matrix(f.shape[-2], height))).to(f)
                a_w = torch.as_tensor(np.array(iba.resize_matrix(f.shape[-1], width))).to(f)
                parts.append(a_h @ f @ a_w.T)
        return r, torch.cat(parts, dim=1)

    def _alpha(self, readout_input: torch.Tensor) -> torch.Tensor:
        assert self.network is not None  # after _require()
        return self.network(readout_input).clamp(-ALPHA_BOUND, ALPHA_BOUND)

    def _forward(
        self, bound: _Bound, weights: list[np.ndarray], x: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int] | None]:
        model, modules = bound.model, bound.modules
        network = self._require()
        inputs = _model.as_inputs(x, bound.device, bound.dtype)
        _model.check_finite(inputs)
        with _model.preserved(model), torch.no_grad():
            r0 = _model.capture(model, inputs, modules[:1])[0]
            network.to(device=r0.device, dtype=r0.dtype).eval()
            stats = self._stats(r0)
            r, readout_input = self._read(model, inputs, modules, stats)
            alpha = self._alpha(readout_input)
            lam = _math.damping(alpha, "channels_first", self.config.sigma)
            first = stats[0]
            cap = _math.capacity(r, lam, first.mean, first.std, first.mask)
        size = None
        args, kwargs = inputs
        if len(args) == 1 and not kwargs and args[0].ndim == 4:
            size = tuple(args[0].shape[2:])
        return (*(t.cpu().double().numpy() for t in (cap, alpha, lam)), size)

    # -- training --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _training(
        self, bound: _Bound, weights: list[np.ndarray], lr: float, seed: int | None
    ) -> Iterator[shared.Step]:
        """Adam on the network only, the noise from a ``torch.Generator`` seeded with ``seed``;
        the model's weights get no gradients."""
        network = self._require()
        model, modules, device, dtype = bound
        config = self.config
        network.to(device=device, dtype=dtype)
        optimizer = torch.optim.Adam(network.parameters(), lr=lr)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device or "cpu").manual_seed(int(seed))
        state: dict[str, Any] = {}

        def hook(module, args, output):
            if "z" not in state:
                return None
            return _model.replace_first(output, state["z"])

        like = torch.empty((), dtype=dtype or torch.float32, device=device or "cpu")
        stats = self._stats(like)
        first = stats[0]

        def step(x: Any, y: Any) -> float:
            inputs = _model.as_inputs(x, device, dtype)
            _model.check_finite(inputs)
            state.clear()
            with torch.no_grad():
                r, readout_input = self._read(model, inputs, modules, stats)
            lam = _math.damping(self._alpha(readout_input), "channels_first", config.sigma)
            noise = torch.randn(r.shape, generator=generator, dtype=r.dtype, device=r.device)
            state["z"] = _math.bottleneck(r, lam, first.std * noise + first.mean, first.mask,
                                          config.relu)  # fmt: skip
            with torch.enable_grad():
                outputs = _model.call(model, inputs)
            state.pop("z")
            labels = torch.as_tensor(shared.check_labels(y, int(r.shape[0]))).to(r.device)
            cross_entropy = torch.nn.functional.cross_entropy(_math.logits_of(outputs), labels)
            cap = _math.capacity(r, lam, first.mean, first.std, first.mask)
            loss = cross_entropy + config.beta * cap.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        network.train()
        try:
            with _model.preserved(model), _model.hooks([(modules[0][1], hook)]):
                yield step
        finally:
            network.eval()

    # -- save / load -----------------------------------------------------------------------------

    def _saved_names(self) -> list[str]:
        names = [t for t in self._targets if isinstance(t, str)]
        if len(names) != len(self._targets):
            raise ValueError("save() needs the layers given by name (dotted names), not modules")
        return names

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        bottleneck: str | torch.nn.Module | None = None,
        readouts: list[str | torch.nn.Module] | None = None,
    ) -> Readout:
        """Read a readout written by ``save`` of any framework (``iba.readout``'s ``.npz``; the
        ``torch.save`` files of earlier versions too).

        ``bottleneck`` and ``readouts`` replace the saved layer names (a readout saved by another
        framework names that framework's layers).
        """
        if not shared.is_readout_file(path):
            return cls._load_torch(path)
        return cls._from_file(path, bottleneck, readouts, "channels_first")

    @classmethod
    def _load_torch(cls, path: str | os.PathLike) -> Readout:
        """A readout written with ``torch.save`` by earlier versions."""
        try:
            data = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:
            data = None
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{os.fspath(path)} is not a saved iba_torch.Readout")
        targets = data["targets"]
        readout = cls(targets[0], targets[1:], **data["config"])
        readout.estimators = [
            iba.Estimator.from_arrays(
                {k: np.array(v) if isinstance(v, str) else v.numpy() for k, v in arrays.items()},
                source=os.fspath(path),
            )
            for arrays in data["estimators"]
        ]
        readout._install(None)
        assert readout.network is not None
        readout.network.load_state_dict(data["network"])
        readout.network.eval()
        readout.losses = list(data["losses"])
        return readout


def _as_map(features: torch.Tensor) -> torch.Tensor:
    """Readout features as ``(N, C, h, w)``: vectors ``(N, D)`` become ``(N, D, 1, 1)``."""
    return shared.as_map(features, "channels_first")
