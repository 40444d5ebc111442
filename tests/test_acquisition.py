import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen

import dropout_lab as dl
from dropout_lab import acquisition as acq


def dirichlet_probs(seed, shape, alpha=0.5):
    return np.random.default_rng(seed).dirichlet(np.full(shape[-1], alpha), shape[:-1])


def entropy_np(p):
    p = np.asarray(p, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=-1)


# ---------------------------------------------------------------- scores


def test_scores_match_direct_formulas():
    probs = dirichlet_probs(0, (7, 9, 4))
    probs_t = jnp.asarray(probs, jnp.float32)
    mean = probs.mean(0)
    top = np.sort(mean, axis=-1)[:, ::-1]
    votes = np.stack([np.bincount(np.argmax(probs[:, n], -1), minlength=4) for n in range(9)])
    expected = {
        "bald": entropy_np(mean) - entropy_np(probs).mean(0),
        "max_entropy": entropy_np(mean),
        "variation_ratio": 1 - votes.max(-1) / 7,
        "mean_std": np.sqrt(probs.var(0)).mean(-1),
        "margin": 1 - (top[:, 0] - top[:, 1]),
        "least_confidence": 1 - top[:, 0],
    }
    same = jnp.broadcast_to(probs_t[:1], probs_t.shape)  # every pass agrees
    got, agreed = jax.jit(
        lambda p, q: (
            {n: getattr(acq, n)(p) for n in expected},
            (acq.bald(q), acq.variation_ratio(q)),
        )
    )(probs_t, same)
    for name, value in expected.items():
        chex.assert_shape(got[name], (9,))
        np.testing.assert_allclose(got[name], value, atol=2e-6, err_msg=name)
    # BALD is the epistemic part: never above the total entropy, zero when passes agree.
    assert np.all(expected["bald"] <= expected["max_entropy"] + 1e-12)
    np.testing.assert_allclose(agreed[0], 0.0, atol=1e-6)
    np.testing.assert_array_equal(agreed[1], 0.0)


@pytest.mark.parametrize("name", ["bald", "max_entropy", "variation_ratio", "mean_std", "margin"])
def test_scores_reject_missing_sample_axis_and_logits(name):
    fn = getattr(acq, name)
    with pytest.raises(ValueError, match="num_samples"):
        fn(jnp.full((5, 3), 1 / 3))
    with pytest.raises(ValueError, match="softmax"):
        fn(jnp.ones((2, 5, 3)))


# ---------------------------------------------------------------- BatchBALD


def brute_force_batch_bald(probs, batch_size, mask=None):
    """Greedy BatchBALD with the joint entropy enumerated over all C^k label configurations."""
    num_passes, num_points, num_classes = probs.shape
    available = set(range(num_points)) if mask is None else set(np.flatnonzero(mask))
    expected_entropy = entropy_np(probs).mean(0)
    chosen, gaps = [], []
    for _ in range(batch_size):
        gains = np.full(num_points, -np.inf)
        for n in available - set(chosen):
            points = [*chosen, n]
            joint = np.zeros(num_classes ** len(points))
            for m, labels in enumerate(itertools.product(range(num_classes), repeat=len(points))):
                joint[m] = np.mean(np.prod(probs[:, points, labels], axis=1))
            gains[n] = entropy_np(joint) - expected_entropy[points].sum()
        ranked = np.sort(gains)[::-1]
        gaps.append(ranked[0] - ranked[1])
        chosen.append(int(np.argmax(gains)))
    return chosen, min(gaps)


def test_batch_bald_equals_brute_force_enumeration():
    # Three random pools, one with a pool mask, and a repeated pool (Repeated MNIST in
    # miniature: two points, three copies each), all of T=4, N=6, C=3, batch 3, scored
    # in one vmapped program with candidate chunks of 4 (lax.map with a remainder).
    pools = [dirichlet_probs(seed, (4, 6, 3)) for seed in (0, 3, 4, 0)]
    pools.append(np.tile(dirichlet_probs(0, (4, 2, 3), alpha=0.3), (1, 3, 1)))
    masks = np.ones((5, 6), bool)
    masks[3, [2, 3]] = False  # pool 3 is pool 0 without its first two picks
    probs_t = jnp.asarray(np.stack(pools), jnp.float32)
    got = jax.jit(
        jax.vmap(
            lambda p, m: acq.batch_bald(jax.random.key(0), p, 3, pool_mask=m, pool_chunk_size=4)
        )
    )(probs_t, jnp.asarray(masks))
    bald = jax.jit(jax.vmap(acq.bald))(probs_t)
    for i in range(4):
        expected, gap = brute_force_batch_bald(pools[i], 3, masks[i])
        assert gap > 1e-3  # the greedy choice is unambiguous in float32
        np.testing.assert_array_equal(got[i], expected)
        if i < 3:  # the first pick is BALD's argmax
            assert int(got[i][0]) == int(jnp.argmax(bald[i]))
    assert not set(np.asarray(got[3])) & {2, 3}
    # Repeated pool: top-k BALD takes three copies of one point; BatchBALD takes both
    # points (copies tie exactly, so compare the points, not which copy).
    assert len(set(np.asarray(acq.top_batch(bald[4], 3)) % 2)) == 1
    expected, _ = brute_force_batch_bald(pools[4], 3)
    np.testing.assert_array_equal(np.asarray(got[4]) % 2, np.array(expected) % 2)
    assert set(np.asarray(got[4]) % 2) == {0, 1}


