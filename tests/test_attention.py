"""Tests of dropout_lab.attention: blockwise == dense, masks bit for bit, grads, memory."""

import contextlib
import functools
import io

import flax.linen as nn
import jax
import jax.ad_checkpoint
import jax.extend.random
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import dropout_lab as dl
from dropout_lab import _attention_blockwise as bw
from dropout_lab import attention as A
from dropout_lab.ops import _prng

RNG = jax.random.key(7)
B, Q, K, H, D = 2, 13, 11, 2, 4
KS = jax.random.split(jax.random.key(0), 6)
QUERY = jax.random.normal(KS[0], (B, Q, H, D))
KEY_ = jax.random.normal(KS[1], (B, K, H, D))
VALUE = jax.random.normal(KS[2], (B, K, H, D))
BIAS = jax.random.normal(KS[3], (B, 1, Q, K))
# Padding mask [B, 1, 1, K]: example 1 sees its first 7 keys only.
PAD = (jnp.arange(K) < jnp.array([[K], [7]]))[:, None, None, :]
# [B, 1, Q, K]: PAD, and query 0 of example 1 sees nothing (a fully masked row).
MASK_ROW = jnp.where((jnp.arange(B) == 0)[:, None, None, None], True, PAD)
MASK_ROW = MASK_ROW & ((jnp.arange(B) == 0)[:, None] | (jnp.arange(Q) > 0)[None])[:, None, :, None]


def _keep_mask(shape, rate, broadcast_dropout):
    """The dense keep-mask dl.dropout draws for weights of ``shape``."""
    dims = tuple(range(len(shape) - 2)) if broadcast_dropout else ()
    return np.asarray(dl.dropout(RNG, jnp.ones(shape), rate, broadcast_dims=dims) != 0)


# ----------------------------------------------------------------------------------
# Masks: bit-identical to dl.dropout on the dense weights, for every block size.
# (The tests of outputs and gradients below compare with the dense formula, which a
# single flipped mask bit would fail.)


def test_output_exposes_the_dense_mask():
    # Zero queries give uniform weights 1/K; value = identity (head_dim = K) makes
    # out[b, q, h, k] = dropout(W)[b, h, q, k]: nonzero exactly where the mask keeps.
    query, key = jnp.zeros((B, Q, H, K)), jnp.zeros((B, K, H, K))
    value = jnp.broadcast_to(jnp.eye(K)[None, :, None, :], (B, K, H, K))
    # One mask shared by the batch and heads (Flax's default); masks per example and
    # head, and other block sizes, are checked by the tests below.
    keep = _keep_mask((B, H, Q, K), 0.4, True)
    assert 0.3 < keep.mean() < 0.9
    fn = functools.partial(A.dot_product_attention, dropout_rng=RNG, dropout_rate=0.4)
    out = jax.jit(functools.partial(fn, block_q=4, block_k=3))(query, key, value)
    out = np.asarray(out).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(out != 0, keep)
    np.testing.assert_allclose(out[keep], 1 / K / np.float32(0.6), rtol=1e-6)


