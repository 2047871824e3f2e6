"""A real image-text dual encoder from weights that ship offline, framework-free: its prompts, its
text head and the classifier rows it maps captions onto (docs/mathematics.md section 5).

No CLIP weights ship in any package, so M2IB's real model is built from two bundled encoders:

- the **image** embedding is EfficientNet-Lite0's pooled features ``f`` ``(1280,)``: the head
  convolution, batch norm and ReLU6, then the global average pool (before dropout and ``_fc``);
- the **text** embedding is a *soft retrieval* over the 1000 ImageNet classes:
  ``text(t) = softmax(e(t) . P^T / T) . W``, with ``e(t)`` all-MiniLM-L6-v2's sentence embedding
  of the caption (mean over the mask, L2-normalised), ``P`` ``(1000, 384)`` the normalised
  embeddings of the prompts ``"a photo of a {class}."``, ``T`` = :data:`TEMPERATURE` and ``W``
  ``(1000, 1280)`` the rows of EfficientNet-Lite0's classifier ``_fc``.

What the similarity means: ``f . W_c`` is the classifier's logit of class ``c`` (without its
bias), so ``cos(f, text(t))`` is the classifier's logits averaged with the caption's retrieval
weights over the classes, divided by the two norms. A caption scores an image high when the
classes MiniLM finds closest to it are classes the classifier sees in the image.

Limits: the joint space knows **ImageNet-1k concepts only** (objects and animals; no attributes,
counts, relations, scenes or actions beyond what a class name says); a caption about anything
else is mapped onto its nearest class names, whatever the image. Word order and negation barely
matter (MiniLM's sentence embedding is a mean over tokens). The similarity is not calibrated
across captions: compare images for one caption, or captions of one concept.

The class names and prompt templates ship as a file in the ``open-clip-torch`` wheel
(``open_clip/zero_shot_metadata.py``); it is read as text and parsed with :mod:`ast`, never
imported (``pip install --no-deps open-clip-torch``). Imports NumPy and the standard library
only; the adapters build the encoders (``iba_torch.dual_encoder``, ``iba_tf.models.dual_encoder``,
``iba_jax.models.dual_encoder``).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
from pathlib import Path

import numpy as np

PACKAGE = "open-clip-torch"
INSTALL = "pip install --no-deps open-clip-torch"
METADATA_FILE = "open_clip/zero_shot_metadata.py"
TEMPLATE = "a photo of a {}."  # one of the file's OPENAI_IMAGENET_TEMPLATES
TEMPERATURE = 0.05  # of the softmax over the prompts' cosine similarities
CLASSES = 1000
NORM_EPS = 1e-12  # floor of a norm when a row is normalised


def metadata_path() -> Path:
    """The path of ``open_clip/zero_shot_metadata.py`` in the installed ``open-clip-torch``
    wheel, or a clear error naming the pip command."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the ImageNet class names and prompt templates ship in the {PACKAGE} wheel: "
            f"{INSTALL} (--no-deps: only its file {METADATA_FILE} is read)"
        ) from None
    path = Path(str(dist.locate_file(METADATA_FILE)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{PACKAGE} is installed but has no {METADATA_FILE}: reinstall it with "
            f"{INSTALL} --force-reinstall"
        )
    return path


def _template(node: ast.expr) -> str:
    """``lambda c: f'a photo of a {c}.'`` as the format string ``'a photo of a {}.'``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if not (isinstance(node, ast.Lambda) and isinstance(node.body, ast.JoinedStr)):
        raise ValueError(f"unexpected template {ast.unparse(node)!r}")
    parts = []
    for value in node.body.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value).replace("{", "{{").replace("}", "}}"))
        elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
            parts.append("{}")
        else:
            raise ValueError(f"unexpected template {ast.unparse(node)!r}")
    return "".join(parts)


@functools.cache
def _metadata() -> dict[str, tuple[str, ...]]:
    """The file's tuples by name: class names (``ast.literal_eval``) and templates (format
    strings)."""
    path = metadata_path()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or not isinstance(node.value, (ast.Tuple, ast.List)):
            continue
        if target.id.endswith("TEMPLATES"):
            found[target.id] = tuple(_template(e) for e in node.value.elts)
        else:
            value = ast.literal_eval(node.value)
            if all(isinstance(v, str) for v in value):
                found[target.id] = tuple(value)
    return found


def imagenet_classnames() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names of ``open_clip`` (``IMAGENET_CLASSNAMES``), in class-index
    order: readable names ("tabby cat", "espresso") rather than WordNet's first lemma."""
    names = _metadata().get("IMAGENET_CLASSNAMES", ())
    if len(names) != CLASSES:
        raise ValueError(
            f"{metadata_path()} holds {len(names)} IMAGENET_CLASSNAMES, expected {CLASSES}: "
            f"reinstall it with {INSTALL}"
        )
    return names


