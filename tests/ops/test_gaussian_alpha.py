"""Tests of Gaussian and alpha dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import dropout_lab as dl
from dropout_lab.ops._alpha import SELU_SATURATION, affine_correction

KEY = jax.random.key(0)
N = 1 << 20


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_gaussian_noise_mean_and_variance(rate):
    y = np.asarray(dl.gaussian_dropout(KEY, jnp.ones(N), rate), np.float64)
    var = rate / (1 - rate)
    # y ~ N(1, var): mean within 5 sqrt(var/N); sample variance sd = var sqrt(2/N).
    assert abs(y.mean() - 1) < 5 * np.sqrt(var / N)
    assert abs(y.var() - var) < 5 * var * np.sqrt(2 / N)


def test_gaussian_edges_dtype_and_errors():
    x = jax.random.normal(jax.random.key(1), (8, 8))
    np.testing.assert_array_equal(dl.gaussian_dropout(KEY, x, 0.0), x)
    np.testing.assert_array_equal(dl.gaussian_dropout(KEY, x, 1.0), jnp.zeros_like(x))
    np.testing.assert_array_equal(dl.gaussian_dropout(KEY, x, 0.3, deterministic=True), x)
    assert dl.gaussian_dropout(KEY, x.astype(jnp.bfloat16), 0.3).dtype == jnp.bfloat16
    with pytest.raises(TypeError):
        dl.gaussian_dropout(KEY, jnp.ones(3, jnp.int32), 0.3)
    with pytest.raises(ValueError, match="rate=2.0"):
        dl.gaussian_dropout(KEY, x, 2.0)


def test_gaussian_gradients_in_x_and_rate():
    x = jax.random.normal(jax.random.key(1), (3, 4))
    check_grads(
        lambda x, r: dl.gaussian_dropout(KEY, x, r),
        (x, jnp.float32(0.3)),
        order=1,
        modes=["rev"],
        atol=1e-2,
        rtol=1e-2,
    )
    # d/drate sum(y) = sum(x * eps) * d sigma / d rate, with eps recovered from y.
    rate = 0.3
    sigma = np.sqrt(rate / (1 - rate))
    eps = (dl.gaussian_dropout(KEY, x, rate) / x - 1) / sigma
    dsigma = 0.5 / np.sqrt(rate) / (1 - rate) ** 1.5
    g = jax.grad(lambda r: jnp.sum(dl.gaussian_dropout(KEY, x, r)))(jnp.float32(rate))
    np.testing.assert_allclose(g, np.sum(x * eps) * dsigma, rtol=1e-4)
    for edge in (0.0, 1.0):
        assert np.isfinite(jax.grad(lambda r: jnp.sum(dl.gaussian_dropout(KEY, x, r)))(edge))


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_alpha_dropout_keeps_zero_mean_unit_variance(rate):
    x = jax.random.normal(jax.random.key(1), (N,))
    y = np.asarray(dl.alpha_dropout(KEY, x, rate), np.float64)
    # Output moments are 0 and 1 by construction; 5 sigma with the sample's own spread
    # (kurtosis of y is finite and modest): mean sd = 1/sqrt(N); variance sd <= 3/sqrt(N).
    assert abs(y.mean()) < 5 / np.sqrt(N)
    assert abs(y.var() - 1) < 15 / np.sqrt(N)


def test_alpha_dropout_values_edges_and_grads():
    x = jax.random.normal(jax.random.key(1), (64, 16))
    rate = 0.25  # keep 0.75 is on the 2**-16 grid
    a, b = affine_correction(jnp.float32(0.75))
    y = dl.alpha_dropout(KEY, x, rate)
    kept = dl.dropout(KEY, x, rate) != 0  # same key, same mask
    np.testing.assert_allclose(y[kept], (a * x + b)[kept], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y[~kept], a * SELU_SATURATION + b, rtol=1e-6)
    np.testing.assert_array_equal(dl.alpha_dropout(KEY, x, 0.0), x)
    np.testing.assert_array_equal(dl.alpha_dropout(KEY, x, 1.0), jnp.zeros_like(x))
    np.testing.assert_array_equal(dl.alpha_dropout(KEY, x, 0.5, deterministic=True), x)
    g = jax.grad(lambda x: jnp.sum(dl.alpha_dropout(KEY, x, 1.0)))(x)
    assert np.all(g == 0)
    check_grads(lambda x: dl.alpha_dropout(KEY, x, 0.3), (x[:3, :3],), order=1)


def test_dropconnect_is_dropout_on_weights_and_dense_layers():
    kx, kw = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (5, 4))
    w = jax.random.normal(kw, (4, 3))
    b = jnp.arange(3.0)
    np.testing.assert_array_equal(dl.dropconnect(KEY, w, 0.5), dl.dropout(KEY, w, 0.5))
    shared = dl.dropconnect_dense(KEY, x, w, b, 0.5)
    np.testing.assert_allclose(shared, x @ dl.dropconnect(KEY, w, 0.5) + b, rtol=1e-6)
    np.testing.assert_allclose(
        dl.dropconnect_dense(KEY, x, w, b, 0.5, deterministic=True), x @ w + b, rtol=1e-6
    )
    np.testing.assert_allclose(
        dl.dropconnect_dense(KEY, x, w, None, 0.5, mode="classic", deterministic=True),
        x @ (0.5 * w),
        rtol=1e-6,
    )
    per_example = dl.dropconnect_dense(KEY, x, w, b, 0.5, per_example=True)
    keys = jax.random.split(KEY, 5)
    for i in range(5):
        np.testing.assert_allclose(
            per_example[i], x[i] @ dl.dropconnect(keys[i], w, 0.5) + b, rtol=1e-6
        )
    with pytest.raises(ValueError, match="do not fit"):
        dl.dropconnect_dense(KEY, x, w.T, b, 0.5)


def test_dropconnect_dense_is_unbiased():
    # E[x (M*W/q)] = x W: average 4000 masks; each output is a sum of 4 terms of
    # variance (p/q) (x_i w_ij)^2, so sd of the mean = sqrt(sum (x w)^2 p/q / T).
    x = jnp.array([[1.0, -2.0, 0.5, 3.0]])
    w = jnp.ones((4, 2))
    keys = jax.random.split(KEY, 4000)
    ys = jax.vmap(lambda k: dl.dropconnect_dense(k, x, w, None, 0.3))(keys)
    sd = np.sqrt(np.sum(np.asarray(x) ** 2) * (0.3 / 0.7) / 4000)
    assert np.all(np.abs(ys.mean(0) - x @ w) < 5 * sd)


def test_gaussian_noise_equals_jax_random_normal_and_jit_equals_eager():
    from dropout_lab.ops import _prng

    np.testing.assert_array_equal(
        _prng.standard_normal(KEY, (33, 17)), jax.random.normal(KEY, (33, 17))
    )
    x = jax.random.normal(jax.random.key(1), (16, 9))
    for fn in (dl.gaussian_dropout, dl.alpha_dropout):
        np.testing.assert_array_equal(jax.jit(fn)(KEY, x, 0.3), fn(KEY, x, 0.3))
        keys = jax.random.split(KEY, 3)
        batched = jax.vmap(fn, in_axes=(0, None, None))(keys, x, 0.3)
        for key, y in zip(keys, batched, strict=True):
            np.testing.assert_array_equal(y, fn(key, x, 0.3))
