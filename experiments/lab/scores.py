"""The lab's one definition of each metric, from ``dropout_lab.metrics`` / ``uncertainty``.

Every method reaches these functions the same way. A classifier's prediction is its
log-probabilities per pass ``log_probs_t [T, n, classes]``: ``log_softmax`` of the
logits with ``T = 1`` for a deterministic prediction, ``T`` MC passes otherwise. A
regressor's prediction is its means per pass ``means_t [T, n]``. Learning curves, the
progress display, the results table, ``metrics.json`` and the sweeps all take their
numbers from here, so a metric has one value wherever it is shown:

- NLL: ``dl.metrics.nll_from_log_probs`` of ``dl.uncertainty.predictive_log_probs``
  (the log of the mean probability, by ``logsumexp``): exact, never clipped, for one
  pass and for MC passes alike.
- accuracy, ECE, Brier: ``dl.metrics`` of the predictive mean probabilities.
- entropies and mutual information: ``dl.uncertainty.classification``.
- OOD AUROC: ``dl.metrics.auroc``, out-of-distribution inputs positive.
- RMSE: ``dl.metrics.rmse`` of the predictive mean; predictive variance:
  ``dl.uncertainty.regression``; test log-likelihood: ``dl.uncertainty.mc_log_likelihood``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import metrics as M
from dropout_lab import uncertainty as U


@jax.jit
def uncertainty(log_probs_t: ArrayLike) -> U.ClassificationUncertainty:
    """Predictive mean, entropies and mutual information of ``log_probs_t [T, n, classes]``."""
    return U.classification(jnp.exp(jnp.asarray(log_probs_t)))


@functools.partial(jax.jit, static_argnames="num_bins")
def classification(
    log_probs_t: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> dict[str, jax.Array]:
    """Accuracy, NLL, ECE and Brier score of the predictive distribution.

    Args:
      log_probs_t: log-probabilities per pass ``[T, n, classes]`` (``T = 1``: one
        deterministic pass).
      labels: integer labels ``[n]``.
      num_bins: ECE bins.

    Returns:
      ``{"acc", "nll", "ece", "brier"}``, scalars.
    """
    probs = uncertainty(log_probs_t).mean
    log_probs = U.predictive_log_probs(log_probs_t)
    return {
        "acc": M.accuracy(probs, labels),
        "nll": M.nll_from_log_probs(log_probs, labels),
        "ece": M.ece(probs, labels, num_bins),
        "brier": M.brier(probs, labels),
    }


@jax.jit
def ood_auroc(score_in: ArrayLike, score_out: ArrayLike) -> jax.Array:
    """AUROC of telling OOD inputs (positive, higher score) from in-distribution ones."""
    score_in, score_out = jnp.asarray(score_in), jnp.asarray(score_out)
    scores = jnp.concatenate([score_in, score_out])
    is_ood = jnp.concatenate([jnp.zeros(score_in.shape, bool), jnp.ones(score_out.shape, bool)])
    return M.auroc(scores, is_ood)


@jax.jit
def rmse(means_t: ArrayLike, targets: ArrayLike, scale: ArrayLike = 1.0) -> jax.Array:
    """RMSE of the predictive mean of ``means_t [T, n]`` against ``targets [n]``.

    ``scale``: the targets' standard deviation, for the RMSE in original units from
    standardized ``means_t`` and ``targets``.
    """
    return M.rmse(jnp.mean(jnp.asarray(means_t), axis=0), targets) * scale


@jax.jit
def predictive(means_t: ArrayLike, tau: ArrayLike) -> U.RegressionUncertainty:
    """Predictive mean and variance (``1/tau`` + variance of the MC means) of ``[T, n]``."""
    return U.regression(means_t, tau=tau)


@jax.jit
def log_likelihood(means_t: ArrayLike, targets: ArrayLike, tau: ArrayLike) -> jax.Array:
    """Mean test log-likelihood of ``means_t [T, n]`` with noise precision ``tau``."""
    return U.mc_log_likelihood(means_t, targets, tau)
