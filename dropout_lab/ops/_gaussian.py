"""Gaussian (multiplicative) dropout."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops import _prng
from dropout_lab.ops._bernoulli import compute_dtype


def noise_std(rate: jax.Array) -> jax.Array:
    r""":math:`\sigma = \sqrt{\text{rate} / (1 - \text{rate})}`, with safe gradients at 0 and 1."""
    inside = (rate > 0) & (rate < 1)
    safe = jnp.where(inside, rate, 0.5)
    return jnp.where(inside, jnp.sqrt(safe / (1 - safe)), 0.0)


# Compiled even when called eagerly, so that XLA's fused multiply-adds give the same
# bits with and without an outer jit (eager op-by-op dispatch would round twice).
@jax.jit
@functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
def _gaussian_train(key: jax.Array, x: jax.Array, rate: jax.Array) -> jax.Array:
    dtype = compute_dtype(x.dtype)
    noise = _prng.standard_normal(key, x.shape).astype(dtype)
    y = x.astype(dtype) * (1 + noise_std(rate).astype(dtype) * noise)
    return jnp.where(rate >= 1, jnp.zeros((), dtype), y).astype(x.dtype)


def gaussian_dropout(
    key: ArrayLike | None, x: ArrayLike, rate: ArrayLike, *, deterministic: bool = False
) -> jax.Array:
    r"""Gaussian dropout: multiplicative noise with the variance of Bernoulli dropout.

    .. math:: y = x \odot (1 + \sigma \varepsilon),\quad \varepsilon \sim \mathcal N(0, I),
        \quad \sigma^2 = \frac{\text{rate}}{1 - \text{rate}}

    The noise has mean 1 and the variance :math:`p/q` of inverted Bernoulli dropout's
    multiplier, so :math:`\mathbb E[y] = x` (Srivastava et al. 2014, sec. 10; Keras'
    ``GaussianDropout``). The output is differentiable in the rate (gradient
    :math:`x \varepsilon\, d\sigma/d\text{rate}`); it is set to 0 at rate 0 and 1, where
    :math:`\sigma` is not differentiable. Rate 1 (infinite variance) returns zeros, to
    keep the library-wide rule. The backward pass recomputes the noise from the key.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: floating array ``[...]``.
      rate: "drop" probability in [0, 1] setting the noise variance, possibly traced.
      deterministic: evaluation mode: returns ``x``.

    Returns:
      Array with the shape and dtype of ``x``.

    References:
      Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting", JMLR 2014, section 10.
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    rate_array = _checks.check_rate(rate)
    if deterministic:
        y = x
    else:
        y = _gaussian_train(_checks.as_key(key), x, rate_array)
    return _checks.nan_if_invalid(y, rate, rate_array)
