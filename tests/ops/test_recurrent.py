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
    y = np.asarray(dl.locked_dropout(KEY, x, rate))
    dropped = y == 0
    assert (dropped == dropped[:, :1, :]).all()
    assert abs(dropped[:, 0].mean() - rate) < five_sigma(rate, 64 * 64)
    # time_axis=0 ([time, batch, features], PyTorch's RNN layout).
    y0 = np.asarray(dl.locked_dropout(KEY, x, rate, time_axis=0))
    assert ((y0 == 0) == (y0[:1] == 0)).all() and 0 < (y0[0] == 0).mean() < 1


@pytest.mark.parametrize("rate", [0.1, 0.4])
def test_embedding_dropout_drops_whole_vectors(rate):
    table = jax.random.normal(jax.random.key(1), (4096, 8)) + 10.0
    y = np.asarray(dl.embedding_dropout(KEY, table, rate))
    dropped = (y == 0).all(axis=1)
    assert ((y == 0).any(axis=1) == dropped).all()
    assert abs(dropped.mean() - rate) < five_sigma(rate, dropped.size)
    # Kept vectors are x / (1 - rate) as float32 computes it (1e-6 of the float64 quotient).
    np.testing.assert_allclose(y[~dropped], np.asarray(table)[~dropped] / (1 - rate), rtol=1e-6)
    # Lookup after dropping the table drops word types: every occurrence of a dropped
    # word is zero and every occurrence of a kept word is its scaled vector.
    word_dropped, word_kept = int(np.argmax(dropped)), int(np.argmin(dropped))
    ids = np.array([[word_dropped, word_kept, word_dropped], [word_kept, word_dropped, word_kept]])
    looked_up = y[ids]
    assert (looked_up[ids == word_dropped] == 0).all()
    scaled = np.asarray(table)[word_kept] / (1 - rate)
    np.testing.assert_allclose(looked_up[ids == word_kept], np.tile(scaled, (3, 1)), rtol=1e-6)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_zoneout_keeps_previous_state_at_rate(rate):
    h_prev = jnp.zeros((128, 64))
    h_new = jnp.ones((128, 64))
    h = np.asarray(dl.zoneout(KEY, h_prev, h_new, rate))
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
    # A linear RNN h_t = h_{t-1} W~ with W~ = M * W / q dropped once per sequence: the
    # weights are masked (each entry 0 or W / q, both present), and every step uses
    # that one matrix, also when weight_drop is called inside the loop with the
    # sequence's key; a key per step gives a different result.
    rate = 0.5
    w = jax.random.normal(jax.random.key(1), (8, 8)) + 5.0  # no zero weight
    h0 = jnp.ones((1, 8))

    @jax.jit
    def run(key):
        w_dropped = dl.weight_drop(key, w, rate)

        def step(h, step_key):
            same = h[0] @ dl.weight_drop(key, w, rate)
            fresh = h[1] @ dl.weight_drop(step_key, w, rate)
            return jnp.stack([same, fresh]), None

        keys = jax.random.split(jax.random.key(2), 3)
        h, _ = jax.lax.scan(step, jnp.stack([h0, h0]), keys)
        return w_dropped, h

    w_dropped, h = (np.asarray(a, np.float64) for a in run(KEY))
    mask = w_dropped != 0
    assert mask.any() and not mask.all()
    np.testing.assert_allclose(w_dropped[mask], np.asarray(w)[mask] / (1 - rate), rtol=1e-6)
    expected = np.asarray(h0) @ w_dropped @ w_dropped @ w_dropped
    np.testing.assert_allclose(h[0], expected, rtol=1e-5)
    assert not np.allclose(h[1], expected, rtol=1e-2)


@pytest.mark.parametrize("impl", ["exact", "fast", "bernoulli"])
def test_rate_one_on_large_masks(impl):
    # Every variant at rate 1 with 2**20 mask draws (a traced rate): a generator that
    # keeps an element with probability 2**-16 at rate 1 (the fast grid with `<=` for
    # `<`) lets about 16 through.
    n = 1 << 20

    @jax.jit
    def run(key, rate):
        locked = dl.locked_dropout(key, jnp.ones((1024, 2, 1024)), rate, impl=impl)
        embedding = dl.embedding_dropout(key, jnp.ones((n, 2)), rate, impl=impl)
        weights = dl.weight_drop(key, {"hh": jnp.ones((1024, 1025))}, rate, impl=impl)["hh"]
        h = dl.zoneout(key, jnp.zeros((n + 8,)), jnp.ones((n + 8,)), rate, impl=impl)
        return [jnp.count_nonzero(a) for a in (locked, embedding, weights, h)]

    # Zoneout at rate 1 keeps every previous value (zeros here).
    assert [int(c) for c in run(KEY, 1.0)] == [0, 0, 0, 0]
