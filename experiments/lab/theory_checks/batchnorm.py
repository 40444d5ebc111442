r"""BatchNorm after dropout (Li et al. 2019), :math:`x \sim \mathcal{N}(\mu, \sigma^2)`.

In training, BatchNorm normalizes the dropped input with its moments,

.. math::
    \text{classic: } (q\mu,\; q\sigma^2 + q(1-q)\mu^2), \qquad
    \text{inverted: } (\mu,\; \sigma^2/q + (1-q)\mu^2/q);

at test, dropout is off and the input's moments differ from the ones BatchNorm saw.
The three test rules of :data:`BN_CASES` shift the output's mean by
:math:`(E[x_\text{test}] - E[x_\text{train}]) / \sqrt{\mathrm{Var}[x_\text{train}]}` and
scale its variance by :math:`\mathrm{Var}[x_\text{test}] / \mathrm{Var}[x_\text{train}]`
(:func:`dropout_lab.theory.bn_test_shift`), checked in the table and over rates in a plot.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax import lax

from dropout_lab import theory
from dropout_lab.ops import dropout
from lab.theory_checks.estimate import (
    SAMPLE_BATCH,
    batch_means,
    fine_rates,
    mean_row,
    sample_var,
    stat_row,
)
from lab.theory_config import TheoryChecksConfig

# Li et al.'s test rules: (a) classic dropout, switched off without scaling; (b) classic,
# scaled by q; (c) inverted. TRAIN_MODE: the dropout each is trained with.
BN_CASES = ("classic_unscaled", "classic", "inverted")
CASE_LABELS = {
    "classic_unscaled": "(a) classic, unscaled at test",
    "classic": "(b) classic, scaled by q at test",
    "inverted": "(c) inverted",
}
TRAIN_MODE = {"classic_unscaled": "classic", "classic": "classic", "inverted": "inverted"}


def mean_shift(train: np.ndarray, test: np.ndarray) -> Any:
    r"""Output mean shift :math:`(\bar x_\text{test} - \bar x_\text{train}) / s_\text{train}`."""
    return (np.mean(test) - np.mean(train)) / math.sqrt(sample_var(train))


def variance_ratio(train: np.ndarray, test: np.ndarray) -> Any:
    r"""Output variance ratio :math:`s^2_\text{test} / s^2_\text{train}`."""
    return sample_var(test) / sample_var(train)


BN_STATS = {"mean_shift": mean_shift, "variance_ratio": variance_ratio}  # bn_test_shift's fields


def _draw(key: jax.Array, rate, mean, std) -> tuple[jax.Array, ...]:
    """One input through dropout in training mode, one test input through each test rule.

    Returns:
      ``(classic, inverted, test_a, test_b, test_c)``, scalars.
    """
    key_x, key_m, key_t = jax.random.split(key, 3)
    x = mean + std * jax.random.normal(key_x, (1,))
    x_test = mean + std * jax.random.normal(key_t, (1,))
    return (
        dropout(key_m, x, rate, mode="classic")[0],
        dropout(key_m, x, rate)[0],
        x_test[0],  # (a) classic switched off, no scaling
        dropout(key_m, x_test, rate, mode="classic", deterministic=True)[0],  # (b)
        dropout(key_m, x_test, rate, deterministic=True)[0],  # (c)
    )


def _draws(keys: jax.Array, rate, mean, std) -> tuple[jax.Array, ...]:
    """:func:`_draw` for every key, ``SAMPLE_BATCH`` keys per step."""
    batch_size = min(SAMPLE_BATCH, keys.shape[0])
    return lax.map(lambda k: _draw(k, rate, mean, std), keys, batch_size=batch_size)


def bn_samples(key: jax.Array, rate, mean, std, num: int) -> dict[str, tuple[Any, Any]]:
    """Training-mode and test-mode BatchNorm inputs of each case, ``num`` draws.

    Returns:
      ``{case: (train, test)}``, ``[num]`` each; the rate and moments are traced, so
      every call with ``num`` draws shares one compilation.
    """
    keys = jax.random.split(key, num)
    classic, inverted, *tests = jax.jit(_draws)(keys, rate, mean, std)
    train = {"classic": classic, "inverted": inverted}
    return {
        case: (train[TRAIN_MODE[case]], test) for case, test in zip(BN_CASES, tests, strict=True)
    }


def _input_rows(cfg: TheoryChecksConfig, classic, inverted) -> list[dict]:
    """The moments of the dropped input that BatchNorm normalizes with in training."""
    mean, var = cfg.bn_mean, cfg.bn_std**2
    cl_mean, cl_var = theory.bn_train_statistics(mean, var, cfg.rate, mode="classic")
    inv_mean, inv_var = theory.bn_train_statistics(mean, var, cfg.rate, mode="inverted")
    return [
        mean_row(cfg, "BN input, classic: mean q mu", "bn_train_statistics", cl_mean, classic),
        stat_row(cfg, "BN input, classic: var q s^2 + q(1-q) mu^2", "bn_train_statistics",
                 cl_var, sample_var, (classic,)),
        mean_row(cfg, "BN input, inverted: mean mu", "bn_train_statistics", inv_mean, inverted),
        stat_row(cfg, "BN input, inverted: var s^2/q + (1-q) mu^2/q", "bn_train_statistics",
                 inv_var, sample_var, (inverted,)),
    ]  # fmt: skip


def batchnorm_rows(cfg: TheoryChecksConfig, key: jax.Array) -> list[dict]:
    """Li et al.'s BatchNorm statistics and test-time shifts, x ~ N(mu, sigma^2)."""
    pairs = bn_samples(key, cfg.rate, cfg.bn_mean, cfg.bn_std, cfg.num_samples)
    rows = _input_rows(cfg, pairs["classic"][0], pairs["inverted"][0])
    for case in BN_CASES:
        shift = theory.bn_test_shift(cfg.bn_mean, cfg.bn_std**2, cfg.rate, case=case)
        for name, stat in BN_STATS.items():
            claim = f"BN test shift {CASE_LABELS[case]}: {name.replace('_', ' ')}"
            rows.append(
                stat_row(cfg, claim, "bn_test_shift", getattr(shift, name), stat, pairs[case])
            )
    return rows


