r"""Predictive uncertainty from Monte Carlo samples (MC dropout, ensembles).

Classification takes sampled probabilities ``probs_t [num_samples, batch, ...,
num_classes]`` (e.g. from ``dl.mc.sample(..., transform=jax.nn.softmax)``); concrete
inputs that are not distributions (logits, say) raise ``ValueError``, traced ones
cannot be checked; ``predictive_log_probs`` takes log-probabilities ``log_probs_t``
(``transform=jax.nn.log_softmax``) and returns the exact log of the predictive mean,
for ``dl.metrics.nll_from_log_probs``. Regression takes sampled means
``means_t [num_samples, ...]`` and optionally sampled log-variances.

References:
  Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
  Uncertainty in Deep Learning", ICML 2016.
  Houlsby, Huszár, Ghahramani & Lengyel, "Bayesian Active Learning for
  Classification and Preference Learning", arXiv 1112.5745, 2011.
  Kendall & Gal, "What Uncertainties Do We Need in Bayesian Deep Learning for
  Computer Vision?", NeurIPS 2017.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks

__all__ = [
    "ClassificationUncertainty",
    "RegressionUncertainty",
    "classification",
    "entropy",
    "mc_log_likelihood",
    "predictive_log_probs",
    "regression",
]


class ClassificationUncertainty(NamedTuple):
    r"""Moments and entropies of sampled class probabilities.

    Attributes:
      mean: predictive distribution :math:`\bar p = \frac1T \sum_t p_t`
        ``[..., num_classes]``.
      predictive_entropy: total uncertainty :math:`H[\bar p]` ``[...]``.
      expected_entropy: aleatoric part :math:`\frac1T \sum_t H[p_t]` ``[...]``.
      mutual_information: epistemic part (BALD), :math:`H[\bar p] - \frac1T \sum_t
        H[p_t]` ``[...]``.
      variance: per-class variance over the samples ``[..., num_classes]``.
    """

    mean: jax.Array
    predictive_entropy: jax.Array
    expected_entropy: jax.Array
    mutual_information: jax.Array
    variance: jax.Array


class RegressionUncertainty(NamedTuple):
    r"""Predictive moments of sampled regression outputs.

    Attributes:
      mean: predictive mean :math:`\frac1T \sum_t \mu_t` ``[...]``.
      variance: predictive variance, ``aleatoric + epistemic`` ``[...]``.
      aleatoric: observation noise: :math:`\tau^{-1}` or :math:`\frac1T \sum_t
        \sigma_t^2` ``[...]``.
      epistemic: variance of the sampled means :math:`\frac1T \sum_t \mu_t^2 -
        \bar\mu^2` ``[...]``.
    """

    mean: jax.Array
    variance: jax.Array
    aleatoric: jax.Array
    epistemic: jax.Array


# Slack of the row-sum check, in units of the dtype's eps, on top of one eps per class.


def _entropy(probs: jax.Array, axis: int = -1) -> jax.Array:
    """:func:`entropy` without the check (for arrays already checked)."""
    positive = probs > 0
    safe = jnp.where(positive, probs, jnp.ones_like(probs))
    return -jnp.sum(jnp.where(positive, probs * jnp.log(safe), 0), axis=axis)


def entropy(probs: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Shannon entropy in nats, :math:`H[p] = -\sum_c p_c \log p_c`, with :math:`0 \log 0 = 0`.

    The gradient is finite at zero probabilities too (the log never sees a zero).

    Concrete ``probs`` are checked to be distributions along ``axis``: values in
    [0, 1] and sums equal to 1 within ``(num_classes + 16) * eps`` of their dtype
    (float32 softmax outputs, and their means over MC passes, always pass). Under
    ``jit``, ``vmap`` or ``grad`` the values are traced and the check cannot run.

    Args:
      probs: probabilities ``[..., num_classes]``.
      axis: the class axis.

    Returns:
      ``[...]``, the class axis removed.

    Raises:
      ValueError: ``probs`` is concrete and not a distribution along ``axis`` (e.g.
        logits: apply ``jax.nn.softmax`` first).
      TypeError: ``probs`` is not floating point.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.uncertainty.entropy(jnp.array([[0.5, 0.5], [1.0, 0.0]])).shape
      (2,)
    """
    return _entropy(_checks.check_probs(probs, "probs", axis), axis)


