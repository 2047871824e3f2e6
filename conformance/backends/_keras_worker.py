"""Run every case, dtype and device of one Keras backend in this process (Keras picks its backend
at import, from ``KERAS_BACKEND``) and write the stages to an ``.npz``:
``python -m conformance.backends._keras_worker OUT.npz DEVICE ...``.

Keys: ``{case}|{dtype}|{device}|{stage}``, and ``{case}|{dtype}|{device}|error`` (a traceback)
where a run failed.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
import warnings

import numpy as np

DTYPES = ("float64", "float32")


def _precision(backend: str) -> None:
    """No TF32 anywhere, JAX matmuls at full float32 precision."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


@contextlib.contextmanager
def _dtype(backend: str, dtype: str):
    import keras

    old = keras.config.floatx()
    x64 = None
    if backend == "jax":
        import jax

        x64 = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", dtype == "float64")
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old)
        if x64 is not None:
            import jax

            jax.config.update("jax_enable_x64", x64)


def run(case, dtype: str, device: str) -> dict:
    import keras

    import iba_tf
    from conformance.backends import _common
    from conformance.ports import keras_ports

    backend = keras.backend.backend()
    # Keras' torch backend runs on its default device (CUDA where there is one): inside
    # keras.device(...) it fails to create IBALayer's int32 weights ("Only Tensors of floating
    # point ... can require gradients"), so it gets no device scope.
    scope = contextlib.nullcontext() if backend == "torch" else keras.device(f"{device}:0")
    with _dtype(backend, dtype), scope:
        model, layers, features_model = keras_ports.model(
            case.architecture, case.weights, case.targets, dtype
        )
        x = _common.inputs(case, last=True).astype(dtype)
        features = np.asarray(keras.ops.convert_to_numpy(features_model(x)), np.float64)
        explainer = iba_tf.IBA(layers if len(layers) > 1 else layers[0], config=case.config)
        explainer.estimators = _common.estimators(case, last=True)
        noise = _common.noise(case, last=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explanation = explainer.analyze(
                model,
                x,
                target=np.asarray(case.target),
                noise=noise if len(noise) > 1 else noise[0],
                details=True,
                token_mask=case.token_mask,
            )
    return _common.stages(case, features, explanation, last=True)


def main(out: str, devices: list[str]) -> None:
    import keras

    from conformance import vectors

    _precision(keras.backend.backend())
    arrays = {}
    for device in devices:
        for dtype in DTYPES:
            for name in vectors.CASES:
                key = f"{name}|{dtype}|{device}"
                try:
                    for stage, value in run(vectors.case(name), dtype, device).items():
                        arrays[f"{key}|{stage}"] = np.asarray(value, np.float64)
                except Exception:
                    arrays[f"{key}|error"] = np.array(traceback.format_exc(limit=4))
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
