"""Alpha dropout for self-normalizing (SELU) networks."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops._bernoulli import check_impl, compute_dtype, keep_mask, scale_keep

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
# The barrier keeps XLA from folding the correction of a fixed rate at compile time
# with its own rounding (1-8 ulp away from the values an eager call computes).
@functools.partial(jax.jit, static_argnums=(3, 4))
@functools.partial(
    jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable, static_argnums=(3, 4)
)
def _alpha_train(
    key: jax.Array,
    x: jax.Array,
    keep: jax.Array,
    impl: str,
    broadcast_dims: tuple[int, ...],
) -> jax.Array:
    mask, _ = keep_mask(key, _checks.mask_shape(x.shape, broadcast_dims), keep, impl)
    mask = jnp.broadcast_to(mask, x.shape)
    a, b = affine_correction(lax.optimization_barrier(scale_keep(keep, impl)))
    dtype = compute_dtype(x.dtype)
    kept = jnp.where(mask, x.astype(dtype), jnp.asarray(SELU_SATURATION, dtype))
    return (a.astype(dtype) * kept + b.astype(dtype)).astype(x.dtype)


def alpha_dropout(
    key: ArrayLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""Alpha dropout (Klambauer et al. 2017): keeps SELU's mean and variance.

    Dropped units are set to SELU's saturation value :math:`\alpha' = -\lambda\alpha`
    instead of 0, then an affine map restores the input's moments:

    .. math:: y = a\,\big(m \odot x + \alpha' (1 - m)\big) + b,\quad m \sim \text{Bernoulli}(q)

    with :math:`(a, b)` from :func:`affine_correction` evaluated at the keep
    probability actually used, so that for inputs with zero mean and unit variance the
    output has zero mean and unit variance. Rate 1 returns zeros; rate 0 is the
    identity.

    With ``broadcast_dims`` one draw is shared along those axes (feature alpha
    dropout: Keras' ``AlphaDropout(noise_shape=...)``, PyTorch's
    ``FeatureAlphaDropout`` with the spatial axes shared, so whole channels are set to
    :math:`\alpha'`). For ``x`` of shape ``[N, H, W, C]`` and ``broadcast_dims=(1, 2)``:

    .. math:: y_{n,h,w,c} = a\,\big(m_{n,c}\, x_{n,h,w,c} + \alpha'(1 - m_{n,c})\big) + b,
        \quad m_{n,c} \sim \text{Bernoulli}(q)

    Each element still sees one Bernoulli(:math:`q`) draw independent of ``x``, so
    :math:`(a, b)` is unchanged and each element keeps zero mean and unit variance;
    only the elements that share a draw become correlated.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: floating array ``[...]``, typically SELU activations.
      rate: drop probability in [0, 1], possibly traced.
      broadcast_dims: axes along which one mask is shared (e.g. the spatial axes
        ``(1, 2)`` of ``[N, H, W, C]`` for feature alpha dropout).
      deterministic: evaluation mode: returns ``x``.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`; the correction uses the keep probability the
        generator realises.

    Returns:
      Array with the shape and dtype of ``x``. The mask is bit-identical with and
      without ``jit``; the affine correction is float arithmetic that XLA may fuse
      differently in different programs, so values can differ by a few ulp between an
      eager call and a jitted one.

    Raises:
      ValueError: a concrete rate outside [0, 1], an unknown impl, a bad axis in
        ``broadcast_dims`` or an axis listed twice.
      TypeError: ``x`` is not floating point, ``key`` is not a PRNG key (None is
        allowed with ``deterministic=True``), ``broadcast_dims`` not a sequence of ints.

    References:
      Klambauer, Unterthiner, Mayr & Hochreiter, "Self-Normalizing Neural Networks",
      NeurIPS 2017.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> x = jnp.ones((2, 4, 4, 3))
      >>> y = dl.alpha_dropout(jax.random.key(0), x, 0.1, broadcast_dims=(1, 2))
      >>> y.shape, y.dtype
      ((2, 4, 4, 3), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    rate_array = _checks.check_rate(rate)
    broadcast_dims = _checks.check_broadcast_dims(broadcast_dims, x.ndim)
    check_impl(impl)
    if deterministic:
        y = x
    else:
        keep = _checks.keep_probability(rate, rate_array)
        y = _alpha_train(_checks.as_key(key), x, keep, impl, broadcast_dims)
    return _checks.nan_if_invalid(y, rate, rate_array)
