"""Converted weights into a Linen module's nested variables, checked against the module's own
shapes: one function for every Flax port (EfficientNet-Lite0, MiniLM)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax


def nested(
    flat: dict[tuple[str, ...], jax.Array], module: nn.Module, *example: Any, source: str
) -> dict[str, Any]:
    """``{collection: {module: ... {leaf: array}}}`` from ``flat``, keyed by
    ``(collection, *module path, leaf)``.

    Every key and shape is checked against what ``module.init(key, *example)`` gives (shapes
    only, nothing is computed); a missing, extra or misshapen array raises ``ValueError`` that
    names it and ``source`` (where the arrays came from, e.g. ``"the state dict"``).
    """
    shapes = jax.eval_shape(module.init, jax.random.key(0), *example)
    expected = {
        tuple(k.key for k in path): leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
    }
    missing = sorted("/".join(k) for k in expected.keys() - flat.keys())
    extra = sorted("/".join(k) for k in flat.keys() - expected.keys())
    if missing or extra:
        raise ValueError(f"{source} does not fit the model: missing {missing}, extra {extra}")
    for key, shape in expected.items():
        if flat[key].shape != shape:
            raise ValueError(
                f"{'/'.join(key)} has shape {flat[key].shape} in {source}, the model expects "
                f"{shape}"
            )
    variables: dict[str, Any] = {}
    for key, array in flat.items():
        node = variables
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = array
    return variables
