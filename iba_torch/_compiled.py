"""The compiled step of ``analyze``: ``torch.compile`` of one optimisation step, checked against
the eager step before it is used.

One step of the Per-Sample Bottleneck (docs/mathematics.md section 2; CoIBA: section 4) is the
damping of ``alpha``, the noised features at every target, the layers after the first target
on the ``N * B`` noised rows, the loss and its gradient with respect to ``alpha``. The eager
path (``iba_torch.explainer``) runs it through forward hooks. Here the ``torch.fx`` tail of the
model (``iba_torch._split``, path ``"fx"``) is rewritten into a function without hooks: each
later target's module is called through its ``forward`` and its output is noised by a node of
the graph. The damping, the noise, the tail, the classification loss and the information term
form one function that ``torch.compile`` (inductor, ``dynamic=False``, ``fullgraph=True``)
compiles, forward and backward (AOTAutograd); a ``loss_fn`` of the user's runs eagerly on the
compiled outputs, and Adam stays eager (the same update as the eager path). On CUDA the
function is compiled with ``mode="reduce-overhead"`` (CUDA graphs of the forward and the
backward); that variant is written to be correct by construction but has not been measured.

A compiled function is made once per model split and signature (shapes, dtypes, device, the
configuration's constants) and reused by every later ``analyze`` of the same signature. Before
its first use it is checked: at the first step of that ``analyze`` the eager step runs too, and
the loss and the gradient must agree (float64: 1e-9, float32: 1e-3 relative to the largest
magnitude, :data:`CHECK`); otherwise, and on any error while compiling (no C compiler, an
operation inductor does not support, a graph break), the eager path runs and the reason is kept. The model is not
changed: nothing is registered on it and no attribute is set.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.fx as fx

from iba import targets as target_checks
from iba_torch import _math, _model, _split

MODES = ("auto", True, False)
"""The values of ``IBA(compile=...)``: ``"auto"`` (compiled on :data:`AUTO_DEVICES`),
``True`` (compiled wherever it compiles and is verified), ``False`` (always eager)."""

BACKEND = "inductor"
"""The ``torch.compile`` backend (tests use ``"aot_eager"`` where inductor's C++ build of every
graph would cost them a minute: the same dynamo graph and AOTAutograd backward, run eagerly)."""

AUTO_DEVICES: frozenset[str] = frozenset()
"""The device types where ``compile="auto"`` uses the compiled step. None today (measurements in
docs/performance.md, "PyTorch compiled path"): on the 2-core CPU, EfficientNet-Lite0 at
``_blocks.4`` runs no faster compiled than eager with channels-last convolutions (1.72 s against
1.04 s for 1 image, 1.97 s against 1.94 s per heatmap for 8), and its first call compiles for
25-160 s; CUDA (CUDA graphs) has not been measured: no GPU was available when this was built."""

_AUTO_REASONS = {
    "cpu": "on the CPU the compiled step is no faster than the eager one and compiles for long",
    "cuda": "the compiled step has not been measured on CUDA yet",
}


def check_mode(mode: Any) -> Any:
    """``mode`` if it is one of :data:`MODES`, else a ``ValueError`` naming the choices."""
    if not any(mode is m or (isinstance(m, str) and mode == m) for m in MODES):
        raise ValueError(
            f"compile must be 'auto', True or False, got {mode!r}: 'auto' compiles on the "
            "devices where it pays off, True wherever it compiles, False never"
        )
    return mode


def wanted(mode: Any, device: torch.device) -> tuple[bool, str]:
    """Whether to try the compiled step on ``device`` for ``compile=mode``, and why not."""
    if mode is False:
        return False, "compile=False"
    if mode == "auto" and device.type not in AUTO_DEVICES:
        why = _AUTO_REASONS.get(device.type, "the compiled step has not been measured there")
        return False, (
            f"compile='auto' stays eager on {device.type}: {why} (docs/performance.md); "
            "compile=True uses it"
        )
    return True, ""


# -- the tail without hooks ----------------------------------------------------------------------


def _inject(
    output: Any,
    lam: torch.Tensor,
    eps: torch.Tensor,
    stats: _math.LayerStats,
    rows: tuple[int, int],
    shape: tuple[int, ...],
    relu: bool,
    log_var_clamp: float | None,
) -> Any:
    """A later target's output with its features noised: what the eager hook returns."""
    r = _model.first_tensor(output)
    z = _math.noised(r.reshape(*rows, *shape), lam, stats, eps, relu, log_var_clamp)
    return _model.replace_first(output, z.reshape(r.shape))


