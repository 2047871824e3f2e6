"""The configuration of one explanation, with the defaults of docs/mathematics.md section 2."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

CAPACITY_AT = ("last_forward", "final")
ESTIMATORS = ("corpus", "sentence", "prior")


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyper-parameters of the Per-Sample Bottleneck (Schulz et al., ICLR 2020, section 3.1).

    Args:
        beta: weight of the information term ``beta * mean(capacity)``.
        steps: optimisation steps per explanation.
        lr: Adam learning rate on ``alpha``.
        batch_size: noise samples of the same input per step.
        initial_alpha: value of every ``alpha`` at the start of an explanation.
        sigma: std of the Gaussian that smooths ``lam`` over H and W; ``None`` or 0 switches it off.
        min_std: floor of the estimated standard deviation (0 switches it off when ``min_m2`` is
            set).
        active_threshold: a feature is active if it is non-zero in more than this fraction of
            samples; ``None``: no active-feature mask (every feature is active).
        relu: clip the bottleneck output at zero (for features that follow a ReLU).
        capacity_at: ``"last_forward"`` (default, as the original code): the heatmap is the capacity
            that the last forward pass saw, at ``alpha`` after ``steps - 1`` updates; ``"final"``:
            the capacity at ``alpha`` after all ``steps`` updates.
        ddof: the estimated variance is ``max(M2, min_m2) / (n - ddof)``: 1 (default) is the
            Bessel-corrected sample variance, 0 the text-IBA authors' divisor ``n``.
        min_m2: floor of the sum of squared deviations ``M2`` before the division (the text-IBA
            authors' ``eps = 1e-5``; for an estimator of one sample it floors the variance).
        log_var_clamp: ``c``: when the noise is sampled, its log-variance ``log((1 - lam)^2)`` is
            clamped to ``[-c, c]`` (the text-IBA authors' ``10``); the capacity is not. ``None``
            (default): no clamp.
        estimator: ``"corpus"`` (default): the explainer's estimators (``estimate()``,
            ``estimators=``); ``"sentence"``: ``analyze`` fits them on each explained input
            alone, at the target layers (the text-IBA authors' pipeline; needs ``ddof=0``);
            ``"prior"``: no estimator, the standard-normal prior ``mu = 0``, ``sigma' = 1`` and
            no active-feature mask, for features of any shape (M2IB, section 5; ``min_std``,
            ``active_threshold``, ``ddof`` and ``min_m2`` are then unused).

    docs/mathematics.md sections 1.2, 2, 5 and 6; :func:`text_config` sets the text-IBA authors'
    arithmetic, :func:`m2ib_config` M2IB's.
    """

    beta: float = 10.0
    steps: int = 10
    lr: float = 1.0
    batch_size: int = 10
    initial_alpha: float = 5.0
    sigma: float | None = 1.0
    min_std: float = 0.01
    active_threshold: float | None = 0.01
    relu: bool = False
    capacity_at: str = "last_forward"
    ddof: int = 1
    min_m2: float = 0.0
    log_var_clamp: float | None = None
    estimator: str = "corpus"

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Config.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"Config.{name} must be finite, got {value!r}")
            return float(value)

        def integer(name: str) -> int:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Config.{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"Config.{name} must be at least 1, got {value}")
            return value

        if number("beta") < 0:
            raise ValueError(f"Config.beta must be >= 0, got {self.beta}")
        if number("lr") <= 0:
            raise ValueError(f"Config.lr must be > 0, got {self.lr}")
        integer("steps")
        integer("batch_size")
        number("initial_alpha")
        if self.sigma is not None and number("sigma") < 0:
            raise ValueError(f"Config.sigma must be >= 0 or None, got {self.sigma}")
        if number("min_m2") < 0:
            raise ValueError(f"Config.min_m2 must be >= 0, got {self.min_m2}")
        if number("min_std") < 0 or (self.min_std == 0 and self.min_m2 == 0):
            raise ValueError(
                f"Config.min_std must be > 0, got {self.min_std} (it may be 0 only with "
                "min_m2 > 0, which keeps the standard deviation positive)"
            )
        if self.active_threshold is not None and not 0 <= number("active_threshold") < 1:
            raise ValueError(
                f"Config.active_threshold must be in [0, 1) or None, got {self.active_threshold}"
            )
        if not isinstance(self.relu, bool):
            raise TypeError(f"Config.relu must be a bool, got {self.relu!r}")
        if self.capacity_at not in CAPACITY_AT:
            raise ValueError(
                f"Config.capacity_at must be one of {CAPACITY_AT}, got {self.capacity_at!r}"
            )
        if isinstance(self.ddof, bool) or self.ddof not in (0, 1):
            raise ValueError(f"Config.ddof must be 0 or 1, got {self.ddof!r}")
        if self.log_var_clamp is not None and number("log_var_clamp") <= 0:
            raise ValueError(f"Config.log_var_clamp must be > 0 or None, got {self.log_var_clamp}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"Config.estimator must be one of {ESTIMATORS}, got {self.estimator!r}"
            )
        if self.estimator == "sentence" and self.ddof != 0:
            raise ValueError(
                "Config.estimator='sentence' fits the statistics on one input, whose "
                "Bessel-corrected variance is undefined: set ddof=0 (and min_m2 > 0), as "
                "iba.text_config() does"
            )

    @property
    def smoothing(self) -> bool:
        """Whether ``lam`` is smoothed (spatial features only)."""
        return bool(self.sigma)

    @property
    def min_samples(self) -> int:
        """The fewest samples an estimator needs under this config (``ddof + 1``)."""
        return self.ddof + 1

    @property
    def updates(self) -> int:
        """Adam updates before the capacity of the heatmap is taken."""
        return self.steps - 1 if self.capacity_at == "last_forward" else self.steps

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def coiba_config(**changes: Any) -> Config:
    """The defaults of CoIBA (Hong et al., CVPR 2025; docs/mathematics.md section 4): ``beta = 1``, no smoothing."""
    return Config(**{"beta": 1.0, "sigma": None, **changes})


