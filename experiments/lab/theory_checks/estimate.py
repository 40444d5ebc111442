r"""Rows of the theory table and the Monte Carlo estimates they compare.

A row records a claim, the :mod:`dropout_lab.theory` function it checks, the closed
form :math:`\theta`, the estimate :math:`\hat\theta` and whether it passed its
criterion, one of:

- a z-test, :math:`|z| < t` with :math:`z = (\hat\theta - \theta) / \mathrm{se}`
  (:func:`z_row`, :func:`mean_row`, :func:`stat_row`);
- an identity, :math:`|\hat\theta - \theta| / \max(|\theta|, 1) < t` (:func:`identity_row`);
- a relative error, :math:`|\hat\theta - \theta| / |\theta| < t` (:func:`relative_row`);
- a distance that should be 0, :math:`\hat\theta < t` (:func:`distance_row`).

Standard errors: for a mean, the sample standard deviation over :math:`\sqrt{N}`
(:func:`mean_and_std_err`); for a nonlinear statistic (variance, ratio), batch means:
the statistic on ``num_groups`` disjoint groups, their standard deviation over
:math:`\sqrt{G}` (:func:`batch_means`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lab.theory_config import TheoryChecksConfig

SAMPLE_BATCH = 2048  # keys per lax.map step when sampling (bounds the memory)


# --- Estimates --------------------------------------------------------------------------


def sample(fn: Callable, key: jax.Array, num: int) -> Any:
    """``fn(key_i)`` for ``num`` keys split from ``key``, ``SAMPLE_BATCH`` keys per step."""
    keys = jax.random.split(key, num)
    return jax.jit(lambda ks: lax.map(fn, ks, batch_size=min(SAMPLE_BATCH, num)))(keys)


def sample_var(a: np.ndarray) -> Any:
    """Unbiased sample variance (``ddof=1``)."""
    return np.var(a, ddof=1)


def mean_and_std_err(samples: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean over the first axis and its standard error :math:`s / \sqrt{N}`, in float64."""
    samples = np.asarray(samples, np.float64)
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])


def batch_means(stat: Callable, arrays: tuple, num_groups: int) -> tuple[float, float]:
    r"""``stat(*arrays)`` on all samples, and its batch-means standard error.

    The standard error is the standard deviation of ``stat`` on ``num_groups`` disjoint
    consecutive groups of the samples, over :math:`\sqrt{G}`.
    """
    arrays = tuple(np.asarray(a, np.float64) for a in arrays)
    size = arrays[0].shape[0] // num_groups
    groups = [stat(*(a[g * size : (g + 1) * size] for a in arrays)) for g in range(num_groups)]
    return float(stat(*arrays)), float(np.std(groups, ddof=1) / math.sqrt(num_groups))


# --- Rows -------------------------------------------------------------------------------


def _record(claim, function, closed, estimate, std_err, z, criterion, passed, note) -> dict:
    """One row of the table (the keys of ``results.json``, in the table's order)."""
    return {
        "claim": claim,
        "function": function,
        "closed_form": closed,
        "estimate": estimate,
        "std_err": std_err,
        "z": z,
        "criterion": criterion,
        "passed": bool(passed),
        "note": note,
    }


def z_row(claim, function, closed, estimate, std_err, threshold, note="") -> dict:
    r"""Passes when :math:`|z| < t`, :math:`z = (\hat\theta - \theta) / \mathrm{se}`."""
    closed, estimate, std_err = float(closed), float(estimate), float(std_err)
    diff = estimate - closed
    z = 0.0 if diff == 0 else (diff / std_err if std_err > 0 else math.inf)
    criterion = f"|z| < {threshold:g}"
    return _record(
        claim, function, closed, estimate, std_err, z, criterion, abs(z) < threshold, note
    )


def _error_row(claim, function, closed, estimate, floor, label, threshold, note) -> dict:
    r"""Passes when :math:`|\hat\theta - \theta| / \max(|\theta|, \text{floor}) < t`."""
    closed, estimate = float(closed), float(estimate)
    error = abs(estimate - closed) / max(abs(closed), floor)
    criterion = f"{label} {threshold:g}"
    return _record(
        claim, function, closed, estimate, math.nan, math.nan, criterion, error < threshold, note
    )


def identity_row(claim, function, closed, estimate, threshold, note="") -> dict:
    r"""Both sides of an identity: :math:`|\hat\theta - \theta| / \max(|\theta|, 1) < t`."""
    return _error_row(claim, function, closed, estimate, 1.0, "rel. err <", threshold, note)


def relative_row(claim, function, closed, estimate, threshold, note="") -> dict:
    r"""A measurement next to its formula: :math:`|\hat\theta - \theta| / |\theta| < t`."""
    return _error_row(claim, function, closed, estimate, 1e-12, "rel. err <", threshold, note)


def distance_row(claim, function, distance, threshold, note="") -> dict:
    """A distance whose ideal value is 0: ``distance < threshold``."""
    return _error_row(claim, function, 0.0, distance, 1.0, "value <", threshold, note)


def mean_row(cfg: TheoryChecksConfig, claim, function, closed, samples, note="") -> dict:
    """z-test of ``closed`` against the mean of ``samples``."""
    estimate, std_err = mean_and_std_err(samples)
    return z_row(claim, function, closed, estimate, std_err, cfg.z_threshold, note)


def stat_row(cfg: TheoryChecksConfig, claim, function, closed, stat, arrays, note="") -> dict:
    """z-test of ``closed`` against ``stat(*arrays)`` with its batch-means error."""
    estimate, std_err = batch_means(stat, arrays, cfg.num_groups)
    return z_row(claim, function, closed, estimate, std_err, cfg.z_threshold, note)


def fine_rates(cfg: TheoryChecksConfig) -> jax.Array:
    """The plots' grid of rates for the closed-form curves: 60 from 0.02 to past the last."""
    return jnp.linspace(0.02, max(cfg.rates) + 0.05, 60)
