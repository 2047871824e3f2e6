import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iba


def test_matches_numpy_over_concatenated_batches():
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((57, 3, 4, 5)) * 3 + 100).astype(np.float32)
    data[:, 0] = np.maximum(data[:, 0] - 100, 0)  # sparse channel
    data[:50, 1, 0, 0] = 0  # mostly zero element
    est = iba.Estimator(layout="channels_first")
    for part in np.split(data, [1, 8, 30, 31]):
        est.update(part)
    np.testing.assert_allclose(est.mean, data.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(est.std, data.astype(np.float64).std(0, ddof=1), rtol=1e-10)
    assert est.n_samples == 57 and est.feature_shape == (3, 4, 5)
    np.testing.assert_array_equal(est.nonzero_fraction, (data != 0).mean(0))
    assert est.active(0.2)[1, 0, 0] == 0 and est.active(0.1)[1, 0, 0] == 1  # 7/57 = 0.12


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(2, 3, 3), (1, 1, 1), (4, 2), (5, 1, 7)]),
    splits=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_any_batch_split_gives_the_same_statistics(shape, splits, seed):
    layout = "tokens" if len(shape) == 2 else "channels_last"
    data = np.random.default_rng(seed).standard_normal((sum(splits) + 1, *shape)) * 5 + 2
    est = iba.Estimator(layout=layout)
    for part in np.split(data, np.cumsum(splits)):
        est.update(part)
    np.testing.assert_allclose(est.mean, data.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(est.std, data.std(0, ddof=1), rtol=1e-9)


def test_large_offsets_stay_accurate():
    rng = np.random.default_rng(1)
    data = (1e4 + rng.standard_normal((1000, 6))).astype(np.float32)
    est = iba.Estimator(layout="tokens")
    for part in np.split(data.reshape(1000, 2, 3), 10):
        est.update(part)
    np.testing.assert_allclose(est.std.ravel(), data.astype(np.float64).std(0, ddof=1), rtol=1e-9)


def test_statistics_floor_std_and_warn_below_1000_samples():
    est = iba.Estimator((2, 2), layout="tokens")
    est.update(np.array([[[0.0, 1.0], [5.0, 0.0]]] * 3) + [[[0.0, 0.0], [0.0, 0.001]]])
    with pytest.warns(UserWarning, match="only 3 samples"):
        stats = est.statistics(min_std=0.01)
    np.testing.assert_array_equal(stats.std, 0.01)  # constant features: std floored
    np.testing.assert_array_equal(stats.active, [[0, 1], [1, 1]])


@pytest.mark.parametrize("n", [0, 1])
def test_zero_or_one_sample_fails_clearly(n):
    est = iba.Estimator((3, 2), layout="tokens")
    if n:
        est.update(np.ones((1, 3, 2)))
    with pytest.raises(ValueError, match=f"has seen {n} samples; at least 2 are needed"):
        est.statistics()


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    est = iba.Estimator(layout="channels_last")
    est.update(rng.standard_normal((20, 4, 4, 3)))
    est.save(tmp_path / "est.npz")
    loaded = iba.Estimator.load(
        tmp_path / "est.npz", feature_shape=(4, 4, 3), layout="channels_last"
    )
    assert loaded.n_samples == 20 and loaded.layout == "channels_last"
    np.testing.assert_array_equal(loaded.mean, est.mean)
    np.testing.assert_array_equal(loaded.std, est.std)
    np.testing.assert_array_equal(loaded.nonzero_fraction, est.nonzero_fraction)
    loaded.update(rng.standard_normal((5, 4, 4, 3)))  # keeps accumulating
    assert loaded.n_samples == 25


def test_several_estimators_in_one_file(tmp_path):
    rng = np.random.default_rng(3)
    ests = [iba.Estimator(layout="tokens"), iba.Estimator(layout="channels_first")]
    ests[0].update(rng.standard_normal((4, 5, 2)))
    ests[1].update(rng.standard_normal((6, 2, 3, 3)))
    iba.save_estimators(tmp_path / "all.npz", ests)
    loaded = iba.load_estimators(tmp_path / "all.npz")
    assert [e.feature_shape for e in loaded] == [(5, 2), (2, 3, 3)]
    np.testing.assert_array_equal(loaded[1].std, ests[1].std)


def test_loading_for_another_layer_fails_clearly(tmp_path):
    est = iba.Estimator(layout="channels_first")
    est.update(np.ones((3, 8, 4, 4)))
    est.save(tmp_path / "est.npz")
    with pytest.raises(ValueError, match=r"fitted on features of shape \(8, 4, 4\).*\(16, 4, 4\)"):
        iba.Estimator.load(tmp_path / "est.npz", feature_shape=(16, 4, 4))
    with pytest.raises(ValueError, match="layout 'channels_first'.*'channels_last'"):
        iba.Estimator.load(tmp_path / "est.npz", layout="channels_last")
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="holds no estimator"):
        iba.Estimator.load(tmp_path / "other.npz")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_rejected(bad):
    est = iba.Estimator(layout="tokens")
    data = np.zeros((2, 3, 4))
    data[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"features: 1 NaN or infinite value\(s\)"):
        est.update(data)
    assert est.n_samples == 0


def test_wrong_shapes_and_layouts_are_rejected():
    with pytest.raises(ValueError, match="unknown layout 'NCHW'; layouts are: channels_first"):
        iba.Estimator(layout="NCHW")
    with pytest.raises(ValueError, match=r"have shape \(C, H, W\) per input, got shape \(3, 4\)"):
        iba.Estimator(layout="channels_first").update(np.ones((2, 3, 4)))
    est = iba.Estimator(layout="tokens")
    est.update(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"batch of shape \(2, 3, 5\) does not match"):
        est.update(np.ones((2, 3, 5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert est.n_samples == 2


def test_load_checks_the_count_against_the_targets(tmp_path):
    est = iba.Estimator(layout="channels_first")
    est.update(np.random.default_rng(0).standard_normal((4, 2, 3, 3)))
    path = tmp_path / "one.npz"
    iba.save_estimators(path, [est])
    assert len(iba.load_estimators(path, ["conv1"])) == 1
    with pytest.raises(ValueError, match=r"holds 1 estimator\(s\), this explainer has 2 target"):
        iba.load_estimators(path, ["conv1", "conv2"])


def test_require_estimators_says_what_to_do():
    with pytest.raises(RuntimeError, match="call estimate"):
        iba.estimator.require_estimators([], ["conv1"])
    est = iba.Estimator(layout="tokens")
    with pytest.raises(ValueError, match=r"1 estimator\(s\) for 2 target\(s\)"):
        iba.estimator.require_estimators([est], ["a", "b"])
    iba.estimator.require_estimators([est], ["a"])  # one per target: no error
