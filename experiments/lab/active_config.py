"""Config schema of the active-learning experiment (``experiments/active_learning.py``).

An active-learning config is an experiment config (:class:`~lab.config.
ExperimentConfig`: data, model, train, the ``mc`` method's rates and passes, seeds)
plus an ``active`` section (the protocol). It is loaded with the same merge as the
experiment configs, so an unknown key or a wrong type fails at once naming the key;
:func:`validate_active` then checks the ranges.

What the experiment reads from the experiment config: ``seeds``; ``data`` (the pool is
the training split, the test error is on the test split); ``model`` (``mlp`` or
``cnn``); ``train.optimizer``, ``learning_rate``, ``weight_decay``, ``momentum`` and
``batch_size`` (rows drawn per step from the labelled set); ``methods.mc``: ``rate``,
``input_rate``, ``num_samples`` (MC passes, for the test prediction and the pool
scores) and ``chunk_size``. ``train.epochs`` and the other methods are not used.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from lab.checks import check_choice, check_range, fail
from lab.config import ExperimentConfig, load_config

# Heuristic -> (score, selection). Scores are of ``dropout_lab.acquisition``; selection:
# ``top`` (top-k, ties broken at random), ``random`` (uniform over the unlabelled
# points), ``power`` (stochastic batch, p ~ score^beta) or ``batch_bald`` (greedy joint
# mutual information on consistent MC passes).
HEURISTICS: dict[str, tuple[str | None, str]] = {
    "random": (None, "random"),
    "bald": ("bald", "top"),
    "variation_ratio": ("variation_ratio", "top"),
    "max_entropy": ("max_entropy", "top"),
    "mean_std": ("mean_std", "top"),
    "power_bald": ("bald", "power"),
    "batch_bald": (None, "batch_bald"),
}
ARCHITECTURES = ("mlp", "cnn")  # models whose dropout the consistent passes share


@dataclass
class ActiveSection:
    """The protocol (Gal, Islam & Ghahramani, ICML 2017, scaled to the digits).

    Attributes:
      heuristics: acquisition heuristics (keys of :data:`HEURISTICS`), each run for
        every seed; the curves and the table show them in this order.
      initial_per_class: labelled points per class at the start (balanced, drawn per
        seed; every heuristic of a seed starts from the same set).
      acquire: points labelled per round.
      rounds: acquisition rounds; the last model is trained on ``initial_per_class *
        classes + rounds * acquire`` labels.
      steps: optimizer steps per round, from a fresh initialisation each round.
      pool_chunk_size: pool points scored together (memory of the scoring is set by
        it, not by the pool size); ``null``: the whole pool at once.
      batch_bald_samples: BatchBALD's sampled label configurations per step once
        enumerating them would exceed this many.
      power_beta: PowerBALD's exponent (``p ~ BALD^beta``).
      targets: test errors for the table of labels needed (each in (0, 1)).
      repeat: copies of every pool point (Repeated MNIST, Kirsch et al. 2019: 3).
      repeat_noise: standard deviation of the Gaussian noise added to every copy
        (standardized input units; 0 with ``repeat=1``).
      repeat_seed: seed of that noise.
      fast_compile: compile the round without XLA's backend optimisations: about 5x
        less compile time, about 4x more time per round (tiny runs, the tests).
    """

    heuristics: list[str] = field(default_factory=lambda: list(HEURISTICS))
    initial_per_class: int = 2
    acquire: int = 10
    rounds: int = 30
    steps: int = 300
    pool_chunk_size: int | None = 256
    batch_bald_samples: int = 1000
    power_beta: float = 1.0
    targets: list[float] = field(default_factory=lambda: [0.10, 0.05])
    repeat: int = 1
    repeat_noise: float = 0.0
    repeat_seed: int = 0
    fast_compile: bool = False


@dataclass
class ActiveConfig(ExperimentConfig):
    """An experiment config plus the active-learning protocol (``active``).

    Attributes:
      active: see :class:`ActiveSection`.
    """

    active: ActiveSection = field(default_factory=ActiveSection)


def load_active_config(
    path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()
) -> ActiveConfig:
    """Loads an active-learning YAML onto :class:`ActiveConfig`, applies overrides, checks it.

    Args:
      path: YAML file (``None``: the schema's defaults).
      overrides: ``key=value`` strings, e.g. ``["active.rounds=5", "seeds=[0,1]"]``.

    Returns:
      The checked config (a typed OmegaConf node with attribute access).

    Raises:
      ConfigError: missing file, unknown key, wrong type or impossible value; the
        message names the key.
    """
    cfg = cast(ActiveConfig, load_config(path, overrides, schema=ActiveConfig))
    validate_active(cfg)
    return cfg


def validate_active(cfg: ActiveConfig) -> None:
    """Checks the ``active`` section and what it needs of the rest; raises ``ConfigError``."""
    a = cfg.active
    if not a.heuristics:
        fail("active.heuristics", [], "needs at least one heuristic.")
    for i, name in enumerate(a.heuristics):
        check_choice(f"active.heuristics[{i}]", name, tuple(HEURISTICS))
    if len(set(a.heuristics)) != len(a.heuristics):
        fail("active.heuristics", list(a.heuristics), "heuristics must be distinct.")
    check_choice("model.architecture", cfg.model.architecture, ARCHITECTURES)
    if cfg.data.name in ("diabetes", "toy") or cfg.data.task == "regression":
        fail("data.name", cfg.data.name, "active learning here needs a classification set.")
    check_range("active.initial_per_class", a.initial_per_class, 1)
    check_range("active.acquire", a.acquire, 1)
    check_range("active.rounds", a.rounds, 1)
    check_range("active.steps", a.steps, 1)
    if a.pool_chunk_size is not None:
        check_range("active.pool_chunk_size", a.pool_chunk_size, 1)
    check_range("active.batch_bald_samples", a.batch_bald_samples, 1)
    check_range("active.power_beta", a.power_beta, 0.0)
    if not a.targets:
        fail("active.targets", [], "needs at least one test error.")
    for i, target in enumerate(a.targets):
        check_range(f"active.targets[{i}]", target, 0.0, 1.0, low_open=True, high_open=True)
    check_range("active.repeat", a.repeat, 1)
    check_range("active.repeat_noise", a.repeat_noise, 0.0)
    check_range("active.repeat_seed", a.repeat_seed, 0)
    check_range("methods.mc.num_samples", cfg.methods.mc.num_samples, 2)
