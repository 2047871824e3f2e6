"""Keras 3 on tensorflow: ``iba_tf.IBA`` in a subprocess with ``KERAS_BACKEND=tensorflow``."""

from conformance.backends import _keras
from conformance.backends._keras import DTYPES

__all__ = ["DTYPES", "available", "device_reasons", "devices", "prefetch", "run"]
BACKEND = "tensorflow"


def available() -> str | None:
    return _keras.available(BACKEND)


def devices() -> list[str]:
    return list(_keras.devices(BACKEND))


def device_reasons() -> dict[str, str]:
    return _keras.device_reasons(BACKEND)


def run(case, dtype: str, device: str) -> dict:
    return _keras.run(case, dtype, device, BACKEND)


def prefetch() -> None:
    """Start the subprocess now, so that it runs beside the other backends."""
    _keras.prefetch(BACKEND)