def test_batch_bald_sampled_configurations():
    probs = dirichlet_probs(0, (4, 6, 3))
    probs_t = jnp.asarray(probs, jnp.float32)
    expected, gap = brute_force_batch_bald(probs, 3)
    assert gap > 0.04
    chosen = [0, 1, 2]

    @jax.jit
    def run(p):
        # Enumeration stops after the first pick: picks 2 and 3 sample 20000 configurations.
        picks = acq.batch_bald(jax.random.key(0), p, 3, num_samples=20000, max_configurations=1)
        log_probs_a = jnp.swapaxes(jnp.log(p[:, jnp.array(chosen)]), 0, 1)
        log_joint = acq._sampled_log_joint(jax.random.key(3), log_probs_a, jnp.ones(3, bool), 5000)
        weights, posterior, joint_entropy = acq._config_posterior(log_joint, exact=False)
        conditional = acq._conditional_entropy(jnp.swapaxes(p, 0, 1), weights, posterior, None)
        return picks, joint_entropy + conditional, log_joint, posterior

    picks, estimate, log_joint, posterior = run(probs_t)
    np.testing.assert_array_equal(picks, expected)
    # H(y_A, y_n) for A = {0, 1, 2} from M = 4 x 5000 sampled configurations of y_A,
    # against the exact enumeration. The estimate is the mean of f_m = -log q_m + H[r_m]
    # over a stratified sample of q, so its standard error is at most std(f) / sqrt(M):
    # allow 5 of them.
    log_q = np.asarray(jax.nn.logsumexp(log_joint, axis=0)) - math.log(4)
    for n in range(3, 6):
        points = [*chosen, n]
        joint = [
            np.mean(np.prod(probs[:, points, labels], axis=1))
            for labels in itertools.product(range(3), repeat=4)
        ]
        f = -log_q + entropy_np(np.asarray(posterior).T @ probs[:, n])
        bound = 5 * f.std() / math.sqrt(f.size)
        assert abs(float(estimate[n]) - entropy_np(np.array(joint))) < bound


# ---------------------------------------------------------------- batch selection


def test_top_batch_and_its_mask():
    scores = jnp.array([0.3, 0.9, 0.1, 0.7, 0.5])
    np.testing.assert_array_equal(acq.top_batch(scores, 3), [1, 3, 4])
    mask = jnp.array([True, False, True, True, True])
    np.testing.assert_array_equal(acq.top_batch(scores, 3, pool_mask=mask), [3, 4, 0])
    with pytest.raises(ValueError, match="batch_size"):
        acq.top_batch(scores, 6)


MODES = ("power", "softmax", "softrank")


def test_stochastic_batch_distinct_masked_distributed_and_greedy_limit():
    scores = jnp.concatenate([jnp.zeros(3), jnp.linspace(0.1, 1.0, 9)])
    mask = jnp.arange(12) % 4 != 1  # 9 available, 3 of them of score 0
    small = jnp.array([1.0, 2.0, 3.0, 4.0])
    uniform = jax.random.uniform(jax.random.key(1), (50,), minval=0.1)

    @jax.jit
    def run(keys):
        def batches(m):
            return jax.vmap(lambda k: acq.stochastic_batch(k, scores, 9, mode=m, pool_mask=mask))(
                keys[:100]
            )

        def first(m):
            return jax.vmap(lambda k: acq.stochastic_batch(k, small, 1, mode=m, beta=2.0)[0])(keys)

        greedy = acq.stochastic_batch(keys[0], uniform, 5, mode="power", beta=1e4)
        picks = {m: (batches(m), first(m)) for m in MODES}
        return picks, greedy, acq.top_batch(uniform, 5)

    picks, greedy, top = run(jax.random.split(jax.random.key(0), 20000))
    s = np.asarray(small, np.float64)
    weights = {"power": s**2, "softmax": np.exp(2 * s), "softrank": (5 - s) ** -2.0}
    for mode in MODES:
        batches, first = (np.asarray(x) for x in picks[mode])
        chex.assert_shape(batches, (100, 9))
        for row in batches:  # distinct, and exactly the available points
            assert sorted(row) == list(np.flatnonzero(np.asarray(mask)))
        assert len(set(batches[:, 0])) > 1  # random
        # With batch_size 1 the pick is one categorical draw with p_i proportional to the
        # mode's weight. Over n = 20000 keys a frequency has standard deviation
        # sqrt(p (1 - p) / n) <= 0.0036; allow 5 of them.
        freq = np.bincount(first, minlength=4) / 20000
        p = weights[mode] / weights[mode].sum()
        np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / 20000))
    # power with beta -> infinity is the top-k.
    np.testing.assert_array_equal(greedy, top)


