import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

import dropout_lab as dl


def sampled_probs():
    probs = jax.nn.softmax(3 * jax.random.normal(jax.random.key(0), (8, 5, 4)))
    # Exact zeros: one-hot samples for the first input, a zero class for the second
    # (renormalized, so that every row is still a distribution).
    probs = probs.at[:, 0].set(jax.nn.one_hot(jnp.arange(8) % 4, 4))
    second = probs[:, 1].at[:, 3].set(0.0)
    return probs.at[:, 1].set(second / second.sum(-1, keepdims=True))


def test_entropy_decomposition_identity_and_reference_values():
    probs_t = sampled_probs()
    u = jax.jit(dl.uncertainty.classification)(probs_t)
    chex.assert_shape((u.mean, u.variance), (5, 4))
    chex.assert_shape((u.predictive_entropy, u.expected_entropy, u.mutual_information), (5,))
    np.testing.assert_allclose(
        u.predictive_entropy, u.expected_entropy + u.mutual_information, rtol=0, atol=1e-6
    )
    assert bool(jnp.all(u.mutual_information >= 0))

    # Float64 references with 0 log 0 = 0.
    p = np.asarray(probs_t, np.float64)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
    mean = p.mean(0)
    total = -np.sum(np.where(mean > 0, mean * np.log(np.where(mean > 0, mean, 1)), 0), -1)
    expected = -plogp.sum(-1).mean(0)
    np.testing.assert_allclose(u.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(u.predictive_entropy, total, rtol=1e-5)
    np.testing.assert_allclose(u.expected_entropy, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u.variance, p.var(0), rtol=1e-5, atol=1e-7)
    # One-hot samples spread evenly over 4 classes: no aleatoric part, all epistemic.
    assert float(u.expected_entropy[0]) == 0.0
    np.testing.assert_allclose(u.mutual_information[0], math.log(4), rtol=1e-6)


def test_agreeing_samples_have_zero_mutual_information():
    p = jax.nn.softmax(jax.random.normal(jax.random.key(1), (3, 5)))
    u = jax.jit(dl.uncertainty.classification)(jnp.broadcast_to(p, (8, 3, 5)))
    # Only the rounding of the mean over 8 equal rows (a few ulp of log 5 ~ 1.6) remains.
    np.testing.assert_allclose(u.mutual_information, 0.0, atol=4e-7)
    np.testing.assert_allclose(u.predictive_entropy, u.expected_entropy, rtol=4e-7)


def test_entropy_gradient_is_finite_at_zero_probabilities():
    grad = jax.jit(
        jax.grad(lambda p: jnp.sum(dl.uncertainty.classification(p).mutual_information))
    )(sampled_probs())
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_classification_rejects_bad_input():
    with pytest.raises(ValueError, match="num_samples"):
        dl.uncertainty.classification(jnp.ones(3))
    with pytest.raises(TypeError, match="floating"):
        dl.uncertainty.classification(jnp.ones((2, 3, 3), jnp.int32))


def test_classification_requires_the_sample_axis():
    # One distribution per example [batch, classes] would silently be read as `batch`
    # samples of one input.
    probs = sampled_probs()
    with pytest.raises(ValueError, match="sample axis is missing"):
        dl.uncertainty.classification(probs[0])
    with pytest.raises(ValueError, match="sample axis is missing"):
        jax.jit(dl.uncertainty.classification)(probs[0])
    # T samples of one input: add the batch axis.
    u = dl.uncertainty.classification(probs[:, 0][:, None])
    chex.assert_shape(u.mutual_information, (1,))
    np.testing.assert_allclose(u.mutual_information[0], math.log(4), rtol=1e-6)


LOGITS_T = 3 * jax.random.normal(jax.random.key(7), (8, 5, 4))


@pytest.mark.parametrize(
    "fn",
    [dl.uncertainty.classification, dl.uncertainty.entropy],
    ids=["classification", "entropy"],
)
def test_logits_and_unnormalized_rows_are_refused(fn):
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*jax\.nn\.softmax"):
        fn(LOGITS_T)
    # In [0, 1] but not summing to 1 (e.g. per-class sigmoids).
    with pytest.raises(ValueError, match=r"sums along axis -1.*jax\.nn\.softmax"):
        fn(jax.nn.sigmoid(LOGITS_T))
    # A traced array cannot be inspected: the check is skipped under jit (documented).
    jax.jit(fn)(LOGITS_T)


def test_probability_tolerance():
    # Tolerance (num_classes + 16) * eps: 20 * 2**-23 = 2.4e-6 for 4 float32 classes.
    tol = 20 * float(jnp.finfo(jnp.float32).eps)
    base = jnp.full((2, 1, 4), 0.25)
    for excess, ok in ((tol / 2, True), (2 * tol, False), (-2 * tol, False)):
        probs = base.at[..., 0].add(excess)
        if ok:
            dl.uncertainty.classification(probs)
        else:
            with pytest.raises(ValueError, match="not a probability distribution"):
                dl.uncertainty.classification(probs)
    with pytest.raises(ValueError, match="outside"):
        dl.uncertainty.classification(base.at[..., 0].set(-2 * tol).at[..., 1].add(2 * tol))
    # Float32 softmax outputs and their means over MC passes always pass (the largest
    # rounding seen is a few eps), also with many classes and in half precision.
    for dtype, classes in ((jnp.float32, 2), (jnp.float32, 1000), (jnp.bfloat16, 10)):
        logits = 20 * jax.random.normal(jax.random.key(classes), (32, 8, classes), dtype)
        probs_t = jax.nn.softmax(logits)
        dl.uncertainty.entropy(probs_t)
        dl.uncertainty.entropy(jnp.mean(probs_t, axis=0))
    # NaN propagates (a diverged model), as elsewhere in JAX; it is not taken for logits.
    u = dl.uncertainty.classification(sampled_probs().at[0, 2, 1].set(jnp.nan))
    assert bool(jnp.isnan(u.mean[2, 1])) and bool(jnp.all(jnp.isfinite(u.mean[3])))


def test_entropy_checks_along_its_axis():
    probs = jax.nn.softmax(LOGITS_T, axis=0)
    chex.assert_shape(dl.uncertainty.entropy(probs, axis=0), (5, 4))
    with pytest.raises(ValueError, match="along axis -1"):
        dl.uncertainty.entropy(probs)


def test_regression_moments():
    means_t = np.asarray(jax.random.normal(jax.random.key(2), (10, 7)))
    log_var_t = np.asarray(jax.random.normal(jax.random.key(3), (10, 7)))
    u = dl.uncertainty.regression(means_t, tau=4.0)
    np.testing.assert_allclose(u.mean, means_t.mean(0), rtol=1e-6)
    np.testing.assert_allclose(u.epistemic, means_t.var(0), rtol=1e-5)
    np.testing.assert_allclose(u.variance, 0.25 + means_t.var(0), rtol=1e-5)
    h = dl.uncertainty.regression(means_t, log_variances_t=log_var_t)
    np.testing.assert_allclose(h.aleatoric, np.exp(log_var_t).mean(0), rtol=1e-5)
    np.testing.assert_allclose(h.variance, np.exp(log_var_t).mean(0) + means_t.var(0), rtol=1e-5)
    np.testing.assert_allclose(
        dl.uncertainty.regression(means_t, tau=jnp.inf).variance, means_t.var(0), rtol=1e-5
    )
    for kwargs in ({}, {"tau": 1.0, "log_variances_t": log_var_t}):
        with pytest.raises(ValueError, match="exactly one"):
            dl.uncertainty.regression(means_t, **kwargs)


def test_mc_log_likelihood_matches_gal_uci_formula():
    means_t = np.asarray(jax.random.normal(jax.random.key(4), (20, 9)), np.float64)
    targets = np.asarray(jax.random.normal(jax.random.key(5), (9,)), np.float64)
    tau = 2.5
    # yaringal/DropoutUncertaintyExps net/net.py
    expected = np.mean(
        logsumexp(-0.5 * tau * (targets[None] - means_t) ** 2, 0)
        - np.log(20)
        - 0.5 * np.log(2 * np.pi)
        + 0.5 * np.log(tau)
    )
    got = jax.jit(dl.uncertainty.mc_log_likelihood)(means_t, targets, tau)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    per_point = dl.uncertainty.mc_log_likelihood(means_t, targets, tau, reduction="none")
    chex.assert_shape(per_point, (9,))
    np.testing.assert_allclose(
        dl.uncertainty.mc_log_likelihood(means_t, targets, tau, reduction="sum"),
        9 * expected,
        rtol=1e-5,
    )
    # Heteroscedastic: log of the equal-weight Gaussian mixture.
    log_var_t = np.asarray(jax.random.normal(jax.random.key(6), (20, 9)), np.float64)
    mixture = np.log(np.mean(norm.pdf(targets, means_t, np.exp(0.5 * log_var_t)), 0)).mean()
    np.testing.assert_allclose(
        dl.uncertainty.mc_log_likelihood(means_t, targets, log_variances_t=log_var_t),
        mixture,
        rtol=1e-5,
    )


def test_mc_log_likelihood_is_stable_far_from_the_data():
    # exp(-0.5 * 1e4 * 10**2) underflows to 0 in any float: a naive log-mean-exp is -inf.
    means_t = jnp.zeros((5, 1)) + jnp.arange(5.0)[:, None] * 1e-3
    ll = dl.uncertainty.mc_log_likelihood(means_t, jnp.array([10.0]), 1e4)
    expected = -0.5 * 1e4 * (10 - 4e-3) ** 2 - math.log(5) - 0.5 * math.log(2 * math.pi / 1e4)
    assert math.isfinite(float(ll))
    np.testing.assert_allclose(ll, expected, rtol=1e-4)


def test_predictive_log_probs_is_the_log_of_the_mean_and_exact_below_underflow():
    logits_t = 3 * jax.random.normal(jax.random.key(7), (8, 5, 4))
    log_probs_t = jax.nn.log_softmax(logits_t)
    got = jax.jit(dl.uncertainty.predictive_log_probs)(log_probs_t)
    chex.assert_shape(got, (5, 4))
    np.testing.assert_allclose(
        got, jnp.log(dl.uncertainty.classification(jnp.exp(log_probs_t)).mean), atol=1e-6
    )
    # One pass: returned unchanged, bit for bit (a deterministic prediction as T = 1).
    assert bool(jnp.all(dl.uncertainty.predictive_log_probs(log_probs_t[:1]) == log_probs_t[0]))
    # Class 0 has log-probability -200 and -300 in the two passes: exp underflows to 0
    # in float32, the log-mean is -200 + log((1 + e^-100) / 2) = -200 - log 2.
    two = jax.nn.log_softmax(jnp.array([[[-200.0, 0.0]], [[-300.0, 0.0]]]))
    np.testing.assert_allclose(
        dl.uncertainty.predictive_log_probs(two)[0, 0], -200 - math.log(2), rtol=1e-6
    )
    with pytest.raises(ValueError, match="sample axis"):
        dl.uncertainty.predictive_log_probs(log_probs_t[0])
    with pytest.raises(ValueError, match="log_softmax"):
        dl.uncertainty.predictive_log_probs(logits_t)
