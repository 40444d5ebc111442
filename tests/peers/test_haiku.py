"""Haiku's dropout tests, ported to ``dropout_lab.dropout``.

Ported from google-deepmind/dm-haiku ``haiku/_src/basic_test.py::BasicTest`` (in our
own words, same inputs and assertions; ``hk.dropout(rng, rate, x)`` is
``dl.dropout(key, x, rate)``): ``test_dropout``, ``test_dropout_broadcasts``,
``test_dropout_jit``, ``test_dropout_connects``.

Fixed, being statistically unsound: ``test_dropout`` accepts a dropped fraction within
0.001 of 0.25 on 10**6 elements, which is 2.3 sigma (a false alarm for 1 key in 47);
both of its bounds are 6 sigma here, derived in comments. ``test_dropout_broadcasts``
asserts that two slices of 3 draws each differ, which fails for 1 key in 8; here a
difference is required for at least one of 8 keys.
"""

import jax
import jax.numpy as jnp
import numpy as np

import dropout_lab as dl

KEY = jax.random.key(428)


def test_dropout():
    rate = 0.25
    x = np.asarray(jax.jit(lambda k: dl.dropout(k, jnp.ones((1000, 1000)), rate))(KEY))
    n = x.size
    # Dropped fraction of 10**6 Bernoulli(0.25): sigma = sqrt(0.25 * 0.75 / n) = 4.3e-4.
    assert abs(np.mean(x == 0) - rate) < 6 * np.sqrt(rate * (1 - rate) / n)
    # The mean is preserved: each element is 0 or 1 / 0.75, so the mean has
    # sigma = sqrt(rate / (1 - rate) / n) = 5.8e-4 (Haiku allows 0.01, 17 sigma).
    assert abs(np.mean(x) - 1.0) < 6 * np.sqrt(rate / (1 - rate) / n)


def test_dropout_broadcasts():
    x_in = jnp.ones([3, 3, 3, 3])

    @jax.jit
    def both(keys):
        def one(key):
            key1, key2 = jax.random.split(key)
            return (
                dl.dropout(key1, x_in, 0.5, broadcast_dims=(1,)),
                dl.dropout(key2, x_in, 0.5, broadcast_dims=(1, 2)),
            )

        return jax.vmap(one)(keys)

    # Haiku asserts, for one key, that some slices differ; x_out2[0] and x_out2[1] hold 3
    # draws each, so they are equal for 1 key in 8. Here "differ" means "differ for at
    # least one of 8 keys" (a false alarm with probability 2**-24 or less), while
    # "equal" must hold for every key.
    outs, outs2 = both(jax.random.split(KEY, 8))

    def differ(a, b):
        return not np.allclose(a, b)

    for x_out in outs:
        np.testing.assert_allclose(x_out[:, 0], x_out[:, 1])
        np.testing.assert_allclose(x_out[:, 0], x_out[:, 2])
        assert x_in.shape == x_out.shape
    assert any(differ(x_out[:, :, 0], x_out[:, :, 1]) for x_out in outs)
    assert any(differ(x_out[:, :, 0], x_out[:, :, 2]) for x_out in outs)
    assert any(differ(x_out[0], x_out[1]) for x_out in outs)

    for x_out2 in outs2:
        np.testing.assert_allclose(x_out2[:, 0], x_out2[:, 1])
        np.testing.assert_allclose(x_out2[:, 0], x_out2[:, 2])
        np.testing.assert_allclose(x_out2[:, :, 0], x_out2[:, :, 1])
        np.testing.assert_allclose(x_out2[:, :, 0], x_out2[:, :, 2])
        assert x_in.shape == x_out2.shape
    assert any(differ(x_out2[0], x_out2[1]) for x_out2 in outs2)


def test_dropout_jit_and_connects():
    # Haiku: jax.jit(hk.dropout)(key, 0.25, ones) runs, and hk.dropout runs eagerly.
    # Here the rate is a traced argument of the jitted op, and both give the same values.
    x = jnp.ones([3, 3])
    jitted = jax.jit(dl.dropout)(KEY, x, 0.25)
    np.testing.assert_array_equal(jitted, dl.dropout(KEY, x, 0.25))
    assert set(np.unique(jitted).tolist()) <= {0.0, np.float32(1) / np.float32(0.75)}