def hookless_tail(
    split: _split.Split,
    first: str,
    later: list[str],
    rows: tuple[int, int],
    shapes: list[tuple[int, ...]],
    relu: bool,
    log_var_clamp: float | None,
) -> fx.GraphModule:
    """``split.tail`` with the later targets noised in the graph instead of by hooks.

    The result takes the tail's inputs, then ``lam`` ``(N, 1, *A)``, one noise ``(N, B, *F_k)``
    and one ``LayerStats`` per later target. Raises ``ValueError`` where the tail does not call
    each later target exactly once, in the listed order, calls the first target, or where a
    later target has hooks besides the explainer's.
    """
    graph = split.tail.graph
    calls = [n for n in graph.nodes if n.op == "call_module"]
    if any(n.target == first for n in calls):
        raise ValueError(f"the tail calls the first target {first!r} again")
    found = [str(n.target) for n in calls if n.target in later]
    if found != later:
        raise ValueError(f"the tail calls the later targets as {found}, not once each as {later}")
    for name in later:  # the eager path runs a user's own hooks there; this graph would not
        module = split.tail.get_submodule(name)
        if len(module._forward_hooks) > 1 or module._forward_pre_hooks:
            raise ValueError(f"the target {name!r} has hooks of its own")
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    for n in placeholders:
        env[n] = new.node_copy(n, lambda a: env[a])
    lam = new.placeholder("iba_lam")
    eps = [new.placeholder(f"iba_eps_{k}") for k in range(len(later))]
    stats = [new.placeholder(f"iba_stats_{k}") for k in range(len(later))]
    for n in nodes:
        if n.op == "placeholder":
            continue
        if n.op == "call_module" and n.target in later:
            k = later.index(str(n.target))
            module = new.get_attr(str(n.target))
            args = fx.map_arg(n.args, lambda a: env[a])
            kwargs = fx.map_arg(n.kwargs, lambda a: env[a])
            out = new.call_method("forward", (module, *args), kwargs)  # the module's hooks: none
            rest = (rows, shapes[k + 1], relu, log_var_clamp)
            env[n] = new.call_function(_inject, (out, lam, eps[k], stats[k], *rest))
            continue
        env[n] = new.node_copy(n, lambda a: env[a])
    return fx.GraphModule(split.tail, new)


# -- the step ------------------------------------------------------------------------------------


class _Data(NamedTuple):
    """The tensors of one ``analyze`` call that the compiled step reads (its inputs)."""

    target: Any  # the first target's output (tensor or tuple) on the N * B rows
    args: list[Any]  # the tail's other inputs
    noiser: _math.Noiser
    r_norm: torch.Tensor
    mask: torch.Tensor | float
    matrices: tuple[torch.Tensor, torch.Tensor] | None  # A_h, A_w of the smoothing
    later: list[_math.LayerStats]
    labels: torch.Tensor | None  # (N * B,) class per noised row
    tokens: torch.Tensor | None


class _Static(NamedTuple):
    """What a compiled step is specialised to (with the data's signature: its cache key)."""

    n: int
    batch: int
    shape: tuple[int, ...]
    layout: str
    relu: bool
    log_var_clamp: float | None
    beta: float
    classify: bool
    cuda_graphs: bool
    backend: str


def _damping(alpha: torch.Tensor, matrices: Any, layout: str) -> torch.Tensor:
    """``_math.damping`` with the smoothing matrices given (no cache lookups in the graph)."""
    lam = torch.sigmoid(alpha)
    if matrices is None:
        return lam
    a_h, a_w = matrices
    y = lam.movedim(-1, -3) if layout == "channels_last" else lam
    y = a_h @ y @ a_w.T
    return y.movedim(-3, -1) if layout == "channels_last" else y


