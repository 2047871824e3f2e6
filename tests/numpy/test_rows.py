"""``iba.driver``'s row helpers: padding a batch to a compiled shape, and reading its rows."""

import numpy as np
import pytest

from iba import driver


def test_pad_rows_repeats_the_last_row_of_every_array():
    x = {"ids": np.arange(6).reshape(3, 2), "mask": np.array([[1, 1], [1, 0], [0, 0]])}
    padded = driver.pad_rows(x, 5)
    np.testing.assert_array_equal(padded["ids"], [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    np.testing.assert_array_equal(padded["mask"], [[1, 1], [1, 0], [0, 0], [0, 0], [0, 0]])
    assert driver.n_rows(padded) == 5
    pair = driver.pad_rows((np.zeros((1, 3)), np.ones(1)), 2)
    assert isinstance(pair, tuple) and pair[0].shape == (2, 3) and pair[1].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("rows", [2, 3])
def test_pad_rows_leaves_a_batch_with_enough_rows_as_it_is(rows):
    a = np.arange(3.0)
    assert driver.pad_rows(a, rows) is a


def test_padded_rows_drop_back_to_the_real_ones():
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(driver.take_rows(driver.pad_rows(x, 8), 0, 3), x)
