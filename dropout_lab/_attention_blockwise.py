r"""Blockwise attention with keyed dropout (private): the kernel of ``dropout_lab.attention``.

Layout: ``q [B, H, Qp, D]``, ``k [B, H, Kp, D]``, ``v [B, H, Kp, Dv]`` with the lengths
padded to multiples of the block sizes; ``bias`` / ``mask`` ``[Bb, Hb, Qb, Kb]`` with
each axis either 1 (shared) or full (padded like q / k). The forward pass visits the
``[block_q, block_k]`` tiles of the logits with an online softmax (running maximum
``m``, normaliser ``l``, accumulator), as FlashAttention; the backward pass
(``jax.custom_vjp``) recomputes each tile's probabilities from the saved row statistics
and regenerates its dropout mask from the key. Saved for the backward pass: q, k, v,
bias, mask, the output, two statistics per row (maximum and log-normaliser) and the
key with the keep threshold.

The dropout mask of element ``(b, h, i, j)`` of the ``[Bm, Hm, Q, K]`` mask (``Bm, Hm``
are 1 when one mask is shared over batch and heads) is word ``((b Hm + h) Q + i) K + j``
of the key's stream (``_prng.words_at``), the element :func:`dropout_lab.dropout`
draws for the same array: so every tile, of any size, sees the dense mask's bits.

Backward of a tile, with :math:`P = \exp(S - m - \log l)`, the dropped weights
:math:`Z = M \odot P / q` and :math:`\delta_i = \sum_d dO_{id} O_{id}`:

.. math::
    dV \mathrel{+}= Z^\top dO,\quad dP = M \odot (dO\,V^\top) / q,\quad
    dS = P \odot (dP - \delta),\quad dQ \mathrel{+}= dS\,K,\quad dK \mathrel{+}= dS^\top Q.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from dropout_lab.ops import _prng


def _acc_dtype(x: jax.Array) -> Any:
    """Softmax statistics and accumulators: float32, or float64 for float64 inputs."""
    return jnp.promote_types(x.dtype, jnp.float32)


class Dropout(NamedTuple):
    """Traced dropout parameters: key words, keep threshold and flag, scale ``1/q``."""

    key_words: jax.Array
    threshold: jax.Array
    keep_all: jax.Array
    inv_keep: jax.Array


@dataclasses.dataclass(frozen=True)
class Config:
    """Static configuration of one attention call.

    Attributes:
      q_len: query length before padding.
      k_len: key length before padding.
      block_q: rows per tile.
      block_k: columns per tile.
      causal: mask ``j > i``.
      skip_causal: skip the tiles above the diagonal (exact when no other mask).
      drop: ``None`` (no dropout), ``"weights"`` (after the softmax) or ``"keys"``
        (DropKey, before it).
      mask_batch: batch size of the dropout mask (1 when shared).
      mask_heads: heads of the dropout mask (1 when shared).
      big_neg: the logit of a masked element (Flax's ``finfo(dtype).min``).
      precision: ``lax.Precision`` of the matmuls.
    """

    q_len: int
    k_len: int
    block_q: int
    block_k: int
    causal: bool
    skip_causal: bool
    drop: str | None
    mask_batch: int
    mask_heads: int
    big_neg: float
    precision: Any = None


def tile_words(cfg: Config, key_words: jax.Array, i: ArrayLike, j: ArrayLike) -> jax.Array:
    """Random words ``[mask_batch, mask_heads, block_q, block_k]`` of tile ``(i, j)``.

    Element ``(b, h, r, c)`` is word ``((b Hm + h) Q + i bq + r) K + j bk + c`` of the
    key's stream, computed in 64 bits when the mask has more than ``2**32`` elements.
    """
    shape = (cfg.mask_batch, cfg.mask_heads, cfg.block_q, cfg.block_k)
    iota = functools.partial(lax.broadcasted_iota, jnp.uint32, shape)
    first_row = jnp.asarray(i, jnp.uint32) * jnp.uint32(cfg.block_q)
    first_col = jnp.asarray(j, jnp.uint32) * jnp.uint32(cfg.block_k)
    rows = (iota(0) * jnp.uint32(cfg.mask_heads) + iota(1)) * jnp.uint32(cfg.q_len)
    rows = rows + first_row + iota(2)
    cols = first_col + iota(3)
    if cfg.mask_batch * cfg.mask_heads * cfg.q_len * cfg.k_len <= 2**32:
        hi, lo = None, rows * jnp.uint32(cfg.k_len) + cols
    else:
        hi, lo = _prng.wide_add(_prng.wide_mul(rows, cfg.k_len), (jnp.zeros_like(cols), cols))
    return _prng.words_at(key_words, hi, lo)


def tile_keep(cfg: Config, drop: Dropout, i: ArrayLike, j: ArrayLike) -> jax.Array:
    """Keep decisions ``[mask_batch, mask_heads, block_q, block_k]`` of tile ``(i, j)``."""
    words = tile_words(cfg, drop.key_words, i, j)
    return _prng.words_keep(words, drop.threshold, drop.keep_all)


def _materialize(fn, operand):
    """``fn(operand)`` computed into its own buffer: the taken branch of a ``lax.cond``.

    XLA cannot fold the predicate (always true), so it cannot fuse the branch into
    its consumers; the other branch is zeros, so the code is compiled once (unlike
    ``_prng.materialize``, whose two branches are the same function).
    """
    always = lax.optimization_barrier(jnp.uint32(0)) == jnp.uint32(0)
    zeros = lambda x: jnp.zeros(*_shape_dtype(fn, x))  # noqa: E731
    return lax.cond(always, fn, zeros, operand)


def _shape_dtype(fn, x):
    out = jax.eval_shape(fn, x)
    return out.shape, out.dtype


def _slice(x: jax.Array, axis: int, start: jax.Array, size: int) -> jax.Array:
    """The ``size`` entries of ``x`` from ``start`` along ``axis``, or all of a shared axis."""
    if x.shape[axis] == 1:
        return x
    return lax.dynamic_slice_in_dim(x, start, size, axis)


def _drop_tile(cfg, drop, i, j, shape, fuse_mask):
    """The dropout keep tile, fused into its consumer or computed into its own buffer.

    It is computed into its own buffer unless ``fuse_mask`` and it is not shared: a
    mask shared over batch and heads, or read by two consumers, would otherwise be
    recomputed by XLA for each of them.
    """
    if fuse_mask and (cfg.mask_batch, cfg.mask_heads) == shape[:2]:
        return tile_keep(cfg, drop, i, j)
    return _materialize(
        lambda kw: tile_keep(cfg, drop._replace(key_words=kw), i, j), drop.key_words
    )


def _logits(cfg, q_i, k_j, bias, mask, drop, i, j, fuse_mask=False):
    """Masked logits ``[B, H, bq, bk]`` of tile ``(i, j)``, the differentiable and kept elements.

    ``live`` (or ``None``: all) marks the logits that are neither masked, causal-masked
    nor dropped by DropKey (the others are constants, with zero gradient); ``keep``
    (or ``None``) is the dropout mask applied after the softmax. DropKey sets a dropped
    logit to ``big_neg / 2`` and masking sets ``big_neg``: a row whose allowed keys are
    all dropped attends to those, never to masked (e.g. future) keys.
    """
    bq, bk, acc = cfg.block_q, cfg.block_k, _acc_dtype(q_i)
    s = jnp.einsum("bhqd,bhkd->bhqk", q_i, k_j, precision=cfg.precision, preferred_element_type=acc)
    if bias is not None:
        s = s + _slice(_slice(bias, 2, i * bq, bq), 3, j * bk, bk).astype(acc)
    rows = i * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    cols = j * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    allowed = None if mask is None else _slice(_slice(mask, 2, i * bq, bq), 3, j * bk, bk)
    if cfg.causal:
        allowed = rows >= cols if allowed is None else allowed & (rows >= cols)
    live, keep = allowed, None
    if cfg.drop is not None:
        keep = _drop_tile(cfg, drop, i, j, s.shape, fuse_mask)
    if cfg.drop == "keys":
        s = jnp.where(keep, s, jnp.asarray(cfg.big_neg / 2, acc))
        live, keep = (keep if allowed is None else allowed & keep), None
    if allowed is not None:
        s = jnp.where(allowed, s, jnp.asarray(cfg.big_neg, acc))
    if cfg.k_len % bk:
        s = jnp.where(cols < cfg.k_len, s, -jnp.inf)
    return s, live, keep


def _num_k_blocks(cfg: Config, num_k: int, i: jax.Array) -> jax.Array | int:
    """Key blocks visited by query block ``i``: all, or up to the diagonal."""
    if not cfg.skip_causal:
        return num_k
    return jnp.minimum(num_k, ((i + 1) * cfg.block_q - 1) // cfg.block_k + 1)


def _forward(cfg: Config, q, k, v, bias, mask, drop):
    """Output ``[B, H, Qp, Dv]`` and the row statistics by the online softmax.

    The statistics are the row maximum ``m`` and ``log l`` (``l`` the sum of
    ``exp(s - m)``), ``[B, H, Qp]`` each, kept apart: in a fully masked row every logit
    is ``finfo.min``, and ``m + log l`` would round to ``m``.
    """
    bq, bk, acc = cfg.block_q, cfg.block_k, _acc_dtype(q)
    num_q, num_k = q.shape[2] // bq, k.shape[2] // bk
    rows_shape = (*q.shape[:2], bq)

    def q_block(_, i):
        q_i = lax.dynamic_slice_in_dim(q, i * bq, bq, 2)

        def k_step(j, carry):
            m, norm, total = carry
            k_j = lax.dynamic_slice_in_dim(k, j * bk, bk, 2)
            v_j = lax.dynamic_slice_in_dim(v, j * bk, bk, 2)
            s, _, keep = _logits(cfg, q_i, k_j, bias, mask, drop, i, j, fuse_mask=True)
            m_new = jnp.maximum(m, s.max(-1))
            m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # a row of -inf so far
            correction = jnp.exp(m - m_safe)
            p = jnp.exp(s - m_safe[..., None])
            norm = correction * norm + p.sum(-1)
            kept = p if keep is None else jnp.where(keep, p, 0.0)
            pv = jnp.einsum(
                "bhqk,bhkd->bhqd",
                kept.astype(v.dtype),
                v_j,
                precision=cfg.precision,
                preferred_element_type=acc,
            )
            return m_new, norm, correction[..., None] * total + pv

        init = (
            jnp.full(rows_shape, -jnp.inf, acc),
            jnp.zeros(rows_shape, acc),
            jnp.zeros((*rows_shape, v.shape[-1]), acc),
        )
        m, norm, total = lax.fori_loop(0, _num_k_blocks(cfg, num_k, i), k_step, init)
        out = total / norm[..., None]
        if cfg.drop == "weights":
            out = out * drop.inv_keep.astype(acc)
        return None, (out.astype(q.dtype), (m, jnp.log(norm)))

    _, (out, stats) = lax.scan(q_block, None, jnp.arange(num_q))
    out = jnp.moveaxis(out, 0, 2).reshape(*q.shape[:2], num_q * bq, v.shape[-1])
    m, log_norm = (jnp.moveaxis(x, 0, 2).reshape(*q.shape[:2], num_q * bq) for x in stats)
    return out, (m, log_norm)


def _row_slice(rows: tuple[jax.Array, ...], bq: int, i: jax.Array) -> tuple[jax.Array, ...]:
    """Block ``i`` of per-row arrays ``[B, H, Qp]``, as ``[B, H, bq, 1]`` columns."""
    return tuple(lax.dynamic_slice_in_dim(x, i * bq, bq, 2)[..., None] for x in rows)


def _add_tile(total: jax.Array, tile: jax.Array, i, j, cfg: Config) -> jax.Array:
    """Adds a tile's ``dS`` into the bias gradient, summed over the bias's shared axes."""
    axes = tuple(a for a in range(4) if total.shape[a] == 1 and tile.shape[a] != 1)
    tile = tile.sum(axes, keepdims=True)
    row = i * cfg.block_q if total.shape[2] > 1 else 0
    starts = (0, 0, row, j * cfg.block_k if total.shape[3] > 1 else 0)
    current = lax.dynamic_slice(total, starts, tile.shape)
    return lax.dynamic_update_slice(total, current + tile, starts)


def _backward(cfg: Config, residuals, d_out):
    """Cotangents of q, k, v and bias, tile by tile (outer loop over key blocks)."""
    q, k, v, bias, mask, drop, out, (m, log_norm) = residuals
    bq, bk, acc = cfg.block_q, cfg.block_k, _acc_dtype(q)
    num_q, num_k = q.shape[2] // bq, k.shape[2] // bk
    d_out = d_out.astype(q.dtype)
    delta = jnp.sum(d_out.astype(acc) * out.astype(acc), axis=-1)
    mm = functools.partial(jnp.einsum, precision=cfg.precision, preferred_element_type=acc)
    row = functools.partial(_row_slice, (m, log_norm, delta), bq)

    def k_block(carry, j):
        k_j = lax.dynamic_slice_in_dim(k, j * bk, bk, 2)
        v_j = lax.dynamic_slice_in_dim(v, j * bk, bk, 2)

        def q_step(i, inner):
            dk_j, dv_j, dq, dbias = inner
            q_i, do_i = (lax.dynamic_slice_in_dim(x, i * bq, bq, 2) for x in (q, d_out))
            m_i, log_norm_i, delta_i = row(i)
            s, live, keep = _logits(cfg, q_i, k_j, bias, mask, drop, i, j)
            p = jnp.exp((s - m_i) - log_norm_i)
            dz = mm("bhqd,bhkd->bhqk", do_i, v_j)
            if keep is None:
                z, dp = p, dz
            else:
                scale = drop.inv_keep.astype(acc)
                z, dp = jnp.where(keep, p * scale, 0.0), jnp.where(keep, dz * scale, 0.0)
            ds = p * (dp - delta_i)
            if live is not None:
                ds = jnp.where(live, ds, 0.0)
            dv_j = dv_j + mm("bhqk,bhqd->bhkd", z.astype(do_i.dtype), do_i)
            dk_j = dk_j + mm("bhqk,bhqd->bhkd", ds.astype(q.dtype), q_i)
            dq_i = lax.dynamic_slice_in_dim(dq, i * bq, bq, 2)
            dq_i = dq_i + mm("bhqk,bhkd->bhqd", ds.astype(k.dtype), k_j)
            dq = lax.dynamic_update_slice_in_dim(dq, dq_i, i * bq, 2)
            if dbias is not None:
                dbias = _add_tile(dbias, ds, i, j, cfg)
            return dk_j, dv_j, dq, dbias

        first = (j * bk) // bq if cfg.skip_causal else 0
        zeros = (jnp.zeros(k_j.shape, acc), jnp.zeros(v_j.shape, acc))
        dk_j, dv_j, dq, dbias = lax.fori_loop(first, num_q, q_step, (*zeros, *carry))
        return (dq, dbias), (dk_j, dv_j)

    dbias0 = None if bias is None else jnp.zeros(bias.shape, acc)
    (dq, dbias), (dk, dv) = lax.scan(k_block, (jnp.zeros(q.shape, acc), dbias0), jnp.arange(num_k))
    dk = jnp.moveaxis(dk, 0, 2).reshape(k.shape)
    dv = jnp.moveaxis(dv, 0, 2).reshape(v.shape)
    if bias is not None and dbias is not None:
        dbias = dbias.astype(bias.dtype)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dbias


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def attention(cfg: Config, q, k, v, bias, mask, drop):
    """Blockwise attention output ``[B, H, Qp, Dv]`` (see the module docstring)."""
    return _forward(cfg, q, k, v, bias, mask, drop)[0]


def _attention_fwd(cfg, q, k, v, bias, mask, drop):
    out, stats = _forward(cfg, q, k, v, bias, mask, drop)
    return out, (q, k, v, bias, mask, drop, out, stats)


def _attention_bwd(cfg, residuals, d_out):
    dq, dk, dv, dbias = _backward(cfg, residuals, d_out)
    return dq, dk, dv, dbias, None, None


attention.defvjp(_attention_fwd, _attention_bwd)
