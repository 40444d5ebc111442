import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import dropout_lab as dl

LOGITS_A = jax.random.normal(jax.random.key(0), (6, 5))
LOGITS_B = jax.random.normal(jax.random.key(1), (6, 5))
LABELS = jnp.array([0, 1, 2, 3, 4, 0])


def test_rdrop_hand_computed_case():
    # p_a = (1/2, 1/2), p_b = (3/4, 1/4), label 0, alpha = 2.
    logits_a = jnp.array([[0.0, 0.0]])
    logits_b = jnp.array([[math.log(3.0), 0.0]])
    ce_a, ce_b = math.log(2), -math.log(0.75)
    kl_ab = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl_ba = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = ce_a + ce_b + 2.0 * (kl_ab + kl_ba) / 2
    got = dl.losses.rdrop(logits_a, logits_b, jnp.array([0]), alpha=2.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(
        dl.losses.symmetric_kl(logits_a, logits_b), [(kl_ab + kl_ba) / 2], rtol=1e-6
    )


def test_rdrop_is_symmetric_and_kl_vanishes_for_equal_passes():
    loss = jax.jit(lambda a, b: dl.losses.rdrop(a, b, LABELS, alpha=1.5, reduction="none"))
    np.testing.assert_array_equal(loss(LOGITS_A, LOGITS_B), loss(LOGITS_B, LOGITS_A))
    np.testing.assert_array_equal(dl.losses.symmetric_kl(LOGITS_A, LOGITS_A), 0.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(LOGITS_A, LABELS)
    np.testing.assert_allclose(loss(LOGITS_A, LOGITS_A), 2 * ce, rtol=1e-6)


def test_labels_smoothing_and_reductions():
    one_hot = jax.nn.one_hot(LABELS, 5)
    base = dl.losses.rdrop(LOGITS_A, LOGITS_B, LABELS, alpha=0.7, reduction="none")
    chex.assert_shape(base, (6,))
    np.testing.assert_allclose(
        dl.losses.rdrop(LOGITS_A, LOGITS_B, one_hot, alpha=0.7, reduction="none"), base, rtol=1e-6
    )
    np.testing.assert_allclose(
        dl.losses.rdrop(LOGITS_A, LOGITS_B, LABELS, alpha=0.7), base.mean(), rtol=1e-6
    )
    np.testing.assert_allclose(
        dl.losses.rdrop(LOGITS_A, LOGITS_B, LABELS, alpha=0.7, reduction="sum"),
        base.sum(),
        rtol=1e-6,
    )
    smooth = optax.smooth_labels(one_hot, 0.1)
    expected = (
        optax.softmax_cross_entropy(LOGITS_A, smooth)
        + optax.softmax_cross_entropy(LOGITS_B, smooth)
        + 0.7 * dl.losses.symmetric_kl(LOGITS_A, LOGITS_B)
    )
    np.testing.assert_allclose(
        dl.losses.rdrop(
            LOGITS_A, LOGITS_B, LABELS, alpha=0.7, label_smoothing=0.1, reduction="none"
        ),
        expected,
        rtol=1e-6,
    )


def test_mask_excludes_padding_even_when_it_is_nan():
    logits_a = jax.random.normal(jax.random.key(2), (2, 4, 3))
    logits_b = jax.random.normal(jax.random.key(3), (2, 4, 3))
    labels = jnp.array([[0, 1, 2, 0], [1, 1, 0, 0]])
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    poisoned = logits_a.at[~mask].set(jnp.nan)
    kept = dl.losses.rdrop(logits_a, logits_b, labels, alpha=1.0, reduction="none")[mask]
    got = dl.losses.rdrop(poisoned, logits_b, labels, alpha=1.0, mask=mask)
    np.testing.assert_allclose(got, kept.mean(), rtol=1e-6)
    per_token = dl.losses.rdrop(poisoned, logits_b, labels, alpha=1.0, mask=mask, reduction="none")
    np.testing.assert_array_equal(per_token[~mask], 0.0)
    empty = dl.losses.rdrop(logits_a, logits_b, labels, alpha=1.0, mask=jnp.zeros((2, 4), bool))
    assert float(empty) == 0.0


def test_repository_readme_convention_maps_onto_rdrop():
    # 0.5 * (CE_a.mean() + CE_b.mean()) + a' * sum over the batch of the symmetric KL.
    alpha_repo, batch = 0.3, LOGITS_A.shape[0]
    ce_a = optax.softmax_cross_entropy_with_integer_labels(LOGITS_A, LABELS)
    ce_b = optax.softmax_cross_entropy_with_integer_labels(LOGITS_B, LABELS)
    readme = 0.5 * (ce_a.mean() + ce_b.mean()) + alpha_repo * jnp.sum(
        dl.losses.symmetric_kl(LOGITS_A, LOGITS_B)
    )
    ours = 0.5 * dl.losses.rdrop(LOGITS_A, LOGITS_B, LABELS, alpha=2 * batch * alpha_repo)
    np.testing.assert_allclose(ours, readme, rtol=1e-6)


def test_rdrop_gradients():
    def loss(a, b):
        return dl.losses.rdrop(a, b, LABELS, alpha=0.5, label_smoothing=0.1)

    check_grads(loss, (LOGITS_A, LOGITS_B), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


def test_rdrop_regression_hand_case():
    pred_a = jnp.array([1.0, 2.0])
    pred_b = jnp.array([0.0, 4.0])
    targets = jnp.array([1.0, 1.0])
    # per element: (0 + 1 + 3 * 1, 1 + 9 + 3 * 4) = (4, 22)
    none = dl.losses.rdrop_regression(pred_a, pred_b, targets, alpha=3.0, reduction="none")
    np.testing.assert_allclose(none, [4.0, 22.0])
    np.testing.assert_allclose(dl.losses.rdrop_regression(pred_a, pred_b, targets, alpha=3.0), 13.0)
    np.testing.assert_allclose(
        dl.losses.rdrop_regression(
            pred_a, pred_b, targets, alpha=3.0, mask=jnp.array([False, True])
        ),
        22.0,
    )
    with pytest.raises(ValueError, match="same shape"):
        dl.losses.rdrop_regression(pred_a, pred_b, jnp.ones(3), alpha=1.0)


def test_rdrop_forward_is_one_pass_over_the_doubled_batch():
    x = jax.random.normal(jax.random.key(4), (4, 32)) + 3.0  # no exact zeros

    def apply(xx, k):
        return dl.dropout(k, xx, 0.5)

    key = jax.random.key(5)
    a, b = jax.jit(lambda x, k: dl.losses.rdrop_forward(apply, x, k))(x, key)
    both = jax.jit(apply)(jnp.concatenate([x, x]), key)
    np.testing.assert_array_equal(a, both[:4])
    np.testing.assert_array_equal(b, both[4:])
    # Independent masks per half: the kept patterns differ (P(equal) = 2**-128).
    assert not np.array_equal(np.asarray(a) == 0, np.asarray(b) == 0)


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic):
        x = dl.linen.Dropout(0.3)(nn.Dense(16)(x), deterministic=deterministic)
        return nn.Dense(3)(x)


def test_rdrop_forward_with_a_linen_apply_and_grad():
    model = Classifier()
    x = jax.random.normal(jax.random.key(6), (5, 4))
    labels = jnp.array([0, 1, 2, 0, 1])
    params = jax.jit(lambda k: model.init(k, x, deterministic=True))(jax.random.key(7))

    def loss_fn(params, key):
        def apply(xx, k):
            return model.apply(params, xx, deterministic=False, rngs={"dropout": k})

        logits_a, logits_b = dl.losses.rdrop_forward(apply, x, key)
        return dl.losses.rdrop(logits_a, logits_b, labels, alpha=1.0)

    key = jax.random.key(8)
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, key)
    both = jax.jit(lambda p, xx, k: model.apply(p, xx, deterministic=False, rngs={"dropout": k}))(
        params, jnp.concatenate([x, x]), key
    )
    expected = dl.losses.rdrop(both[:5], both[5:], labels, alpha=1.0)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(jnp.sum(jnp.abs(both[:5] - both[5:]))) > 0
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
