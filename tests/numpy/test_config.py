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


def test_for_targets_picks_the_defaults_by_the_number_of_targets():
    assert iba.config.for_targets(1) == iba.Config()
    assert iba.config.for_targets(3) == iba.coiba_config()
    assert iba.config.for_targets(3, beta=2.0).beta == 2.0
    given = iba.Config(steps=3)
    assert iba.config.for_targets(2, given) is given


def test_for_targets_errors_name_the_problem():
    with pytest.raises(TypeError, match="IBA config keywords are: beta, steps"):
        iba.config.for_targets(1, betta=3)
    with pytest.raises(TypeError, match="not both"):
        iba.config.for_targets(1, iba.Config(), beta=2.0)
    with pytest.raises(TypeError, match="config must be an iba.Config, got dict"):
        iba.config.for_targets(1, {"beta": 2.0})
    with pytest.raises(ValueError, match="beta must be >= 0"):
        iba.config.for_targets(1, beta=-1.0)
