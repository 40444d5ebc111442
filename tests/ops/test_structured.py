"""Tests of channel_dropout, dropblock, drop_path and drop_path_rates."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl
from dropout_lab.ops import _structured
from tests.ops._semantics import KEY, check_semantics


def five_sigma(rate, n):
    # Fraction of n independent Bernoulli(rate) draws: sigma = sqrt(rate (1 - rate) / n).
    return 5 * np.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize(
    "fn",
    [
        lambda k, x, r: dl.channel_dropout(k, x, r),
        lambda k, x, r: dl.dropblock(k, x, r, block_size=3),
        lambda k, x, r: dl.drop_path(k, x, r),
        lambda k, x, r: dl.drop_path(k, x, r, mode="batch"),
    ],
    ids=["channel", "dropblock", "drop_path_row", "drop_path_batch"],
)
def test_semantics(fn):
    check_semantics(fn, jax.random.normal(jax.random.key(1), (4, 6, 6, 3)))


# ---- channel dropout ----


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_channel_dropout_drops_whole_channels_at_rate(rate):
    x = jnp.ones((64, 4, 4, 64))
    y = np.asarray(dl.channel_dropout(KEY, x, rate))
    # One value per (example, channel), shared by all positions.
    assert (y == y[:, :1, :1, :]).all()
    dropped = y[:, 0, 0, :] == 0
    assert abs(dropped.mean() - rate) < five_sigma(rate, dropped.size)
    # The default generator keeps x / (1 - rate) as float32 computes it: within 1e-6
    # relative of the float64 quotient (the 2**-16 grid of impl="fast" is off by 7e-6
    # at rate 0.1).
    np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)


def test_channel_dropout_channels_first_and_unbatched():
    x = jnp.ones((8, 16, 5, 5))  # NCHW
    y = np.asarray(dl.channel_dropout(KEY, x, 0.5, channel_axis=1))
    assert (y == y[:, :, :1, :1]).all()
    assert 0 < (y[:, :, 0, 0] == 0).mean() < 1
    y = np.asarray(dl.channel_dropout(KEY, jnp.ones((5, 5, 32)), 0.5, batch_axis=None))
    assert (y == y[:1, :1]).all() and 0 < (y[0, 0] == 0).mean() < 1
    with pytest.raises(ValueError):
        dl.channel_dropout(KEY, x, 0.5, channel_axis=0)
    with pytest.raises(ValueError):
        dl.channel_dropout(KEY, x, 0.5, channel_axis=4)


# ---- DropBlock ----


def test_seed_probability_exact_by_enumeration():
    # 1-D, size 5, block 2: 4 possible seeds. Enumerate all 2**4 seed patterns and
    # weight the dropped fraction of each by its probability: it must equal the rate.
    size, block = 5, 2
    seed_probability = jax.jit(_structured.seed_probability, static_argnums=(1, 2, 3))
    for rate in (0.05, 0.3, 0.8):
        gamma = float(seed_probability(jnp.float32(rate), (size,), (block,)))
        expected = 0.0
        for seeds in itertools.product((0, 1), repeat=size - block + 1):
            dropped = np.zeros(size, bool)
            for s, on in enumerate(seeds):
                dropped[s : s + block] |= bool(on)
            k = sum(seeds)
            expected += gamma**k * (1 - gamma) ** (len(seeds) - k) * dropped.mean()
        assert abs(expected - rate) < 1e-5


def opening_is_identity(dropped, block):
    """Every dropped position lies in a fully dropped block inside the array.

    ``block`` is an int or one size per axis.
    """
    b = (block,) * dropped.ndim if isinstance(block, int) else tuple(block)
    valid = tuple(s - k + 1 for s, k in zip(dropped.shape, b, strict=True))
    eroded = np.zeros(valid, bool)
    for idx in np.ndindex(valid):
        sl = tuple(slice(i, i + k) for i, k in zip(idx, b, strict=True))
        eroded[idx] = dropped[sl].all()
    reopened = np.zeros_like(dropped)
    for idx in zip(*np.nonzero(eroded), strict=True):
        reopened[tuple(slice(i, i + k) for i, k in zip(idx, b, strict=True))] = True
    return np.array_equal(reopened, dropped)


def test_dropblock_blocks_are_contiguous_squares():
    block = 3
    x = jnp.ones((8, 10, 10, 4))
    for seed in range(3):
        y = np.asarray(dl.dropblock(jax.random.key(seed), x, 0.2, block_size=block))
        assert (y == 0).any()  # else the opening check below holds vacuously
        for n in range(x.shape[0]):
            for c in range(x.shape[-1]):
                assert opening_is_identity(y[n, :, :, c] == 0, block)
    # At a tiny rate most dropped maps hold one block: a block x block square.
    y = np.asarray(dl.dropblock(KEY, jnp.ones((256, 10, 10, 1)), 0.02, block_size=block))
    singles = 0
    for m in y[..., 0] == 0:
        if m.sum() == block * block:
            rows, cols = np.nonzero(m)
            assert np.ptp(rows) == np.ptp(cols) == block - 1
            singles += 1
    assert singles > 10


@pytest.mark.parametrize("rate", [0.1, 0.3])
@pytest.mark.parametrize(
    "shape,block",
    [((2048, 16, 2), 4), ((512, 12, 12, 2), 3), ((128, 6, 6, 6, 2), 2)],
    ids=["1d", "2d", "3d"],
)
def test_dropblock_expected_dropped_fraction(shape, block, rate):
    y = np.asarray(dl.dropblock(KEY, jnp.ones(shape), rate, block_size=block))
    # The maps (example, channel) are independent; the dropped fraction is the mean of
    # M = batch * channels i.i.d. per-map fractions: sigma = sd(per-map) / sqrt(M),
    # with sd estimated from the sample (M >= 1024, so the estimate is tight).
    per_map = np.moveaxis(y == 0, -1, 1).reshape(shape[0] * shape[-1], -1).mean(axis=1)
    sigma = per_map.std() / np.sqrt(per_map.size)
    assert abs(per_map.mean() - rate) < 5 * sigma
    # Kept units are renormalized by the kept fraction, count(M) / count_ones(M), as
    # float32 computes it (within 1e-6 relative of the float64 quotient): the sum is
    # preserved.
    kept = y != 0
    np.testing.assert_allclose(y[kept], y.size / kept.sum(), rtol=1e-6)
    np.testing.assert_allclose(y.sum(), y.size, rtol=1e-4)
    assert opening_is_identity((y[0, ..., 0] == 0), block)


@pytest.mark.parametrize(
    "sizes, blocks",
    [((12, 12), (3, 3)), ((16,), (4,)), ((6, 6, 6), (2, 2, 2)), ((8, 5), (3, 5)), ((7,), (7,))],
)
def test_seed_probability_paper_is_the_papers_formula(sizes, blocks):
    # gamma = rate / prod(b_i) * prod(S_i / (S_i - b_i + 1)), exactly as documented.
    seed_probability = jax.jit(_structured.seed_probability, static_argnums=(1, 2, 3))
    for rate in (0.05, 0.3, 1.0):
        ratio = np.prod([s / (s - b + 1) for s, b in zip(sizes, blocks, strict=True)])
        expected = rate / np.prod(blocks) * ratio
        got = float(seed_probability(jnp.float32(rate), sizes, blocks, "paper"))
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert float(seed_probability(jnp.float32(0.0), sizes, blocks, "paper")) == 0.0


def coverage_counts(sizes, blocks):
    """How many valid block seeds cover each position (numpy, per axis then outer)."""
    counts = np.ones(())
    for size, block in zip(sizes, blocks, strict=True):
        p = np.arange(size)
        per_axis = np.minimum(p, size - block) - np.maximum(0, p - block + 1) + 1
        counts = np.multiply.outer(counts, per_axis)
    return counts


def test_dropblock_paper_gamma_realised_fraction():
    shape, rate, block = (512, 12, 12, 2), 0.3, 3
    y = np.asarray(dl.dropblock(KEY, jnp.ones(shape), rate, block_size=block, seed_rate="paper"))
    per_map = np.moveaxis(y == 0, -1, 1).reshape(-1, 144).mean(axis=1)
    # With seeds of probability gamma (the paper's formula), a position covered by n
    # possible seeds is dropped with probability 1 - (1 - gamma)**n: averaged over the
    # map this is the expected dropped fraction (about 0.254 here, below the rate as
    # overlapping blocks are not counted by the formula). Two-sided, 6 sigma of the
    # mean of 1024 independent per-map fractions.
    gamma = rate / block**2 * (12 / (12 - block + 1)) ** 2
    expected = np.mean(1 - (1 - gamma) ** coverage_counts((12, 12), (block, block)))
    assert expected < rate
    assert abs(per_map.mean() - expected) < 6 * per_map.std() / np.sqrt(per_map.size)


def test_dropblock_options():
    x = jnp.ones((4, 8, 8, 5))
    y = np.asarray(dl.dropblock(KEY, x, 0.3, block_size=3, broadcast_dims=(-1,)))
    assert (y == 0).any() and (y == y[..., :1]).all()  # one pattern for all channels
    y = np.asarray(
        dl.dropblock(KEY, jnp.ones((4, 5, 8, 8)), 0.3, block_size=(2, 4), channel_axis=1)
    )
    dropped = np.reshape(y == 0, (-1, 8, 8))
    assert dropped.any()
    assert all(opening_is_identity(m, (2, 4)) for m in dropped)
    np.testing.assert_array_equal(dl.dropblock(KEY, x, 0.3, block_size=3, deterministic=True), x)
    with pytest.raises(ValueError):
        dl.dropblock(KEY, x, 0.3, block_size=9)
    with pytest.raises(ValueError):
        dl.dropblock(KEY, x, 0.3, block_size=3, broadcast_dims=(1,))
    with pytest.raises(ValueError):
        dl.dropblock(KEY, x, 0.3, block_size=3, seed_rate="other")


# ---- drop path ----


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_drop_path_row_zeroes_whole_examples(rate):
    x = jax.random.normal(jax.random.key(2), (4096, 3, 2)) + 5.0
    y = np.asarray(dl.drop_path(KEY, x, rate))
    dropped = (y == 0).all(axis=(1, 2))
    assert ((y == 0).any(axis=(1, 2)) == dropped).all()
    np.testing.assert_allclose(y[~dropped], np.asarray(x)[~dropped] / (1 - rate), rtol=1e-6)
    assert abs(dropped.mean() - rate) < five_sigma(rate, dropped.size)


def test_drop_path_batch_mode_one_draw():
    x = jnp.ones((8, 3))
    keys = jax.random.split(KEY, 2000)
    y = np.asarray(
        jax.vmap(lambda k: dl.drop_path(k, x, 0.3, mode="batch", impl="bernoulli"))(keys)
    )
    dropped = (y == 0).all(axis=(1, 2))
    assert ((y == 0).any(axis=(1, 2)) == dropped).all()
    assert abs(dropped.mean() - 0.3) < five_sigma(0.3, dropped.size)
    with pytest.raises(ValueError):
        dl.drop_path(KEY, x, 0.3, mode="col")


def test_drop_path_rates():
    np.testing.assert_allclose(dl.drop_path_rates(0.4, 4), [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    np.testing.assert_allclose(
        dl.drop_path_rates(0.4, 5, include_zero=True), [0, 0.1, 0.2, 0.3, 0.4], rtol=1e-6
    )
    np.testing.assert_allclose(dl.drop_path_rates(0.4, 1, include_zero=True), [0.0])
    np.testing.assert_allclose(jax.jit(lambda r: dl.drop_path_rates(r, 2))(0.5), [0.25, 0.5])
    with pytest.raises(ValueError):
        dl.drop_path_rates(0.4, 0)
    with pytest.raises(ValueError):
        dl.drop_path_rates(1.4, 3)


@pytest.mark.parametrize("impl", ["exact", "fast", "bernoulli"])
def test_rate_one_on_large_masks(impl):
    # Every variant at rate 1 with 2**20 mask draws: a generator that keeps an element
    # with probability 2**-16 at rate 1 (the fast grid with `<=` for `<`) lets about 16
    # through. The rate is traced, as under a schedule.
    n = 1 << 20

    @jax.jit
    def survivors(key, rate):
        channel = dl.channel_dropout(key, jnp.ones((1024, 2, 1024)), rate, impl=impl)
        row = dl.drop_path(key, jnp.ones((n, 2)), rate, impl=impl)
        keys = jax.random.split(key, n)
        batch = jax.vmap(lambda k: dl.drop_path(k, jnp.ones(()), rate, mode="batch", impl=impl))(
            keys
        )
        return [jnp.count_nonzero(a) for a in (channel, row, batch)]

    assert [int(c) for c in survivors(KEY, 1.0)] == [0, 0, 0]


def test_dropblock_rate_one_on_a_large_array():
    # Rate 1 seeds every valid position (gamma = 1): nothing survives of 2**20 elements.
    y = jax.jit(lambda k, r: dl.dropblock(k, jnp.ones((256, 64, 64, 1)), r, block_size=3))(KEY, 1.0)
    assert int(jnp.count_nonzero(y)) == 0
