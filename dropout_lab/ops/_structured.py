"""Structured dropout for convolutional and residual networks.

Channel (spatial) dropout, DropBlock and drop path (stochastic depth), plus the
linear depth schedule of stochastic depth.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops._bernoulli import compute_dtype, dropout, keep_mask

DROP_PATH_MODES = ("row", "batch")
SEED_RATES = ("exact", "paper")
_BISECTION_STEPS = 40


def _axis(axis: int, ndim: int, name: str) -> int:
    """Normalizes a (possibly negative) axis of an ``ndim``-array (see ``_checks.check_axis``)."""
    return _checks.check_axis(axis, ndim, name)


def _feature_axes(ndim: int, channel_axis: int, batch_axis: int | None) -> tuple[int, ...]:
    """The batch and channel axes, normalized and checked to differ."""
    axes = [_axis(channel_axis, ndim, "channel_axis")]
    if batch_axis is not None:
        batch = _axis(batch_axis, ndim, "batch_axis")
        if batch == axes[0]:
            raise ValueError(f"batch_axis and channel_axis are the same axis ({batch}).")
        axes.append(batch)
    return tuple(axes)


def channel_dropout(
    key: ArrayLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    channel_axis: int = -1,
    batch_axis: int | None = 0,
    mode: str = "inverted",
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""Channel (spatial) dropout: drops whole feature maps.

    One Bernoulli draw per (example, channel) is shared by every spatial position,
    as in PyTorch's ``Dropout1d/2d/3d`` and Keras' ``SpatialDropout``:

    .. math:: y_{n,\ldots,c} = m_{n,c}\, x_{n,\ldots,c} / q,\qquad m_{n,c} \sim
        \text{Bernoulli}(q),\ q = 1 - \text{rate}

    It is :func:`dropout_lab.dropout` with ``broadcast_dims`` set to every axis other
    than the batch and channel axes, so its semantics (modes, traced rate, rate 0 and
    1, dtypes, dropped NaN becomes 0) are those of ``dropout``.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: floating array, e.g. ``[batch, height, width, channels]`` (channels last) or
        ``[batch, channels, length]`` with ``channel_axis=1``.
      rate: probability of dropping a channel, in [0, 1], possibly traced.
      channel_axis: the channel axis (default the last one, NHWC).
      batch_axis: the batch axis, or ``None`` for an unbatched input (one mask for
        all channels).
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      Array with the shape and dtype of ``x``.

    Raises:
      ValueError: a concrete rate outside [0, 1], or a bad axis.
      TypeError: ``x`` is not floating point.

    References:
      Tompson, Goroshin, Jain, LeCun & Bregler, "Efficient Object Localization Using
      Convolutional Networks", CVPR 2015.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> y = dl.channel_dropout(jax.random.key(0), jnp.ones((2, 4, 4, 3)), 0.5)
      >>> y.shape, y.dtype
      ((2, 4, 4, 3), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    kept_axes = _feature_axes(x.ndim, channel_axis, batch_axis)
    broadcast_dims = tuple(d for d in range(x.ndim) if d not in kept_axes)
    return dropout(
        key,
        x,
        rate,
        mode=mode,
        broadcast_dims=broadcast_dims,
        deterministic=deterministic,
        impl=impl,
    )


def _block_shape(block_size: int | Sequence[int], num_spatial: int) -> tuple[int, ...]:
    blocks = (block_size,) * num_spatial if isinstance(block_size, int) else tuple(block_size)
    if len(blocks) != num_spatial or any(int(b) < 1 for b in blocks):
        raise ValueError(
            f"block_size={block_size!r} must be a positive int or one positive int per "
            f"spatial axis ({num_spatial})."
        )
    return tuple(int(b) for b in blocks)


def _coverage_histogram(
    sizes: tuple[int, ...], blocks: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """How many valid seeds cover each position: distinct counts and their frequencies.

    Seeds lie where a whole block fits, ``s in [0, size - block]``; position ``p`` is
    covered by the seeds ``max(0, p - block + 1) <= s <= min(p, size - block)``.
    """
    coverage = np.ones((), np.int64)
    for size, block in zip(sizes, blocks, strict=True):
        p = np.arange(size)
        per_axis = np.minimum(p, size - block) - np.maximum(0, p - block + 1) + 1
        coverage = np.multiply.outer(coverage, per_axis)
    values, counts = np.unique(coverage, return_counts=True)
    return values, counts / coverage.size


def seed_probability(
    rate: jax.Array,
    sizes: tuple[int, ...],
    blocks: tuple[int, ...],
    seed_rate: str = "exact",
) -> jax.Array:
    r"""The probability :math:`\gamma` of a DropBlock seed for a target drop rate.

    ``"paper"`` is Ghiasi et al.'s first-order formula (it ignores overlapping blocks,
    so the dropped fraction is below the rate):

    .. math:: \gamma = \frac{\text{rate}}{\prod_i b_i}\prod_i \frac{S_i}{S_i - b_i + 1}

    ``"exact"`` solves, by bisection, for the :math:`\gamma` at which the expected
    dropped fraction equals the rate exactly, counting overlaps and edges: a position
    covered by :math:`n` possible seeds is dropped with probability
    :math:`1 - (1 - \gamma)^n`, so

    .. math:: \frac{1}{\prod_i S_i}\sum_{\text{positions}} \left(1 - (1-\gamma)^{n}\right)
        = \text{rate}.

    Args:
      rate: scalar drop rate in [0, 1], possibly traced (no gradient flows to it).
      sizes: spatial sizes :math:`S_i`.
      blocks: block sizes :math:`b_i`, each at most the matching size.
      seed_rate: ``"exact"`` or ``"paper"``.

    Returns:
      Scalar :math:`\gamma` in [0, 1].
    """
    rate = lax.stop_gradient(jnp.clip(rate, 0.0, 1.0))
    if seed_rate == "paper":
        area = math.prod(blocks)
        valid = math.prod(s - b + 1 for s, b in zip(sizes, blocks, strict=True))
        return jnp.clip(rate * math.prod(sizes) / (area * valid), 0.0, 1.0)
    if seed_rate != "exact":
        raise ValueError(f"seed_rate={seed_rate!r} is not one of {SEED_RATES}.")
    values, weights = (jnp.asarray(a, rate.dtype) for a in _coverage_histogram(sizes, blocks))

    def dropped_fraction(gamma):
        return jnp.sum(weights * -jnp.expm1(values * jnp.log1p(-gamma)))

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = dropped_fraction(mid) < rate
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = lax.fori_loop(0, _BISECTION_STEPS, step, (jnp.zeros_like(rate), jnp.ones_like(rate)))
    # The endpoints are exact: rate 0 draws no seed, rate 1 seeds every valid position.
    return jnp.where(rate <= 0, 0.0, jnp.where(rate >= 1, 1.0, hi))


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _dropblock_train(
    key: jax.Array,
    x: jax.Array,
    rate: jax.Array,
    spatial: tuple[int, ...],
    blocks: tuple[int, ...],
    shared: tuple[int, ...],
    seed_rate: str,
) -> jax.Array:
    """DropBlock's training path (jitted so eager calls compile once per shape)."""
    sizes = tuple(x.shape[d] for d in spatial)
    gamma = seed_probability(rate, sizes, blocks, seed_rate)
    seed_shape = [1 if d in shared else n for d, n in enumerate(x.shape)]
    window, padding = [1] * x.ndim, [(0, 0)] * x.ndim
    for d, b in zip(spatial, blocks, strict=True):
        seed_shape[d] = x.shape[d] - b + 1
        window[d], padding[d] = b, (b - 1, b - 1)
    # A block starts where the draw is "kept" with probability gamma (the exact
    # generator: gamma is small and must not be quantised; its grid is 2**-32).
    seeds, _ = keep_mask(key, tuple(seed_shape), gamma, impl="exact")
    # Seed s drops s .. s + b - 1: a max over a window of b, padded by b - 1 both sides.
    dropped = lax.reduce_window(
        seeds.astype(jnp.float32), 0.0, lax.max, window, (1,) * x.ndim, padding
    )
    kept = dropped == 0
    num_kept = jnp.sum(kept, dtype=jnp.float32)
    scale = kept.size / jnp.maximum(num_kept, 1.0)
    dtype = compute_dtype(x.dtype)
    scaled = (x.astype(dtype) * scale.astype(dtype)).astype(x.dtype)
    return jnp.where(jnp.broadcast_to(kept, x.shape), scaled, jnp.zeros((), x.dtype))