def classification(probs_t: ArrayLike) -> ClassificationUncertainty:
    r"""Decomposes the predictive uncertainty of sampled class probabilities.

    With :math:`p_t` the class probabilities of pass :math:`t` and
    :math:`\bar p = \frac1T \sum_t p_t`:

    .. math::
        \underbrace{H[\bar p]}_{\text{predictive (total)}} =
        \underbrace{\tfrac1T \textstyle\sum_t H[p_t]}_{\text{expected (aleatoric)}} +
        \underbrace{I}_{\text{mutual information (epistemic)}}

    :math:`I` estimates the mutual information between the label and the model
    parameters, the BALD acquisition score of Houlsby et al. (2011). It is computed as
    the difference of the two entropies, clipped at zero against rounding, so the
    identity holds to float precision. ``0 log 0`` is taken as 0.

    The sample axis is required: ``probs_t`` needs at least 3 dimensions, so one
    distribution per example ``[batch, num_classes]`` is refused rather than read as
    ``batch`` samples of one input (for ``T`` samples of one input pass
    ``probs_t[:, None]``). Concrete ``probs_t`` are checked to be distributions over
    the last axis (values in [0, 1], sums equal to 1 within ``(num_classes + 16) *
    eps`` of their dtype, which float32 softmax outputs always pass); under ``jit``,
    ``vmap`` or ``grad`` the values are traced and only the shape is checked.

    Args:
      probs_t: sampled probabilities ``[num_samples, batch, ..., num_classes]``.

    Returns:
      :class:`ClassificationUncertainty` with ``mean`` and ``variance``
      ``[..., num_classes]`` and the three entropies ``[...]`` (in nats).

    Raises:
      ValueError: ``probs_t`` has fewer than 3 dimensions (no sample axis), or is
        concrete and not a distribution over its last axis (e.g. logits: apply
        ``jax.nn.softmax`` first).
      TypeError: ``probs_t`` is not floating point.

    References:
      Houlsby, Huszár, Ghahramani & Lengyel, "Bayesian Active Learning for
      Classification and Preference Learning", arXiv 1112.5745, 2011.
      Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data",
      ICML 2017.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 4, 3)))
      >>> u = dl.uncertainty.classification(probs_t)
      >>> u.mean.shape, u.mutual_information.shape
      ((4, 3), (4,))
    """
    probs_t = _checks.check_float_array(probs_t, "probs_t")
    if probs_t.ndim < 3:
        raise ValueError(
            f"probs_t must be [num_samples, batch, ..., num_classes], got shape "
            f"{probs_t.shape}: the sample axis is missing. Stack the MC passes first, e.g. "
            "dl.mc.sample(fn, key, num_samples, transform=jax.nn.softmax); for samples of "
            "one input use probs_t[:, None]."
        )
    probs_t = _checks.check_probs(probs_t, "probs_t")
    mean = jnp.mean(probs_t, axis=0)
    total = _entropy(mean)
    expected = jnp.mean(_entropy(probs_t), axis=0)
    return ClassificationUncertainty(
        mean=mean,
        predictive_entropy=total,
        expected_entropy=expected,
        mutual_information=jnp.maximum(total - expected, 0),
        variance=jnp.var(probs_t, axis=0),
    )


