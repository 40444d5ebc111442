"""Tests of concrete dropout and (sparse) variational dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dropout_lab as dl
from dropout_lab.ops import _variational
from tests.ops._semantics import KEY, check_semantics


def test_concrete_semantics():
    check_semantics(
        lambda k, x, r: dl.concrete_dropout(k, x, r), jax.random.normal(jax.random.key(1), (8, 5))
    )


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_concrete_relaxed_mask_drops_at_rate(rate):
    # z > 1/2 exactly when logit(rate) + logistic noise > 0, an event of probability
    # rate: the fraction of units scaled by less than 0.5 / (1 - rate) is Binomial.
    n = 1 << 16
    y = np.asarray(dl.concrete_dropout(KEY, jnp.ones(n), rate))
    dropped = y < 0.5 / (1 - rate)
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    assert (y >= 0).all() and (y <= 1 / (1 - rate) + 1e-6).all()
    # Low temperature: nearly hard masks.
    y = np.asarray(dl.concrete_dropout(KEY, jnp.ones(n), rate, temperature=1e-3))
    assert ((y < 1e-3) | (np.abs(y - 1 / (1 - rate)) < 1e-3)).mean() > 0.99
    with pytest.raises(ValueError):
        dl.concrete_dropout(KEY, jnp.ones(3), rate, temperature=0.0)


def objective(rate, key):
    # E[(y - x)^2] for hard inverted dropout is rate / (1 - rate) per unit; adding the
    # negative entropy rate log rate + (1 - rate) log(1 - rate) gives the objective
    # whose derivative 1 / (1 - p)^2 + log(p / (1 - p)) vanishes at p* ~= 0.18.
    x = jnp.ones(4096)
    y = dl.concrete_dropout(key, x, rate)
    reg = dl.concrete_dropout_regularizer(
        jnp.zeros(()), rate, input_dim=1, weight_regularizer=0.0, dropout_regularizer=1.0
    )
    return jnp.mean(jnp.square(y - x)) + reg


def test_concrete_gradient_in_rate_has_the_right_sign():
    grad = jax.jit(jax.grad(objective))
    below, above = float(grad(0.05, KEY)), float(grad(0.5, KEY))
    assert np.isfinite(below) and np.isfinite(above)
    assert below < -1.0  # analytic for hard dropout: -1.84
    assert above > 2.0  # analytic: +4.0

    # Gradient descent on the logit reaches the optimum (~0.18 for hard masks).
    def step(logit, key):
        g = jax.grad(lambda lg: objective(jax.nn.sigmoid(lg), key))(logit)
        return logit - 0.5 * g, None

    logit, _ = jax.jit(lambda k: jax.lax.scan(step, jnp.float32(-3.0), jax.random.split(k, 200)))(
        KEY
    )
    assert 0.14 < float(jax.nn.sigmoid(logit)) < 0.25


def test_concrete_regularizer_value():
    w = {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.ones(2)}
    p = 0.25
    got = dl.concrete_dropout_regularizer(
        w, p, input_dim=3, weight_regularizer=0.1, dropout_regularizer=0.01
    )
    expected = 0.1 * (6 * 4 + 2) / (1 - p) + 0.01 * 3 * (p * np.log(p) + (1 - p) * np.log(1 - p))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Entropy limits at the endpoints are 0, not NaN.
    assert float(dl.concrete_dropout_regularizer(jnp.zeros(2), 0.0, input_dim=2)) == 0.0


def numpy_kl(log_alpha):
    k1, k2, k3 = 0.63576, 1.8732, 1.48695
    neg = k1 / (1 + np.exp(-(k2 + k3 * log_alpha))) - 0.5 * np.log1p(np.exp(-log_alpha)) - k1
    return -neg


def test_variational_kl_and_pruning_mask():
    la = np.linspace(-8, 8, 33, dtype=np.float32)
    np.testing.assert_allclose(
        dl.variational_kl(la), numpy_kl(la.astype(np.float64)).sum(), rtol=1e-5
    )
    per_weight = jax.vmap(lambda a: dl.variational_kl(a[None]))(jnp.asarray(la))
    assert (np.diff(per_weight) < 0).all() and (per_weight > 0).all()
    np.testing.assert_array_equal(dl.variational_prune_mask(la), la < 3.0)
    theta = jnp.array([1.0, 1e-3, 0.0])
    log_sigma2 = jnp.array([0.0, -5.0, -5.0])
    np.testing.assert_allclose(
        dl.variational_log_alpha(theta, log_sigma2),
        [-np.log1p(1e-8), -5.0 - np.log(1e-6 + 1e-8), 10.0],  # eps = 1e-8
        rtol=1e-5,
        atol=1e-7,
    )
    assert _variational.KL_K1 == 0.63576


def test_variational_dense_moments_and_eval():
    x = jax.random.normal(jax.random.key(1), (4, 3))
    theta = jax.random.normal(jax.random.key(2), (3, 2))
    log_sigma2 = jnp.array([[-1.0, 0.0], [-2.0, 5.0], [-3.0, 1.0]])
    bias = jnp.array([0.5, -0.5])
    keys = jax.random.split(KEY, 4000)
    ys = np.asarray(
        jax.jit(jax.vmap(lambda k: dl.variational_dense(k, x, theta, log_sigma2, bias)))(keys)
    )
    log_alpha = dl.variational_log_alpha(theta, log_sigma2)
    mean = np.asarray(x @ theta + bias)
    var = np.asarray(jnp.square(x) @ (jnp.exp(log_alpha) * jnp.square(theta)))
    # Gaussian samples: the sample mean is within 5 sd / sqrt(n) of the mean; the
    # sample variance within 5 var sqrt(2 / n) of the variance.
    n = len(keys)
    assert (np.abs(ys.mean(0) - mean) < 5 * np.sqrt(var / n) + 1e-6).all()
    assert (np.abs(ys.var(0) - var) < 5 * var * np.sqrt(2 / n) + 1e-6).all()
    y_eval = dl.variational_dense(KEY, x, theta, log_sigma2, bias, deterministic=True)
    kept = np.asarray(log_alpha) < 3.0
    assert not kept.all()
    np.testing.assert_allclose(y_eval, x @ jnp.where(kept, theta, 0) + bias, rtol=1e-6)
    y_all = dl.variational_dense(
        KEY, x, theta, log_sigma2, bias, deterministic=True, threshold=None
    )
    np.testing.assert_allclose(y_all, x @ theta + bias, rtol=1e-6)
    with pytest.raises(ValueError):
        dl.variational_dense(KEY, x, theta, log_sigma2[:2], bias)


def test_sparse_vd_prunes_irrelevant_weights():
    # y = x w + noise with only 3 of 16 inputs relevant; minimize the negative ELBO
    # (Gaussian NLL summed over the data + KL) / n with Adam for 300 steps.
    n, d = 64, 16
    x = jax.random.normal(KEY, (n, d))
    w_true = jnp.zeros((d, 1)).at[:3, 0].set(jnp.array([2.0, -1.5, 1.0]))
    y = x @ w_true + jax.random.normal(jax.random.key(1), (n, 1))
    params = {
        "kernel": 0.1 * jax.random.normal(jax.random.key(2), (d, 1)),
        "log_sigma2": jnp.full((d, 1), -10.0),
        "bias": jnp.zeros(1),
    }
    opt = optax.adam(optax.cosine_decay_schedule(0.02, 300))

    def loss(p, key):
        pred = dl.variational_dense(key, x, p["kernel"], p["log_sigma2"], p["bias"])
        kl = dl.variational_kl(dl.variational_log_alpha(p["kernel"], p["log_sigma2"]))
        return (0.5 * jnp.sum(jnp.square(pred - y)) + kl) / n

    @jax.jit
    def train(p):
        def body(carry, key):
            p, state = carry
            grads = jax.grad(loss)(p, key)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(body, (p, opt.init(p)), jax.random.split(KEY, 300))
        return p

    params = train(params)
    kept = np.asarray(
        dl.variational_prune_mask(dl.variational_log_alpha(params["kernel"], params["log_sigma2"]))
    )[:, 0]
    assert kept[:3].all()
    assert (~kept[3:]).sum() >= 11  # measured: all 13 pruned
    pred = dl.variational_dense(
        KEY, x, params["kernel"], params["log_sigma2"], params["bias"], deterministic=True
    )
    assert float(jnp.mean(jnp.square(pred - y))) < 1.5  # noise variance 1
