import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iba


def test_resize_matrix_half_pixel_centres_and_clamped_edges():
    np.testing.assert_allclose(
        iba.resize_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
    )
    np.testing.assert_allclose(iba.resize_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(iba.resize_matrix(3, 3), np.eye(3))
    with pytest.raises(ValueError, match="cannot resize 0 to 4"):
        iba.resize_matrix(0, 4)


@settings(max_examples=30, deadline=None)
@given(n_in=st.integers(1, 30), n_out=st.integers(1, 60))
def test_resize_rows_are_convex_weights(n_in, n_out):
    m = iba.resize_matrix(n_in, n_out)
    np.testing.assert_allclose(m.sum(1), 1.0)
    assert np.all(m >= 0)


def test_heatmap_bits_channel_sum_and_scaling():
    cap = np.zeros((1, 3, 2, 2))
    cap[0, :, 0, 0] = np.log(2)  # 3 channels x 1 bit at the top-left feature
    cap[0, 1, 1, 1] = np.nan  # NaN-safe sum
    raw = iba.heatmap(cap, "channels_first")
    np.testing.assert_allclose(raw[0], [[3, 0], [0, 0]])
    big = iba.heatmap(cap, "channels_first", input_size=(8, 8))
    assert big.shape == (1, 8, 8)
    assert big.sum() == pytest.approx(3.0)  # total bits preserved by the (h w)/(H W) scale
    assert big[0, 0, 0] == pytest.approx(3.0 / 16)
    last = iba.heatmap(np.moveaxis(cap, 1, -1), "channels_last", input_size=(8, 8))
    np.testing.assert_allclose(last, big)


def test_token_maps_and_vit_heatmap():
    cap = np.zeros((2, 5, 3))
    cap[:, 0] = 10.0  # class token, dropped from the image map
    cap[:, 4, 0] = np.log(2)
    np.testing.assert_allclose(iba.heatmap(cap, "tokens")[0], [30 / np.log(2), 0, 0, 0, 1])
    image = iba.vit_heatmap(cap, grid=(2, 2), input_size=(4, 4))
    assert image.shape == (2, 4, 4)
    assert image.min() == 0.0 and image.max() == 1.0 and image[0, 3, 3] == 1.0
    with pytest.raises(ValueError, match=r"5 tokens do not make 1 prefix token\(s\) plus a 3x3"):
        iba.token_grid(np.ones((1, 5)), (3, 3))


def test_normalize():
    maps = np.array([[[1.0, 3.0]], [[2.0, 2.0]]])
    np.testing.assert_allclose(iba.normalize(maps), [[[0, 1]], [[0, 0]]])


def test_noise_is_seeded_and_checked():
    a = iba.draw_noise(0, 3, 2, (4, 5))
    assert a.shape == (3, 2, 4, 5) and a.dtype == np.float64
    np.testing.assert_array_equal(a, iba.draw_noise(0, 3, 2, (4, 5)))
    assert not np.array_equal(a, iba.draw_noise(1, 3, 2, (4, 5)))
    assert iba.draw_noise(0, 3, 2, (4, 5), n_inputs=7).shape == (3, 7, 2, 4, 5)
    assert abs(iba.draw_noise(5, 10, 10, (50, 50)).std() - 1) < 0.01
