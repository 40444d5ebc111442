r"""Attention dropout without the attention matrix: keyed, exact, O(length) memory.

:func:`dot_product_attention` is a drop-in ``attention_fn`` for
``flax.linen.MultiHeadDotProductAttention`` and ``flax.nnx.MultiHeadAttention`` (same
arguments, same shapes ``[batch..., length, heads, head_dim]``) whose dropout rate may
be traced. It never forms the ``[batch..., heads, q_length, kv_length]`` weights: the
logits are visited in ``[block_q, block_k]`` tiles with an online softmax, and the
backward pass regenerates each tile's dropout mask from the key.

Exactness: for the same ``dropout_rng`` the output equals, to float rounding,

.. math::
    O = \mathrm{dropout}\big(\mathrm{softmax}(Q K^\top/\sqrt{d} + B,\ \text{masked}),
    \ \text{rate}\big)\, V,

with the dropout of :func:`dropout_lab.dropout` on the full weights (``broadcast_dims``
the batch and head axes when ``broadcast_dropout``): the masks are bit-identical for
every block size, so :func:`dense_dot_product_attention` (that formula, materialised)
is a test oracle. Masked logits are set to ``finfo(dtype).min`` as in Flax, so a fully
masked row attends uniformly to every key, as there.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropout_lab import _attention_blockwise as _bw
from dropout_lab import _checks
from dropout_lab.ops import _bernoulli, _prng

__all__ = ["dense_dot_product_attention", "dot_product_attention"]

BLOCK_Q = 128
"""Default query rows per tile."""
BLOCK_K = 256
"""Default key columns per tile."""


def _promote(query, key, value, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``query``, ``key``, ``value`` cast to ``dtype`` (default: their common float type)."""
    arrays = [_checks.check_float_array(x, n) for x, n in ((query, "query"), (key, "key"))]
    arrays.append(_checks.check_float_array(value, "value"))
    dtype = jnp.result_type(*arrays) if dtype is None else jnp.dtype(dtype)
    q, k, v = (x.astype(dtype) for x in arrays)
    return q, k, v


def _check_shapes(query: jax.Array, key: jax.Array, value: jax.Array) -> None:
    """Raises ``ValueError`` unless the shapes follow Flax's ``attention_fn`` contract."""
    if not query.ndim == key.ndim == value.ndim >= 3:
        raise ValueError(
            "query, key and value must be [batch..., length, heads, head_dim] of the same "
            f"rank, got shapes {query.shape}, {key.shape}, {value.shape}."
        )
    if not query.shape[:-3] == key.shape[:-3] == value.shape[:-3]:
        raise ValueError(
            f"q, k, v batch dims must match, got {query.shape}, {key.shape}, {value.shape}."
        )
    if key.shape[-3] != value.shape[-3] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"k, v lengths and heads must match, got {key.shape}, {value.shape}.")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"q, k depths must match, got {query.shape[-1]} and {key.shape[-1]}.")
    if query.shape[-2] % key.shape[-2]:
        raise ValueError(
            f"query heads ({query.shape[-2]}) must be a multiple of key heads "
            f"({key.shape[-2]}) for grouped-query attention."
        )


def _weights_shape(query: jax.Array, key: jax.Array) -> tuple[int, ...]:
    """``[batch..., heads, q_length, kv_length]``."""
    return (*query.shape[:-3], query.shape[-2], query.shape[-3], key.shape[-3])


def _broadcast_dims(weights_ndim: int, broadcast_dropout: bool) -> tuple[int, ...]:
    """Axes sharing one mask: the batch and head axes when ``broadcast_dropout`` (Flax)."""
    return tuple(range(weights_ndim - 2)) if broadcast_dropout else ()


def _applies(dropout_rate: ArrayLike, deterministic: bool) -> bool:
    """Static: dropout applies unless deterministic or the rate is a concrete 0."""
    if deterministic:
        return False
    return not (_checks.is_concrete(dropout_rate) and float(np.asarray(dropout_rate)) == 0.0)


def _dropout_params(
    dropout_rng, dropout_rate, deterministic, dtype
) -> tuple[_bw.Dropout | None, Any]:
    """The kernel's dropout parameters (``None`` when no dropout) and the rate array.

    The scale ``1/q`` is that of ``dl.dropout`` on weights of ``dtype``.
    """
    rate_array = _checks.check_rate(dropout_rate, "dropout_rate")
    if not _applies(dropout_rate, deterministic):
        return None, rate_array
    _checks.check_key(dropout_rng, deterministic=False, name="dropout_rng")
    rng = _checks.as_key(dropout_rng, "dropout_rng")
    if not _prng.is_threefry(rng):
        raise NotImplementedError(
            "attention dropout regenerates mask tiles from a threefry key; got a key of "
            f"implementation {jax.random.key_impl(rng)}; use "
            "jax.random.key(seed, impl='threefry2x32')."
        )
    keep = _checks.keep_probability(dropout_rate, rate_array)
    threshold, keep_all = _prng.word_threshold(keep)
    inv_keep = _bernoulli.inverse_keep(keep, "exact", _bernoulli.compute_dtype(dtype))
    return _bw.Dropout(jax.random.key_data(rng), threshold, keep_all, inv_keep), rate_array