def bn_curves(cfg: TheoryChecksConfig, key: jax.Array) -> dict[str, Any]:
    """BatchNorm test-time shifts over ``rates``: formula curves and MC points.

    Returns:
      ``{"rates", "fine", "closed", "mc"}``: the Monte Carlo rates, a fine grid of
      rates, ``closed[case][stat]`` on it and ``mc[case][stat]``, a list of
      ``(estimate, std_err)`` at ``rates``.
    """
    mean, var = cfg.bn_mean, cfg.bn_std**2
    fine = fine_rates(cfg)
    shifts = jax.jit(
        jax.vmap(lambda r: [theory.bn_test_shift(mean, var, r, case=case) for case in BN_CASES])
    )(fine)
    closed = {
        case: {name: np.asarray(getattr(shift, name)).tolist() for name in BN_STATS}
        for case, shift in zip(BN_CASES, shifts, strict=True)
    }
    mc: dict[str, dict[str, list[tuple[float, float]]]] = {
        case: {name: [] for name in BN_STATS} for case in BN_CASES
    }
    for i, rate in enumerate(cfg.rates):
        pairs = bn_samples(jax.random.fold_in(key, i), rate, mean, cfg.bn_std, cfg.plot_samples)
        for case, arrays in pairs.items():
            for name, stat in BN_STATS.items():
                mc[case][name].append(batch_means(stat, arrays, cfg.num_groups))
    return {"rates": list(cfg.rates), "fine": np.asarray(fine).tolist(), "closed": closed, "mc": mc}
