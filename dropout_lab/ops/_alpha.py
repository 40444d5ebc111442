"""Alpha dropout for self-normalizing (SELU) networks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops._bernoulli import check_impl, compute_dtype, keep_mask

# SELU's negative saturation value: -lambda * alpha (Klambauer et al. 2017).
SELU_SATURATION = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717


def affine_correction(keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""The affine map :math:`(a, b)` that restores zero mean and unit variance.

    .. math:: a = \left(q + \alpha'^2 q (1-q)\right)^{-1/2},\qquad b = -a\,\alpha' (1-q)

    with :math:`\alpha' = -\lambda\alpha` and keep probability :math:`q`. At
    :math:`q = 0` both are set to 0 (the output is then all zeros).
    """
    alive = keep > 0
    safe = jnp.where(alive, keep, 1.0)
    a = jnp.where(alive, (safe + SELU_SATURATION**2 * safe * (1 - safe)) ** -0.5, 0.0)
    b = -a * SELU_SATURATION * (1 - keep)
    return a, b


# Compiled even when called eagerly, so that XLA's fused multiply-adds give the same
# bits with and without an outer jit (eager op-by-op dispatch would round twice).
@functools.partial(jax.jit, static_argnums=(3,))
@functools.partial(
    jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable, static_argnums=(3,)
)
def _alpha_train(key: jax.Array, x: jax.Array, keep: jax.Array, impl: str) -> jax.Array:
    mask, keep_used = keep_mask(key, x.shape, keep, impl)
    dtype = compute_dtype(x.dtype)
    a, b = affine_correction(keep_used)
    kept = jnp.where(mask, x.astype(dtype), jnp.asarray(SELU_SATURATION, dtype))
    return (a.astype(dtype) * kept + b.astype(dtype)).astype(x.dtype)


def alpha_dropout(
    key: ArrayLike,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    impl: str = "fast",
) -> jax.Array:
    r"""Alpha dropout (Klambauer et al. 2017): keeps SELU's mean and variance.

    Dropped units are set to SELU's saturation value :math:`\alpha' = -\lambda\alpha`
    instead of 0, then an affine map restores the input's moments:

    .. math:: y = a\,\big(m \odot x + \alpha' (1 - m)\big) + b,\quad m \sim \text{Bernoulli}(q)

    with :math:`(a, b)` from :func:`affine_correction` evaluated at the keep
    probability actually used, so that for inputs with zero mean and unit variance the
    output has zero mean and unit variance. Rate 1 returns zeros; rate 0 is the
    identity.

    Args:
      key: a PRNG key.
      x: floating array ``[...]``, typically SELU activations.
      rate: drop probability in [0, 1], possibly traced.
      deterministic: evaluation mode: returns ``x``.
      impl: mask generator, ``"fast"`` or ``"bernoulli"``.

    Returns:
      Array with the shape and dtype of ``x``.

    References:
      Klambauer, Unterthiner, Mayr & Hochreiter, "Self-Normalizing Neural Networks",
      NeurIPS 2017.
    """
    x = _checks.check_float_array(x)
    rate_array = _checks.check_rate(rate)
    check_impl(impl)
    if deterministic:
        y = x
    else:
        keep = _checks.keep_probability(rate, rate_array)
        y = _alpha_train(_checks.as_key(key), x, keep, impl)
    return _checks.nan_if_invalid(y, rate, rate_array)