def _fresh(fn: Callable) -> Callable:
    """``fn`` with its own code object: dynamo keeps compiled code per code object, so every
    compiled step gets its own cache and none counts against another's recompile limit."""
    code = fn.__code__.replace(co_name=f"iba_step_{id(fn):x}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def _make(tail: fx.GraphModule, static: _Static) -> Callable:
    """The compiled step ``(alpha, eps, data) -> (loss, outputs)``; without ``classify`` the
    loss holds the information term only (the caller adds ``loss_fn(outputs)``)."""
    from iba_torch.explainer import _information

    n, b, shape, layout = static.n, static.batch, static.shape, static.layout
    relu, beta, classify = static.relu, static.beta, static.classify

    def step(alpha: torch.Tensor, eps: list[torch.Tensor], data: _Data) -> Any:
        lam = _damping(alpha, data.matrices, layout)
        lam_b = lam[:, None]
        z0 = data.noiser(lam_b, eps[0], relu).reshape(n * b, *shape)
        outputs = tail(
            _model.replace_first(data.target, z0), *data.args, lam_b, *eps[1:], *data.later
        )
        cap = _math.capacity(data.r_norm, lam, 0.0, 1.0, data.mask)
        info = beta * _information(cap, data.tokens)
        if classify:
            assert data.labels is not None  # classify: labels given
            logp = torch.log_softmax(_math.logits_of(outputs), dim=-1)
            picked = logp.gather(1, data.labels[:, None])[:, 0]
            return -picked.reshape(n, b).mean(1) + info, outputs
        return info, outputs

    if static.backend != "inductor":
        return torch.compile(_fresh(step), backend=static.backend, dynamic=False, fullgraph=True)
    mode = "reduce-overhead" if static.cuda_graphs else "default"
    return torch.compile(_fresh(step), mode=mode, dynamic=False, fullgraph=True)


class _Entry:
    """A compiled step and what is known of it: verified, or the reason it is not used."""

    def __init__(self, fn: Callable | None, reason: str = ""):
        self.fn, self.reason = fn, reason
        self.verified = False
        self.classes: int | None = None  # the logits' width, for the labels' range check


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # split -> {key: _Entry}


def _signature(value: Any) -> Any:
    """Shapes, dtypes and devices of a tree of tensors (other leaves by value)."""
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), value.dtype, str(value.device))
    if isinstance(value, _math.Noiser):
        return ("Noiser", _signature([value.mean, value.diff, value.std]), value.log_var_clamp)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_signature(v) for v in value))
    return ("V", type(value).__name__, repr(value)[:80])


CHECK = {torch.float64: 1e-9, torch.float32: 1e-3}
"""How close the compiled step's loss and gradient must be to the eager step's, relative to the
eager one's largest magnitude (float32: the conformance suite's bound of a heatmap; float32
rounding in a deep network's backward alone reaches 1e-4, a wrong graph is off by far more)."""


