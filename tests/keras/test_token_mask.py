"""``analyze(token_mask=)`` in the Keras engine: the information term over the real tokens only,
no capacity at padding, one compiled step for every mask, and the driver's errors for bad masks
(docs/mathematics.md section 6.3)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import BACKEND, float64
from keras import layers

import iba
import iba_tf
from iba import text

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")

T, D, BETA = 5, 4, 2.0
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float64)


def _token_model() -> keras.Model:
    """Tokens ``(T, D)`` through a Dense layer, the bottleneck, mean over tokens, 2 logits."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((T, D))
    h = layers.Dense(D, name="tokens")(inputs)
    h = iba_tf.IBALayer(name="iba")(h)
    outputs = layers.Dense(2, name="logits")(layers.GlobalAveragePooling1D(name="pool")(h))
    return keras.Model(inputs, outputs)


def _zero(outputs):
    return outputs[:, 0] * 0.0  # no model loss: the loss is beta times the information term


class _Traces:
    """Traces of the compiled steps since creation (TensorFlow: tracing counts; JAX: trace events;
    torch: nothing compiled)."""

    def __init__(self, explainer: iba_tf.IBA):
        self.explainer, self.events = explainer, 0
        if BACKEND == "jax":
            import jax.monitoring

            jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, seconds: float, **kwargs) -> None:
        if event == "/jax/core/compile/jaxpr_trace_duration":
            self.events += 1

    def count(self) -> int:
        if BACKEND == "tensorflow":
            steps = self.explainer.engine._steps.values()
            return sum(int(s.experimental_get_tracing_count()) for s in steps)
        return self.events

    def close(self) -> None:
        if BACKEND == "jax":
            import jax.monitoring

            jax.monitoring.unregister_event_duration_listener(self._listen)


@pytest.fixture(scope="module")
def token_case():
    """The float64 token model, an explainer estimated on it, and two inputs."""
    rng = np.random.default_rng(0)
    with float64():
        model = _token_model()
        explainer = iba_tf.IBA("iba", steps=4, beta=BETA, batch_size=3)
        explainer.estimate(model, rng.normal(size=(200, T, D)), progress=False)
        yield model, explainer, rng.normal(size=(2, T, D))


def test_the_token_mask_is_the_information_over_real_tokens(token_case):
    """With a zero model loss each step's loss is ``beta * iba.text.information_term``; the
    capacity is zero at padding and ``alpha`` there never moves; without the mask padding counts."""
    model, explainer, x = token_case
    with float64():
        with explainer.planned(model, x, loss_fn=_zero, token_mask=MASK) as (run, plan):
            assert plan.token_mask is not None
            result = run.optimize(plan)
        r = keras.ops.convert_to_numpy(model.get_layer("tokens")(x))
        stats = explainer.statistics()[0]
        for step, loss in enumerate(result.losses):
            cap = iba.capacity(r, iba.sigmoid(result.alphas[step]), stats.mean, stats.std)
            want = BETA * text.information_term(cap * stats.mask, MASK)
            np.testing.assert_allclose(loss, want, rtol=1e-10)
        assert (result.capacity[0, 3:] == 0).all() and (result.capacity[0, :3] > 0).all()
        assert (result.capacity[1] > 0).all()
        assert (result.alphas[:, 0, 3:] == 5.0).all() and (result.alphas[-1, 0, :3] != 5.0).all()

        maps = explainer.analyze(model, x, loss_fn=_zero, token_mask=MASK, details=True)
        np.testing.assert_array_equal(maps.capacity, result.capacity)
        assert (maps.heatmap[0, 3:] == 0).all()
        plain = explainer.analyze(model, x, loss_fn=_zero, details=True)
        assert (plain.capacity[0, 3:] > 0).all()


def test_every_mask_runs_one_compiled_step(token_case):
    """A mask is an argument of the compiled step: a new mask of the same shape traces nothing."""
    model, explainer, x = token_case
    with float64():
        explainer.analyze(model, x, loss_fn=_zero, token_mask=MASK)
        kept, traces = len(explainer.engine._steps), _Traces(explainer)
        try:
            before = traces.count()
            other = explainer.analyze(model, x, loss_fn=_zero, token_mask=MASK[::-1].copy())
            assert (other[1, 3:] == 0).all() and (other[0] > 0).all()
            assert (len(explainer.engine._steps), traces.count()) == (kept, before)
        finally:
            traces.close()


def test_bad_token_masks_raise(token_case):
    model, explainer, x = token_case
    with float64():
        before = [keras.ops.convert_to_numpy(v) for v in model.weights]
        bad = {
            "does not fit 2 input": MASK[:, :4],
            "0 \\(padding\\) and 1": MASK * 0.5,
        }
        for message, mask in bad.items():
            with pytest.raises(ValueError, match=message):
                explainer.analyze(model, x, loss_fn=_zero, token_mask=mask)
        for a, b in zip(before, model.weights):
            np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))

    image = keras.Sequential(
        [keras.Input((4, 4, 1)), layers.Conv2D(2, 3, padding="same", name="conv"),
         layers.Flatten(), layers.Dense(2)]
    )  # fmt: skip
    images = np.random.default_rng(1).normal(size=(8, 4, 4, 1)).astype("float32")
    explainer = iba_tf.IBA("conv", steps=2)
    explainer.estimate(image, images, progress=False)
    with pytest.raises(ValueError, match="token_mask is for token features"):
        explainer.analyze(image, images[:2], target=[0, 1], token_mask=np.ones((2, 4)))
