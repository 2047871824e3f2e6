"""The backend-specific pieces: gradients from the running backend's autodiff, of the objective
with respect to ``alpha`` (``make_step``) and of a score with respect to the input
(``make_input_gradient``, for the baselines).

``make_step(objective, lr, variables)`` returns one compiled optimisation step
``(alpha, mu, nu, count, *args) -> (alpha, mu, nu, losses)``: the loss and its gradient with
respect to ``alpha`` from the running backend's autodiff (TensorFlow ``GradientTape`` inside a
``tf.function``; ``jax.value_and_grad`` inside ``jax.jit``, with the model's variables passed
through a ``keras.StatelessScope``; torch autograd), then the reference's Adam update. Each
backend's framework is imported here, lazily, only for the backend that runs.

``lift_loss`` takes the arrays bound in a ``functools.partial`` ``loss_fn`` out (``iba._partial``):
they become arguments of the step, so a new partial of the same function with arrays of the same
shapes (M2IB's similarity to a new caption or image) reuses it; ``bind_loss`` puts them back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from iba import _partial
from iba_tf import _ops

Objective = Callable[..., "tuple[Any, Any]"]  # (alpha, *args) -> (total loss, loss per input)


def eager_compiles() -> bool:
    """Whether running layers eagerly compiles each operation for each new shape (JAX): then a
    forward pass run once is faster as one compiled program (Keras' ``predict_on_batch``)."""
    return keras.backend.backend() == "jax"


def lift_loss(loss_fn: Any) -> tuple[Any, Any, Any]:
    """``(loss_fn, arrays, key)``: the step's ``loss_fn``, the arrays it takes as an argument and
    the part of the step's cache key that stands for it (docs/mathematics.md section 5).

    For ``functools.partial(f, *args, **keywords)`` that binds arrays (NumPy arrays or backend
    tensors with at least one axis) and otherwise hashable values only: the template with the
    arrays lifted out (``iba._partial.lift``), the arrays as tensors, and a key of ``f`` (by
    identity) and the other values. Otherwise ``(loss_fn, None, loss_fn)``: keyed by the
    function object.
    """
    template, arrays = _partial.lift(loss_fn, _is_array, _to_tensor)
    key = None if arrays is None else _partial.template_key(template)
    if key is None:
        return loss_fn, None, loss_fn
    return template, arrays, key


def bind_loss(template: Any, arrays: Any) -> Any:
    """The ``loss_fn`` of :func:`lift_loss`'s template with the step's (traced) ``arrays``."""
    return _partial.bind(template, arrays)


def _is_array(value: Any) -> bool:
    array = isinstance(value, np.ndarray) or keras.ops.is_tensor(value)
    return array and len(value.shape) > 0


def _to_tensor(value: Any) -> Any:
    """A backend tensor of ``value`` (NumPy: its dtype where the backend has it)."""
    return value if keras.ops.is_tensor(value) else keras.ops.convert_to_tensor(value)


def make_step(objective: Objective, lr: float, variables: Sequence[Any]) -> Callable:
    """One compiled step ``(alpha, mu, nu, count, *args) -> (alpha, mu, nu, losses)``.

    ``variables`` are the Keras variables the model reads (only the JAX backend needs them:
    they enter its compiled function as arguments, so later weight changes are seen).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_step(objective, lr)
    if backend == "jax":
        return _jax_step(objective, lr, list(variables))
    if backend == "torch":
        return _torch_step(objective, lr)
    raise NotImplementedError(
        f"iba_tf supports the Keras backends tensorflow, jax and torch, not {backend!r}"
    )


def _tensorflow_step(objective: Objective, lr: float) -> Callable:
    import tensorflow as tf

    @tf.function  # one trace per input shape: the objective needs N and F statically
    def step(alpha, mu, nu, count, *args):
        with tf.GradientTape() as tape:
            tape.watch(alpha)
            total, losses = objective(alpha, *args)
        grad = tape.gradient(total, alpha)
        return (*_ops.adam_update(grad, mu, nu, count, alpha, lr), losses)

    return step


def _jax_step(objective: Objective, lr: float, variables: list) -> Callable:
    import jax

    def step(values, alpha, mu, nu, count, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            (_, losses), grad = jax.value_and_grad(objective, has_aux=True)(alpha, *args)
        return (*_ops.adam_update(grad, mu, nu, count, alpha, lr), losses)

    compiled = jax.jit(step)

    def run(alpha, mu, nu, count, *args):
        return compiled([v.value for v in variables], alpha, mu, nu, count, *args)

    return run


def _torch_step(objective: Objective, lr: float) -> Callable:
    import torch

    def step(alpha, mu, nu, count, *args):
        alpha = alpha.detach().requires_grad_(True)
        with torch.enable_grad():
            total, losses = objective(alpha, *args)
            (grad,) = torch.autograd.grad(total, [alpha])
        with torch.no_grad():
            return (*_ops.adam_update(grad, mu, nu, count, alpha.detach(), lr), losses.detach())

    return step


def no_grad() -> Any:
    """A context without gradient recording (torch); a no-op elsewhere."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    import contextlib

    return contextlib.nullcontext()


def make_input_gradient(score: Callable[..., Any], variables: Sequence[Any]) -> Callable:
    """``(x, *args) -> d score(x, *args) / d x`` from the running backend's autodiff.

    ``score`` returns a scalar (written with ``keras.ops``). Compiled like :func:`make_step`:
    a ``tf.function`` around a ``GradientTape``; ``jax.grad`` inside ``jax.jit`` with the
    ``variables`` the score reads passed through a ``keras.StatelessScope``; torch autograd with
    respect to the input only (no parameter's ``.grad`` is touched).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def tf_gradient(x, *args):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = score(x, *args)
            return tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return tf_gradient
    if backend == "jax":
        import jax

        held = list(variables)

        def jax_gradient(values, x, *args):
            with keras.StatelessScope(state_mapping=list(zip(held, values))):
                return jax.grad(score)(x, *args)

        compiled = jax.jit(jax_gradient)
        return lambda x, *args: compiled([v.value for v in held], x, *args)
    if backend == "torch":
        import torch

        def torch_gradient(x, *args):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(score(x, *args), [x], allow_unused=True)
            return torch.zeros_like(x) if grad is None else grad

        return torch_gradient
    raise NotImplementedError(
        f"iba_tf supports the Keras backends tensorflow, jax and torch, not {backend!r}"
    )
