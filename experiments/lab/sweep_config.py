"""Config schema of the sweep scripts (``experiments/sweep.py``, ``experiments/mc_sweep.py``).

A sweep config is an experiment config (:class:`~lab.config.
ExperimentConfig`: data, model, train, eval) plus a ``sweep`` section (the grid) and an
``mc_sweep`` section (sample counts of the MC-uncertainty sweep). It is loaded with the
same merge as the experiment configs, so an unknown key or a wrong type fails at once
naming the key; :func:`validate_sweep` then checks the ranges. The experiment config's
``seeds`` and ``methods.<m>.rate`` are not used: the grid is ``sweep.rates`` x
``sweep.seeds`` (x ``sweep.alphas`` for R-Drop, x ``sweep.weight_decays``, x
``sweep.schedules``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from lab.checks import check_choice, check_range, fail
from lab.config import ExperimentConfig, load_config
from lab.methods import METHODS
from lab.rate_schedule import check_schedule
from lab.settings import ScheduleSettings

# Methods a sweep can train: every method whose model takes a traced rate.
SWEEP_METHODS = (
    "none", "classic", "inverted", "rdrop", "mc", "dropconnect", "gaussian",
    "attention", "dropkey", "droppath",
)  # fmt: skip


@dataclass
class SweepSection:
    """The grid: every method x rate x seed (x alpha for rdrop) x weight decay.

    Attributes:
      methods: methods to sweep (``none`` is trained once per seed, at rate 0).
      rates: dropout rates after every hidden activation (each in [0, 1)).
      input_rate: dropout rate on the inputs, the same for every grid point.
      seeds: number of training seeds; seeds are ``first_seed ... first_seed+seeds-1``.
      first_seed: the first training seed.
      alphas: R-Drop's KL weights (rdrop only; other methods ignore it).
      weight_decays: decoupled weight decays (``train.optimizer=adamw`` only); empty:
        ``train.weight_decay`` for every point.
      chunk_size: grid points trained together in one compiled program (``None``: all
        points of a method at once); a grid larger than memory runs in pieces.
      schedules: rate schedules (:class:`~lab.settings.ScheduleSettings`; their
        ``profile`` is not used: the method's is); empty: each method's own
        ``methods.<m>.schedule``. Traced like the rates: one program for all.
      curves: also record every point's deterministic train and test metrics after
        each ``train.eval_every`` steps (``sweep.json``'s ``curves``).
    """

    methods: list[str] = field(default_factory=lambda: ["inverted"])
    rates: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 0.7])
    input_rate: float = 0.0
    seeds: int = 4
    first_seed: int = 0
    alphas: list[float] = field(default_factory=lambda: [1.0])
    weight_decays: list[float] = field(default_factory=list)
    chunk_size: int | None = None
    schedules: list[ScheduleSettings] = field(default_factory=list)
    curves: bool = False


@dataclass
class MCSweepSection:
    """Sample counts of the MC-uncertainty sweep (classification).

    Attributes:
      num_samples: the sample counts T reported (the largest is drawn once; smaller
        T use its first T passes).
      chunk_size: MC passes evaluated together (``dl.mc.sample``'s ``chunk_size``).
      spread_blocks: the spread of the MC estimate at T is the standard deviation
        over disjoint blocks of T passes; ``spread_blocks * max(num_samples)`` passes
        are drawn on ``spread_examples`` test rows (at least 2 blocks at the largest T).
      spread_examples: test rows used for the spread.
    """

    num_samples: list[int] = field(default_factory=lambda: [10, 30, 100, 300, 1000])
    chunk_size: int | None = 100
    spread_blocks: int = 4
    spread_examples: int = 128


@dataclass
class SweepConfig(ExperimentConfig):
    """An experiment config plus the grid (``sweep``) and the MC sweep (``mc_sweep``).

    Attributes:
      sweep: see :class:`SweepSection`.
      mc_sweep: see :class:`MCSweepSection`.
    """

    sweep: SweepSection = field(default_factory=SweepSection)
    mc_sweep: MCSweepSection = field(default_factory=MCSweepSection)


def load_sweep_config(
    path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()
) -> SweepConfig:
    """Loads a sweep YAML onto :class:`SweepConfig`, applies overrides and checks it.

    Args:
      path: YAML file (``None``: the schema's defaults).
      overrides: ``key=value`` strings, e.g. ``["sweep.rates=[0,0.5]", "sweep.seeds=8"]``.

    Returns:
      The checked config (a typed OmegaConf node with attribute access).

    Raises:
      ConfigError: missing file, unknown key, wrong type or impossible value; the
        message names the key.
    """
    # load_config returns a node of the schema it is given (typed as the base schema).
    cfg = cast(SweepConfig, load_config(path, overrides, schema=SweepConfig))
    validate_sweep(cfg)
    return cfg


def validate_sweep(cfg: SweepConfig) -> None:
    """Checks the ``sweep`` and ``mc_sweep`` sections; raises ``ConfigError``."""
    s, m = cfg.sweep, cfg.mc_sweep
    if not s.methods:
        fail("sweep.methods", [], "needs at least one method.")
    for i, name in enumerate(s.methods):
        check_choice(f"sweep.methods[{i}]", name, SWEEP_METHODS)
    if len(set(s.methods)) != len(s.methods):
        fail("sweep.methods", list(s.methods), "methods must be distinct.")
    for i, name in enumerate(s.methods):
        fits, why = METHODS[name].architectures, METHODS[name].needs(cfg.model)
        if cfg.model.architecture not in fits or why:
            fail(f"sweep.methods[{i}]", name, why or f"needs model.architecture in {fits}.")
    for i, schedule in enumerate(s.schedules):
        check_schedule(f"sweep.schedules[{i}]", schedule)
    if not s.rates:
        fail("sweep.rates", [], "needs at least one rate.")
    for i, rate in enumerate(s.rates):
        # A rate of 1 drops everything: nothing can be learned.
        check_range(f"sweep.rates[{i}]", rate, 0.0, 1.0, high_open=True)
    if len(set(s.rates)) != len(s.rates):
        fail("sweep.rates", list(s.rates), "rates must be distinct.")
    check_range("sweep.input_rate", s.input_rate, 0.0, 1.0, high_open=True)
    check_range("sweep.seeds", s.seeds, 1)
    check_range("sweep.first_seed", s.first_seed, 0)
    if not s.alphas:
        fail("sweep.alphas", [], "needs at least one alpha.")
    for i, alpha in enumerate(s.alphas):
        check_range(f"sweep.alphas[{i}]", alpha, 0.0)
    for i, wd in enumerate(s.weight_decays):
        check_range(f"sweep.weight_decays[{i}]", wd, 0.0)
    if s.weight_decays and cfg.train.optimizer != "adamw":
        fail(
            "sweep.weight_decays",
            list(s.weight_decays),
            f"needs train.optimizer=adamw (got {cfg.train.optimizer!r}).",
        )
    if s.chunk_size is not None:
        check_range("sweep.chunk_size", s.chunk_size, 1)
    if not m.num_samples:
        fail("mc_sweep.num_samples", [], "needs at least one sample count.")
    for i, t in enumerate(m.num_samples):
        check_range(f"mc_sweep.num_samples[{i}]", t, 2)
    if m.chunk_size is not None:
        check_range("mc_sweep.chunk_size", m.chunk_size, 1)
    check_range("mc_sweep.spread_blocks", m.spread_blocks, 2)
    check_range("mc_sweep.spread_examples", m.spread_examples, 1)
