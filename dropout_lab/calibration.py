r"""Post-hoc calibration: temperature scaling fitted in JAX, jit-able and vmappable.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar :math:`T > 0`
fitted on held-out data to minimise the negative log-likelihood; the predicted class
(the argmax) does not change. :func:`fit_temperature` solves the 1-D problem with a
fixed number of bisection steps, so it compiles to one program with static shapes
that can be vmapped over seeds or models.

MC dropout: scale the log of the predictive mean, :math:`\log \bar p` with
:math:`\bar p = \frac1T \sum_t \mathrm{softmax}(z_t)`, computed exactly by
``dl.uncertainty.predictive_log_probs(jax.nn.log_softmax(logits_t))``. Scaling it by
:math:`1/T` and renormalising gives :math:`\bar p^{1/T} / \sum_c \bar p_c^{1/T}`.

References:
  Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
  ICML 2017.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.metrics import _flatten

__all__ = ["apply_temperature", "fit_temperature"]


def apply_temperature(logits: ArrayLike, temperature: ArrayLike) -> jax.Array:
    r"""Divides logits by a temperature: :math:`z / T`.

    Apply ``jax.nn.softmax`` (or ``log_softmax``) afterwards. :math:`T > 1` softens
    the distribution, :math:`T < 1` sharpens it; the argmax is unchanged.

    Args:
      logits: logits or log-probabilities ``[..., num_classes]`` (e.g. the MC
        log-mean of :func:`dropout_lab.uncertainty.predictive_log_probs`).
      temperature: positive scalar (or an array broadcastable to ``logits``).

    Returns:
      Scaled logits, the shape and dtype of ``logits``.

    Raises:
      TypeError: ``logits`` is not floating point.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.calibration.apply_temperature(jnp.array([[2.0, 0.0]]), 2.0)
      Array([[1., 0.]], dtype=float32)
    """
    logits = _checks.check_float_array(logits, "logits")
    return logits / jnp.asarray(temperature, logits.dtype)


def _nll_slope(inverse_temperature: jax.Array, logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Derivative of :math:`\frac1N \sum_i \mathrm{NLL}(\beta z_i)` in :math:`\beta`."""
    probs = jax.nn.softmax(inverse_temperature * logits, axis=-1)
    expected = jnp.sum(jnp.where(probs > 0, probs * logits, 0), axis=-1)
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return jnp.mean(expected - label_logit)


def fit_temperature(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    bounds: tuple[float, float] = (1e-2, 1e2),
    num_iters: int = 40,
) -> jax.Array:
    r"""The temperature that minimises the NLL of ``softmax(logits / T)`` on ``labels``.

    With :math:`\beta = 1/T` the mean NLL

    .. math::
        L(\beta) = \frac1N \sum_i \Big(\log \sum_c e^{\beta z_{ic}} - \beta z_{i y_i}\Big),
        \qquad
        L'(\beta) = \frac1N \sum_i \Big(\mathbb{E}_{c \sim \mathrm{softmax}(\beta z_i)}
        [z_{ic}] - z_{i y_i}\Big)

    is convex in :math:`\beta` (a log-sum-exp of linear functions minus a linear
    one), so :math:`L'` is non-decreasing and its sign says on which side of the
    minimum a temperature lies. ``num_iters`` bisection steps on :math:`\log T` over
    ``bounds`` shrink the bracket by :math:`2^{-\text{num\_iters}}` (40 steps from
    ``(1e-2, 1e2)``: a relative error below :math:`10^{-11}`, far under float32
    rounding). The minimiser is returned, or the nearer bound when it lies outside
    (e.g. separable data, whose NLL keeps falling as :math:`T \to 0`). Fixed
    iterations and no Python branching on values: the fit works under ``jit`` and
    ``vmap`` (over seeds, models or ``bounds``).

    Args:
      logits: logits ``[..., num_classes]``, or for MC dropout the log of the
        predictive mean (``dl.uncertainty.predictive_log_probs(log_probs_t)``; any
        log-probabilities work, as a constant per row does not change the softmax).
      labels: integer labels ``[...]``.
      bounds: the bracket ``(min_temperature, max_temperature)``, both positive.
      num_iters: bisection steps (a Python int).

    Returns:
      Scalar temperature (float32 for float32 logits).

    Raises:
      ValueError: ``labels`` does not have shape ``logits.shape[:-1]``, or a bad
        ``num_iters``.
      TypeError: ``logits`` is not floating point or ``labels`` not integer.

    References:
      Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
      ICML 2017.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> logits = 3.0 * jax.random.normal(jax.random.key(0), (100, 4))
      >>> labels = jax.random.randint(jax.random.key(1), (100,), 0, 4)
      >>> t = dl.calibration.fit_temperature(logits, labels)
      >>> t.shape, t.dtype
      ((), dtype('float32'))
      >>> dl.calibration.apply_temperature(logits, t).shape
      (100, 4)
    """
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive Python int, got {num_iters!r}.")
    logits, labels = _flatten(logits, labels, logits_ok=True)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    low, high = (jnp.log(jnp.asarray(b, logits.dtype)) for b in bounds)

    def step(_: int, bracket: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bracket
        mid = (low + high) / 2
        # L'(1/T) < 0: the NLL still falls as beta grows, so the minimum is at a lower T.
        falling = _nll_slope(jnp.exp(-mid), logits, labels) < 0
        return jnp.where(falling, low, mid), jnp.where(falling, mid, high)

    low, high = jax.lax.fori_loop(0, num_iters, step, (low, high))
    return jnp.exp((low + high) / 2)