def imagenet_templates(name: str = "OPENAI_IMAGENET_TEMPLATES") -> tuple[str, ...]:
    """A tuple of prompt templates of the file as format strings (``"a photo of a {}."``):
    ``OPENAI_IMAGENET_TEMPLATES`` (80) or ``SIMPLE_IMAGENET_TEMPLATES`` (7)."""
    found = _metadata()
    if name not in found or not name.endswith("TEMPLATES"):
        known = sorted(k for k in found if k.endswith("TEMPLATES"))
        raise ValueError(f"unknown template set {name!r}; the file has {known}")
    return found[name]


@functools.cache
def imagenet_prompts(template: str = TEMPLATE) -> tuple[str, ...]:
    """The 1000 prompts ``template.format(class name)``: the rows of ``P``."""
    if template.count("{}") != 1:
        raise ValueError(f"template must hold one '{{}}' for the class name, got {template!r}")
    return tuple(template.format(name) for name in imagenet_classnames())


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (floored at :data:`NORM_EPS`), float64."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)


def classifier_rows() -> np.ndarray:
    """``W`` ``(1000, 1280)`` float32: the rows of the bundled EfficientNet-Lite0's ``_fc``."""
    from iba.models.checkpoint import efficientnet_lite0

    weight = np.asarray(efficientnet_lite0()["_fc.weight"], np.float32)
    if weight.shape != (CLASSES, 1280):
        raise ValueError(f"_fc.weight has shape {weight.shape}, expected ({CLASSES}, 1280)")
    return weight


def soft_retrieval(
    embeddings: np.ndarray,
    prompts: np.ndarray,
    classes: np.ndarray,
    temperature: float = TEMPERATURE,
) -> np.ndarray:
    """The text head, float64: ``softmax(normalize(e) . P^T / temperature) . W``.

    Args:
        embeddings: sentence embeddings ``e`` ``(N, D)`` (normalised here).
        prompts: ``P`` ``(K, D)``, the prompts' normalised sentence embeddings.
        classes: ``W`` ``(K, E)``, one row of the image space per prompt.
        temperature: of the softmax over the ``K`` cosine similarities.

    Returns:
        ``(N, E)``: the retrieval-weighted mean of the rows of ``W``.
    """
    e, p, w = (np.asarray(a, np.float64) for a in (embeddings, prompts, classes))
    if e.ndim != 2 or p.ndim != 2 or w.ndim != 2:
        raise ValueError(
            f"soft_retrieval needs 2-D arrays, got embeddings {e.shape}, prompts {p.shape}, "
            f"classes {w.shape}"
        )
    if e.shape[1] != p.shape[1] or p.shape[0] != w.shape[0]:
        raise ValueError(
            f"embeddings {e.shape}, prompts {p.shape} and classes {w.shape} do not fit: expected "
            "(N, D), (K, D) and (K, E)"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = normalize_rows(e) @ p.T / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ w