def predictive_log_probs(log_probs_t: ArrayLike) -> jax.Array:
    r"""Log of the MC predictive distribution, from per-pass log-probabilities.

    .. math::
        \log \bar p = \log \frac1T \sum_t p_t
        = \operatorname{logsumexp}_t \log p_t - \log T

    Exact where :math:`\log \bar p` computed as ``log(mean(probs_t))`` underflows: a
    label probability below the smallest float stays finite, so
    ``dl.metrics.nll_from_log_probs(predictive_log_probs(log_probs_t), labels)`` is the
    NLL of MC dropout with nothing clipped. With one pass (``T = 1``) it returns
    ``log_probs_t[0]`` unchanged, so a deterministic prediction passed as
    ``log_softmax(logits)[None]`` is scored exactly as it would be alone.

    Args:
      log_probs_t: sampled log-probabilities ``[num_samples, batch, ..., num_classes]``
        (e.g. ``dl.mc.sample(fn, key, T, transform=jax.nn.log_softmax)``).

    Returns:
      ``[batch, ..., num_classes]`` log-probabilities.

    Raises:
      ValueError: ``log_probs_t`` has fewer than 3 dimensions (no sample axis), or is
        concrete and not normalized over its last axis (e.g. logits: apply
        ``jax.nn.log_softmax`` first).
      TypeError: ``log_probs_t`` is not floating point.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> logits_t = jax.random.normal(jax.random.key(0), (8, 4, 3))
      >>> dl.uncertainty.predictive_log_probs(jax.nn.log_softmax(logits_t)).shape
      (4, 3)
    """
    log_probs_t = _checks.check_float_array(log_probs_t, "log_probs_t")
    if log_probs_t.ndim < 3:
        raise ValueError(
            f"log_probs_t must be [num_samples, batch, ..., num_classes], got shape "
            f"{log_probs_t.shape}: the sample axis is missing (one pass: log_probs[None])."
        )
    log_probs_t = _checks.check_log_probs(log_probs_t, "log_probs_t")
    num_samples = log_probs_t.shape[0]
    return jax.nn.logsumexp(log_probs_t, axis=0) - math.log(num_samples)


def _aleatoric(
    means_t: jax.Array, tau: ArrayLike | None, log_variances_t: ArrayLike | None
) -> jax.Array:
    """Per-sample observation variance: ``1/tau`` or ``exp(log_variances_t)`` [T, ...]."""
    if (tau is None) == (log_variances_t is None):
        raise ValueError(
            "pass exactly one of tau (homoscedastic precision; tau=jnp.inf for no "
            "observation noise) and log_variances_t (heteroscedastic head)."
        )
    if log_variances_t is not None:
        log_variances_t = _checks.check_float_array(log_variances_t, "log_variances_t")
        if log_variances_t.shape != means_t.shape:
            raise ValueError(
                f"log_variances_t has shape {log_variances_t.shape}, means_t has "
                f"{means_t.shape}; they must match."
            )
        return jnp.exp(log_variances_t)
    return jnp.broadcast_to(1.0 / jnp.asarray(tau, means_t.dtype), means_t.shape)


def _check_means(means_t: ArrayLike) -> jax.Array:
    means_t = _checks.check_float_array(means_t, "means_t")
    if means_t.ndim < 1:
        raise ValueError("means_t must be [num_samples, ...], got a scalar.")
    return means_t


