"""Properties the fast paths rely on: zero residuals, exact bits, lane statistics, barriers."""

import contextlib
import io
import re

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl
from dropout_lab import _checks
from dropout_lab.ops import _prng
from dropout_lab.ops._bernoulli import keep_mask

KEY = jax.random.key(1234)
N_STATS = (1 << 20) + (1 << 18)  # > _prng.CHUNK: dl.dropout takes the chunked path


def _saved_residuals(fn, *args):
    """(dtype, shape, why) of each residual, parsed from print_saved_residuals."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    rows = []
    for line in out.getvalue().splitlines():
        dtype, dims, why = re.match(r"(\S+?)\[([\d,]*)\] (.*)", line).groups()
        rows.append((dtype, tuple(int(d) for d in dims.split(",") if d), why))
    return rows


def _residual_sizes(fn, x):
    return [
        int(np.prod(shape)) for _, shape, why in _saved_residuals(fn, x) if "argument" not in why
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"impl": "bernoulli"},
        {"impl": "fast"},
        {"mode": "classic"},
        {"broadcast_dims": (0,)},
    ],
    ids=["exact", "bernoulli", "fast", "classic", "broadcast"],
)
@pytest.mark.parametrize("shape", [(64, 48), (1025, 1024)], ids=["small", "chunked"])
def test_backward_saves_nothing_of_the_input_size(kwargs, shape):
    # Trace only (saved_residuals does not run the computation). Only the key and
    # the rate (scalars) may be saved; anything with as many elements as a mask row
    # would be a stored mask or a scaled copy of x.
    x = jnp.ones(shape, jnp.float32)
    sizes = _residual_sizes(lambda x: dl.dropout(KEY, x, 0.3, **kwargs), x)
    assert all(s <= 2 for s in sizes), sizes


def test_backward_of_a_network_saves_no_dropout_mask():
    # In y = dropout(x) @ w the matmul needs its input, so dropout's *output* is
    # saved (that is the matmul's residual), but no bool mask and no second copy.
    x = jnp.ones((32, 64), jnp.float32)
    w = jnp.ones((64, 16), jnp.float32)
    res = _saved_residuals(lambda x, w: dl.dropout(KEY, x, 0.5) @ w, x, w)
    big = [(t, shape) for t, shape, why in res if "argument" not in why and np.prod(shape) > 2]
    assert big == [("f32", (32, 64))], res


def test_forward_temp_memory_is_small_for_large_inputs():
    # The chunked forward of a 64 MiB input needs a few MiB of temporaries (one
    # piece's lanes and values), not a full-size word buffer (32 MiB) or mask.
    x = jax.ShapeDtypeStruct((4096, 4096), jnp.float32)
    compiled = jax.jit(lambda k, x: dl.dropout(k, x, 0.5)).lower(KEY, x).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 12 * (1 << 20)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.3])
def test_fast_keep_fraction_over_a_million_elements(rate):
    # Realised keep probability q' = round((1 - rate) * 2**16) / 2**16, within 2**-17
    # of 1 - rate. The count of kept elements is Binomial(n, q'): the fraction is
    # within 5 sigma = 5 * sqrt(q'(1 - q') / n) (about 2.2e-3 at n = 1.3M) of q'.
    q = round((1 - rate) * 2**16) / 2**16
    assert abs(q - (1 - rate)) <= 2**-17
    y = dl.dropout(KEY, jnp.ones((N_STATS,), jnp.float32), rate, impl="fast")
    kept = np.asarray(y != 0)
    assert abs(kept.mean() - q) <= 5 * np.sqrt(q * (1 - q) / N_STATS)
    # Kept values are exactly 1 / q', so E[y] = x holds exactly.
    np.testing.assert_array_equal(np.unique(np.asarray(y)[kept]), np.float32(1 / np.float32(q)))


@pytest.mark.parametrize("impl", ["exact", "fast"])
def test_chunked_forward_equals_whole_mask(impl):
    # dl.dropout on > CHUNK elements draws its mask piece by piece; it must be the
    # mask keep_mask draws for the whole shape, element for element (tail included).
    shape = (N_STATS // 1000, 1000)
    y = dl.dropout(KEY, jnp.ones(shape, jnp.float32), 0.3, impl=impl)
    mask, _ = keep_mask(KEY, shape, jnp.float32(0.7), impl)
    np.testing.assert_array_equal(np.asarray(y != 0), np.asarray(mask))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.3])
def test_exact_keep_fraction_over_a_million_elements(rate):
    # Realised keep probability within 2**-32 of q = float32(1 - rate): the count of
    # kept elements is Binomial(n, q), within 5 sigma = 5 sqrt(q (1 - q) / n) of q n.
    q = float(np.float32(1 - rate))
    y = dl.dropout(KEY, jnp.ones((N_STATS,), jnp.float32), rate)
    kept = np.asarray(y != 0)
    assert abs(kept.mean() - q) <= 5 * np.sqrt(q * (1 - q) / N_STATS)
    np.testing.assert_array_equal(np.unique(np.asarray(y)[kept]), np.float32(1) / np.float32(q))


def test_words_of_one_cipher_block_are_uncorrelated():
    # Words 2j and 2j+1 are the two outputs of one Threefry call. At rate 0.5 each is
    # kept with p = 1/2, both with 1/4 if independent; over m = n / 2 blocks the
    # count is Binomial(m, 1/4): 5 sigma = 5 sqrt(3/16 / m).
    words = np.asarray(_prng.stream_words(KEY, N_STATS)).reshape(-1, 2)
    kept = words < 2**31
    m = words.shape[0]
    assert abs((kept[:, 0] & kept[:, 1]).mean() - 0.25) <= 5 * np.sqrt(0.25 * 0.75 / m)
    corr = np.corrcoef(words[:, 0].astype(float), words[:, 1].astype(float))[0, 1]
    assert abs(corr) <= 5 / np.sqrt(m)


@pytest.mark.parametrize(("first", "second"), [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
def test_lanes_of_one_cipher_block_are_uncorrelated(first, second):
    # Lanes 4j..4j+3 come from one Threefry call (lanes 4j, 4j+1 from its first word,
    # 4j+2, 4j+3 from its second). At rate 0.5 each lane is kept with p = 1/2, so
    # both lanes of a pair are kept with p^2 = 1/4 if independent; over m = n / 4
    # blocks the count is Binomial(m, 1/4): 5 sigma = 5 * sqrt(3/16 / m) ~ 3.8e-3.
    lanes = np.asarray(_prng.random_lanes(KEY, N_STATS)).reshape(-1, 4)
    kept = lanes < 2**15
    both = (kept[:, first] & kept[:, second]).mean()
    m = lanes.shape[0]
    assert abs(both - 0.25) <= 5 * np.sqrt(0.25 * 0.75 / m)
    # The 16-bit values themselves: correlation within 5 / sqrt(m) of 0.
    corr = np.corrcoef(lanes[:, first].astype(float), lanes[:, second].astype(float))[0, 1]
    assert abs(corr) <= 5 / np.sqrt(m)


def test_lane_layout_is_the_documented_threefry_stream():
    # Block j = Threefry-2x32(key, counter (0, j)) -> words (w0, w1); lanes
    # 4j, 4j+1, 4j+2, 4j+3 = low(w0), high(w0), low(w1), high(w1).
    n = 4 * 37 + 3
    kd = jax.random.key_data(KEY)
    w0, w1 = _prng.threefry2x32(
        (kd[0], kd[1]), (jnp.zeros(38, jnp.uint32), jnp.arange(38, dtype=jnp.uint32))
    )
    words = np.stack([np.asarray(w0), np.asarray(w1)], axis=1).reshape(-1)
    # The exact generator's words are that stream, element i deciding on word i,
    # whether materialised or computed where they are used.
    np.testing.assert_array_equal(_prng.stream_words(KEY, 75), words[:75])
    np.testing.assert_array_equal(_prng.mask_words(KEY, (5, 15)).reshape(-1), words[:75])
    fused = jax.jit(lambda k: _prng.mask_words(k, (75,)))(KEY)
    np.testing.assert_array_equal(fused, words[:75])
    np.testing.assert_array_equal(_prng.stream_words(KEY, 10, first_block=5), words[10:20])
    expected = np.stack([words & 0xFFFF, words >> 16], axis=1).reshape(-1)[:n]
    np.testing.assert_array_equal(_prng.random_lanes(KEY, n), expected)
    # Pieces with an offset continue the same stream.
    np.testing.assert_array_equal(_prng.random_lanes(KEY, 20, first_block=5), expected[20:40])


def test_philox_lanes_are_halves_of_jax_random_bits():
    key = jax.random.key(3, impl="philox2x32")
    words = np.asarray(jax.random.bits(key, (50,), jnp.uint32))
    expected = np.stack([words & 0xFFFF, words >> 16], axis=1).reshape(-1)[:99]
    np.testing.assert_array_equal(_prng.random_lanes(key, 99), expected)
    np.testing.assert_array_equal(_prng.stream_words(key, 50), words)


@pytest.mark.parametrize("impl", ["exact", "fast"])
@pytest.mark.parametrize("impl_name", ["threefry2x32", "philox2x32"])
def test_mask_depends_only_on_key_and_flat_index(impl_name, impl):
    # Same flat index -> same mask element, whatever the shape, and a longer mask
    # extends a shorter one; jit and vmap over keys give each key's own mask.
    key = jax.random.key(7, impl=impl_name)
    keep = jnp.float32(0.6)
    a, _ = keep_mask(key, (6, 35), keep, impl)
    b, _ = keep_mask(key, (210,), keep, impl)
    c, _ = keep_mask(key, (301,), keep, impl)
    np.testing.assert_array_equal(np.asarray(a).reshape(-1), b)
    np.testing.assert_array_equal(b, np.asarray(c)[:210])
    jitted = jax.jit(lambda k: keep_mask(k, (6, 35), keep, impl)[0])(key)
    np.testing.assert_array_equal(jitted, a)
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k: keep_mask(k, (6, 35), keep, impl)[0])(keys)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], keep_mask(keys[i], (6, 35), keep, impl)[0])


@pytest.mark.parametrize("shape", [(), (33, 65), (2, 3, 129)])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.77, 1.0])
def test_bernoulli_impl_is_bit_identical_to_jax_random_bernoulli(shape, rate):
    # keep_mask gets the keep probability; jax (and Flax) round 1 - rate computed in
    # double precision to float32, and so does keep_probability for a concrete rate.
    keep32 = _checks.keep_probability(rate, jnp.float32(rate))
    assert keep32 == np.float32(1.0 - rate)
    for seed in (0, 99):
        key = jax.random.key(seed)
        expected = jax.random.bernoulli(key, 1.0 - rate, shape)
        mask, keep = keep_mask(key, shape, keep32, "bernoulli")
        np.testing.assert_array_equal(mask, expected)
        assert keep == keep32
    jitted = jax.jit(lambda k, q: keep_mask(k, shape, q, "bernoulli")[0])(key, keep32)
    np.testing.assert_array_equal(jitted, expected)


def test_concrete_rate_rounds_keep_like_flax():
    # 1 - float32(0.33) is 0.66999996, one float32 step below float32(1 - 0.33) = 0.67;
    # with key 0 two of these 2**24 uniforms fall in between, so computing the keep
    # probability from the float32 rate would flip two mask elements.
    x = jnp.ones((1 << 24,), jnp.float32)
    key = jax.random.key(0)
    assert np.float32(1) - np.float32(0.33) != np.float32(1 - 0.33)
    ours = jax.jit(lambda k, x: dl.dropout(k, x, 0.33, impl="bernoulli") != 0)(key, x)
    np.testing.assert_array_equal(ours, jax.random.bernoulli(key, 1 - 0.33, x.shape))


def test_bernoulli_impl_follows_the_legacy_threefry_layout_too():
    # With jax_threefry_partitionable off, jax.random.bits uses another layout; the
    # bernoulli impl then defers to jax.random.bernoulli and still matches it.
    key = jax.random.key(5)
    with jax.threefry_partitionable(False):
        expected = jax.random.bernoulli(key, jnp.float32(0.7), (33, 17))
        mask, _ = keep_mask(key, (33, 17), jnp.float32(0.7), "bernoulli")
    np.testing.assert_array_equal(mask, expected)


def test_word_barrier_survives_jit_and_vmap_over_keys():
    # The fast path's words are materialised by a conditional (a fusion barrier);
    # under vmap over keys its predicate stays unbatched, so it is not turned into a
    # select. So is a shared (broadcast) exact mask. A whole-array exact mask is one
    # fused loop: no conditional, no buffer of words.
    x = jnp.ones((64, 64), jnp.float32)
    keys = jax.random.split(KEY, 4)

    def compiled(fn, *args):
        return jax.jit(fn).lower(*args).compile().as_text()

    for kwargs in ({"impl": "fast"}, {"broadcast_dims": (0,)}):
        for fn, args in [
            (lambda k, x, kw=kwargs: dl.dropout(k, x, 0.5, **kw), (KEY, x)),
            (jax.vmap(lambda k, x, kw=kwargs: dl.dropout(k, x, 0.5, **kw), (0, None)), (keys, x)),
        ]:
            assert "conditional(" in compiled(fn, *args), kwargs
    assert "conditional(" not in compiled(lambda k, x: dl.dropout(k, x, 0.5), KEY, x)