def _as_4d(x, batch: tuple[int, ...], heads: int, q_len: int, k_len: int, name: str):
    """``x`` broadcastable to ``[batch..., heads, q, k]`` as ``[B|1, H|1, Q|1, K|1]``."""
    if x is None:
        return None
    x = jnp.asarray(x)
    target = (*batch, heads, q_len, k_len)
    try:
        np.broadcast_shapes(x.shape, target)
    except ValueError as err:
        raise ValueError(
            f"{name} of shape {x.shape} does not broadcast to [batch..., heads, q_length, "
            f"kv_length] = {target}."
        ) from err
    if x.ndim > len(target):
        x = x.reshape(x.shape[x.ndim - len(target) :])
    x = x.reshape((1,) * (len(target) - x.ndim) + x.shape)
    lead = x.shape[: len(batch)]
    if all(n == 1 for n in lead):
        return x.reshape(1, *x.shape[len(batch) :])
    x = jnp.broadcast_to(x, (*batch, *x.shape[len(batch) :]))
    return x.reshape(math.prod(batch), *x.shape[len(batch) :])


def _pad(x, axis: int, size: int, value: Any = 0):
    """``x`` padded with ``value`` along ``axis`` to ``size`` (a shared axis stays 1)."""
    if x is None or x.shape[axis] in (1, size):
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad, constant_values=value)


