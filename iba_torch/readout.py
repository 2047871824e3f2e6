"""The Readout Bottleneck (Schulz et al., ICLR 2020, section 3.2; docs/mathematics.md section 3).

A small network predicts ``alpha`` from features read at several layers, in one forward pass;
it is trained over a data set to minimise cross entropy plus ``beta`` times the bottleneck's mean
capacity. The bottleneck itself is the reference's (``iba.bottleneck``, ``iba.capacity``,
``iba.damping``), written with torch operations in ``iba_torch._math``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

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


class Readout:
    """A Readout Bottleneck at ``bottleneck`` that reads the features of ``readouts``.

    Args:
        bottleneck: the module (or dotted name) whose output the bottleneck replaces; its
            features must be ``(C, H, W)`` per input.
        readouts: modules (or names) whose outputs predict ``alpha``: feature maps
            ``(C_l, h, w)`` are resized to ``H x W``, vectors ``(D,)`` (e.g. logits) are expanded.
        beta, sigma, relu, min_std, active_threshold: as in ``iba.Config``.

    Example:
        >>> readout = Readout("layer3", ["layer4", "fc"])  # doctest: +SKIP
        >>> readout.estimate(model, loader, n_samples=5000)  # doctest: +SKIP
        >>> losses = readout.fit(model, loader, epochs=10, lr=1e-5)  # doctest: +SKIP
        >>> heatmaps = readout.analyze(model, x)  # one forward pass  # doctest: +SKIP
    """

    def __init__(
        self,
        bottleneck: str | torch.nn.Module,
        readouts: list[str | torch.nn.Module],
        *,
        beta: float = 10.0,
        sigma: float | None = 1.0,
        relu: bool = False,
        min_std: float = 0.01,
        active_threshold: float = 0.01,
    ):
        self._targets = _model.to_list(bottleneck)[:1] + _model.to_list(readouts)
        if len(_model.to_list(bottleneck)) != 1:
            raise TypeError("bottleneck must be one module or name")
        self.config = iba.Config(
            beta=beta, sigma=sigma, relu=relu, min_std=min_std, active_threshold=active_threshold
        )
        self.estimators: list[iba.Estimator] = []
        self.network: torch.nn.Sequential | None = None
        self.losses: list[float] = []

    def __repr__(self) -> str:
        names = [t if isinstance(t, str) else type(t).__name__ for t in self._targets]
        return f"Readout(bottleneck={names[0]!r}, readouts={names[1:]}, config={self.config})"

    # -- statistics ------------------------------------------------------------------------------

    def estimate(
        self,
        model: torch.nn.Module,
        data: Iterable,
        n_samples: int | None = None,
        progress: bool = True,
    ) -> list[iba.Estimator]:
        """Fit the estimators of the bottleneck and of every readout layer (docs/mathematics.md section 1).

        Vector readouts ``(D,)`` are kept as ``(D, 1, 1)`` feature maps. Builds the readout
        network (fresh weights) for the channel counts found.
        """
        modules = _model.resolve(model, self._targets)
        device, dtype = _model.model_device_dtype(model)

        def capture(batch: Any) -> list[torch.Tensor]:
            inputs = _model.as_inputs(batch, device, dtype)
            _model.check_finite(inputs)
            return [_as_map(f) for f in _model.capture(model, inputs, modules, ordered=False)]

        with _model.preserved(model, freeze=False):
            estimators = driver.fit_estimators(
                capture, data, n_samples, progress, desc="Readout estimate"
            )
        self.estimators = estimators
        self.network = self._build()
        return estimators

    def _build(self) -> torch.nn.Sequential:
        in_channels, channels = shared.network_sizes(self.estimators)
        return readout_network(in_channels, channels)

    def _require(self) -> torch.nn.Sequential:
        """The readout network; raises before ``estimate`` or ``load``."""
        shared.require(self.estimators, self.network)
        assert self.network is not None
        return self.network

    @property
    def weights(self) -> list[np.ndarray]:
        """The network's weights in ``iba.readout``'s form ``[w0, b0, w1, b1, w2, b2]``."""
        return network_weights(self._require())

    @weights.setter
    def weights(self, weights: list) -> None:
        set_network_weights(self._require(), weights)

    # -- the forward pass ------------------------------------------------------------------------

    def _stats(self, like: torch.Tensor) -> list[_math.LayerStats]:
        stats = []
        for i, s in enumerate(shared.statistics(self.estimators, self.config)):
            mask = s.active if i == 0 else None  # the bottleneck masks; the readouts do not
            stats.append(_math.layer_stats(driver.LayerStatistics(s.mean, s.std, mask), like))
        return stats

    def _read(self, model, inputs, modules, stats) -> tuple[torch.Tensor, torch.Tensor]:
        """The bottleneck's features ``R`` and the readout network's input (no gradient)."""
        features = [_as_map(f) for f in _model.capture(model, inputs, modules, ordered=False)]
        shared.check_features(
            [f.shape[1:] for f in features], self.estimators, [m[0] for m in modules]
        )
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

    # -- training --------------------------------------------------------------------------------

    def fit(
        self,
        model: torch.nn.Module,
        data: Iterable,
        epochs: int = 10,
        lr: float = 1e-5,
        progress: bool = True,
        seed: int | None = None,
    ) -> list[float]:
        """Train the readout network over ``data`` (``(inputs, labels, ...)`` batches).

        Loss per batch: cross entropy of the label on the bottlenecked model plus
        ``beta * mean(capacity)``; Adam on the readout network only (the model's weights get no
        gradients and the model is left as it was). Returns (and appends to ``self.losses``) the
        loss of every batch.
        """
        network = self._require()
        epochs, lr = shared.check_fit_args(epochs, lr)
        modules = _model.resolve(model, self._targets)
        device, dtype = _model.model_device_dtype(model)
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
        log: list[float] = []
        network.train()
        with _model.preserved(model), _model.hooks([(modules[0][1], hook)]):
            bar = tqdm(range(epochs), desc="Readout fit", unit="epoch", disable=not progress)
            for _ in bar:
                for x, y in shared.labelled(data):
                    inputs = _model.as_inputs(x, device, dtype)
                    _model.check_finite(inputs)
                    state.clear()
                    with torch.no_grad():
                        r, readout_input = self._read(model, inputs, modules, stats)
                    first = stats[0]
                    lam = _math.damping(self._alpha(readout_input), "channels_first", config.sigma)
                    noise = torch.randn(
                        r.shape, generator=generator, dtype=r.dtype, device=r.device
                    )
                    eps = first.std * noise + first.mean
                    state["z"] = _math.bottleneck(r, lam, eps, first.mask, config.relu)
                    with torch.enable_grad():
                        outputs = _model.call(model, inputs)
                    state.pop("z")
                    rows = int(r.shape[0])
                    labels = torch.as_tensor(shared.check_labels(y, rows)).to(r.device)
                    cross_entropy = torch.nn.functional.cross_entropy(
                        _math.logits_of(outputs), labels
                    )
                    cap = _math.capacity(r, lam, first.mean, first.std, first.mask)
                    loss = cross_entropy + config.beta * cap.mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    log.append(float(loss.detach()))
                    bar.set_postfix(loss=f"{log[-1]:.4g}")
        network.eval()
        self.losses.extend(log)
        return log

    # -- heatmaps --------------------------------------------------------------------------------

    def analyze(
        self, model: torch.nn.Module, x: Any, details: bool = False
    ) -> np.ndarray | iba.Explanation:
        """Heatmaps of ``x`` in bits from one forward pass (no optimisation): ``(N, H, W)``.

        With ``details=True``, an ``iba.Explanation`` with ``capacity``, ``alpha``, ``lam`` and
        the heatmap (``alphas`` holds the one ``alpha``, ``losses`` is empty).
        """
        network = self._require()
        modules = _model.resolve(model, self._targets)
        device, dtype = _model.model_device_dtype(model)
        inputs = _model.as_inputs(x, device, dtype)
        _model.check_finite(inputs)
        config = self.config
        with _model.preserved(model), torch.no_grad():
            r0 = _model.capture(model, inputs, modules[:1])[0]
            network.to(device=r0.device, dtype=r0.dtype).eval()
            stats = self._stats(r0)
            r, readout_input = self._read(model, inputs, modules, stats)
            alpha = self._alpha(readout_input)
            lam = _math.damping(alpha, "channels_first", config.sigma)
            first = stats[0]
            cap = _math.capacity(r, lam, first.mean, first.std, first.mask)
        capacity = cap.cpu().double().numpy()
        size = None
        args, kwargs = inputs
        if len(args) == 1 and not kwargs and args[0].ndim == 4:
            size = tuple(args[0].shape[2:])
        maps = iba.heatmap(capacity, "channels_first", size)
        if not details:
            return maps
        alpha_np = alpha.cpu().double().numpy()
        return iba.Explanation(
            capacity=capacity,
            alpha=alpha_np,
            lam=lam.cpu().double().numpy(),
            alphas=alpha_np[None],
            losses=np.zeros((0, alpha_np.shape[0])),
            heatmap=maps,
        )

    # -- save / load -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the readout (network, estimators, configuration, losses) to ``path``.

        The file is ``iba.readout``'s ``.npz`` (no pickle), the same for every framework: a
        readout trained here loads in ``iba_tf.Readout`` and ``iba_jax.Readout`` (with their
        layer names and layout).
        """
        network = self._require()
        names = [t if isinstance(t, str) else None for t in self._targets]
        if None in names:
            raise ValueError("save() needs the layers given by name (dotted names), not modules")
        shared.save(
            path,
            names,  # type: ignore[arg-type]  # no None left
            self.config,
            self.estimators,
            network_weights(network),
            self.losses,
            framework="torch",
        )

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
        data = shared.load(path, layout="channels_first")
        targets = data["targets"]
        config = data["config"]
        readout = cls(
            targets[0] if bottleneck is None else bottleneck,
            targets[1:] if readouts is None else readouts,
            **shared.config_dict(config),
        )
        if len(readout._targets) != len(targets):
            raise ValueError(
                f"{os.fspath(path)} reads {len(targets) - 1} readout layer(s); "
                f"{len(readout._targets) - 1} given"
            )
        readout.estimators = data["estimators"]
        # float64, the file's precision; analyze and fit cast it to the model's dtype
        readout.network = readout._build().double()
        set_network_weights(readout.network, data["weights"])
        readout.network.eval()
        readout.losses = data["losses"]
        return readout

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
        readout.network = readout._build()
        readout.network.load_state_dict(data["network"])
        readout.network.eval()
        readout.losses = list(data["losses"])
        return readout


def _as_map(features: torch.Tensor) -> torch.Tensor:
    """Readout features as ``(N, C, h, w)``: vectors ``(N, D)`` become ``(N, D, 1, 1)``."""
    return shared.as_map(features, "channels_first")