def regression(
    means_t: ArrayLike,
    *,
    tau: ArrayLike | None = None,
    log_variances_t: ArrayLike | None = None,
) -> RegressionUncertainty:
    r"""Predictive mean and variance of sampled regression outputs.

    Homoscedastic (model precision :math:`\tau`, Gal & Ghahramani 2016):

    .. math::
        \widehat{\mathrm{Var}}[y] = \tau^{-1} + \frac1T \sum_t \mu_t^2 - \bar\mu^2

    Heteroscedastic (the network also predicts :math:`\log\sigma_t^2`, Kendall & Gal
    2017): :math:`\tau^{-1}` is replaced by :math:`\frac1T \sum_t \sigma_t^2`.

    Args:
      means_t: sampled predictive means ``[num_samples, ...]``.
      tau: model precision (a scalar, or an array broadcastable to ``[...]``);
        ``jnp.inf`` gives the sample variance alone.
      log_variances_t: sampled log-variances ``[num_samples, ...]`` of a
        heteroscedastic head (instead of ``tau``).

    Returns:
      :class:`RegressionUncertainty`, each field ``[...]``.

    Raises:
      ValueError: not exactly one of ``tau`` and ``log_variances_t`` is given, or
        their shapes do not match ``means_t``.

    References:
      Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
      Uncertainty in Deep Learning", ICML 2016.
      Kendall & Gal, "What Uncertainties Do We Need in Bayesian Deep Learning for
      Computer Vision?", NeurIPS 2017.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> means_t = jax.random.normal(jax.random.key(0), (10, 5))
      >>> u = dl.uncertainty.regression(means_t, tau=4.0)
      >>> u.mean.shape, u.variance.shape
      ((5,), (5,))
    """
    means_t = _check_means(means_t)
    aleatoric = jnp.mean(_aleatoric(means_t, tau, log_variances_t), axis=0)
    epistemic = jnp.var(means_t, axis=0)
    return RegressionUncertainty(
        mean=jnp.mean(means_t, axis=0),
        variance=aleatoric + epistemic,
        aleatoric=aleatoric,
        epistemic=epistemic,
    )


def mc_log_likelihood(
    means_t: ArrayLike,
    targets: ArrayLike,
    tau: ArrayLike | None = None,
    *,
    log_variances_t: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""MC estimate of the test log-likelihood, as in Gal & Ghahramani's UCI code.

    Each target is scored under the mixture of the :math:`T` sampled Gaussians:

    .. math::
        \log p(y \mid x) \approx \operatorname{logsumexp}_t\!\Big(-\frac{\tau}{2}
        (y - \mu_t)^2\Big) - \log T - \frac12 \log 2\pi + \frac12 \log\tau

    computed with ``logsumexp`` over the samples (``net/net.py`` of
    yaringal/DropoutUncertaintyExps). With ``log_variances_t`` each sample uses its
    own variance :math:`\sigma_t^2` in place of :math:`\tau^{-1}`. Each element of
    ``targets`` is one independent point.

    Args:
      means_t: sampled predictive means ``[num_samples, ...]``.
      targets: observed values ``[...]``.
      tau: model precision (scalar or broadcastable to ``[...]``).
      log_variances_t: sampled log-variances ``[num_samples, ...]`` (instead of tau).
      reduction: ``"mean"`` over all points (Gal's reported number), ``"sum"`` or
        ``"none"`` (per point ``[...]``).

    Returns:
      Scalar (``"mean"``/``"sum"``) or ``[...]`` (``"none"``), in nats.

    Raises:
      ValueError: a bad ``reduction``, shape or tau/log-variance combination.

    References:
      Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
      Uncertainty in Deep Learning", ICML 2016.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> means_t = jax.random.normal(jax.random.key(0), (10, 5))
      >>> dl.uncertainty.mc_log_likelihood(means_t, jnp.zeros(5), 1.0).shape
      ()
    """
    means_t = _check_means(means_t)
    targets = jnp.asarray(targets, means_t.dtype)
    if targets.shape != means_t.shape[1:]:
        raise ValueError(
            f"targets has shape {targets.shape}, expected {means_t.shape[1:]} "
            f"(means_t is {means_t.shape})."
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r} is not one of 'mean', 'sum', 'none'.")
    variances_t = _aleatoric(means_t, tau, log_variances_t)
    log_density_t = -0.5 * (
        jnp.square(targets - means_t) / variances_t + jnp.log(variances_t) + math.log(2 * math.pi)
    )
    per_point = jax.nn.logsumexp(log_density_t, axis=0) - math.log(means_t.shape[0])
    if reduction == "mean":
        return jnp.mean(per_point)
    if reduction == "sum":
        return jnp.sum(per_point)
    return per_point
