import pytest

import iba


def test_defaults_are_the_papers():
    c = iba.Config()
    assert (c.beta, c.steps, c.lr, c.batch_size, c.initial_alpha) == (10.0, 10, 1.0, 10, 5.0)
    assert (c.sigma, c.min_std, c.active_threshold, c.relu) == (1.0, 0.01, 0.01, False)
    assert c.capacity_at == "last_forward" and c.updates == 9
    assert c.replace(capacity_at="final").updates == 10
    assert iba.coiba_config().beta == 1.0 and not iba.coiba_config().smoothing


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"steps": -3}, "steps must be at least 1"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"steps": 2.5}, "steps must be an int"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"sigma": -1.0}, "sigma must be >= 0"),
        ({"min_std": 0.0}, "min_std must be > 0"),
        ({"active_threshold": 1.5}, "active_threshold must be in"),
        ({"beta": float("nan")}, "beta must be finite"),
        ({"beta": "10"}, "beta must be a number"),
        ({"relu": 1}, "relu must be a bool"),
        ({"capacity_at": "end"}, "capacity_at must be one of"),
    ],
)
def test_bad_values_raise_clear_errors(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        iba.Config(**changes)
