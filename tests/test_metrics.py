import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

import dropout_lab as dl

NUM, CLASSES = 300, 4
PROBS = jax.nn.softmax(2 * jax.random.normal(jax.random.key(0), (NUM, CLASSES)))
LABELS = jax.random.randint(jax.random.key(1), (NUM,), 0, CLASSES)


def test_accuracy_nll_brier_match_sklearn():
    probs, labels = np.asarray(PROBS), np.asarray(LABELS)
    np.testing.assert_allclose(
        jax.jit(dl.metrics.accuracy)(PROBS, LABELS), skm.accuracy_score(labels, probs.argmax(-1))
    )
    np.testing.assert_allclose(
        jax.jit(dl.metrics.nll)(PROBS, LABELS),
        skm.log_loss(labels, probs, labels=range(CLASSES)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        jax.jit(dl.metrics.brier)(PROBS, LABELS),
        skm.brier_score_loss(labels, probs, labels=range(CLASSES)),
        rtol=1e-5,
    )
    # Two classes: the summed-over-classes score is sklearn's unscaled binary score.
    binary = jnp.stack([1 - PROBS[:, 0], PROBS[:, 0]], axis=-1)
    is_zero = (LABELS == 0).astype(jnp.int32)
    np.testing.assert_allclose(
        dl.metrics.brier(binary, is_zero),
        skm.brier_score_loss(np.asarray(is_zero), probs[:, 0], scale_by_half=False),
        rtol=1e-5,
    )


def test_leading_dims_are_examples_and_nll_is_finite_at_zero():
    chex.assert_trees_all_close(
        dl.metrics.nll(PROBS.reshape(3, 100, CLASSES), LABELS.reshape(3, 100)),
        dl.metrics.nll(PROBS, LABELS),
        rtol=1e-6,
    )
    zero = dl.metrics.nll(jnp.array([[1.0, 0.0]]), jnp.array([1]))
    np.testing.assert_allclose(zero, -math.log(np.finfo(np.float32).eps), rtol=1e-6)


# Hand example, 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]:
#   conf .9 correct, .8 wrong -> bin 3: acc .5, conf .85, 2 of 5 -> .35 * 2/5 = .14
#   conf .6 correct, .7 correct -> bin 2: acc 1, conf .65, 2 of 5 -> .35 * 2/5 = .14
#   conf .5 (tie, argmax = class 0) wrong -> bin 1 (right-closed): .5 * 1/5 = .10
HAND_PROBS = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.5, 0.5], [0.3, 0.7]])
HAND_LABELS = jnp.array([0, 1, 0, 1, 1])


def test_ece_and_reliability_diagram_by_hand():
    np.testing.assert_allclose(dl.metrics.ece(HAND_PROBS, HAND_LABELS, num_bins=4), 0.38, rtol=1e-6)
    r = dl.metrics.reliability_diagram(HAND_PROBS, HAND_LABELS, num_bins=4)
    np.testing.assert_array_equal(r.count, [0, 1, 2, 2])
    np.testing.assert_allclose(r.confidence, [np.nan, 0.5, 0.65, 0.85], rtol=1e-6)
    np.testing.assert_allclose(r.accuracy, [np.nan, 0.0, 1.0, 0.5])
    np.testing.assert_allclose(r.edges, [0, 0.25, 0.5, 0.75, 1])


def reference_ece(probs, labels, num_bins):
    # Guo et al.'s loop: bins (lower, upper] over np.linspace(0, 1, num_bins + 1).
    edges = np.linspace(0, 1, num_bins + 1, dtype=np.float32)
    conf, correct = probs.max(-1), probs.argmax(-1) == labels
    total = 0.0
    for lower, upper in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lower) & (conf <= upper)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


def reference_classwise_ece(probs, labels, num_bins):
    edges = np.linspace(0, 1, num_bins + 1, dtype=np.float32)
    total = 0.0
    for c in range(probs.shape[-1]):
        p, y = probs[:, c], labels == c
        for m, (lower, upper) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            in_bin = (p <= upper) & ((p > lower) | (m == 0))
            if in_bin.any():
                total += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
    return total / probs.shape[-1]


def test_ece_and_classwise_ece_match_loop_references():
    probs, labels = np.asarray(PROBS), np.asarray(LABELS)
    np.testing.assert_allclose(
        jax.jit(dl.metrics.ece)(PROBS, LABELS), reference_ece(probs, labels, 15), rtol=1e-5
    )
    np.testing.assert_allclose(
        jax.jit(dl.metrics.classwise_ece, static_argnames="num_bins")(PROBS, LABELS, num_bins=10),
        reference_classwise_ece(probs, labels, 10),
        rtol=1e-5,
    )


def test_auroc_aupr_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    s = np.round(rng.uniform(size=NUM), 1).astype(np.float32)  # 11 distinct values: ties
    y = rng.uniform(size=NUM) < 0.3 + 0.4 * s
    scores, is_pos = jnp.asarray(s), jnp.asarray(y)
    np.testing.assert_allclose(
        jax.jit(dl.metrics.auroc)(scores, is_pos), skm.roc_auc_score(y, s), rtol=1e-6
    )
    np.testing.assert_allclose(
        jax.jit(dl.metrics.aupr)(scores, is_pos), skm.average_precision_score(y, s), rtol=1e-6
    )
    # All scores tied: chance level for both.
    flat = jnp.zeros(NUM)
    np.testing.assert_allclose(dl.metrics.auroc(flat, is_pos), 0.5)
    np.testing.assert_allclose(dl.metrics.aupr(flat, is_pos), y.mean(), rtol=1e-6)