def _deviation(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b|`` over ``b``'s largest magnitude (infinite for another shape)."""
    if a.shape != b.shape:
        return float("inf")
    scale = max(float(b.abs().max()) if b.numel() else 0.0, 1e-30)
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


class Stepper:
    """One ``analyze``'s steps on the compiled function: ``stepper(alpha, eps) -> (loss, grad)``.

    ``eager(alpha) -> loss`` is the eager step on the same noise (the explainer's hooks read
    it from their state); it checks the compiled step once per signature, and runs every step
    if the check fails.
    """

    def __init__(
        self,
        entry: _Entry,
        data: _Data,
        static: _Static,
        loss_fn: Callable | None,
        eager: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.entry, self.data, self.static, self.loss_fn, self.eager = (
            entry,
            data,
            static,
            loss_fn,
            eager,
        )
        self.compiled = True
        self.reason = "compiled (verified earlier)" if entry.verified else "compiled"

    def _compiled(
        self, alpha: torch.Tensor, eps: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.entry.fn is not None
        if self.static.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss, outputs = self.entry.fn(alpha, eps, self.data)
        if self.static.classify and self.entry.classes is None:
            self.entry.classes = int(_math.logits_of(outputs).shape[-1])
        if self.loss_fn is not None:
            loss = _math.user_loss(self.loss_fn, outputs, self.static.n, self.static.batch) + loss
        grad = torch.autograd.grad(loss.sum(), alpha)[0]
        if self.static.cuda_graphs:  # the graphs' next replay overwrites their outputs
            return loss.detach().clone(), grad.clone()
        return loss.detach(), grad

    def _eager(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = self.eager(alpha)
        return loss.detach(), torch.autograd.grad(loss.sum(), alpha)[0]

    def __call__(
        self, alpha: torch.Tensor, eps: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.compiled:
            return self._eager(alpha)
        checked = self.entry.verified
        if not checked:  # the eager step first: its errors are the messages the user gets
            want = self._eager(alpha)
        try:
            got = self._compiled(alpha, eps)
        except Exception as err:  # noqa: BLE001 - any failure of the compiled step means: eager
            # (an error of the model or the loss itself comes again from the eager step)
            self._fail(f"torch.compile failed: {type(err).__name__}: {_first_line(err)}")
            return want if not checked else self._eager(alpha)
        if checked:
            return got
        loss_dev, grad_dev = _deviation(got[0], want[0]), _deviation(got[1], want[1])
        if not max(loss_dev, grad_dev) <= CHECK.get(want[1].dtype, 1e-3):
            self._fail(
                "the compiled step's loss or gradient differs from the eager step's (by "
                f"{loss_dev:.1e} and {grad_dev:.1e} of their largest magnitude)"
            )
        else:
            self.entry.verified = True
            self.reason = (
                "compiled (verified against the eager step: loss and gradient within "
                f"{loss_dev:.1e} and {grad_dev:.1e} of their largest magnitude)"
            )
        return want

    def _fail(self, reason: str) -> None:
        self.entry.fn, self.entry.reason = None, reason
        self.compiled, self.reason = False, reason


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


def stepper(
    mode: Any,
    run: _split.Runner,
    first_name: str,
    later: list[str],
    plan: Any,
    features: torch.Tensor,
    stats: list[_math.LayerStats],
    labels: torch.Tensor | None,
    tokens: torch.Tensor | None,
    eager: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[Stepper | None, str]:
    """The compiled steps of one ``analyze``, or ``None`` and why the eager path runs.

    Args:
        mode: ``IBA(compile=...)``.
        run: the path's runner; only the ``"fx"`` split has a tail to compile.
        first_name: the first target's name.
        later: the names of the targets after the first (CoIBA), in the forward order.
        plan: the driver's ``Plan``.
        features: the first target's features ``(N, *F)``.
        stats: one ``LayerStats`` per target.
        labels: the class per input, or ``None`` with ``plan.loss_fn``.
        tokens: the token weights ``(N, T, 1)`` or ``None``.
        eager: the eager step's loss for ``alpha`` (on the noise the caller set).
    """
    use, why = wanted(mode, features.device)
    if not use:
        return None, why
    if not isinstance(run, _split.SplitRunner):
        return None, f"the compiled step needs the fx split; this model runs the {run.name!r} path"
    config, n, b = plan.config, run.n_inputs, run.batch
    cuda_graphs = features.device.type == "cuda"
    first = stats[0]
    matrices = None
    if config.sigma and _is_spatial(plan.layout):
        lam = alpha_like(plan, features)
        y = lam.movedim(-1, -3) if plan.layout == "channels_last" else lam
        matrices = (
            _math.smoothing_matrix(y.shape[-2], config.sigma, y),
            _math.smoothing_matrix(y.shape[-1], config.sigma, y),
        )
    data = _Data(
        target=run.target_value,
        args=list(run.args),
        noiser=_math.Noiser(features[:, None], first, config.log_var_clamp),
        r_norm=(features - first.mean) / first.std,
        mask=first.mask,
        matrices=matrices,
        later=list(stats[1:]),
        labels=None if labels is None else labels.repeat_interleave(b).to(features.device),
        tokens=tokens,
    )
    static = _Static(
        n=n,
        batch=b,
        shape=tuple(plan.feature_shapes[0]),
        layout=plan.layout,
        relu=bool(config.relu),
        log_var_clamp=config.log_var_clamp,
        beta=float(config.beta),
        classify=labels is not None,
        cuda_graphs=cuda_graphs and BACKEND == "inductor",
        backend=BACKEND,
    )
    key = (static, tuple(later), _signature(data), _signature(alpha_like(plan, features)))
    entries = _CACHE.setdefault(run.split, {})
    entry = entries.get(key)
    if entry is None:
        try:
            tail = hookless_tail(
                run.split,
                first_name,
                later,
                (n, b),
                [tuple(s) for s in plan.feature_shapes],
                static.relu,
                static.log_var_clamp,
            )
            entry = _Entry(_make(tail, static))
        except Exception as err:  # noqa: BLE001 - a tail that cannot be rewritten: eager
            entry = _Entry(None, f"the tail cannot be compiled: {type(err).__name__}: {err}")
        entries[key] = entry
    if entry.fn is None:
        return None, entry.reason
    if labels is not None and entry.classes is not None:
        target_checks.check_range(labels.cpu().numpy(), entry.classes)
    result = Stepper(entry, data, static, plan.loss_fn, eager)
    return result, result.reason


def alpha_like(plan: Any, features: torch.Tensor) -> torch.Tensor:
    """An empty tensor of ``alpha``'s shape, dtype and device (for the signature)."""
    return features.new_empty((features.shape[0], *plan.alpha_shape))


def _is_spatial(layout: str) -> bool:
    from iba.layout import is_spatial

    return is_spatial(layout)
