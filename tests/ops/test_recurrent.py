"""Tests of locked_dropout, embedding_dropout, zoneout and weight_drop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl
from tests.ops._semantics import KEY, check_semantics


def five_sigma(rate, n):
    # Fraction of n independent Bernoulli(rate) draws: sigma = sqrt(rate (1 - rate) / n).
    return 5 * np.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize(
    "fn",
    [
        lambda k, x, r: dl.locked_dropout(k, x, r),
        lambda k, x, r: dl.embedding_dropout(k, x, r),
        lambda k, x, r: dl.weight_drop(k, x, r),
    ],
    ids=["locked", "embedding", "weight_drop"],
)
def test_semantics(fn):
    check_semantics(fn, jax.random.normal(jax.random.key(1), (4, 5, 6)))


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_locked_mask_constant_over_time(rate):
    x = jax.random.normal(jax.random.key(1), (64, 10, 64)) + 10.0
    y = np.asarray(dl.locked_dropout(KEY, x, rate, impl="bernoulli"))
    dropped = y == 0
    assert (dropped == dropped[:, :1, :]).all()
    assert abs(dropped[:, 0].mean() - rate) < five_sigma(rate, 64 * 64)
    # time_axis=0 ([time, batch, features], PyTorch's RNN layout).
    y0 = np.asarray(dl.locked_dropout(KEY, x, rate, time_axis=0))
    assert ((y0 == 0) == (y0[:1] == 0)).all()


@pytest.mark.parametrize("rate", [0.1, 0.4])
def test_embedding_dropout_drops_whole_vectors(rate):
    table = jax.random.normal(jax.random.key(1), (4096, 8)) + 10.0
    y = np.asarray(dl.embedding_dropout(KEY, table, rate, impl="bernoulli"))
    dropped = (y == 0).all(axis=1)
    assert ((y == 0).any(axis=1) == dropped).all()
    assert abs(dropped.mean() - rate) < five_sigma(rate, dropped.size)
    np.testing.assert_allclose(y[~dropped], np.asarray(table)[~dropped] / (1 - rate), rtol=1e-6)
    # Lookup after dropping the table: every occurrence of a dropped word is zero.
    ids = jnp.array([[3, 3, 5], [5, 3, 7]])
    looked_up = np.asarray(y[np.asarray(ids)])
    assert (looked_up[0, 0] == 0).all() == (looked_up[1, 1] == 0).all()


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_zoneout_keeps_previous_state_at_rate(rate):
    h_prev = jnp.zeros((128, 64))
    h_new = jnp.ones((128, 64))
    h = np.asarray(dl.zoneout(KEY, h_prev, h_new, rate, impl="bernoulli"))
    assert set(np.unique(h)) <= {0.0, 1.0}
    assert abs((h == 0).mean() - rate) < five_sigma(rate, h.size)


def test_zoneout_edges_eval_nan_and_grads():
    h_prev = jax.random.normal(jax.random.key(1), (6, 5))
    h_new = jax.random.normal(jax.random.key(2), (6, 5))
    np.testing.assert_array_equal(dl.zoneout(KEY, h_prev, h_new, 0.0), h_new)
    np.testing.assert_array_equal(dl.zoneout(KEY, h_prev, h_new, 1.0), h_prev)
    np.testing.assert_allclose(
        dl.zoneout(KEY, h_prev, h_new, 0.3, deterministic=True), 0.3 * h_prev + 0.7 * h_new
    )
    np.testing.assert_array_equal(
        dl.zoneout(KEY, h_prev * jnp.nan, h_new, 0.0, deterministic=True), h_new
    )
    # A NaN in the state that is not chosen does not leak (select, not blend).
    h = dl.zoneout(KEY, h_prev.at[0, 0].set(jnp.nan), h_new, 0.5)
    assert bool(jnp.isnan(h[0, 0])) == bool(h[0, 0] != h_new[0, 0])
    assert jnp.isnan(h).sum() <= 1
    # Gradients: d h / d h_new is the update mask, d h / d h_prev its complement.
    g_new, g_prev = jax.grad(lambda a, b: dl.zoneout(KEY, b, a, 0.5).sum(), argnums=(0, 1))(
        h_new, h_prev
    )
    h = dl.zoneout(KEY, h_prev, h_new, 0.5)
    np.testing.assert_array_equal(g_new, (h == h_new).astype(jnp.float32))
    np.testing.assert_array_equal(g_new + g_prev, jnp.ones_like(h))
    # Traced bad rate -> NaN; mismatched states raise.
    assert bool(jnp.isnan(jax.jit(lambda r: dl.zoneout(KEY, h_prev, h_new, r))(2.0)).all())
    with pytest.raises(ValueError):
        dl.zoneout(KEY, h_prev, h_new[:, :2], 0.5)
    with pytest.raises(TypeError):
        dl.zoneout(KEY, h_prev, h_new.astype(jnp.bfloat16), 0.5)
    with pytest.raises(ValueError):
        dl.zoneout(KEY, h_prev, h_new, 1.2)


def test_weight_drop_pytree_one_key_per_leaf():
    weights = {"hh": jnp.ones((64, 256)), "hc": jnp.ones((64, 64))}
    masked = dl.weight_drop(KEY, weights, 0.5)
    assert jax.tree.structure(masked) == jax.tree.structure(weights)
    k_hc, k_hh = jax.random.split(KEY, 2)  # leaves in key order: "hc", "hh"
    np.testing.assert_array_equal(masked["hc"], dl.dropconnect(k_hc, weights["hc"], 0.5))
    np.testing.assert_array_equal(masked["hh"], dl.dropconnect(k_hh, weights["hh"], 0.5))
    frac = float((masked["hh"] == 0).mean())
    assert abs(frac - 0.5) < five_sigma(0.5, 64 * 256)
    # Deterministic needs no key.
    same = dl.weight_drop(None, weights, 0.5, deterministic=True)
    np.testing.assert_array_equal(same["hh"], weights["hh"])


def test_weight_drop_mask_shared_by_all_steps():
    # A linear RNN h_t = h_{t-1} W: with weights dropped once per sequence, every step
    # uses the same masked matrix, so the result is h_0 W~^T.
    w = jax.random.normal(jax.random.key(1), (4, 4)) * 0.5
    w_dropped = dl.weight_drop(KEY, w, 0.5)

    def step(h, _):
        return h @ w_dropped, None

    h0 = jnp.ones((1, 4))
    h, _ = jax.lax.scan(step, h0, None, length=3)
    np.testing.assert_allclose(h, h0 @ w_dropped @ w_dropped @ w_dropped, rtol=1e-5)
