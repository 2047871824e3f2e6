"""Token attributions for PyTorch text classifiers, to compare text IBA with (docs/mathematics.md
sections 6 and 8).

Four methods on a ``torch.nn.Module`` that takes a tokenizer's outputs as keyword arguments (a
Hugging Face ``...ForSequenceClassification`` or :func:`iba_torch.text.minilm_sentiment`) and
returns logits ``(N, C)`` (a tensor, an output with ``.logits``, or a tuple whose first item they
are):

- :func:`gradient_x_input`: ``sum_d e_td * d logit[target] / d e_td`` per token;
- :func:`integrated_gradients`: the same with the gradient averaged on the straight path from a
  baseline sentence to the text (Sundararajan et al., 2017);
- :func:`occlusion`: leave one token out, the drop of the target's logit when a token is replaced
  by another id (``[MASK]``, ``[UNK]`` or ``[PAD]``);
- :func:`random`: uniform noise, the floor every method must beat.

``e`` is the output of the model's **word-embedding** module (``nn.Embedding`` of the token ids,
before the position and segment embeddings and the LayerNorm that BERT adds to it). The gradient
methods replace that output by a tensor of their own through a forward hook, so they need no
``inputs_embeds`` argument; the module is found by ``get_input_embeddings()`` (Hugging Face) or
by its name (``...word_embeddings``), or given as ``embedding=``.

``inputs`` is the tokenizer's output for a batch (a ``BatchEncoding`` or a dict of tensors or
arrays): ``input_ids`` ``(N, T)`` is required; ``attention_mask`` (default all ones) marks the
real tokens; ``special_tokens_mask`` (``return_special_tokens_mask=True``), when present, marks
``[CLS]`` / ``[SEP]`` and is not passed to the model (nor is ``offset_mapping``). Every method
returns ``(N, T)`` float64, **0 at padding**. Special tokens are context, not explained, where the
method replaces tokens: occlusion does not occlude them and integrated gradients keeps them in its
baseline, so both give them 0; gradient x input gives them their local value.

Every method leaves the model exactly as it was: it runs in eval mode with every parameter's
``requires_grad`` off (gradients are taken with respect to the embeddings only; ``.grad`` fields
are not touched), removes its hook, and restores modes and flags afterwards, also when it raises.

    >>> from iba_torch import text_baselines as tb
    >>> model = minilm_sentiment()  # doctest: +SKIP
    >>> inputs = model.tokenizer(["A gripping, funny film."], return_tensors="pt",
    ...                          return_special_tokens_mask=True)  # doctest: +SKIP
    >>> tb.integrated_gradients(model, inputs, target=1).shape  # doctest: +SKIP
    (1, 8)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from iba import targets
from iba.baselines import batches, check_positive_int, integration_points
from iba_torch import _math, _model

__all__ = ["gradient_x_input", "integrated_gradients", "occlusion", "random", "BASELINES"]

NOT_MODEL_INPUTS = (
    "special_tokens_mask",
    "offset_mapping",
    "length",
    "overflow_to_sample_mapping",
    "num_truncated_tokens",
    "overflowing_tokens",
)
"""Keys a tokenizer may return that the methods read or drop but never pass to the model."""

IG_BASELINES = ("pad", "zeros")
SCORES = ("logit", "log_softmax")


# -- inputs --------------------------------------------------------------------------------------


class _Batch(NamedTuple):
    """The checked inputs of one call."""

    ids: torch.Tensor  # (N, T) int64, on the model's device
    others: dict[str, torch.Tensor]  # every other model input, (N, ...) on the model's device
    real: np.ndarray  # (N, T) bool, the attention mask
    special: np.ndarray  # (N, T) bool, special tokens (all False if unknown)

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, index: Any) -> dict[str, torch.Tensor]:
        """The model inputs other than the ids for the rows ``index`` (a LongTensor)."""
        return {k: v[index] for k, v in self.others.items()}


def _tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"inputs[{name!r}] must be a tensor or an array, got {type(value).__name__}"
        ) from None


def _batch(model: torch.nn.Module, inputs: Any) -> _Batch:
    """Check the tokenizer's outputs and move them to the model's device."""
    if not isinstance(inputs, Mapping):
        raise TypeError(
            "inputs must be the tokenizer's output for a batch (a dict with 'input_ids' and "
            f"'attention_mask'), got {type(inputs).__name__}: call tokenizer(texts, padding=True, "
            "return_tensors='pt')"
        )
    if "input_ids" not in inputs:
        raise ValueError(f"inputs has no 'input_ids' (keys: {sorted(inputs)})")
    ids = _tensor("input_ids", inputs["input_ids"])
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(
            f"inputs['input_ids'] must be a non-empty batch (N, T), got shape {tuple(ids.shape)}; "
            "tokenize a list of texts with padding=True"
        )
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise TypeError(f"inputs['input_ids'] must hold integer token ids, got {ids.dtype}")
    shape = tuple(ids.shape)
    device, _ = _model.model_device_dtype(model)

    def mask(name: str, default: bool) -> np.ndarray:
        if inputs.get(name) is None:
            return np.full(shape, default)
        value = _tensor(name, inputs[name]).detach().cpu().numpy()
        if value.shape != shape:
            raise ValueError(
                f"inputs[{name!r}] has shape {value.shape}, input_ids {shape}: they must match"
            )
        if not np.isin(value, (0, 1)).all():
            raise ValueError(f"inputs[{name!r}] must hold 0 and 1 only")
        return value.astype(bool)

    real = mask("attention_mask", True)
    special = mask("special_tokens_mask", False) & real
    others: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        if key == "input_ids" or key in NOT_MODEL_INPUTS or value is None:
            continue
        t = _tensor(key, value)
        if t.ndim == 0 or t.shape[0] != shape[0]:
            raise ValueError(
                f"inputs[{key!r}] has shape {tuple(t.shape)}: every input needs the batch's "
                f"{shape[0]} rows first"
            )
        others[key] = t.to(device) if device is not None else t
    ids = ids.long()
    return _Batch(ids.to(device) if device is not None else ids, others, real, special)


def _embedding(model: torch.nn.Module, embedding: Any) -> tuple[str, torch.nn.Module]:
    """``(name, module)`` of the word embeddings: ``embedding`` (a module or its name), else
    ``get_input_embeddings()`` of the model or of its first Hugging Face submodule, else the one
    module whose name ends ``word_embeddings``."""
    if embedding is not None:
        return _model.resolve(model, [embedding])[0]
    names = {id(m): n for n, m in model.named_modules()}
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get):
            try:
                found = get()
            except (NotImplementedError, AttributeError):
                continue
            if isinstance(found, torch.nn.Module) and id(found) in names:
                return names[id(found)], found
    named = [(n, m) for n, m in model.named_modules() if n.split(".")[-1] == "word_embeddings"]
    if len(named) == 1:
        return named[0]
    tables = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    raise ValueError(
        f"cannot tell the word embeddings of {type(model).__name__}: it has no "
        f"get_input_embeddings() and {len(named)} modules named 'word_embeddings'; pass "
        f"embedding= (its nn.Embedding modules: {tables})"
    )


class _Embedded:
    """The model with its word embeddings replaced, through a forward hook, by given tensors."""

    def __init__(self, model: torch.nn.Module, name: str, module: torch.nn.Module | None):
        self.model, self.name, self.module = model, name, module
        self.replacement: torch.Tensor | None = None
        self.calls = 0

    def hook(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        self.calls += 1
        if self.replacement is None:
            return None
        features = _model.first_tensor(output)
        if tuple(features.shape) != tuple(self.replacement.shape):
            raise ValueError(
                f"the embedding module {self.name!r} gives {tuple(features.shape)}, the "
                f"replacement is {tuple(self.replacement.shape)}: pass embedding= the module of "
                "the token ids' embeddings (N, T, D)"
            )
        return _model.replace_first(output, self.replacement.to(features.dtype))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The word embeddings ``(n, T, D)`` of ``ids``, without gradients."""
        assert self.module is not None  # the gradient methods require it
        with torch.no_grad():
            out = _model.first_tensor(self.module(ids))
        if out.ndim != 3 or tuple(out.shape[:2]) != tuple(ids.shape):
            raise ValueError(
                f"the embedding module {self.name!r} maps ids {tuple(ids.shape)} to "
                f"{tuple(out.shape)}; the methods need word embeddings (N, T, D): pass embedding="
            )
        return out.detach()

    def logits(
        self, ids: torch.Tensor, others: dict[str, torch.Tensor], embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """The model's logits on ``ids`` (their embeddings replaced by ``embeds`` if given)."""
        self.replacement, self.calls = embeds, 0
        try:
            out = _math.logits_of(self.model(input_ids=ids, **others))
        finally:
            self.replacement = None
        if embeds is not None and self.calls != 1:
            raise RuntimeError(
                f"the embedding module {self.name!r} ran {self.calls} times in one forward pass; "
                "the methods need a module that runs exactly once: pass embedding="
            )
        if out.ndim != 2 or out.shape[0] != ids.shape[0]:
            raise ValueError(
                f"the model must return logits (n, n_classes) for a batch of n = {ids.shape[0]}, "
                f"got {tuple(out.shape)}"
            )
        return out


@contextlib.contextmanager
def _session(model: torch.nn.Module, embedding: Any, required: bool = True) -> Iterator[_Embedded]:
    """The model in eval mode, weights frozen, the embedding hook in place; all undone after.

    With ``required=False`` (occlusion: ids only) a model whose word embeddings are not found
    runs without the hook."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        name, module = _embedding(model, embedding)
    except ValueError:
        if required:
            raise
        name, module = "", None
    embedded = _Embedded(model, name, module)
    pairs = [] if module is None else [(module, embedded.hook)]
    with _model.preserved(model), _model.hooks(pairs):
        yield embedded


def _labels(
    run: _Embedded, batch: _Batch, target: Any, batch_size: int
) -> tuple[np.ndarray, torch.Tensor]:
    """``(labels (N,), clean logits (N, C))``; ``target=None`` takes each text's top class."""
    with torch.no_grad():
        logits = torch.cat(
            [
                run.logits(batch.ids[s], batch.rows(slice(s.start, s.stop)), None)
                for s in batches(batch.n, batch_size)
            ]
        )
    if target is None:
        return logits.argmax(1).cpu().numpy(), logits
    labels = targets.labels(target, batch.n)
    targets.check_range(labels, int(logits.shape[1]))
    return labels, logits


def _gradient_rows(
    run: _Embedded,
    batch: _Batch,
    rows: np.ndarray,
    embeds: torch.Tensor,
    labels: np.ndarray,
) -> torch.Tensor:
    """``d logit[label] / d e`` at the embeddings ``embeds`` of the texts ``rows``."""
    index = torch.as_tensor(rows, device=batch.ids.device)
    embeds = embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = run.logits(batch.ids[index], batch.rows(index), embeds)
        picked = logits.gather(1, torch.as_tensor(labels, device=logits.device)[:, None])
        (grad,) = torch.autograd.grad(picked.sum(), embeds)
    return grad


def _finish(values: torch.Tensor | np.ndarray, real: np.ndarray) -> np.ndarray:
    out = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else values
    return np.where(real, np.asarray(out, np.float64), 0.0)


# -- the methods ---------------------------------------------------------------------------------


def random(model: torch.nn.Module, inputs: Any, target: Any = None, *, seed: int | None = 0):
    """Uniform noise in ``[0, 1)`` per real token, 0 at padding, ``(N, T)`` float64: the floor
    every method must beat (docs/mathematics.md section 8). The model is not called."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch = _batch(model, inputs)
    return _finish(np.random.default_rng(seed).random(batch.real.shape), batch.real)


def gradient_x_input(
    model: torch.nn.Module,
    inputs: Any,
    target: Any = None,
    *,
    embedding: str | torch.nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Gradient x input on the word embeddings: ``sum_d e_td * d logit[target] / d e_td`` per
    token (signed; Shrikumar et al., 2016; docs/mathematics.md section 8).

    Args:
        model: the classifier (see the module's docstring); left as it was.
        inputs: the tokenizer's outputs for the batch.
        target: the class explained, one int or one per text; ``None``: each text's top class.
        embedding: the word-embedding module or its name (default: found, see the module).
        batch_size: texts per call of the model.

    Returns:
        ``(N, T)`` float64, 0 at padding.
    """
    check_positive_int("batch_size", batch_size)
    with _session(model, embedding) as run:
        batch = _batch(model, inputs)
        labels, _ = _labels(run, batch, target, batch_size)
        out = np.zeros(batch.real.shape)
        for s in batches(batch.n, batch_size):
            rows = np.arange(s.start, s.stop)
            embeds = run.embed(batch.ids[s])
            grad = _gradient_rows(run, batch, rows, embeds, labels[rows])
            out[rows] = (grad * embeds).sum(-1).double().cpu().numpy()
    return _finish(out, batch.real)


def _pad_id(model: torch.nn.Module, pad_id: int | None) -> int:
    if pad_id is not None:
        return check_positive_int("pad_id", pad_id, minimum=0)
    tokenizer = getattr(model, "tokenizer", None)
    found = getattr(tokenizer, "pad_token_id", None)
    if found is None:
        for module in model.modules():
            found = getattr(getattr(module, "config", None), "pad_token_id", None)
            if found is not None:
                break
    if found is None:
        raise ValueError(
            "baseline='pad' needs the id of the padding token and neither the model's tokenizer "
            "nor its config names one: pass pad_id=tokenizer.pad_token_id"
        )
    return int(found)


def integrated_gradients(
    model: torch.nn.Module,
    inputs: Any,
    target: Any = None,
    *,
    steps: int = 50,
    baseline: str = "pad",
    method: str = "riemann_right",
    pad_id: int | None = None,
    embedding: str | torch.nn.Module | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Integrated Gradients on the word embeddings (Sundararajan et al., 2017; docs/mathematics.md
    section 8): ``sum_d (e - e')_td * sum_k w_k d logit[target] / d e_td`` at
    ``e' + alpha_k (e - e')``, per token (signed).

    The baseline sentence ``e'`` keeps the text's length, positions, segments and attention mask,
    and its special tokens (``[CLS]``, ``[SEP]``, known from ``special_tokens_mask``), which thus
    get 0; every other real token's word embedding becomes:

    - ``"pad"`` (default): the ``[PAD]`` token's embedding, a sentence of padding that the model
      still attends to (the usual choice for BERT classifiers, e.g. Captum's tutorial);
    - ``"zeros"``: zeros (the embedding layer's LayerNorm then sees only positions and segments).

    Completeness: the attributions of a text sum to ``logit(e) - logit(e')`` up to the
    quadrature's error (``method``, see ``iba.baselines.integration_points``).

    Args:
        steps: points on the path (50).
        baseline: ``"pad"`` or ``"zeros"``.
        method: the quadrature (``iba.baselines.integration_points``): ``"riemann_right"``
            (the paper's sum; its error shrinks as ``1 / steps``) or ``"gausslegendre"``
            (Captum's default; exact to rounding on smooth paths at a few dozen steps), ...
        pad_id: the padding token's id for ``"pad"`` (default: the model's tokenizer's or its
            config's ``pad_token_id``).
        batch_size: path points per call of the model (rows of all texts, text-major).
        (model, inputs, target, embedding: as :func:`gradient_x_input`.)

    Returns:
        ``(N, T)`` float64, 0 at padding and at special tokens.
    """
    if baseline not in IG_BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; baselines are: {', '.join(IG_BASELINES)}")
    check_positive_int("batch_size", batch_size)
    alphas, weights = integration_points(steps, method)
    with _session(model, embedding) as run:
        batch = _batch(model, inputs)
        labels, _ = _labels(run, batch, target, batch_size)
        x = run.embed(batch.ids)
        if baseline == "pad":
            start = run.embed(torch.full_like(batch.ids, _pad_id(model, pad_id)))
        else:
            start = torch.zeros_like(x)
        keep = torch.as_tensor(~batch.real | batch.special, device=x.device)[..., None]
        start = torch.where(keep, x, start)
        delta = x - start
        n_steps = len(alphas)
        alpha_t = torch.as_tensor(alphas, dtype=x.dtype, device=x.device)
        weight_t = torch.as_tensor(weights, dtype=torch.float64, device=x.device)
        total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        for s in batches(batch.n * n_steps, batch_size):
            r = np.arange(s.start, s.stop)
            text, step = r // n_steps, r % n_steps
            t, k = torch.as_tensor(text, device=x.device), torch.as_tensor(step, device=x.device)
            points = start[t] + alpha_t[k][:, None, None] * delta[t]
            grad = _gradient_rows(run, batch, text, points, labels[text])
            total.index_add_(0, t, grad.double() * weight_t[k][:, None, None])
        out = (total * delta.double()).sum(-1)
    return _finish(out, batch.real)


def occlusion(
    model: torch.nn.Module,
    inputs: Any,
    target: Any = None,
    *,
    replacement_id: int,
    score: str = "logit",
    batch_size: int = 64,
) -> np.ndarray:
    """Leave-one-token-out occlusion (docs/mathematics.md section 8): per real token, the drop
    of the target's score when that token's id alone is replaced by ``replacement_id`` (the
    tokenizer's ``mask_token_id``, ``unk_token_id`` or ``pad_token_id``); the attention mask and
    the length stay, so the replaced token is still attended to.

    Args:
        replacement_id: the id a left-out token becomes (required: ``[MASK]`` suits models
            pre-trained with masked language modelling, such as BERT and MiniLM).
        score: ``"logit"`` (default, the target's logit, as the image occlusion) or
            ``"log_softmax"`` (its log-probability).
        batch_size: occluded texts per call of the model.
        (model, inputs, target: as :func:`gradient_x_input`.)

    Returns:
        ``(N, T)`` float64: ``score(text) - score(text with token t replaced)``; 0 at padding and
        at special tokens (not occluded).
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; scores are: {', '.join(SCORES)}")
    check_positive_int("batch_size", batch_size)
    if isinstance(replacement_id, torch.Tensor) and replacement_id.ndim == 0:
        replacement_id = int(replacement_id)
    replacement = check_positive_int("replacement_id", replacement_id, minimum=0)
    with _session(model, None, required=False) as run:
        size = None if run.module is None else _vocab_size(run.module)
        if size is not None and replacement >= size:
            raise ValueError(
                f"replacement_id={replacement} is outside the vocabulary of {size} tokens; pass "
                "tokenizer.mask_token_id, unk_token_id or pad_token_id"
            )
        batch = _batch(model, inputs)
        labels, logits = _labels(run, batch, target, batch_size)
        reference = _scores(logits, labels, score)
        text, position = np.nonzero(batch.real & ~batch.special)
        out = np.zeros(batch.real.shape)
        with torch.no_grad():
            for s in batches(len(text), batch_size):
                rows = torch.as_tensor(text[s], device=batch.ids.device)
                ids = batch.ids[rows].clone()
                ids[torch.arange(len(rows)), torch.as_tensor(position[s])] = replacement
                scores = _scores(run.logits(ids, batch.rows(rows), None), labels[text[s]], score)
                out[text[s], position[s]] = reference[text[s]] - scores
    return _finish(out, batch.real)


def _vocab_size(module: torch.nn.Module) -> int | None:
    size = getattr(module, "num_embeddings", None)
    return int(size) if isinstance(size, int) else None


def _scores(logits: torch.Tensor, labels: np.ndarray, score: str) -> np.ndarray:
    values = logits.double()
    if score == "log_softmax":
        values = torch.log_softmax(values, dim=1)
    picked = values.gather(1, torch.as_tensor(labels, device=values.device)[:, None])[:, 0]
    return picked.cpu().numpy()


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "random": random,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "occlusion": occlusion,
}
"""The token baselines by name (``occlusion`` needs ``replacement_id=``)."""
