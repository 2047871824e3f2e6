"""``iba.text_config()`` on every backend: the text-IBA authors' token map, in float64.

A tiny token model (``tests/text_iba_replay.py``: ``enc1`` dense + tanh, ``enc2`` dense, where the
bottleneck sits, then dense + tanh, a mean over tokens and the classifier) is ported to the
backend and explained with the preset; the maps equal the independent NumPy replay of the
authors' code to 1e-6 relative (docs/mathematics.md section 6). Without the preset the project's
own convention holds, and the replay of it agrees instead.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

import iba
from tests import text_iba_replay as rp

pytestmark = pytest.mark.filterwarnings("ignore:the estimator has seen only")

RTOL = 1e-6
TARGET = "enc2"
LABELS = np.array([0, 2])


@functools.cache
def data() -> dict[str, np.ndarray]:
    """The weights, two sentences to explain, a corpus, and their features (float64 NumPy)."""
    w = rp.weights()
    x = rp.sentences(2)
    corpus = rp.features(w, rp.sentences(40, seed=2))
    return {
        "w": w,
        "x": x,
        "features": rp.features(w, x),
        "layer_input": rp.layer_input(w, x),
        "corpus": corpus,
    }


def noise(n_inputs: int, seed: int) -> np.ndarray:
    config = iba.text_config()
    return iba.draw_noise(seed, config.steps, config.batch_size, (rp.T, rp.D), n_inputs=n_inputs)


def estimator(points: np.ndarray) -> iba.Estimator:
    est = iba.Estimator(layout="tokens")
    est.update(points)
    return est


def assert_close(actual, expected, rtol=RTOL):
    """Relative to the largest magnitude, as the conformance suite compares stages."""
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def assert_maps(ex: iba.Explanation, replays: list[dict]) -> None:
    for i, want in enumerate(replays):
        assert_close(ex.capacity[i], want["capacity"])
        np.testing.assert_allclose(iba.normalize(ex.heatmap)[i], want["map"], atol=RTOL)


# -- the ports -----------------------------------------------------------------------------------


class Port:
    """The token model in one framework, in float64."""

    def __init__(self, name: str):
        self.name = name
        with self.float64():
            self.model = self._build(data()["w"])

    @contextlib.contextmanager
    def float64(self):
        """The framework in float64 (Keras' floatx; JAX's x64), restored afterwards."""
        if self.name == "torch":
            yield
            return
        if self.name.startswith("flax-"):
            import jax

            with jax.enable_x64(True):
                yield
            return
        import keras

        # Keras pins its dtype policy at the first layer built: set it with floatx
        old, policy, x64 = keras.config.floatx(), keras.config.dtype_policy().name, None
        if keras.backend.backend() == "jax":
            import jax

            x64 = jax.config.jax_enable_x64
            jax.config.update("jax_enable_x64", True)
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
        try:
            yield
        finally:
            keras.config.set_floatx(old)
            keras.config.set_dtype_policy(policy)
            if x64 is not None:
                import jax

                jax.config.update("jax_enable_x64", x64)

    def inputs(self, x: np.ndarray) -> Any:
        if self.name == "torch":
            import torch

            return torch.as_tensor(x)
        if self.name.startswith("flax-"):
            import jax.numpy as jnp

            return jnp.asarray(x)
        return x

    def _build(self, w: dict) -> Any:
        if self.name == "torch":
            return _torch_model(w)
        if self.name == "flax-linen":
            return _linen_model(w)
        if self.name == "flax-nnx":
            return _nnx_model(w)
        return _keras_model(w)


@functools.cache
def port(name: str) -> Port:
    return Port(name)


def _torch_model(w: dict):
    import torch

    class MeanTokens(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=1)

    def linear(name: str) -> torch.nn.Linear:
        kernel = w[f"{name}.kernel"]
        layer = torch.nn.Linear(*kernel.shape).double()
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(kernel.T))
            layer.bias.copy_(torch.as_tensor(w[f"{name}.bias"]))
        return layer

    layers = [
        ("enc1", linear("enc1")),
        ("act1", torch.nn.Tanh()),
        ("enc2", linear("enc2")),
        ("mix", linear("mix")),
        ("act2", torch.nn.Tanh()),
        ("pool", MeanTokens()),
        ("cls", linear("cls")),
    ]
    return torch.nn.Sequential(OrderedDict(layers)).eval()


def _keras_tanh(x):
    """``tanh`` as ``2 * sigmoid(2x) - 1``: Keras 3.15's ``ops.tanh`` on JAX returns float32 for
    float64 inputs."""
    import keras

    return 2 * keras.ops.sigmoid(2 * x) - 1


def _keras_model(w: dict):
    """Dense layers as ``EinsumDense`` and the token mean as a sum: Keras' ``matmul`` on torch and
    ``mean`` on JAX and torch lose float64 precision (see ``conformance/ports/keras_ports.py``)."""
    import keras

    def dense(name: str, spec: str, activation=None) -> keras.layers.EinsumDense:
        kernel = w[f"{name}.kernel"]
        shape = (rp.T, kernel.shape[1]) if spec.startswith("bt") else kernel.shape[1]
        layer = keras.layers.EinsumDense(
            spec, shape, bias_axes="e", activation=activation, name=name
        )
        layer.build(
            (None, rp.T, kernel.shape[0]) if spec.startswith("bt") else (None, kernel.shape[0])
        )
        layer.set_weights([kernel, w[f"{name}.bias"]])
        return layer

    tokens = "btd,de->bte"
    inputs = keras.Input((rp.T, rp.E))
    h = dense("enc1", tokens, _keras_tanh)(inputs)
    u = dense("mix", tokens, _keras_tanh)(dense("enc2", tokens)(h))
    pooled = keras.layers.Lambda(lambda t: keras.ops.sum(t, axis=1) / rp.T, name="pool")(u)
    return keras.Model(inputs, dense("cls", "bd,de->be")(pooled))


def _linen_model(w: dict):
    import flax.linen as nn
    import jax.numpy as jnp

    class Tokens(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jnp.tanh(nn.Dense(rp.D, name="enc1")(x))
            u = jnp.tanh(nn.Dense(rp.H, name="mix")(nn.Dense(rp.D, name="enc2")(h)))
            return nn.Dense(rp.K, name="cls")(u.mean(axis=1))

    params = {
        name: {"kernel": jnp.asarray(w[f"{name}.kernel"]), "bias": jnp.asarray(w[f"{name}.bias"])}
        for name in ("enc1", "enc2", "mix", "cls")
    }
    return Tokens(), {"params": params}


def _nnx_model(w: dict):
    import jax.numpy as jnp
    from flax import nnx

    def linear(name: str) -> nnx.Linear:
        kernel = w[f"{name}.kernel"]
        layer = nnx.Linear(*kernel.shape, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        layer.kernel.set_value(jnp.asarray(kernel))
        layer.bias.set_value(jnp.asarray(w[f"{name}.bias"]))
        return layer

    class Tokens(nnx.Module):
        def __init__(self):
            self.enc1, self.enc2 = linear("enc1"), linear("enc2")
            self.mix, self.cls = linear("mix"), linear("cls")

        def __call__(self, x):
            u = jnp.tanh(self.mix(self.enc2(jnp.tanh(self.enc1(x)))))
            return self.cls(u.mean(axis=1))

    return Tokens()


# -- the tests -----------------------------------------------------------------------------------


def test_the_authors_pipeline_gives_their_token_map(subject):
    """Their estimator (one sentence, at the bottlenecked layer's input: ``hidden_states[i]``
    for ``encoder.layer[i]``), given as ``estimators=``, and the preset."""
    d, p = data(), port(subject.name)
    draws = noise(1, seed=11)
    mean, std = rp.authors_estimator(d["layer_input"][:1])
    want = rp.run_bottleneck(d["w"], d["features"][0], mean, std, draws[:, 0], int(LABELS[0]))
    with p.float64():
        explainer = subject.IBA(
            TARGET, config=iba.text_config(), estimators=[estimator(d["layer_input"][:1])]
        )
        ex = explainer.analyze(
            p.model, p.inputs(d["x"][:1]), target=int(LABELS[0]), noise=draws, details=True
        )
    assert ex.capacity.shape == (1, rp.T, rp.D) and ex.heatmap.shape == (1, rp.T)
    assert_maps(ex, [want])


def test_the_preset_with_a_corpus_estimator(subject):
    """The authors' estimator rule (divisor n, floor on S) on a corpus; two inputs at once."""
    d, p = data(), port(subject.name)
    draws = noise(2, seed=12)
    mean, std = rp.authors_estimator(d["corpus"])
    want = [
        rp.run_bottleneck(d["w"], d["features"][i], mean, std, draws[:, i], int(LABELS[i]))
        for i in range(2)
    ]
    with p.float64():
        explainer = subject.IBA(
            TARGET, config=iba.text_config(), estimators=[estimator(d["corpus"])]
        )
        ex = explainer.analyze(p.model, p.inputs(d["x"]), target=LABELS, noise=draws, details=True)
    assert_maps(ex, want)


