"""``iba.models.checkpoint`` reads the bundled checkpoint without PyTorch: the same arrays as
``torch.load``, and clear errors on files that are not such a checkpoint."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from iba.models import checkpoint


def test_bundled_weights_equal_torch_load():
    path = checkpoint.efficientnet_lite0_path()
    ours = checkpoint.efficientnet_lite0()
    theirs = torch.load(str(path), map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)  # same names, same order
    for name, tensor in theirs.items():
        expected = tensor.numpy()
        assert ours[name].shape == expected.shape, name
        assert ours[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)
    assert ours["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert ours["_fc.weight"].shape == (1000, 1280)


def test_non_contiguous_views_are_copied_with_their_strides(tmp_path):
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    state = {
        "t": base.t(),
        "slice": base[1:, 2:5],
        "ints": torch.tensor([3, -1], dtype=torch.int64),
    }
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    read = checkpoint.read_torch_checkpoint(path)
    for name, tensor in state.items():
        np.testing.assert_array_equal(read[name], tensor.numpy(), err_msg=name)
        assert read[name].flags.c_contiguous and read[name].flags.writeable


def test_other_files_are_refused(tmp_path):
    zipped = tmp_path / "new_format.pth"
    torch.save({"w": torch.zeros(2)}, zipped)  # the zip format: not the legacy one
    with pytest.raises(ValueError, match="not a PyTorch checkpoint in the legacy format"):
        checkpoint.read_torch_checkpoint(zipped)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        checkpoint.read_torch_checkpoint(text)


def test_objects_other_than_tensors_are_refused(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"w": torch.zeros(2), "f": print}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(pickle.UnpicklingError, match="unexpected object .*print"):
        checkpoint.read_torch_checkpoint(path)
