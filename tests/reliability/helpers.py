"""What the reliability tests measure: memory, compiled functions, the explainer's own state, where
an error was raised, new copies of a subject's model, and interruptions at a chosen step."""

from __future__ import annotations

import _thread
import copy
import os
import re
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from contract.subjects import weights

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = tuple(str(ROOT / name) + os.sep for name in ("iba", "iba_torch", "iba_tf", "iba_jax"))
COMPILING = ("keras-tensorflow", "keras-jax", "flax-linen", "flax-nnx")  # loss_fn traced once


def rss_mib() -> float:
    """The resident set size of this process (Linux: /proc/self/statm)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        pytest.skip("no /proc/self/statm: the resident memory is measured on Linux")


def device_mib(name: str) -> float | None:
    """Memory in use on the GPU where the backend's framework runs on one, else ``None``."""
    if name in ("torch", "keras-torch"):
        import torch

        return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None
    if name == "keras-tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return None
        return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    return (device.memory_stats() or {}).get("bytes_in_use", 0) / 2**20


class Compiled:
    """The compiled functions an explainer keeps, and the traces made since the probe started.

    Keras: its compiled steps (``engine._steps``; TensorFlow: their tracing count; JAX: the
    ``jax.monitoring`` trace events); Flax: ``iba_jax.explainer._CACHE`` and the trace events;
    PyTorch compiles nothing (both counts are 0).
    """

    def __init__(self, name: str, explainer: Any):
        self.name, self.explainer, self.events = name, explainer, 0
        self._listening = name in ("keras-jax", "flax-linen", "flax-nnx")
        if self._listening:
            import jax.monitoring

            jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, seconds: float, **kwargs: Any) -> None:
        if event == "/jax/core/compile/jaxpr_trace_duration":
            self.events += 1

    def close(self) -> None:
        if self._listening:
            import jax.monitoring

            jax.monitoring.unregister_event_duration_listener(self._listen)
            self._listening = False

    def kept(self) -> int:
        if self.name.startswith("keras-"):
            return len(self.explainer.engine._steps)
        if self.name.startswith("flax-"):
            from iba_jax import explainer as jax_explainer

            return len(jax_explainer._CACHE)
        return 0

    def traces(self) -> int:
        if self.name == "keras-tensorflow":
            steps = self.explainer.engine._steps.values()
            return sum(int(s.experimental_get_tracing_count()) for s in steps)
        return self.events


def explainer_state(subject: Any, explainer: Any) -> dict:
    """What an explainer holds between calls that must be back at rest after any call (the
    model's own state is the subject's ``snapshot``)."""
    engine = explainer.engine
    if subject.name == "torch":
        flow = engine.flow
        return {
            "handles": list(engine.handles),
            "flow": (flow.mode, flow.z0, flow.lam, flow.eps, flow.stats),
            "users": list(engine._users),
        }
    if subject.name.startswith("keras-"):
        return {"current": engine._current}
    from iba_jax import _hooks

    return {"active hook": _hooks.current()}  # what Linen's interceptor / NNX's wrapper call


def raised_by_us(err: BaseException) -> bool:
    """Whether the innermost frame of the error's traceback is in the library's packages."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(PACKAGES)


def names(message: str, argument: str) -> bool:
    """Whether an error message names ``argument`` as a word (``x``, ``target``, ``noise``)."""
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?![\w(])", message) is not None


def assert_clear(err: BaseException, argument: str) -> None:
    """A clear error: ValueError, TypeError or RuntimeError, raised by the library, naming the
    argument."""
    assert isinstance(err, (ValueError, TypeError, RuntimeError)), repr(err)
    assert raised_by_us(err), "".join(traceback.format_exception(err))
    assert names(str(err), argument), f"{argument!r} is not named in: {err}"


def new_model(subject: Any) -> Any:
    """A new model equal to the subject's (new objects, the same weights), without statistics."""
    if subject.name == "torch":
        return copy.deepcopy(subject.model)
    if subject.name.startswith("keras-"):
        return subject.fresh_model()
    if subject.name == "flax-nnx":
        from conformance.ports import flax_ports

        return flax_ports.nnx_model("cnn", weights(), np.float32)
    module, variables = subject.model
    return module, subject.jax.tree.map(lambda a: subject.jnp.array(a, copy=True), variables)


def interrupted(err: BaseException | None) -> bool:
    """Whether ``err`` is the interruption: the ``KeyboardInterrupt``, or the runtime error of a
    framework that caught it in a callback."""
    return isinstance(err, KeyboardInterrupt) or "KeyboardInterrupt" in str(err)


class Interrupter:
    """A ``loss_fn`` (the subject's per-row loss) that, when armed, interrupts the optimisation
    like Ctrl-C at its ``at``-th step: a callback that runs in every step, also inside compiled
    code (``jax.debug.callback``, ``tf.py_function``), raises ``KeyboardInterrupt`` (eager
    backends) or sends the main thread the interruption (``_thread.interrupt_main``).

    One object compiles once: arming it changes what the callback does, not the program.
    """

    def __init__(self, subject: Any, at: int):
        self.subject, self.at = subject, at
        self.calls, self.armed = 0, False
        self.traced = 0  # calls of the Python function: once per trace, or every step (eager)
        self.base = subject.per_row_loss(subject.labels)

    def hit(self, *args: Any) -> None:
        self.calls += 1
        if self.armed and self.calls == self.at:
            if self.subject.name in COMPILING:  # inside compiled code: a signal, as Ctrl-C sends
                _thread.interrupt_main()
            else:
                raise KeyboardInterrupt(f"interrupted at step {self.at}")

    def __call__(self, outputs: Any) -> Any:
        self.traced += 1
        loss = self.base(outputs)
        name = self.subject.name
        if name in ("keras-jax", "flax-linen", "flax-nnx"):
            import jax

            jax.debug.callback(self.hit)
            return loss
        if name == "keras-tensorflow":
            import tensorflow as tf

            zero = tf.py_function(lambda: self.hit() or 0.0, [], tf.float32)
            zero.set_shape(())
            return loss + tf.cast(zero, loss.dtype) * 0
        self.hit()
        return loss

    def run(self, call: Any) -> BaseException | None:
        """``call()`` armed; what it raised, or ``None``. An interruption that lands after
        ``call`` returned fails the test (it would have escaped the call).

        Where the compiled program runs the callback in the main thread (JAX on CPU), the
        interruption lands inside the callback, and JAX raises its own runtime error that says
        ``KeyboardInterrupt``; elsewhere the ``KeyboardInterrupt`` itself arrives.

        Python's own SIGINT handler is installed for the call: a process started in the
        background by a shell without job control inherits SIGINT as ignored, and then
        ``_thread.interrupt_main`` does nothing.
        """
        self.calls, self.armed = 0, True
        before = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            try:
                try:
                    call()
                finally:
                    self.armed = False
            except BaseException as err:  # noqa: BLE001 - the test looks at what arrived
                return err
            try:
                for _ in range(50):  # a late interruption would land here
                    time.sleep(0.002)
            except KeyboardInterrupt:
                pytest.fail("the interruption arrived after analyze() had returned")
            return None
        finally:
            signal.signal(signal.SIGINT, before)