def _to_kernel_layout(query, key, value) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``[batch..., L, H, D]`` to ``[B, H, L, D]``; key and value heads repeated for GQA."""
    reps = query.shape[-2] // key.shape[-2]
    key, value = (jnp.repeat(x, reps, axis=-2) if reps > 1 else x for x in (key, value))
    flat = lambda x: x.reshape(-1, *x.shape[-3:]).transpose(0, 2, 1, 3)  # noqa: E731
    return flat(query), flat(key), flat(value)


def _sow(module: Any, weights: jax.Array) -> None:
    """Sows the attention weights as Flax does (linen ``intermediates`` or NNX ``Intermediate``)."""
    from flax import nnx  # only reached with a Flax module

    if isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
    else:
        module.sow("intermediates", "attention_weights", weights)


def _masked_logits(
    query, key, bias=None, mask=None, is_causal=False, precision=None, keep_keys=None
):
    """Flax's masked logits ``[batch..., heads, q, kv]`` (``finfo(dtype).min`` where masked).

    ``query`` and ``key`` are ``[batch..., length, heads, head_dim]`` of one float dtype.
    DropKey: where ``keep_keys`` is False (and not masked) the logit is ``finfo.min / 2``.
    """
    depth = query.shape[-1]
    reps = query.shape[-2] // key.shape[-2]
    key = jnp.repeat(key, reps, axis=-2) if reps > 1 else key
    query = query / jnp.sqrt(depth).astype(query.dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)
    if bias is not None:
        logits = logits + bias
    big_neg = jnp.finfo(logits.dtype).min
    if keep_keys is not None:
        logits = jnp.where(keep_keys, logits, big_neg / 2)
    allowed = None if mask is None else jnp.asarray(mask, bool)
    if is_causal:
        causal = jnp.tril(jnp.ones(logits.shape[-2:], bool))
        allowed = causal if allowed is None else allowed & causal
    if allowed is not None:
        logits = jnp.where(allowed, logits, big_neg)
    return logits


def dense_dot_product_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    bias: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: ArrayLike | None = None,
    dropout_rate: ArrayLike = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    is_causal: bool = False,
    *,
    dropkey: bool = False,
) -> jax.Array:
    r"""The dense formula :func:`dot_product_attention` computes blockwise (a test oracle).

    .. math::
        W = \mathrm{softmax}(\mathrm{where}(m, QK^\top/\sqrt d + B, \min)),\qquad
        O = \mathrm{dropout}(W)\,V,

    with ``dl.dropout(dropout_rng, W, dropout_rate, broadcast_dims=...)`` on the full
    ``[batch..., heads, q, kv]`` weights. With ``dropkey`` the keep mask of the same
    call drops logits instead: a dropped logit becomes ``finfo(dtype).min / 2`` before
    the attention mask sets masked ones to ``finfo(dtype).min`` (nothing is rescaled).
    Memory :math:`O(\text{batch}\cdot\text{heads}\cdot q\cdot kv)`.

    Args: as :func:`dot_product_attention` (without the block sizes).

    Returns:
      ``[batch..., q_length, heads, v_head_dim]``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dropout_lab import attention
      >>> x = jnp.ones((2, 5, 4, 8))
      >>> y = attention.dense_dot_product_attention(
      ...     x, x, x, dropout_rng=jax.random.key(0), dropout_rate=0.1)
      >>> y.shape, y.dtype
      ((2, 5, 4, 8), dtype('float32'))
    """
    query, key, value = _promote(query, key, value, dtype)
    _check_shapes(query, key, value)
    rate_array = _checks.check_rate(dropout_rate, "dropout_rate")
    applies = _applies(dropout_rate, deterministic)
    shape = _weights_shape(query, key)
    dims = _broadcast_dims(len(shape), broadcast_dropout)
    keep_keys = None
    if applies and dropkey:
        kept = _bernoulli.dropout(dropout_rng, jnp.ones(shape), dropout_rate, broadcast_dims=dims)
        keep_keys = kept != 0
    logits = _masked_logits(query, key, bias, mask, is_causal, precision, keep_keys)
    weights = jax.nn.softmax(logits.astype(jnp.float32)).astype(query.dtype)
    if module is not None:
        _sow(module, weights)
    if applies and not dropkey:
        weights = _bernoulli.dropout(dropout_rng, weights, dropout_rate, broadcast_dims=dims)
    reps = query.shape[-2] // value.shape[-2]
    value = jnp.repeat(value, reps, axis=-2) if reps > 1 else value
    out = jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)
    return _checks.nan_if_invalid(out, dropout_rate, rate_array)


def dot_product_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    bias: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: ArrayLike | None = None,
    dropout_rate: ArrayLike = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    is_causal: bool = False,
    *,
    dropkey: bool = False,
    block_q: int = BLOCK_Q,
    block_k: int = BLOCK_K,
) -> jax.Array:
    r"""Dot-product attention with exact, keyed dropout in O(length) memory.

    Flax's ``attention_fn`` contract, with the rate free to be traced:

    .. math::
        O = \mathrm{dropout}\Big(\mathrm{softmax}\big(\mathrm{where}(m,\
        QK^\top/\sqrt{d} + B,\ \min)\big)\Big)\,V

    computed over ``[block_q, block_k]`` tiles with an online softmax (FlashAttention).
    Element ``(b, h, i, j)`` of the dropout mask is the element ``dl.dropout`` draws for
    the full ``[batch..., heads, q, kv]`` weights with the same key (shared over batch
    and heads when ``broadcast_dropout``), for every block size; a kept weight is
    scaled by ``1/(1 - rate)``. Under ``jax.grad`` the backward pass recomputes the
    probabilities from the saved log-sum-exp and regenerates each tile's mask, so
    nothing of size ``batch·heads·q·kv`` is kept; indices beyond :math:`2^{32}`
    elements do not wrap. Forward-mode differentiation (``jax.jvp``) is not supported.

    DropKey (``dropkey=True``) drops logits before the softmax instead, with the same
    keep mask, and rescales nothing: a dropped logit becomes ``finfo(dtype).min / 2``,
    below any real logit and above masked ones (``finfo(dtype).min``), so a row whose
    allowed keys are all dropped attends uniformly to them, never to masked (future or
    padding) keys. A rate schedule across layers is a traced rate per layer.

    Args:
      query: ``[batch..., q_length, heads, head_dim]``.
      key: ``[batch..., kv_length, kv_heads, head_dim]``; ``heads`` a multiple of
        ``kv_heads`` (grouped-query attention).
      value: ``[batch..., kv_length, kv_heads, v_head_dim]``.
      bias: added to the logits; broadcastable to ``[batch..., heads, q_length,
        kv_length]`` (differentiable).
      mask: boolean, broadcastable like ``bias``; ``False`` masks an element out.
      broadcast_dropout: one mask shared by the batch and head axes (Flax's default).
      dropout_rng: PRNG key of the dropout mask (a threefry key); unused when no
        dropout applies.
      dropout_rate: drop probability in [0, 1]; a Python float or a scalar array that
        may be traced (a traced rate outside [0, 1] makes the output NaN).
      deterministic: no dropout (evaluation).
      dtype: dtype of the computation (default: that of the inputs); softmax
        statistics are kept in float32.
      precision: ``lax.Precision`` of the matmuls.
      module: a Flax module to sow the (pre-dropout) weights into, as Flax's
        ``sow_weights=True``; this materialises them.
      is_causal: mask key ``j > i`` for query ``i`` (tiles above the diagonal are
        skipped when no ``mask`` is given).
      dropkey: drop keys before the softmax (Li et al. 2023) instead of weights after.
      block_q: query rows per tile (capped at ``q_length``); does not change the masks.
      block_k: key columns per tile (capped at ``kv_length``); does not change the masks.

    Returns:
      ``[batch..., q_length, heads, v_head_dim]`` in ``dtype``.

    Raises:
      ValueError: shapes outside the contract, a concrete rate outside [0, 1], more
        than :math:`2^{32}` rows of the dropout mask.
      TypeError: a missing or invalid ``dropout_rng`` when dropout applies.
      NotImplementedError: a non-threefry key.

    References:
      Dao, Fu, Ermon, Rudra & Ré, "FlashAttention: Fast and Memory-Efficient Exact
      Attention with IO-Awareness", NeurIPS 2022.
      Li, Hu, Nie, Han, Jiang, Guo & Liu, "DropKey for Vision Transformer", CVPR 2023.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dropout_lab import attention
      >>> x = jnp.ones((2, 5, 4, 8))
      >>> y = attention.dot_product_attention(
      ...     x, x, x, dropout_rng=jax.random.key(0), dropout_rate=0.1)
      >>> y.shape, y.dtype
      ((2, 5, 4, 8), dtype('float32'))
    """
    query, key, value = _promote(query, key, value, dtype)
    _check_shapes(query, key, value)
    drop, rate_array = _dropout_params(dropout_rng, dropout_rate, deterministic, query.dtype)
    batch, q_len, heads = query.shape[:-3], query.shape[-3], query.shape[-2]
    k_len = key.shape[-3]
    if module is not None:
        _sow(module, jax.nn.softmax(_masked_logits(query, key, bias, mask, is_causal, precision)))
    cfg = _config(query, key, drop, broadcast_dropout, mask is None, is_causal, dropkey)
    cfg = _with_blocks(cfg, block_q, block_k, precision)
    q, k, v = _to_kernel_layout(query / jnp.sqrt(query.shape[-1]).astype(query.dtype), key, value)
    q_pad, k_pad = _round_up(q_len, cfg.block_q), _round_up(k_len, cfg.block_k)
    bias4 = _as_4d(bias, batch, heads, q_len, k_len, "bias")
    mask4 = _as_4d(
        None if mask is None else jnp.asarray(mask, bool), batch, heads, q_len, k_len, "mask"
    )
    bias4, mask4 = (_pad(_pad(x, 2, q_pad), 3, k_pad) for x in (bias4, mask4))
    q = _pad(q, 2, q_pad)
    k, v = _pad(k, 2, k_pad), _pad(v, 2, k_pad)
    out = _bw.attention(cfg, q, k, v, bias4, mask4, drop)[:, :, :q_len]
    out = out.transpose(0, 2, 1, 3).reshape(*batch, q_len, heads, value.shape[-1])
    return _checks.nan_if_invalid(out, dropout_rate, rate_array)


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _config(query, key, drop, broadcast_dropout, no_mask, is_causal, dropkey) -> _bw.Config:
    """The static kernel configuration (block sizes filled in by :func:`_with_blocks`)."""
    batch, q_len, heads = math.prod(query.shape[:-3]), query.shape[-3], query.shape[-2]
    shared = broadcast_dropout or drop is None
    mask_batch, mask_heads = (1, 1) if shared else (batch, heads)
    if mask_batch * mask_heads * q_len > 2**32:
        raise ValueError(
            f"the dropout mask has {mask_batch * mask_heads * q_len} rows; at most 2**32 are "
            "supported (its elements may exceed 2**32)."
        )
    return _bw.Config(
        q_len=q_len,
        k_len=key.shape[-3],
        block_q=q_len,
        block_k=key.shape[-3],
        causal=is_causal,
        skip_causal=is_causal and no_mask,
        drop=None if drop is None else ("keys" if dropkey else "weights"),
        mask_batch=mask_batch,
        mask_heads=mask_heads,
        big_neg=float(jnp.finfo(query.dtype).min),
    )


def _with_blocks(cfg: _bw.Config, block_q: int, block_k: int, precision: Any) -> _bw.Config:
    """``cfg`` with the block sizes (validated, capped at the lengths) and the precision."""
    for name, value in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return dataclasses.replace(
        cfg,
        block_q=min(block_q, cfg.q_len),
        block_k=min(block_k, cfg.k_len),
        precision=precision,
    )