@pytest.mark.parametrize("block", [(1, 1), (3, 5), (4, 11), (13, 2), (8, 8)])
def test_tiles_assemble_to_the_dense_mask(block):
    bq, bk = block
    shape = (B, H, Q, K)
    cfg = bw.Config(Q, K, bq, bk, False, False, "weights", B, H, -1.0)
    words = np.asarray(_prng.mask_words(RNG, shape))
    key_words = jax.random.key_data(RNG)
    tiles = jax.jit(lambda i, j: bw.tile_words(cfg, key_words, i, j))
    for i in range(-(-Q // bq)):
        for j in range(-(-K // bk)):
            tile = np.asarray(tiles(i, j))
            rows, cols = slice(i * bq, (i + 1) * bq), slice(j * bk, (j + 1) * bk)
            want = words[:, :, rows, cols]
            np.testing.assert_array_equal(tile[:, :, : want.shape[2], : want.shape[3]], want)


# ----------------------------------------------------------------------------------
# Indices beyond 2**32 elements: computed in 64 bits, never wrapped.


def _reference_words(key, index):
    """Word ``index`` (Python ints) of the key's stream: cipher at counter (j >> 32, j & m)."""
    index = np.asarray(index).astype(np.uint64)
    block = index >> np.uint64(1)
    counters = np.concatenate([block >> np.uint64(32), block & np.uint64(0xFFFFFFFF)])
    out = np.asarray(
        jax.extend.random.threefry_2x32(jax.random.key_data(key), counters.astype(np.uint32))
    )
    x0, x1 = np.split(out, 2)
    return np.where(index % 2 == 0, x0, x1)


def _sliced_words(shape, index):
    """``mask_words(RNG, shape)[index]``, compiled so that only the slice is computed."""
    compiled = jax.jit(lambda key: _prng.mask_words(key, shape)[index]).lower(RNG).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 2**20  # the slice is fused
    return np.asarray(compiled(RNG))


def test_masks_beyond_2_pow_32_elements_do_not_wrap():
    # dl.dropout's words: a [3, 2**16, 2**16 + 1] mask (1.3e10 elements, indices > 2**33).
    shape = (3, 2**16, 2**16 + 1)
    rows = np.arange(shape[1] - 2, shape[1])[:, None]
    cols = np.arange(shape[2] - 4, shape[2])[None, :]
    index = (2 * shape[1] + rows) * shape[2] + cols
    assert index.max() > 2**33
    words = _sliced_words(shape, (2, slice(-2, None), slice(-4, None)))
    np.testing.assert_array_equal(words, _reference_words(RNG, index))
    # Below 2**33 the layout is the old one (counter (0, i >> 1)).
    small = np.asarray(_prng.mask_words(RNG, (4, 5))).reshape(-1)
    np.testing.assert_array_equal(small, _reference_words(RNG, np.arange(20)))
    # An attention tile of a [1, 1, q_len, k_len] mask (5e10 elements): the last rows,
    # columns from 2**14 on (partly padding), computed from its tile indices alone.
    q_len, k_len = 3 * 2**20, 2**14 + 3
    cfg = bw.Config(q_len, k_len, 4, 8, False, False, "weights", 1, 1, -1.0)
    i, j = q_len // 4 - 1, 2**11
    tile = np.asarray(bw.tile_words(cfg, jax.random.key_data(RNG), i, j))[0, 0]
    rows = np.arange(i * 4, i * 4 + 4)[:, None]
    cols = np.arange(j * 8, j * 8 + 8)[None, :]
    index = rows.astype(object) * k_len + cols
    assert index.max() > 2**35
    valid = cols[0] < k_len
    np.testing.assert_array_equal(tile[:, valid], _reference_words(RNG, index)[:, valid])
    dense = _sliced_words((1, q_len, k_len), (0, slice(-4, None), slice(2**14, None)))
    np.testing.assert_array_equal(dense, tile[:, valid])


def test_wide_multiply_and_add_are_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, 1000, dtype=np.uint64)
    b = rng.integers(0, 2**32, 1000, dtype=np.uint64)
    a[:3], b[:3] = [2**32 - 1, 0, 2**32 - 1], [2**32 - 1, 5, 1]
    hi, lo = _prng.wide_mul(jnp.asarray(a, jnp.uint32), jnp.asarray(b, jnp.uint32))
    got = [(int(h) << 32) + int(w) for h, w in zip(np.asarray(hi), np.asarray(lo), strict=True)]
    assert got == [int(x) * int(y) for x, y in zip(a, b, strict=True)]
    hi, lo = _prng.wide_add((jnp.asarray(a, jnp.uint32),) * 2, (jnp.asarray(b, jnp.uint32),) * 2)
    got = [(int(h) << 32) + int(w) for h, w in zip(np.asarray(hi), np.asarray(lo), strict=True)]
    want = [((int(x) + int(y)) * (2**32 + 1)) % 2**64 for x, y in zip(a, b, strict=True)]
    assert got == want


# ----------------------------------------------------------------------------------
# Outputs and gradients equal the dense formula.

CONFIGS = {
    # Weights dropout, one mask for all (Flax's default); differentiable bias; causal
    # with a padding mask and a fully masked row (no tile skipped).
    "bias-mask-causal": dict(kw=dict(bias=BIAS, mask=MASK_ROW, is_causal=True), block=(4, 5)),
    # DropKey, a mask per example and head; causal alone (tiles above the diagonal
    # skipped); grouped-query attention (4 query heads, 2 key heads); batch axes (2, 1).
    "dropkey-per-head-gqa": dict(
        kw=dict(is_causal=True, dropkey=True, broadcast_dropout=False), block=(5, 3), gqa=True
    ),
}


def _inputs(case):
    q, k, v = QUERY, KEY_, VALUE
    if case.get("gqa"):  # 4 query heads over 2 key heads, batch axes (2, 1)
        q = jnp.concatenate([q, 2 * q], axis=2)
        q, k, v = (x[:, None] for x in (q, k, v))
    return q, k, v


@pytest.mark.parametrize("name", list(CONFIGS))
def test_blockwise_equals_dense_with_gradients(name):
    case = CONFIGS[name]
    kw = dict(case["kw"])
    bias = kw.pop("bias", None)

    def loss(fn, q, k, v, bias, **extra):
        out = fn(q, k, v, bias=bias, dropout_rng=RNG, dropout_rate=0.3, **kw, **extra)
        return jnp.sum(jnp.sin(3 * out)), out

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    bq, bk = case["block"]
    ours = jax.value_and_grad(
        functools.partial(loss, A.dot_product_attention, block_q=bq, block_k=bk),
        argnums,
        has_aux=True,
    )
    dense = jax.value_and_grad(
        functools.partial(loss, A.dense_dot_product_attention), argnums, has_aux=True
    )
    both = jax.jit(lambda *args: (ours(*args), dense(*args)))
    ((_, out), grads), ((_, out_ref), grads_ref) = both(*_inputs(case), bias)
    np.testing.assert_allclose(out, out_ref, atol=2e-6, rtol=2e-6)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(g, g_ref, atol=1e-5, rtol=1e-5)


def test_fully_masked_rows_and_rate_zero_match_flax_and_jax():
    # Rate 0 (and deterministic) is attention itself: Flax's and jax.nn's, including a
    # fully masked row (example 1, query 0), which attends uniformly as in Flax.
    assert not MASK_ROW[1, 0, 0].any()
    fn = functools.partial(A.dot_product_attention, block_q=4, block_k=4)

    @jax.jit
    def outputs(q, k, v):
        ours = fn(q, k, v, bias=BIAS, mask=MASK_ROW)
        evaluation = fn(q, k, v, BIAS, MASK_ROW, dropout_rate=0.5, deterministic=True)
        theirs = nn.dot_product_attention(q, k, v, bias=BIAS, mask=MASK_ROW)
        causal = fn(q, k, v, is_causal=True)
        want = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return ours, evaluation, theirs, causal, want

    ours, evaluation, theirs, causal, want = outputs(QUERY, KEY_, VALUE)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    np.testing.assert_array_equal(evaluation, ours)
    np.testing.assert_allclose(theirs[1, 0], VALUE[1].mean(0), atol=1e-6)
    np.testing.assert_allclose(causal, want, atol=2e-6)


def test_dropkey_reference_drops_keys_and_never_reveals_masked_ones():
    # DropKey = Flax's attention with the keep mask joined to the mask, except in rows
    # where every allowed key is dropped: those attend uniformly to their allowed keys,
    # never to masked (here future) ones.
    keep = _keep_mask((B, H, Q, K), 0.8, True)
    allowed = keep & np.tril(np.ones((Q, K), bool))
    ours, theirs = jax.jit(
        lambda q, k, v: (
            A.dense_dot_product_attention(
                q, k, v, dropout_rng=RNG, dropout_rate=0.8, is_causal=True, dropkey=True
            ),
            nn.dot_product_attention(q, k, v, mask=allowed),
        )
    )(QUERY, KEY_, VALUE)
    ours, theirs = (np.asarray(x).transpose(0, 2, 1, 3) for x in (ours, theirs))  # [B, H, Q, D]
    fully_dropped = ~allowed.any(-1)
    assert 0 < fully_dropped.mean() < 0.5
    np.testing.assert_allclose(ours[~fully_dropped], theirs[~fully_dropped], atol=1e-6)
    for b, h, i in zip(*np.nonzero(fully_dropped), strict=True):
        np.testing.assert_allclose(ours[b, h, i], VALUE[b, : i + 1, h].mean(0), atol=1e-6)


def test_traced_rate_under_jit_and_vmap():
    def ours(rate):
        return A.dot_product_attention(
            QUERY, KEY_, VALUE, dropout_rng=RNG, dropout_rate=rate, block_q=8, block_k=8
        )

    def dense(rate):
        return A.dense_dot_product_attention(QUERY, KEY_, VALUE, dropout_rng=RNG, dropout_rate=rate)

    rates = jnp.array([0.0, 0.3, 1.0, 1.5])
    outs, refs = jax.jit(lambda r: (jax.vmap(ours)(r), jax.vmap(dense)(r)))(rates)
    no_dropout = A.dense_dot_product_attention(QUERY, KEY_, VALUE)
    np.testing.assert_allclose(outs[0], no_dropout, atol=2e-6)
    np.testing.assert_allclose(outs[1], refs[1], atol=2e-6)
    assert not np.allclose(outs[1], outs[0], atol=1e-2)
    np.testing.assert_array_equal(outs[2], 0.0)  # every weight dropped
    assert np.isnan(np.asarray(outs[3])).all() and np.isnan(np.asarray(refs[3])).all()


def test_check_grads_on_the_blockwise_path():
    with jax.enable_x64(True):
        q, k, v = (x[:1, :6].astype(jnp.float64) for x in (QUERY, KEY_, VALUE))
        bias = BIAS[:1, :, :6, :6].astype(jnp.float64)

        def fn(q, k, v, bias):
            return A.dot_product_attention(
                q, k, v, bias=bias, dropout_rng=RNG, dropout_rate=0.3, block_q=4, block_k=4
            )

        check_grads(jax.jit(fn), (q, k, v, bias), order=1, modes=["rev"])


def _saved_residual_sizes(fn, *args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    sizes = []
    for line in out.getvalue().splitlines():
        dims = line.split("[", 1)[1].split("]", 1)[0]
        sizes.append(int(np.prod([int(d) for d in dims.split(",") if d])))
    return sizes


def test_no_residual_of_the_attention_matrix_size():
    b, length, h, d = 1, 64, 2, 4
    q, k, v = (jax.random.normal(kk, (b, length, h, d)) for kk in KS[:3])
    full = b * h * length * length

    def loss(attention_fn, q, k, v):
        return jnp.sum(attention_fn(q, k, v, dropout_rng=RNG, dropout_rate=0.1))

    ours = _saved_residual_sizes(functools.partial(loss, A.dot_product_attention), q, k, v)
    assert max(ours) <= b * h * length * d  # q, k, v, the output: O(length)
    theirs = _saved_residual_sizes(functools.partial(loss, nn.dot_product_attention), q, k, v)
    assert max(theirs) >= full  # the check sees Flax's [B, H, Q, K] residuals


def test_invalid_arguments_raise():
    with pytest.raises(TypeError, match="dropout_rng"):
        A.dot_product_attention(QUERY, KEY_, VALUE, dropout_rate=0.1)
    with pytest.raises(ValueError, match="dropout_rate"):
        A.dot_product_attention(QUERY, KEY_, VALUE, dropout_rng=RNG, dropout_rate=1.5)
    with pytest.raises(ValueError, match="broadcast"):
        A.dot_product_attention(QUERY, KEY_, VALUE, mask=jnp.ones((3, 1, 1, K), bool))
    with pytest.raises(ValueError, match="block_q"):
        A.dot_product_attention(QUERY, KEY_, VALUE, block_q=0)
    with pytest.raises(ValueError, match="multiple"):
        A.dot_product_attention(QUERY[:, :, :1], KEY_, VALUE)