def dropblock(
    key: ArrayLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    block_size: int | Sequence[int],
    channel_axis: int = -1,
    batch_axis: int | None = 0,
    broadcast_dims: Sequence[int] = (),
    seed_rate: str = "exact",
    deterministic: bool = False,
) -> jax.Array:
    r"""DropBlock (Ghiasi et al. 2018): drops contiguous square regions.

    Block seeds are drawn with probability :math:`\gamma` at the positions where a whole
    block fits (so every dropped region is made of complete ``block_size`` squares,
    cubes or segments and the edges need no special case), each seed drops the block
    whose first corner it is, and the kept units are renormalized by the kept fraction,
    as in the paper's Algorithm 1:

    .. math:: y = x \odot M \cdot \frac{\operatorname{count}(M)}{\operatorname{count\_ones}(M)},
        \qquad M = 1 - \operatorname{maxpool}_{b}(\text{seeds}),\quad
        \text{seeds} \sim \text{Bernoulli}(\gamma)

    With ``seed_rate="exact"`` (default) :math:`\gamma` is solved so that the expected
    dropped fraction equals ``rate`` exactly, overlaps and edges included; ``"paper"``
    uses the paper's closed form (see :func:`seed_probability`). The count in the
    renormalization is over the whole array, as in torchvision's ``drop_block2d``.
    Every axis other than the batch and channel axes is spatial: 1, 2 or 3 of them for
    DropBlock1d/2d/3d. Rate 0 is the identity; rate 1 returns zeros.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: floating array ``[batch, *spatial, channels]`` (channels last by default).
      rate: expected fraction of dropped units, in [0, 1], possibly traced.
      block_size: side of the dropped blocks, an int or one per spatial axis; each at
        most the matching spatial size.
      channel_axis: the channel axis (default last, NHWC).
      batch_axis: the batch axis, or ``None`` for an unbatched input.
      broadcast_dims: batch or channel axes that share one block pattern (e.g. the
        channel axis, as some implementations do).
      seed_rate: ``"exact"`` or ``"paper"``.
      deterministic: evaluation mode: returns ``x``.

    Returns:
      Array with the shape and dtype of ``x``.

    Raises:
      ValueError: a concrete rate outside [0, 1], a bad axis, a block larger than the
        input or a spatial axis in ``broadcast_dims``.
      TypeError: ``x`` is not floating point.

    References:
      Ghiasi, Lin & Le, "DropBlock: A regularization method for convolutional
      networks", NeurIPS 2018.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> y = dl.dropblock(jax.random.key(0), jnp.ones((2, 8, 8, 3)), 0.1, block_size=3)
      >>> y.shape, y.dtype
      ((2, 8, 8, 3), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    rate_array = _checks.check_rate(rate)
    feature_axes = _feature_axes(x.ndim, channel_axis, batch_axis)
    spatial = tuple(d for d in range(x.ndim) if d not in feature_axes)
    if not spatial:
        raise ValueError(f"x of shape {x.shape} has no spatial axis for DropBlock.")
    blocks = _block_shape(block_size, len(spatial))
    sizes = tuple(x.shape[d] for d in spatial)
    if any(b > s for b, s in zip(blocks, sizes, strict=True)):
        raise ValueError(f"block_size {blocks} is larger than the spatial shape {sizes}.")
    shared = set(_checks.check_broadcast_dims(broadcast_dims, x.ndim))
    if shared & set(spatial):
        raise ValueError(f"broadcast_dims {tuple(broadcast_dims)} contains a spatial axis.")
    if seed_rate not in SEED_RATES:
        raise ValueError(f"seed_rate={seed_rate!r} is not one of {SEED_RATES}.")
    if deterministic:
        return _checks.nan_if_invalid(x, rate, rate_array)

    y = _dropblock_train(
        _checks.as_key(key), x, rate_array, spatial, blocks, tuple(sorted(shared)), seed_rate
    )
    return _checks.nan_if_invalid(y, rate, rate_array)


def drop_path(
    key: ArrayLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    mode: str = "row",
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""Drop path / stochastic depth (Huang et al. 2016) for a residual branch.

    Apply it to the residual branch, ``x + drop_path(key, f(x), rate)``. In ``"row"``
    mode each example (index of axis 0) is kept or dropped whole; in ``"batch"`` mode
    one draw decides for the whole batch, as in ``torchvision.ops.stochastic_depth``.
    Kept branches are scaled by :math:`1/(1 - \text{rate})`:

    .. math:: y_n = m_n\, x_n / q,\qquad m_n \sim \text{Bernoulli}(q)

    It is :func:`dropout_lab.dropout` with every axis but the batch axis (``"row"``) or
    every axis (``"batch"``) in ``broadcast_dims``, with dropout's semantics.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: floating array ``[batch, ...]``, the output of a residual branch.
      rate: probability of dropping the branch, in [0, 1], possibly traced.
      mode: ``"row"`` (one draw per example) or ``"batch"`` (one draw in all).
      deterministic: evaluation mode: returns ``x``.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      Array with the shape and dtype of ``x``.

    Raises:
      ValueError: a concrete rate outside [0, 1] or an unknown mode.
      TypeError: ``x`` is not floating point.

    References:
      Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with Stochastic Depth",
      ECCV 2016.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> y = dl.drop_path(jax.random.key(0), jnp.ones((4, 3)), 0.2)
      >>> y.shape, y.dtype
      ((4, 3), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    if mode == "row":
        if x.ndim == 0:
            raise ValueError('mode="row" needs a batch axis; x is a scalar.')
        broadcast_dims = tuple(range(1, x.ndim))
    elif mode == "batch":
        broadcast_dims = tuple(range(x.ndim))
    else:
        raise ValueError(f"mode={mode!r} is not one of {DROP_PATH_MODES}.")
    return dropout(
        key, x, rate, broadcast_dims=broadcast_dims, deterministic=deterministic, impl=impl
    )


def drop_path_rates(rate: ArrayLike, num_layers: int, *, include_zero: bool = False) -> jax.Array:
    r"""The linear depth schedule of stochastic depth: one drop rate per block.

    Huang et al. drop block :math:`l = 1, \ldots, L` with rate
    :math:`\text{rate}_l = \frac{l}{L}\,\text{rate}`, so the last block has ``rate``.
    With ``include_zero=True`` the rates are ``linspace(0, rate, L)`` (timm's
    convention: the first block is never dropped).

    Args:
      rate: drop rate of the last block, in [0, 1], possibly traced.
      num_layers: number of residual blocks :math:`L \ge 1`.
      include_zero: start at 0 instead of ``rate / L``.

    Returns:
      ``[num_layers]`` float array of rates.

    Raises:
      ValueError: a concrete rate outside [0, 1] or ``num_layers < 1``.

    References:
      Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with Stochastic Depth",
      ECCV 2016.

    Examples:
      >>> import dropout_lab as dl
      >>> dl.drop_path_rates(0.5, 4).tolist()
      [0.125, 0.25, 0.375, 0.5]
    """
    rate_array = _checks.check_rate(rate)
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers} must be at least 1.")
    if include_zero:
        fractions = jnp.linspace(0.0, 1.0, num_layers) if num_layers > 1 else jnp.zeros(1)
    else:
        fractions = jnp.arange(1, num_layers + 1) / num_layers
    rates = fractions.astype(rate_array.dtype) * rate_array
    return _checks.nan_if_invalid(rates, rate, rate_array)