def test_stochastic_batch_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        acq.stochastic_batch(jax.random.key(0), jnp.ones(4), 2, mode="greedy")


# ---------------------------------------------------------------- consistent MC and chunking

W = jax.random.normal(jax.random.key(7), (6, 3))


def shared_mask_fn(key, x):
    # One mask per pass for the whole batch: broadcast over the batch axis.
    return dl.dropout(key, x, 0.5, broadcast_dims=(0,))


def test_sample_pool_chunks_equal_whole_and_share_masks_across_points():
    x_pool = 1.0 + jnp.arange(10.0)[:, None] * jnp.ones((10, 6))  # row i is (i + 1)
    whole = dl.mc.sample_pool(shared_mask_fn, jax.random.key(0), x_pool, 5)
    chunked = jax.jit(
        lambda x: dl.mc.sample_pool(shared_mask_fn, jax.random.key(0), x, 5, pool_chunk_size=4)
    )(x_pool)
    chex.assert_shape(whole, (5, 10, 6))
    np.testing.assert_array_equal(chunked, whole)
    kept = np.asarray(whole) != 0  # [T, N, features]
    # Every point of pass t sees pass t's mask ...
    np.testing.assert_array_equal(kept, np.broadcast_to(kept[:, :1], kept.shape))
    # ... and the masks differ between passes.
    assert any(not np.array_equal(kept[0, 0], kept[t, 0]) for t in range(1, 5))
    # The pass keys are the ones of dl.mc.sample on the whole pool.
    direct = dl.mc.sample(lambda k: shared_mask_fn(k, x_pool), jax.random.key(0), 5)
    np.testing.assert_array_equal(whole, direct)


def test_score_pool_with_a_flax_model_chunked_equals_whole():
    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.relu(linen.Dense(16)(x))
            x = dl.linen.Dropout(0.3, broadcast_dims=(0,), deterministic=False)(x)
            return linen.Dense(3)(x)

    x_pool = jax.random.normal(jax.random.key(1), (20, 6))
    net = Net()
    params = jax.jit(net.init)(jax.random.key(2), x_pool)

    def fn(key, x):
        return net.apply(params, x, rngs={"dropout": key})

    @jax.jit
    def run(x):
        def score(chunk):
            return acq.score_pool(acq.bald, fn, jax.random.key(3), x, 8, pool_chunk_size=chunk)

        return score(None), score(6)

    whole, chunked = run(x_pool)
    chex.assert_shape(chunked, (20,))
    # Matmuls of another batch size may round differently (see dl.mc.sample).
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_score_pool_memory_is_set_by_the_chunk_size_not_the_pool_size():
    def fn(key, x):
        return jnp.tanh(shared_mask_fn(key, x)) @ W

    def temp_bytes(num_points, chunk):
        scorer = jax.jit(
            lambda x: acq.score_pool(acq.bald, fn, jax.random.key(0), x, 32, pool_chunk_size=chunk)
        )
        compiled = scorer.lower(jax.ShapeDtypeStruct((num_points, 6), jnp.float32)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(256, 64), temp_bytes(4096, 64)
    assert small == large
    # Unchunked, the [T, N, C] probabilities are live at once (32 x 4096 x 3 floats).
    assert temp_bytes(4096, None) >= 32 * 4096 * 3 * 4 > large


def test_sample_pool_rejects_bad_pools_and_reducers():
    with pytest.raises(ValueError, match="leading"):
        dl.mc.sample_pool(
            shared_mask_fn, jax.random.key(0), {"a": jnp.ones((4, 6)), "b": jnp.ones((5, 6))}, 2
        )
    with pytest.raises(ValueError, match="per-point"):
        dl.mc.sample_pool(
            shared_mask_fn,
            jax.random.key(0),
            jnp.ones((8, 6)),
            2,
            pool_chunk_size=3,
            reduce=jnp.sum,
        )
    with pytest.raises(ValueError, match="pool_chunk_size"):
        dl.mc.sample_pool(shared_mask_fn, jax.random.key(0), jnp.ones((8, 6)), 2, pool_chunk_size=0)
