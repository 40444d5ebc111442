"""torchvision's StochasticDepth and DropBlock tests, ported to drop_path and dropblock.

Ported from pytorch/vision ``test/test_ops.py`` (in our own words, same inputs and
assertions; ``StochasticDepth(p, mode)`` is ``dl.drop_path(key, x, p, mode=mode)``,
``DropBlock2d/3d(p, block_size)`` on NCHW input is ``dl.dropblock(..., channel_axis=1)``):

* ``TestStochasticDepth``: ``test_stochastic_depth_random``, ``test_stochastic_depth``.
* ``TestDropBlock``: ``test_drop_block``, ``test_drop_block_random``.

Not ported: ``test_is_leaf_node`` (torch.fx) and the ``inplace`` variants.

Fixed, being statistically unsound: ``test_stochastic_depth_random`` asserts a binomial
test p-value above 0.01, so each of its 60 cases fails for 1 seed in 100 by design (with
fresh seeds, at least one fails in 45 % of runs); here the 10 seeds of a case are pooled
and bounded at 6 sigma. ``test_drop_block_random`` allows 15 % relative error, which is loose
enough to hide torchvision's own bias (its seed rate is the paper's first-order formula,
which under-drops); here the default exact seed rate is held to 6 sigma as well.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl

KEY = jax.random.key(0)


@pytest.mark.parametrize("mode", ["batch", "row"])
def test_stochastic_depth_random(mode):
    batch_size, trials, seeds = 5, 250, 10
    x = jnp.ones((batch_size, 3, 4, 4))
    rates = jnp.array([0.2, 0.5, 0.8])

    @jax.jit
    def dropped_counts(rates, key):
        keys = jax.random.split(key, seeds * trials)

        def count(p, key):
            out = dl.drop_path(key, x, p, mode=mode)
            dropped = jnp.sum(out.sum(axis=(1, 2, 3)) == 0)
            return dropped if mode == "row" else (dropped == batch_size).astype(jnp.int32)

        return jax.vmap(lambda p: jnp.sum(jax.vmap(lambda k: count(p, k))(keys)))(rates)

    counts = np.asarray(dropped_counts(rates, jax.random.key(0)))
    num_samples = seeds * trials * (batch_size if mode == "row" else 1)
    # Binomial(num_samples, p) counts: 6 sigma = 6 sqrt(p (1 - p) / n) on the fraction.
    p = np.asarray(rates)
    assert (np.abs(counts / num_samples - p) < 6 * np.sqrt(p * (1 - p) / num_samples)).all()


@pytest.mark.parametrize("mode", ["batch", "row"])
def test_stochastic_depth(mode):
    x = jnp.ones((5, 3, 4, 4))

    @jax.jit
    def run(key, p):
        keys = jax.random.split(key, 10)  # PyTorch's 10 seeds
        return jax.vmap(lambda k: dl.drop_path(k, x, p, mode=mode))(keys)

    np.testing.assert_array_equal(run(KEY, 0.0), np.broadcast_to(x, (10, *x.shape)))
    np.testing.assert_array_equal(run(KEY, 1.0), np.zeros((10, *x.shape)))


DROP_BLOCK_CASES = [(dim, block_size) for dim in (2, 3) for block_size in (5, 11)]


@pytest.fixture(scope="module")
def drop_block_runs():
    # Every (dim, block_size) case, 10 seeds, in one compilation (p traced: 0 and 0.5).
    @jax.jit
    def run(key, p):
        keys = jax.random.split(key, 10)  # torchvision's 10 seeds
        out = []
        for dim, block_size in DROP_BLOCK_CASES:
            x = jnp.ones((5, 3) + (11,) * dim)

            def block(k, x=x, block_size=block_size):
                return dl.dropblock(k, x, p, block_size=block_size, channel_axis=1)

            out.append(jax.vmap(block)(keys))
        return out

    at_zero, at_half = run(KEY, 0.0), run(KEY, 0.5)
    return [(np.asarray(a), np.asarray(b)) for a, b in zip(at_zero, at_half, strict=True)]


@pytest.mark.parametrize("case", range(len(DROP_BLOCK_CASES)))
def test_drop_block(drop_block_runs, case):
    dim, block_size = DROP_BLOCK_CASES[case]
    batch_size, channels, size = 5, 3, 11
    at_zero, out = drop_block_runs[case]
    np.testing.assert_array_equal(at_zero, np.ones(at_zero.shape))
    if block_size == size:
        # One possible block covers the whole map: each map is all kept or all dropped
        # (both occur among the 150 maps, each dropped with probability 0.5).
        nonzero = np.count_nonzero(out.reshape(10, batch_size, channels, -1), axis=-1)
        assert set(np.unique(nonzero).tolist()) == {0, size**dim}


@pytest.mark.parametrize("dim", [2, 3])
def test_drop_block_random(dim):
    batch_size, channels, size, trials = 5, 3, 11, 250
    x = jnp.ones((batch_size, channels) + (size,) * dim)

    @jax.jit
    def per_map_dropped(key, p):
        def one(key):
            out = dl.dropblock(key, x, p, block_size=3, channel_axis=1)
            return jnp.mean(out == 0, axis=tuple(range(2, 2 + dim)))

        return jax.vmap(one)(jax.random.split(key, trials)).reshape(-1)

    for p in (0.1, 0.2):
        per_map = np.asarray(per_map_dropped(KEY, p))
        frac = per_map.mean()
        assert abs(p - frac) / p < 0.15  # torchvision's own bound
        # The 3750 maps are independent: the mean of their dropped fractions has
        # sigma = sd(per map) / sqrt(3750), the sd estimated from the sample.
        assert abs(frac - p) < 6 * per_map.std() / np.sqrt(per_map.size)
