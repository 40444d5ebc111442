import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl
from dropout_lab import metrics


@jax.jit
def selective(confidence, correct):
    return (
        metrics.risk_coverage(confidence, correct),
        metrics.aurc(confidence, correct),
        metrics.augrc(confidence, correct),
    )


def by_definition(confidence, correct):
    """Tie-free data: sort by confidence, errors accepted among the k most confident."""
    order = np.argsort(-confidence)
    errors = np.cumsum(~correct[order])
    k = np.arange(1, len(confidence) + 1)
    risk = errors / k
    generalized = errors / len(confidence)
    # Trapezoid through (0, 0) and (k/N, E_k/N).
    area = np.trapezoid(np.concatenate([[0.0], generalized]), np.concatenate([[0.0], k / k[-1]]))
    return risk, generalized, risk.mean(), area


def test_risk_coverage_aurc_augrc_against_their_definition_on_tie_free_data():
    rng = np.random.default_rng(0)
    confidence = rng.permutation(64).astype(np.float32) / 64  # distinct values
    correct = rng.random(64) < 0.7
    rc, aurc, augrc = selective(confidence, correct)
    risk, generalized, aurc_def, augrc_def = by_definition(confidence, correct)
    chex.assert_shape(rc.coverage, (64,))
    np.testing.assert_allclose(rc.coverage, np.arange(1, 65) / 64, rtol=1e-6)
    np.testing.assert_allclose(rc.risk, risk, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rc.generalized_risk, generalized, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(aurc, aurc_def, rtol=1e-6)
    np.testing.assert_allclose(augrc, augrc_def, rtol=1e-6)


def test_small_cases_by_hand():
    # Confidences 0.9 > 0.8 > 0.7, the middle one wrong: risks 0, 1/2, 1/3.
    rc, aurc, augrc = selective(jnp.array([0.7, 0.9, 0.8]), jnp.array([True, True, False]))
    np.testing.assert_allclose(rc.risk, [0, 1 / 2, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(aurc, (0 + 1 / 2 + 1 / 3) / 3, rtol=1e-6)
    # Generalized risks 0, 1/3, 1/3: trapezoids (0 + 1/6 + 1/3) / 3 = 1/6.
    np.testing.assert_allclose(augrc, 1 / 6, rtol=1e-6)
    # Two tied, one of them wrong: either order is equally likely, risk (0 or 1) then 1/2.
    rc, aurc, augrc = selective(jnp.array([0.5, 0.5, 0.2]), jnp.array([True, False, False]))
    np.testing.assert_allclose(rc.risk, [1 / 2, 1 / 2, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(aurc, (1 / 2 + 1 / 2 + 2 / 3) / 3, rtol=1e-6)
    # Generalized risks 1/6, 1/3, 2/3: trapezoids (1/12 + 1/4 + 1/2) / 3.
    np.testing.assert_allclose(augrc, (1 / 12 + 1 / 4 + 1 / 2) / 3, rtol=1e-6)
    # Perfect ranking, the error last: AURC = (1/N) sum_{k > S} (k - S) / k = 1/9.
    _, aurc, augrc = selective(jnp.array([1.0, 0.5, 0.0]), jnp.array([True, True, False]))
    np.testing.assert_allclose(aurc, 1 / 9, rtol=1e-6)
    np.testing.assert_allclose(augrc, 1 / 18, rtol=1e-6)  # (1 - a)^2 / 2, AUROC_f = 1


def test_ties_are_order_independent_and_average_over_tie_orders():
    rng = np.random.default_rng(1)
    confidence = rng.integers(0, 3, 8).astype(np.float32) / 2  # three tied groups
    correct = rng.random(8) < 0.5
    rc, aurc, augrc = selective(confidence, correct)
    # Any permutation of the inputs gives the same curve, bit for bit.
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(8)
        other = selective(confidence[perm], correct[perm])
        chex.assert_trees_all_equal(other, (rc, aurc, augrc))
    # Breaking the ties with a tiny jitter, every tie order is one tie-free ranking: the
    # tied value is the mean of the tie-free values over all of them.
    groups = [np.flatnonzero(confidence == v) for v in np.unique(confidence)]
    values = []
    for orders in itertools.product(*(itertools.permutations(g) for g in groups)):
        jitter = np.zeros(8)
        for order in orders:
            jitter[list(order)] = -np.arange(len(order)) * 1e-3
        _, _, aurc_def, augrc_def = by_definition(confidence + jitter, correct)
        values.append((aurc_def, augrc_def))
    np.testing.assert_allclose((aurc, augrc), np.mean(values, axis=0), rtol=1e-5)


def pairwise_auroc(scores, positive):
    """P(score of a positive > score of a negative), ties counting one half."""
    diff = scores[positive][:, None] - scores[~positive][None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0))


def test_augrc_is_the_risk_of_an_undetected_failure():
    # Traub et al.: AUGRC = (1 - AUROC_f) a (1 - a) + (1 - a)^2 / 2, ties included.
    rng = np.random.default_rng(2)
    confidence = np.round(rng.random(64), 1).astype(np.float32)
    correct = rng.random(64) < 0.7
    a = correct.mean()
    separation = pairwise_auroc(confidence, correct)
    _, _, augrc = selective(confidence, correct)
    np.testing.assert_allclose(augrc, (1 - separation) * a * (1 - a) + (1 - a) ** 2 / 2, rtol=1e-5)


def test_selective_validates_shapes():
    with pytest.raises(ValueError, match="same"):
        metrics.aurc(jnp.ones(3), jnp.ones(4))
    with pytest.raises(TypeError, match="floating"):
        metrics.augrc(jnp.ones(3, jnp.int32), jnp.ones(3))


def test_ood_scores_definitions_and_sign_convention():
    rng = np.random.default_rng(3)
    # In-distribution: peaked, agreeing passes. Out: flat, disagreeing passes.
    logits_in = 6.0 * np.eye(4, dtype=np.float32)[rng.integers(0, 4, 16)]
    logits_in = np.broadcast_to(logits_in, (5, 16, 4)) + 0.1 * rng.standard_normal((5, 16, 4))
    logits_out = 0.5 * rng.standard_normal((5, 16, 4)).astype(np.float32)
    logits_t = jnp.asarray(np.concatenate([logits_in, logits_out], axis=1), jnp.float32)
    is_in = np.arange(32) < 16

    @jax.jit
    def scores(logits_t):
        probs_t = jax.nn.softmax(logits_t)
        mean = probs_t.mean(0)
        got = {
            "max_softmax": metrics.max_softmax(mean),
            "negative_entropy": metrics.negative_entropy(mean),
            "negative_mutual_information": metrics.negative_mutual_information(probs_t),
            "negative_energy": jnp.mean(metrics.negative_energy(logits_t, 2.0), axis=0),
        }
        # Usable with the ranking metrics either way round.
        aurocs = {n: (metrics.auroc(s, is_in), metrics.auroc(-s, ~is_in)) for n, s in got.items()}
        return got, aurocs

    got, aurocs = scores(logits_t)
    probs_t = np.asarray(jax.nn.softmax(logits_t), np.float64)
    mean = probs_t.mean(0)

    def entropy(p):
        return -np.sum(p * np.log(p), axis=-1)

    z = np.asarray(logits_t, np.float64)
    expected = {
        "max_softmax": mean.max(-1),
        "negative_entropy": -entropy(mean),
        "negative_mutual_information": -(entropy(mean) - entropy(probs_t).mean(0)),
        "negative_energy": (2.0 * np.log(np.exp(z / 2.0).sum(-1))).mean(0),
    }
    for name, value in expected.items():
        chex.assert_shape(got[name], (32,))
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
        # Higher = more in-distribution: every in-distribution input outscores every
        # OOD one, whichever way round the AUROC is asked.
        assert pairwise_auroc(np.asarray(got[name]), is_in) == 1.0
        np.testing.assert_allclose(aurocs[name], 1.0)
    # The scores reuse the uncertainty definitions.
    u = dl.uncertainty.classification(jax.nn.softmax(logits_t))
    np.testing.assert_allclose(got["negative_entropy"], -u.predictive_entropy, rtol=1e-6)
