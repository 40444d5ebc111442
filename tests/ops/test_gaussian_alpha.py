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
    rate = 0.25  # keep 0.75 is exact in float32 and on the 2**-16 grid of impl="fast"
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


def test_alpha_dropout_broadcast_dims_shares_one_mask():
    # x > 0 makes kept values a x + b > 0 (a > 0, b = -a alpha' (1 - q) > 0) and dropped
    # ones a alpha' + b = a alpha' q < 0, so the sign of y is the mask, exactly.
    x = jax.random.uniform(jax.random.key(1), (8, 5, 6, 3), minval=0.5, maxval=2.0)
    rate = 0.25
    a, b = affine_correction(jnp.float32(0.75))
    y = dl.alpha_dropout(KEY, x, rate, broadcast_dims=(1, 2))
    dropped = np.asarray(y < 0)
    assert dropped.any() and not dropped.all()
    np.testing.assert_array_equal(dropped, np.broadcast_to(dropped[:, :1, :1, :], x.shape))
    np.testing.assert_allclose(y[~dropped], (a * x + b)[~dropped], rtol=1e-6)
    np.testing.assert_allclose(y[dropped], a * SELU_SATURATION + b, rtol=1e-6)
    # The same draw as dl.dropout with the same key and shared axes.
    kept = dl.dropout(KEY, x, rate, broadcast_dims=(1, 2)) != 0
    np.testing.assert_array_equal(dropped, ~np.asarray(kept))
    # Negative axes, lists and jit give the same bits; () is the unshared default.
    for dims in ([1, 2], (-3, -2), (2, 1)):
        np.testing.assert_array_equal(dl.alpha_dropout(KEY, x, rate, broadcast_dims=dims), y)
    jitted = jax.jit(lambda k, v: dl.alpha_dropout(k, v, rate, broadcast_dims=(1, 2)))
    np.testing.assert_array_equal(jitted(KEY, x), y)
    np.testing.assert_array_equal(
        dl.alpha_dropout(KEY, x, rate, broadcast_dims=()), dl.alpha_dropout(KEY, x, rate)
    )
    # Every axis shared: one draw for the whole array.
    whole = np.asarray(dl.alpha_dropout(KEY, x, 0.5, broadcast_dims=(0, 1, 2, 3)) < 0)
    assert whole.all() or not whole.any()
    np.testing.assert_array_equal(dl.alpha_dropout(KEY, x, 0.0, broadcast_dims=(1,)), x)
    np.testing.assert_array_equal(
        dl.alpha_dropout(KEY, x, 1.0, broadcast_dims=(1,)), jnp.zeros_like(x)
    )
    np.testing.assert_array_equal(
        dl.alpha_dropout(KEY, x, rate, broadcast_dims=(1,), deterministic=True), x
    )


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_alpha_dropout_broadcast_dims_keeps_zero_mean_unit_variance(rate):
    # x ~ N(0, 1) of shape [4096, 64, 4] with axis 1 shared: G = 4096 * 4 groups of
    # S = 64 elements share one draw m_g ~ Bernoulli(q). Given m, y = a m x + c(m) with
    # c(m) = a alpha' (1 - m) + b, so E[y] = 0 and E[y^2] = 1 (the affine correction
    # does not depend on the sharing), but elements of a group are correlated:
    #   Var(mean y) = (1/G) Var(mean of a group) = a^2 (q / (G S) + alpha'^2 q p / G).
    # For the second moment M2 = mean y^2 = mean over groups of Z_g = mean_s y_gs^2:
    #   Var(Z | m=1) = Var((a x + b)^2) / S = (2 a^4 + 4 a^2 b^2) / S,  Z | m=0 = c0^2
    #   (c0 = a alpha' + b), so Var(Z) = q (2 a^4 + 4 a^2 b^2) / S + q p (a^2 + b^2 - c0^2)^2
    # and Var(M2) = Var(Z) / G. The groups are independent: 5 sigma bounds (CLT over G).
    # The sample variance is M2 - mean^2, whose extra bias mean^2 is below 25 Var(mean).
    num_groups, size = 4096 * 4, 64
    x = jax.random.normal(jax.random.key(1), (4096, size, 4))
    y = np.asarray(dl.alpha_dropout(KEY, x, rate, broadcast_dims=(1,)), np.float64)
    q = 1 - rate
    a, b = (float(v) for v in affine_correction(jnp.float32(q)))
    c0 = a * SELU_SATURATION + b
    var_mean = a**2 * (q / (num_groups * size) + SELU_SATURATION**2 * q * rate / num_groups)
    var_z = q * (2 * a**4 + 4 * a**2 * b**2) / size + q * rate * (a**2 + b**2 - c0**2) ** 2
    assert abs(y.mean()) < 5 * np.sqrt(var_mean)
    assert abs(y.var() - 1) < 5 * np.sqrt(var_z / num_groups) + 25 * var_mean


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