def test_ranking_by_hand_with_infinite_scores():
    # Positive at +inf ties the negative at +inf: AUROC (1/2 + 1) / 2; AP = 1/2.
    scores = jnp.array([jnp.inf, jnp.inf, 1.0])
    is_pos = jnp.array([True, False, False])
    np.testing.assert_allclose(dl.metrics.auroc(scores, is_pos), 0.75)
    np.testing.assert_allclose(dl.metrics.aupr(scores, is_pos), 0.5)
    assert math.isnan(float(dl.metrics.auroc(scores, jnp.zeros(3, bool))))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="labels must have shape"):
        dl.metrics.ece(PROBS, LABELS[:10])
    with pytest.raises(TypeError, match="integer"):
        dl.metrics.nll(PROBS, LABELS.astype(jnp.float32))
    with pytest.raises(ValueError, match="num_bins"):
        dl.metrics.ece(PROBS, LABELS, num_bins=0)
    with pytest.raises(ValueError, match="must match"):
        dl.metrics.auroc(jnp.zeros(3), jnp.zeros(4, bool))


LOGITS = 2 * jax.random.normal(jax.random.key(0), (NUM, CLASSES))
PROBABILITY_METRICS = [
    dl.metrics.nll,
    dl.metrics.brier,
    dl.metrics.ece,
    dl.metrics.classwise_ece,
    dl.metrics.reliability_diagram,
]


@pytest.mark.parametrize("metric", PROBABILITY_METRICS, ids=lambda f: f.__name__)
def test_probability_metrics_refuse_logits(metric):
    # ece(logits, labels) used to return 1.33, outside its own range [0, 1].
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*jax\.nn\.softmax"):
        metric(LOGITS, LABELS)
    with pytest.raises(ValueError, match=r"sums along axis -1"):
        metric(jax.nn.sigmoid(LOGITS), LABELS)
    # Probabilities pass, in float32 and bfloat16; traced values cannot be checked.
    metric(PROBS, LABELS)
    metric(jax.nn.softmax(LOGITS.astype(jnp.bfloat16)), LABELS)
    jax.jit(metric)(LOGITS, LABELS)


def test_accuracy_takes_logits():
    np.testing.assert_allclose(
        dl.metrics.accuracy(LOGITS, LABELS), dl.metrics.accuracy(PROBS, LABELS)
    )


def test_nll_from_log_probs_is_exact_where_nll_clips():
    # Above eps both agree with scikit-learn's log_loss.
    np.testing.assert_allclose(
        jax.jit(dl.metrics.nll_from_log_probs)(jax.nn.log_softmax(LOGITS), LABELS),
        dl.metrics.nll(jax.nn.softmax(LOGITS), LABELS),
        rtol=1e-5,
    )
    # Label probability e^-40 < float32 eps (1.2e-7): the exact NLL is 40 nats; nll's
    # clip reports -log(eps) = 15.9. A zero probability is an infinite NLL.
    logits = jnp.array([[0.0, 40.0]])
    assert float(dl.metrics.nll_from_log_probs(jax.nn.log_softmax(logits), jnp.array([0]))) == 40.0
    np.testing.assert_allclose(
        dl.metrics.nll(jax.nn.softmax(logits), jnp.array([0])), -math.log(np.finfo(np.float32).eps)
    )
    assert dl.metrics.nll_from_log_probs(jnp.array([[0.0, -jnp.inf]]), jnp.array([1])) == jnp.inf
    chex.assert_trees_all_close(
        dl.metrics.nll_from_log_probs(
            jax.nn.log_softmax(LOGITS).reshape(3, 100, CLASSES), LABELS.reshape(3, 100)
        ),
        dl.metrics.nll_from_log_probs(jax.nn.log_softmax(LOGITS), LABELS),
    )


def test_nll_from_log_probs_refuses_logits_and_probs():
    with pytest.raises(ValueError, match=r"above 0.*jax\.nn\.log_softmax"):
        dl.metrics.nll_from_log_probs(LOGITS, LABELS)
    with pytest.raises(ValueError, match="logsumexp along axis -1"):
        dl.metrics.nll_from_log_probs(jax.nn.log_softmax(LOGITS) - 1.0, LABELS)
    with pytest.raises(TypeError, match="integer"):
        dl.metrics.nll_from_log_probs(jax.nn.log_softmax(LOGITS), LABELS.astype(jnp.float32))
    jax.jit(dl.metrics.nll_from_log_probs)(LOGITS, LABELS)  # traced: cannot be checked


def test_rmse_by_hand():
    np.testing.assert_allclose(
        dl.metrics.rmse(jnp.array([1.0, 3.0, -1.0]), jnp.array([1.0, 1.0, 1.0])),
        math.sqrt(8 / 3),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="same shape"):
        dl.metrics.rmse(jnp.zeros(3), jnp.zeros((3, 1)))
