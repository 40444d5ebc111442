"""Config schema of ``experiments/theory_checks.py`` (closed forms vs Monte Carlo).

Loaded like :func:`lab.config.load_config`: the YAML file and dotted
``key=value`` overrides are merged onto the structured schema, so an unknown key or a
wrong type fails at once, then every value's range is checked.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from lab.checks import check_range, fail
from lab.config import merge_config


@dataclass
class RegressionCheckConfig:
    """Linear regression trained by SGD with inverted dropout on its inputs.

    Attributes:
      num_examples: rows of the design matrix.
      num_features: columns of the design matrix.
      noise: standard deviation of the target noise.
      num_steps: SGD steps (one fresh mask per step, full batch).
      learning_rate: initial SGD step size (cosine-decayed to 1% of it).
      average_from: fraction of the run after which iterates are averaged
        (Polyak-Ruppert), which removes most of the mask noise of the last iterate.
      tolerance: pass when ``|w_sgd - w*| / |w*|`` is below it.
    """

    num_examples: int = 64
    num_features: int = 5
    noise: float = 0.5
    num_steps: int = 4000
    learning_rate: float = 0.05
    average_from: float = 0.5
    tolerance: float = 0.02


@dataclass
class BatchNormCheckConfig:
    """A small MLP ``relu(Dense) -> dropout -> BatchNorm -> Dense`` on a toy regression.

    Attributes:
      num_train: training examples.
      num_test: test examples (the shifts are measured on them).
      num_features: input features.
      hidden: hidden width (units whose BatchNorm statistics are measured).
      batch_size: examples per step.
      num_steps: Adam steps.
      learning_rate: Adam step size.
      momentum: BatchNorm running-average momentum (Flax's default, 0.99).
      recalibrate: test with population statistics (``recalibration_passes`` dropout
        passes over the training set) instead of the running averages, which lag
        and fluctuate with the weights of a short run; the other choice's numbers
        are saved in the JSON extras.
      recalibration_passes: masks averaged for the population statistics.
      eps: BatchNorm epsilon.
      tolerance: pass when the measured unit-averaged shift is within this relative
        error of the formula's.
    """

    num_train: int = 2048
    num_test: int = 2048
    num_features: int = 8
    hidden: int = 32
    batch_size: int = 256
    num_steps: int = 800
    learning_rate: float = 3e-3
    momentum: float = 0.99
    recalibrate: bool = True
    recalibration_passes: int = 16
    eps: float = 1e-5
    tolerance: float = 0.05


@dataclass
class TheoryChecksConfig:
    """Everything ``experiments/theory_checks.py`` needs.

    Attributes:
      seed: root seed of every key.
      rate: drop rate of the table's checks.
      num_samples: Monte Carlo masks per check (a multiple of ``ensemble_size`` and of
        ``num_groups``).
      num_groups: groups for batch-means standard errors of nonlinear statistics
        (variances, ratios).
      z_threshold: a Monte Carlo row passes when ``|z| <`` this.
      exact_tolerance: an identity row passes when the relative error is below it.
      num_inputs: inputs of the linear unit (and of the ReLU Jensen check, which is
        enumerated exactly over ``2**num_inputs`` masks).
      ensemble_size: T, the MC-dropout passes / ensemble members.
      widths: layer widths of the active-path count, input to output.
      bn_mean: mean of the Gaussian BatchNorm input.
      bn_std: standard deviation of the Gaussian BatchNorm input.
      rates: drop rates of the two plots.
      plot_samples: Monte Carlo masks per rate in the plots.
      regression: see :class:`RegressionCheckConfig`.
      batchnorm: see :class:`BatchNormCheckConfig`.
      output_dir: where the table (markdown, JSON) and plots go.
      plots: write the PNG plots.
    """

    seed: int = 0
    rate: float = 0.25
    num_samples: int = 200_000
    num_groups: int = 100
    z_threshold: float = 4.0
    exact_tolerance: float = 1e-5
    num_inputs: int = 8
    ensemble_size: int = 8
    widths: list[int] = field(default_factory=lambda: [4, 16, 16, 16, 3])
    bn_mean: float = 1.0
    bn_std: float = 0.5
    rates: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    )
    plot_samples: int = 50_000
    regression: RegressionCheckConfig = field(default_factory=RegressionCheckConfig)
    batchnorm: BatchNormCheckConfig = field(default_factory=BatchNormCheckConfig)
    output_dir: str = "runs/theory_checks"
    plots: bool = True


def load_theory_config(
    path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()
) -> TheoryChecksConfig:
    """Loads a YAML config onto :class:`TheoryChecksConfig`, applies overrides, checks it.

    Args:
      path: YAML file (``None``: the schema's defaults).
      overrides: ``key=value`` strings, e.g. ``["rate=0.5", "regression.num_steps=500"]``.

    Returns:
      The checked config (a typed OmegaConf node with attribute access).

    Raises:
      ConfigError: missing file, unknown key, wrong type or impossible value; the
        message names the key.
    """
    cfg = merge_config(TheoryChecksConfig, path, overrides)
    validate_theory_config(cfg)
    return cfg


def validate_theory_config(cfg: TheoryChecksConfig) -> None:
    """Checks every value's range; raises :class:`ConfigError` naming the key."""
    _validate_sampling(cfg)
    _validate_inputs(cfg)
    _validate_plots(cfg)
    _validate_regression(cfg.regression)
    _validate_batchnorm(cfg.batchnorm)


def _validate_sampling(cfg: TheoryChecksConfig) -> None:
    """The rate, the Monte Carlo sample counts and the pass criteria."""
    check_range("rate", cfg.rate, 0.0, 1.0, low_open=True, high_open=True)
    check_range("num_groups", cfg.num_groups, 2)
    check_range("ensemble_size", cfg.ensemble_size, 2)
    check_range("num_samples", cfg.num_samples, 2 * cfg.num_groups)
    for name in ("num_groups", "ensemble_size"):
        if cfg.num_samples % getattr(cfg, name):
            fail("num_samples", cfg.num_samples, f"must be a multiple of {name}.")
    check_range("z_threshold", cfg.z_threshold, 0.0, low_open=True)
    check_range("exact_tolerance", cfg.exact_tolerance, 0.0, low_open=True)


def _validate_inputs(cfg: TheoryChecksConfig) -> None:
    """The linear unit's inputs, the widths of the path count, the BatchNorm input."""
    check_range("num_inputs", cfg.num_inputs, 1, 16)
    if len(cfg.widths) < 3:
        fail("widths", list(cfg.widths), "needs input, at least one hidden and output width.")
    for i, width in enumerate(cfg.widths):
        check_range(f"widths[{i}]", width, 1)
    check_range("bn_std", cfg.bn_std, 0.0, low_open=True)


def _validate_plots(cfg: TheoryChecksConfig) -> None:
    """The plots' rates and their Monte Carlo sample count."""
    if not cfg.rates:
        fail("rates", list(cfg.rates), "needs at least one rate.")
    for i, rate in enumerate(cfg.rates):
        check_range(f"rates[{i}]", rate, 0.0, 1.0, low_open=True, high_open=True)
    check_range("plot_samples", cfg.plot_samples, 2)


def _validate_regression(r: RegressionCheckConfig) -> None:
    check_range("regression.num_examples", r.num_examples, 2)
    check_range("regression.num_features", r.num_features, 1)
    check_range("regression.noise", r.noise, 0.0)
    check_range("regression.num_steps", r.num_steps, 2)
    check_range("regression.learning_rate", r.learning_rate, 0.0, low_open=True)
    check_range("regression.average_from", r.average_from, 0.0, 1.0, high_open=True)
    check_range("regression.tolerance", r.tolerance, 0.0, low_open=True)


def _validate_batchnorm(b: BatchNormCheckConfig) -> None:
    for name in ("num_train", "num_test", "num_features", "hidden", "batch_size", "num_steps"):
        check_range(f"batchnorm.{name}", getattr(b, name), 2 if name == "batch_size" else 1)
    if b.batch_size > b.num_train:
        fail("batchnorm.batch_size", b.batch_size, "must be <= batchnorm.num_train.")
    check_range("batchnorm.learning_rate", b.learning_rate, 0.0, low_open=True)
    check_range("batchnorm.momentum", b.momentum, 0.0, 1.0, high_open=True)
    check_range("batchnorm.recalibration_passes", b.recalibration_passes, 1)
    check_range("batchnorm.eps", b.eps, 0.0)
    check_range("batchnorm.tolerance", b.tolerance, 0.0, low_open=True)
