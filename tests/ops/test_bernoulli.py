"""Tests of dl.dropout: statistics, exact scaling, edge rates, dtypes, transforms."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import dropout_lab as dl
from dropout_lab.ops import _prng

KEY = jax.random.key(0)
N = 1 << 20  # >= 1e6 elements for the statistical tests
IMPLS = ("exact", "fast", "bernoulli")


def keep_used(rate, impl):
    """Keep probability the scale uses: 1 - rate rounded once to float32 (as Flax),
    then, for the opt-in fast path only, to the 2**-16 grid."""
    keep = np.float32(1.0 - float(rate))
    if impl == "fast":
        return float(np.round(keep * np.float32(65536)) / 65536)
    return float(keep)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_fraction_mean_and_variance(rate, impl):
    y = np.asarray(dl.dropout(KEY, jnp.ones(N), rate, impl=impl), np.float64)
    q = keep_used(rate, impl)
    # Keep fraction ~ Binomial(N, q) / N: 5 sigma = 5 sqrt(q (1-q) / N).
    assert abs((y != 0).mean() - q) < 5 * np.sqrt(q * (1 - q) / N)
    # y = B / q: mean 1, variance (1-q)/q; mean within 5 sigma = 5 sqrt(var / N).
    var = (1 - q) / q
    assert abs(y.mean() - 1) < 5 * np.sqrt(var / N)
    # Sample variance: sd ~ sqrt((mu4 - var^2) / N), mu4 = q(1-q)(1-3q(1-q)) / q^4,
    # plus the bias (mean - 1)^2 ~ var / N from estimating the mean (25 var / N at 5 sigma).
    mu4 = q * (1 - q) * (1 - 3 * q * (1 - q)) / q**4
    assert abs(y.var() - var) < 5 * np.sqrt((mu4 - var**2) / N) + 25 * var / N


def test_fast_keep_probability_within_2_pow_16_of_rate():
    for rate in np.linspace(0, 1, 101, dtype=np.float32):
        assert abs((1 - keep_used(rate, "fast")) - rate) <= 2.0**-16


@pytest.mark.parametrize("impl", IMPLS)
def test_inverted_kept_values_are_scaled_exactly(impl):
    x = jax.random.normal(jax.random.key(1), (64, 33))
    for rate in (0.5, 0.25, 0.1, 0.4, 0.33):
        closed = jax.jit(lambda key, x, rate=rate: dl.dropout(key, x, rate, impl=impl))
        for y in (dl.dropout(KEY, x, rate, impl=impl), closed(KEY, x)):
            kept = y != 0
            expected = x / jnp.float32(keep_used(rate, impl))
            np.testing.assert_array_equal(y[kept], expected[kept])
            assert 0 < kept.mean() < 1
    # Rates on the 2**-16 grid give the textbook scale in every impl.
    y = dl.dropout(KEY, x, 0.5, impl=impl)
    np.testing.assert_array_equal(y[y != 0], (x * 2)[y != 0])


@pytest.mark.parametrize("rate", [0.1, 0.4, 0.33, 0.7, 0.999])
def test_default_kept_values_are_x_over_one_minus_rate(rate):
    # The promise of every peer: a kept value is x / (1 - rate) as float32 computes
    # it, within 1e-6 relative of the float64 quotient (the fast grid missed this by
    # up to 2**-17 / q, e.g. 7e-6 at rate 0.1 and 1.66665 for 1/0.6 at rate 0.4).
    # A traced rate is the float32 number float32(rate): its 1 - rate is exact in
    # float32 but is a different number near rate 1, so it gets its own quotient.
    x = jax.random.normal(jax.random.key(1), (32, 64))
    traced = jax.jit(dl.dropout)
    for y, one_minus_rate in [
        (dl.dropout(KEY, x, rate), 1.0 - rate),
        (traced(KEY, x, np.float32(rate)), 1.0 - float(np.float32(rate))),
    ]:
        y = np.asarray(y, np.float64)
        kept = y != 0
        quotient = np.asarray(x, np.float64) / one_minus_rate
        np.testing.assert_allclose(y[kept], quotient[kept], rtol=1e-6, atol=0)
    one = dl.dropout(KEY, jnp.ones(4096), 0.4)
    np.testing.assert_array_equal(one[one != 0], np.float32(1) / np.float32(0.6))


def test_keep_probability_is_one_minus_rate_to_2_pow_23():
    # rate 1 - 2**-18 on 2**24 elements: kept ~ Binomial(2**24, 2**-18), mean 64,
    # sd 8; 6 sd gives [16, 112]. The 2**-16 grid of impl="fast" keeps none.
    # Jitted: eagerly, each step would materialise a 2**24 array (7x slower).
    n, rate = 1 << 24, 1.0 - 2.0**-18

    def kept(impl):
        return int(
            jax.jit(lambda k: jnp.sum(dl.dropout(k, jnp.ones(n), rate, impl=impl) != 0))(KEY)
        )

    assert 16 <= kept("exact") <= 112, kept("exact")
    assert kept("fast") == 0


def test_exact_keep_threshold_is_within_2_pow_32():
    for keep in [0.0, 2.0**-18, 0.1, 1 / 3, 0.5, 0.9, 1.0 - 2.0**-24, 1.0]:
        keep32 = jnp.float32(keep)
        threshold, keep_all = _prng.word_threshold(keep32)
        realised = 1.0 if bool(keep_all) else int(threshold) / 2.0**32
        assert float(keep32) <= realised < float(keep32) + 2.0**-32


@pytest.mark.parametrize("impl", IMPLS)
def test_classic_mode_train_unscaled_eval_scaled(impl):
    x = jax.random.normal(jax.random.key(1), (64, 33))
    y = dl.dropout(KEY, x, 0.3, mode="classic", impl=impl)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])
    # Same mask as inverted mode for the same key.
    np.testing.assert_array_equal(kept, dl.dropout(KEY, x, 0.3, impl=impl) != 0)
    y_eval = dl.dropout(KEY, x, 0.3, mode="classic", deterministic=True, impl=impl)
    np.testing.assert_array_equal(y_eval, x * jnp.float32(keep_used(0.3, impl)))
    np.testing.assert_array_equal(
        dl.dropout(KEY, x, 0.5, mode="classic", deterministic=True), x * 0.5
    )


def test_deterministic_inverted_is_identity():
    x = jax.random.normal(jax.random.key(1), (5, 7))
    np.testing.assert_array_equal(dl.dropout(KEY, x, 0.7, deterministic=True), x)


def test_bernoulli_impl_matches_flax_and_jax_random():
    x = jax.random.normal(jax.random.key(1), (32, 65))
    ours = dl.dropout(KEY, x, 0.3, impl="bernoulli")
    flax_y = nn.Dropout(0.3, deterministic=False).apply({}, x, rng=KEY)
    np.testing.assert_array_equal(ours, flax_y)
    mask = jax.random.bernoulli(KEY, 0.7, x.shape)
    np.testing.assert_array_equal(ours != 0, mask)


def test_fast_words_equal_jax_random_bits():
    for shape in [(5,), (33, 17), (2, 3, 4)]:
        np.testing.assert_array_equal(
            _prng.random_words(KEY, shape), jax.random.bits(KEY, shape, jnp.uint32)
        )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["inverted", "classic"])
def test_edge_rates(impl, mode):
    x = jax.random.normal(jax.random.key(1), (8, 9))
    np.testing.assert_array_equal(dl.dropout(KEY, x, 0.0, mode=mode, impl=impl), x)
    np.testing.assert_array_equal(dl.dropout(KEY, x, 1.0, mode=mode, impl=impl), jnp.zeros_like(x))

    def loss(x, rate):
        return jnp.sum(dl.dropout(KEY, x, rate, mode=mode, impl=impl) ** 2)

    for rate in (1.0, jnp.float32(1.0)):
        value, grads = jax.value_and_grad(loss, argnums=(0, 1))(x, rate)
        assert value == 0
        np.testing.assert_array_equal(grads[0], jnp.zeros_like(x))
        assert np.isfinite(grads[1])
    traced = jax.jit(lambda r: dl.dropout(KEY, x, r, mode=mode, impl=impl))
    np.testing.assert_array_equal(traced(0.0), x)
    np.testing.assert_array_equal(traced(1.0), jnp.zeros_like(x))


def test_dropped_nan_and_inf_become_zero():
    x = jnp.full((4096,), jnp.nan).at[::2].set(jnp.inf)
    y = dl.dropout(KEY, x, 0.5)
    assert 0 < (y == 0).sum() < x.size
    assert np.all(np.isnan(y[1::2]) | (y[1::2] == 0))
    assert np.all(np.isinf(y[::2]) | (y[::2] == 0))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_dtype_is_kept(dtype):
    x = jnp.ones((16, 16), dtype)
    for kwargs in ({}, {"mode": "classic"}, {"deterministic": True, "mode": "classic"}):
        y = dl.dropout(KEY, x, 0.3, **kwargs)
        assert y.dtype == dtype
    y = dl.dropout(KEY, x, 0.5)
    assert set(np.unique(np.asarray(y, np.float32))) <= {0.0, 2.0}


def test_float64_is_kept():
    with jax.enable_x64(True):
        x = jnp.ones((8,), jnp.float64) / 3
        y = dl.dropout(KEY, x, 0.5)
        assert y.dtype == jnp.float64
        np.testing.assert_array_equal(y[y != 0], (x * 2)[y != 0])


@pytest.mark.parametrize("bad", [jnp.ones(3, jnp.int32), jnp.ones(3, bool)])
def test_integer_and_bool_inputs_raise(bad):
    with pytest.raises(TypeError, match="floating dtype"):
        dl.dropout(KEY, bad, 0.5)


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan")])
def test_bad_concrete_rate_raises_naming_value(rate):
    with pytest.raises(ValueError, match=r"rate=.*outside \[0, 1\]"):
        dl.dropout(KEY, jnp.ones(3), rate)


def test_bad_options_raise():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="mode='bogus'"):
        dl.dropout(KEY, x, 0.5, mode="bogus")
    with pytest.raises(ValueError, match="impl='bogus'"):
        dl.dropout(KEY, x, 0.5, impl="bogus")
    with pytest.raises(ValueError, match="broadcast_dims contains 5"):
        dl.dropout(KEY, x, 0.5, broadcast_dims=(5,))
    with pytest.raises(ValueError, match="scalar"):
        dl.dropout(KEY, x, jnp.array([0.1, 0.2]))
    with pytest.raises(TypeError, match="PRNG key"):
        dl.dropout(jnp.array([1.0, 2.0]), x, 0.5)


def test_traced_invalid_rate_gives_nan():
    y = jax.jit(lambda r: dl.dropout(KEY, jnp.ones(4), r))(1.5)
    assert np.all(np.isnan(y))


def test_legacy_key_equals_typed_key():
    x = jnp.ones((16, 16))
    np.testing.assert_array_equal(
        dl.dropout(jax.random.PRNGKey(7), x, 0.5), dl.dropout(jax.random.key(7), x, 0.5)
    )


def test_philox_keys_work():
    key = jax.random.key(0, impl="philox2x32")
    y = dl.dropout(key, jnp.ones(N), 0.5)
    assert abs((y != 0).mean() - 0.5) < 5 * np.sqrt(0.25 / N)


def test_gradients():
    x = jax.random.normal(jax.random.key(1), (4, 5))
    for mode in ("inverted", "classic"):
        check_grads(lambda x, mode=mode: dl.dropout(KEY, x, 0.4, mode=mode), (x,), order=1)
    g = jax.grad(lambda x: jnp.sum(dl.dropout(KEY, x, 0.5) * 3.0))(x)
    y = dl.dropout(KEY, x, 0.5)
    np.testing.assert_array_equal(g, jnp.where(y != 0, 6.0, 0.0))


def test_jit_equals_eager_and_does_not_retrace():
    x = jax.random.normal(jax.random.key(1), (16, 8))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(key, x, rate):
        return dl.dropout(key, x, rate)

    # A traced rate is a float32 number, so it is compared with the same float32
    # value eagerly (a Python float rate rounds 1 - rate once from double precision).
    for seed, rate in [(0, 0.1), (1, 0.5), (2, 0.9), (3, 0.33)]:
        key = jax.random.key(seed)
        rate32 = np.float32(rate)
        np.testing.assert_array_equal(f(key, x, rate32), dl.dropout(key, x, rate32))
        # A concrete rate closed over by jit gives the eager bits.
        closed = jax.jit(lambda key, x, rate=rate: dl.dropout(key, x, rate))
        np.testing.assert_array_equal(closed(key, x), dl.dropout(key, x, rate))


def test_vmap_over_keys_equals_loop():
    x = jax.random.normal(jax.random.key(1), (6, 5))
    keys = jax.random.split(KEY, 8)
    ys = jax.vmap(dl.dropout, in_axes=(0, None, None))(keys, x, 0.3)
    for key, y in zip(keys, ys, strict=True):
        np.testing.assert_array_equal(y, dl.dropout(key, x, 0.3))


def test_vmap_over_rates_equals_loop():
    x = jax.random.normal(jax.random.key(1), (6, 5))
    rates = jnp.linspace(0.0, 0.9, 10)
    ys = jax.vmap(lambda r: dl.dropout(KEY, x, r))(rates)
    for rate, y in zip(rates, ys, strict=True):
        np.testing.assert_array_equal(y, dl.dropout(KEY, x, float(rate)))
    np.testing.assert_array_equal(ys[0], x)


@pytest.mark.parametrize("broadcast_dims", [(0,), (1,), (0, 2), (-1,)])
def test_broadcast_mask_constant_along_axes(broadcast_dims):
    x = jnp.ones((6, 7, 8))
    kept = np.asarray(dl.dropout(KEY, x, 0.5, broadcast_dims=broadcast_dims) != 0)
    for axis in broadcast_dims:
        assert np.all(kept == np.take(kept, [0], axis=axis))
    assert 0 < kept.mean() < 1