def test_the_sentence_estimator_option(subject):
    """``estimator="sentence"``: each input's own features at the target, one point each."""
    d, p = data(), port(subject.name)
    draws = noise(2, seed=13)
    want = []
    for i in range(2):
        mean, std = rp.authors_estimator(d["features"][i : i + 1])
        want.append(
            rp.run_bottleneck(d["w"], d["features"][i], mean, std, draws[:, i], int(LABELS[i]))
        )
    config = iba.text_config(estimator="sentence")
    with p.float64():
        explainer = subject.IBA(TARGET, config=config)
        ex = explainer.analyze(p.model, p.inputs(d["x"]), target=LABELS, noise=draws, details=True)
        alone = explainer.analyze(
            p.model, p.inputs(d["x"][1:]), target=int(LABELS[1]), noise=draws[:, 1]
        )
    assert explainer.estimators == []  # fitted per call, not kept
    updates = config.updates
    assert ex.alphas.shape == (updates + 1, 2, rp.T, rp.D) and ex.losses.shape == (updates, 2)
    assert_maps(ex, want)
    np.testing.assert_allclose(alone[0], ex.heatmap[1], rtol=1e-12)


def test_without_the_preset_the_project_convention_holds(subject):
    """The default ``Config``: ddof = 1 and ``min_std``, the active mask, no clamp, beta = 10."""
    d, p = data(), port(subject.name)
    draws = noise(1, seed=14)
    corpus = d["corpus"] * (np.arange(rp.D) != 0)  # a dead channel: masked
    mean, std, active = rp.project_statistics(corpus)
    feats, label = d["features"][0], int(LABELS[0])
    own = rp.run_bottleneck(
        d["w"], feats, mean, std, draws[:, 0], label, beta=10.0, clamp=False, active=active
    )
    with p.float64():
        explainer = subject.IBA(TARGET, config=iba.Config(), estimators=[estimator(corpus)])
        ex = explainer.analyze(
            p.model, p.inputs(d["x"][:1]), target=label, noise=draws, details=True
        )
    assert_maps(ex, [own])
    theirs_mean, theirs_std = rp.authors_estimator(corpus)
    theirs = rp.run_bottleneck(d["w"], feats, theirs_mean, theirs_std, draws[:, 0], label, 10.0)
    assert not np.allclose(ex.capacity[0], theirs["capacity"], rtol=1e-2)


def test_sentence_estimator_errors(subject):
    d, p = data(), port(subject.name)
    with p.float64():
        explainer = subject.IBA(TARGET, config=iba.text_config(estimator="sentence"))
        x = p.inputs(d["x"])
        one_input = noise(None, seed=1)  # no input axis, for two inputs
        message = "noise of shape (10, 10, 7, 6) for 2 inputs needs their axis: (steps, 2,"
        with pytest.raises(ValueError, match=re.escape(message)):
            explainer.analyze(p.model, x, target=LABELS, noise=one_input)
        with pytest.raises(ValueError, match="fits the statistics on one input at a time"):
            with explainer.planned(p.model, x, target=LABELS):
                pass
        with pytest.raises(ValueError, match="pass exactly one of target="):
            explainer.analyze(p.model, x)
