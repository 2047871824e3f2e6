"""M2IB on Flax compiles once per shapes: the other side's embeddings are arguments of the
compiled optimisation (``iba_jax.m2ib.similarity_loss`` is a ``functools.partial``,
``iba_jax._cache.lift_arrays``), so new pairs of the same shapes run it again."""

from __future__ import annotations

import jax
import numpy as np

import iba
from iba.demo import pairs
from iba_jax import _cache
from iba_jax.runner import JaxRunner


class TraceCount:
    """JAX traces (``jax.monitoring`` events) while the block runs."""

    def __enter__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, seconds, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            self.count += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


def test_new_pairs_of_the_same_shapes_reuse_the_compiled_optimisation():
    config = iba.m2ib_config(beta=0.3, steps=3, batch_size=2)
    explainer = JaxRunner.m2ib_explainer("_blocks.14", 1, config=config)
    images = JaxRunner.pair_inputs(pairs.images(pairs.PAIRS[:2]))
    cat = explainer.explain(images[:1], "a picture of a cat", seed=0)
    with TraceCount() as traces:  # another caption, padded to as many tokens
        cup = explainer.explain(images[1:], "a cup of espresso", seed=0)
    assert traces.count == 0
    # the new caption's maps (the same photo: the caption moves them a little), as compiled anew
    assert [w.text for w in cup.text_maps[0].words] == ["a", "cup", "of", "espresso"]
    assert np.abs(cup.image_maps - cat.image_maps).max() > 1e-5
    _cache.clear()
    fresh = explainer.explain(images[1:], "a cup of espresso", seed=0)
    np.testing.assert_allclose(cup.image_maps, fresh.image_maps, atol=1e-6)
    np.testing.assert_allclose(
        cup.text_maps[0].token_bits, fresh.text_maps[0].token_bits, rtol=1e-6
    )
