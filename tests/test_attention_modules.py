"""dropout_lab.attention inside Flax: as attention_fn of Flax's modules, and our modules."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dropout_lab import attention as A
from dropout_lab import linen as dln
from dropout_lab import nnx as dlnnx

X = jax.random.normal(jax.random.key(0), (2, 7, 8))
DROP = jax.random.key(3)
DENSE = A.dense_dot_product_attention
OURS = functools.partial(A.dot_product_attention, block_q=4, block_k=4)


# ----------------------------------------------------------------------------------
# linen


def test_linen_flax_module_takes_our_attention_fn_and_our_module_is_a_drop_in():
    def module(cls=nn.MultiHeadDotProductAttention, rate=0.3, **kw):
        return cls(num_heads=2, dropout_rate=rate, **kw)

    @jax.jit
    def outputs(rates):
        params = module().init(jax.random.key(1), X, deterministic=True)

        def run(m, **kw):
            return m.apply(params, X, deterministic=False, rngs={"dropout": DROP}, **kw)

        flax_ours = run(module(attention_fn=OURS))
        flax_dense = run(module(attention_fn=DENSE))
        ours = run(module(dln.MultiHeadDotProductAttention, attention_fn=OURS))
        by_rate = jax.vmap(
            lambda r: run(module(dln.MultiHeadDotProductAttention, r, attention_fn=OURS))
        )(rates)
        evaluation, state = module(dln.MultiHeadDotProductAttention, 0.0).apply(
            params, X, sow_weights=True, mutable=["intermediates"]
        )
        flax_evaluation = module(rate=0.0).apply(params, X)
        (weights,) = state["intermediates"]["attention_weights"]
        return flax_ours, flax_dense, ours, by_rate, evaluation, flax_evaluation, weights

    flax_ours, flax_dense, ours, by_rate, evaluation, flax_eval, weights = outputs(
        jnp.array([0.0, 0.3])
    )
    np.testing.assert_allclose(flax_ours, flax_dense, atol=2e-6)
    # Same parameters, same dropout key as Flax's module draws, same output.
    np.testing.assert_array_equal(ours, flax_ours)
    np.testing.assert_allclose(by_rate[1], ours, atol=1e-6)
    np.testing.assert_allclose(by_rate[0], evaluation, atol=1e-6)
    # Rate 0 needs neither rngs nor deterministic, and is Flax's attention.
    np.testing.assert_allclose(evaluation, flax_eval, atol=2e-6)
    assert not np.allclose(ours, evaluation, atol=1e-3)
    # sow_weights: the (pre-dropout) weights, as Flax sows them.
    assert weights.shape == (2, 2, 7, 7)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


def test_linen_traced_rate_fails_in_flax_and_works_in_ours():
    def apply(cls, rate):
        layer = cls(num_heads=2, dropout_rate=rate)
        params = layer.init(jax.random.key(1), X, deterministic=True)
        return layer.apply(params, X, deterministic=False, rngs={"dropout": DROP})

    with pytest.raises(jax.errors.TracerBoolConversionError):
        jax.eval_shape(functools.partial(apply, nn.MultiHeadDotProductAttention), 0.3)
    assert jax.eval_shape(functools.partial(apply, dln.MultiHeadDotProductAttention), 0.3)


# ----------------------------------------------------------------------------------
# NNX


def test_nnx_flax_module_takes_our_attention_fn_and_our_module_is_a_drop_in():
    def module(cls=nnx.MultiHeadAttention, rate=0.3, **kw):
        return cls(2, 8, dropout_rate=rate, decode=False, rngs=nnx.Rngs(0, dropout=5), **kw)

    @jax.jit
    def outputs(rate):
        flax_ours = module(attention_fn=OURS)(X, deterministic=False)
        flax_dense = module(attention_fn=DENSE)(X, deterministic=False)
        ours = module(dlnnx.MultiHeadAttention, attention_fn=OURS)
        traced = module(dlnnx.MultiHeadAttention, rate, attention_fn=OURS)
        evaluation = module(dlnnx.MultiHeadAttention, 0.0)(X)
        flax_evaluation = module(rate=0.0)(X)
        ours, traced = ours(X, deterministic=False), traced(X, deterministic=False)
        return flax_ours, flax_dense, ours, traced, evaluation, flax_evaluation

    flax_ours, flax_dense, ours, traced, evaluation, flax_evaluation = outputs(0.3)
    np.testing.assert_allclose(flax_ours, flax_dense, atol=2e-6)
    np.testing.assert_array_equal(ours, flax_ours)
    np.testing.assert_allclose(traced, ours, atol=1e-6)
    # Rate 0 needs neither rngs nor deterministic, and is Flax's attention.
    np.testing.assert_allclose(evaluation, flax_evaluation, atol=2e-6)
    assert not np.allclose(ours, evaluation, atol=1e-3)


def test_nnx_traced_rate_needs_deterministic():
    with pytest.raises(ValueError, match="deterministic"):
        jax.jit(lambda r: dlnnx.MultiHeadAttention(2, 8, dropout_rate=r, rngs=nnx.Rngs(0))(X))(0.3)


# ----------------------------------------------------------------------------------
# A tiny transformer block trains with attention dropout, in linen and in NNX.

SEQ = jax.random.normal(jax.random.key(4), (16, 8, 8))
# Target: each position regresses the previous position's input (needs attention).
TARGET = jnp.roll(SEQ, 1, axis=1)


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic):
        causal = nn.make_causal_mask(x[..., 0])
        attn = nn.MultiHeadDotProductAttention(
            num_heads=2, dropout_rate=0.1, attention_fn=A.dot_product_attention
        )
        x = x + attn(nn.LayerNorm()(x), mask=causal, deterministic=deterministic)
        return x + nn.Dense(8)(nn.gelu(nn.Dense(32)(nn.LayerNorm()(x))))


def test_linen_transformer_block_trains():
    model = LinenBlock()
    params = jax.jit(functools.partial(model.init, deterministic=True))(jax.random.key(0), SEQ)
    opt = optax.adam(1e-2)

    @jax.jit
    def step(params, state, key):
        """One update; also returns the evaluation loss of the incoming parameters."""

        def loss(p, deterministic=False):
            y = model.apply(p, SEQ, deterministic=deterministic, rngs={"dropout": key})
            return jnp.mean((y - TARGET) ** 2)

        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss(params, deterministic=True)

    state, evals = opt.init(params), []
    for key in jax.random.split(jax.random.key(1), 31):
        params, state, value = step(params, state, key)
        evals.append(float(value))
    assert evals[-1] < 0.5 * evals[0]


class NNXBlock(nnx.Module):
    def __init__(self, rngs, rate):
        self.norm1, self.norm2 = nnx.LayerNorm(8, rngs=rngs), nnx.LayerNorm(8, rngs=rngs)
        self.attn = dlnnx.MultiHeadAttention(2, 8, dropout_rate=rate, decode=False, rngs=rngs)
        self.up, self.down = nnx.Linear(8, 32, rngs=rngs), nnx.Linear(32, 8, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x), is_causal=True)
        return x + self.down(nnx.gelu(self.up(self.norm2(x))))


def test_nnx_transformer_block_trains_with_a_traced_rate():
    model = NNXBlock(nnx.Rngs(0), rate=jnp.float32(0.1))  # not weak-typed: no retrace
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, rate):
        """One update; also returns the evaluation loss of the incoming parameters."""
        model.attn.dropout_rate = rate  # a schedule: a traced rate per step

        def loss(m):
            return jnp.mean((m(SEQ) - TARGET) ** 2)

        evaluation = loss(nnx.view(model, deterministic=True))
        optimizer.update(model, nnx.grad(loss)(model))
        return evaluation

    evals = [float(step(model, optimizer, jnp.float32(r))) for r in np.linspace(0, 0.2, 31)]
    assert evals[-1] < 0.5 * evals[0]
