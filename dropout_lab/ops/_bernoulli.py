"""Bernoulli dropout: inverted and classic scaling, shared masks, zero-residual backward."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops import _prng

IMPLS = ("exact", "fast", "bernoulli")


def check_impl(impl: str) -> str:
    """Validates the mask generator name."""
    if impl not in IMPLS:
        raise ValueError(
            f"impl={impl!r} is not one of {IMPLS}; the default 'exact' keeps values "
            "x / (1 - rate) exactly, 'bernoulli' reproduces Flax's masks bit for bit."
        )
    return impl


def scale_keep(keep: jax.Array, impl: str) -> jax.Array:
    """The keep probability a kept value is divided by (and classic mode scales by).

    ``keep`` itself, or for the opt-in ``impl="fast"`` ``keep`` rounded to its
    ``2**-16`` grid.
    """
    if impl == "fast":
        return _prng.lane_decisions(keep)[1]
    if impl == "bernoulli":
        return keep.astype(jnp.float32)
    return keep


def keep_mask(
    key: jax.Array, shape: tuple[int, ...], keep: jax.Array, impl: str = "exact"
) -> tuple[jax.Array, jax.Array]:
    """Draws a keep-mask of ``shape`` (keep probability ``keep``) and the probability to scale by.

    * ``impl="exact"`` (default): element ``i`` (row-major) is kept when 32-bit word
      ``i`` of the key's stream is below ``ceil(keep * 2**32)``: keep probability
      within ``2**-32`` of ``keep``; the scale uses ``keep`` itself.
    * ``impl="fast"``: 16-bit lanes, keep probability rounded to a multiple of
      ``2**-16``, returned as the probability to scale by (so ``E[y] = x`` exactly but a
      kept value is ``x / q'`` rather than ``x / (1 - rate)``).
    * ``impl="bernoulli"``: bit-identical to ``jax.random.bernoulli(key, keep, shape)``,
      the masks Flax draws (computed by the unrolled cipher for threefry keys with
      ``jax_threefry_partitionable`` on, the jax default, else by
      ``jax.random.bernoulli`` itself).

    See ``_prng`` for which random bits feed which element.
    """
    if impl == "bernoulli":
        keep32 = keep.astype(jnp.float32)
        # jax's Config sets its options as attributes at import; its class declares none.
        partitionable = jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
        if _prng.is_threefry(key) and partitionable:
            # jax.random.bernoulli(key, p, shape) is uniform(key, shape) < p with
            # uniform = bitcast((bits >> 9) | bits(1.0)) - 1; the same words come from
            # the unrolled cipher, which XLA fuses (jax's own lowering does not).
            return _prng.uniform_from_words(_prng.random_words(key, shape)) < keep32, keep32
        return jax.random.bernoulli(key, keep32, shape), keep32
    if impl == "fast":
        decide, keep_used = _prng.lane_decisions(keep)
        return decide(key, math.prod(shape), 0).reshape(shape), keep_used
    threshold, keep_all = _prng.word_threshold(keep)
    return _prng.words_keep(_prng.mask_words(key, shape), threshold, keep_all), keep


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Half-precision inputs are scaled in float32 and rounded once."""
    return jnp.promote_types(dtype, jnp.float32)


def inverse_keep(keep: jax.Array, impl: str, dtype: jnp.dtype) -> jax.Array:
    r"""The inverted scale :math:`1/q` in ``dtype``, rounded once (1 where :math:`q = 0`).

    Kept values are ``x * (1/q)``: the product is exactly rounded everywhere, while XLA
    computes a division as a multiplication by a reciprocal whose rounding depends on
    the program (constant-folded, vectorised or not). The reciprocal of a concrete
    keep is taken on the host, so eager, jitted, vmapped and sharded calls give the
    same bits, those of ``flax.linen.Dropout`` (whose ``x / q`` XLA compiles as
    ``x * (1/q)``). Rate 1 keeps nothing; its scale is 1 so no inf or NaN reaches the
    forward or (through the transpose) the backward pass.
    """
    q = scale_keep(keep, impl)
    if _checks.is_concrete(q):
        q_host = np.asarray(q).astype(dtype)
        one = np.ones((), dtype)
        return jnp.asarray(one / q_host if q_host > 0 else one, dtype)
    q = q.astype(dtype)
    return jnp.where(q > 0, 1 / jnp.where(q > 0, q, 1), 1).astype(dtype)


def _select_scaled(
    key: jax.Array,
    x: jax.Array,
    keep: jax.Array,
    scale: jax.Array,
    mode: str,
    broadcast_dims: tuple[int, ...],
    impl: str,
    chunked: bool = False,
) -> jax.Array:
    """``where(mask, x * scale, 0)`` (inverted) or ``where(mask, x, 0)`` (classic).

    ``scale`` is :func:`inverse_keep`. With ``chunked`` (used for the primal, not for
    the tangent) a large whole-array ``impl="fast"`` mask is drawn and applied piece by piece
    (``_prng.select_chunked``): the same values, without a full-size buffer of random
    words.
    """
    shape = _checks.mask_shape(x.shape, broadcast_dims)

    def scaled(v: jax.Array) -> jax.Array:
        if mode != "inverted":
            return v
        dtype = compute_dtype(v.dtype)
        return (v.astype(dtype) * scale.astype(dtype)).astype(v.dtype)

    if chunked and impl == "fast" and shape == x.shape and _prng.can_chunk(key, x.size):
        return _prng.select_chunked(key, x, _prng.lane_decisions(keep)[0], scaled)
    if shape == x.shape:
        mask, _ = keep_mask(key, shape, keep, impl)
    else:
        # A shared mask is computed once into its own buffer, not once per element of
        # x it is broadcast to (the fused generators would recompute each decision).
        mask = _prng.materialize(lambda k: keep_mask(k, shape, keep, impl)[0], key)
    mask = jnp.broadcast_to(mask, x.shape)
    return jnp.where(mask, scaled(x), jnp.zeros((), x.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6))
def _dropout_train(key, x, keep, scale, mode, broadcast_dims, impl):
    return _select_scaled(key, x, keep, scale, mode, broadcast_dims, impl, chunked=True)


@_dropout_train.defjvp
def _dropout_train_jvp(mode, broadcast_dims, impl, primals, tangents):
    # The output is linear in x for a fixed mask, so the tangent is the same op
    # applied to x_dot. Wrapping it in `jax.checkpoint` makes reverse mode keep only
    # the key and the keep probability as residuals and regenerate the mask in the
    # backward pass. The mask is a step function of the rate: the rate gets no gradient.
    key, x, keep, scale = primals
    x_dot = tangents[1]
    y = _select_scaled(key, x, keep, scale, mode, broadcast_dims, impl, chunked=True)
    tangent_fn = jax.checkpoint(
        functools.partial(_select_scaled, mode=mode, broadcast_dims=broadcast_dims, impl=impl),
        policy=jax.checkpoint_policies.nothing_saveable,
    )
    return y, tangent_fn(key, x_dot, keep, scale)


def _eval_scale(x: jax.Array, keep: jax.Array, mode: str, impl: str) -> jax.Array:
    if mode == "inverted":
        return x
    keep = scale_keep(keep, impl)
    dtype = compute_dtype(x.dtype)
    return (x.astype(dtype) * keep.astype(dtype)).astype(x.dtype)


def dropout(
    key: ArrayLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    mode: str = "inverted",
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""Bernoulli dropout (Srivastava et al. 2014), inverted or classic.

    Each element (or each slice, see ``broadcast_dims``) is kept with probability
    :math:`q = 1 - \text{rate}` by a mask :math:`m \sim \text{Bernoulli}(q)`:

    .. math::
        \text{inverted:}\quad y = m \odot x / q \ \text{(train)},\qquad y = x \ \text{(eval)}

        \text{classic:}\quad y = m \odot x \ \text{(train)},\qquad y = q\,x \ \text{(eval)}

    so that :math:`\mathbb{E}[y_\text{train}] = y_\text{eval}` in both modes. Dropped
    positions are selected away, not multiplied by zero: a dropped NaN or inf becomes 0.

    Exactness (default ``impl="exact"``): a kept value is ``x * (1 / q)`` with the
    reciprocal rounded once (what XLA computes for ``x / q``, and so what Flax gets;
    within 1e-6 relative of the float64 quotient for float32), in the input's dtype
    (half precision: in float32, rounded once), with :math:`q` the keep probability
    rounded once to the rate's float dtype from the Python value (as
    ``jax.random.bernoulli`` and Flax do). The bits are the same eager, jitted,
    vmapped or sharded. Element :math:`i` (row-major) is kept
    when 32-bit word :math:`i` of the key's Threefry stream is below
    :math:`\lceil q\,2^{32}\rceil`, so the keep probability realised is
    :math:`q' \in [q, q + 2^{-32})` and

    .. math::
        \left|\mathbb{E}[y] - x\right| \le \frac{2^{-32}}{q}\,|x|
        \quad(\text{plus the rounding of } x / q),

    well inside :math:`2^{-23}/(1 - \text{rate})`; even rate :math:`1 - 2^{-18}`
    keeps about 64 of :math:`2^{24}` elements.

    Other generators, opt-in: ``impl="bernoulli"`` draws
    ``jax.random.bernoulli(key, 1 - rate, shape)``, bit for bit the masks of
    ``flax.linen.Dropout`` for the same key (keep probability on a :math:`2^{-23}`
    grid), scaled by :math:`1/q`. ``impl="fast"`` cuts four elements' decisions from
    each cipher call (16-bit lanes): the keep probability is rounded to
    :math:`q' = \mathrm{round}(q\,2^{16})/2^{16}` (within :math:`2^{-17}`; rates
    above :math:`1 - 2^{-17}` keep nothing) and a kept value is :math:`x / q'`, so
    :math:`\mathbb{E}[y] = x` but a kept value differs from :math:`x / q` by up to
    :math:`2^{-17}/q` relative (rate 0.4: 1.66665 for 1.6666666).

    Under ``jax.grad`` the backward pass regenerates the mask from the key, so no
    array of the input's size is kept for it. The mask is a step function of the
    rate: the rate receives a zero gradient (use concrete dropout to learn rates).

    Args:
      key: a PRNG key (``jax.random.key`` or a legacy ``jax.random.PRNGKey``),
        or ``None`` when ``deterministic``.
      x: floating array ``[...]``; its dtype is kept (float16/bfloat16 are scaled in
        float32 and rounded once).
      rate: drop probability in [0, 1]: a Python float or a scalar array that may be
        traced (vmapped, scheduled) without recompiling. A traced rate outside [0, 1]
        makes the output NaN.
      mode: ``"inverted"`` (scale by 1/q in training) or ``"classic"`` (scale by q at
        evaluation).
      broadcast_dims: axes along which one mask is shared (size 1 in the mask), e.g.
        the spatial axes for channel dropout or the time axis for variational RNN
        dropout.
      deterministic: evaluation mode: no mask; ``x`` (inverted) or ``q x`` (classic).
      impl: mask generator: ``"exact"`` (default), ``"bernoulli"`` (Flax's bits) or
        ``"fast"`` (coarser keep probability; see above).

    Returns:
      Array with the shape and dtype of ``x``.

    Raises:
      ValueError: a concrete rate outside [0, 1], an unknown mode or impl, a bad axis.
      TypeError: ``x`` is not floating point, or ``key`` is not a PRNG key.

    References:
      Hinton, Srivastava, Krizhevsky, Sutskever & Salakhutdinov, "Improving neural
      networks by preventing co-adaptation of feature detectors", arXiv 2012.
      Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, "Dropout: A Simple
      Way to Prevent Neural Networks from Overfitting", JMLR 2014.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> y = dl.dropout(jax.random.key(0), jnp.ones((2, 3)), 0.5)
      >>> y.shape, y.dtype
      ((2, 3), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    rate_array = _checks.check_rate(rate)
    _checks.check_mode(mode)
    check_impl(impl)
    broadcast_dims = _checks.check_broadcast_dims(broadcast_dims, x.ndim)
    keep = _checks.keep_probability(rate, rate_array)
    if deterministic:
        y = _eval_scale(x, keep, mode, impl)
    else:
        scale = inverse_keep(keep, impl, compute_dtype(x.dtype))
        y = _dropout_train(_checks.as_key(key), x, keep, scale, mode, broadcast_dims, impl)
    return _checks.nan_if_invalid(y, rate, rate_array)