def text_config(**changes: Any) -> Config:
    """The text-IBA authors' arithmetic (Jiang et al., Findings of EMNLP 2020; docs/mathematics.md
    section 6): ``beta = 1e-5``, no smoothing, standard deviation ``sqrt(max(M2, 1e-5) / n)``
    (``ddof=0``, ``min_m2=1e-5``, no ``min_std``), no active-feature mask, and the noise's
    log-variance clamped to ``[-10, 10]`` when sampling. Steps, ``lr``, noise samples, initial
    ``alpha`` and the heatmap's capacity are the defaults, as in their code.

    The estimator stays the corpus one; ``text_config(estimator="sentence")`` fits it on each
    explained input alone, as their pipeline does.
    """
    preset = {
        "beta": 1e-5,
        "sigma": None,
        "ddof": 0,
        "min_std": 0.0,
        "min_m2": 1e-5,
        "active_threshold": None,
        "log_var_clamp": 10.0,
    }
    return Config(**{**preset, **changes})


def m2ib_config(**changes: Any) -> Config:
    """M2IB's settings (Wang et al., NeurIPS 2023; docs/mathematics.md section 5): the
    standard-normal prior instead of an estimator (``estimator="prior"``), ``beta = 0.1``, no
    smoothing; Adam ``lr = 1``, 10 steps, 10 noise samples and ``alpha`` starting at 5 as the
    defaults. ``m2ib_config(estimator="corpus")`` is the dataset-estimated variant."""
    preset = {"beta": 0.1, "sigma": None, "estimator": "prior", "active_threshold": None}
    return Config(**{**preset, **changes})


def for_targets(n_targets: int, config: Config | None = None, **fields: Any) -> Config:
    """The config of an explainer with ``n_targets`` target layers, as the adapters' ``IBA`` takes
    it: ``config`` itself, or built from ``fields`` (``Config`` defaults for one target, the CoIBA
    defaults of :func:`coiba_config` for several). An unknown keyword names the known ones."""
    if config is not None and fields:
        raise TypeError(f"pass either config= or Config fields, not both (got {list(fields)})")
    if config is None:
        make = Config if n_targets == 1 else coiba_config
        try:
            config = make(**fields)
        except TypeError as err:
            if "unexpected keyword" not in str(err):
                raise
            known = ", ".join(Config.__dataclass_fields__)
            raise TypeError(f"{err}; IBA config keywords are: {known}") from None
    if not isinstance(config, Config):
        raise TypeError(f"config must be an iba.Config, got {type(config).__name__}")
    return config
