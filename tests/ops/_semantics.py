"""Checks of the library-wide semantics rules, shared by the tests of the dropout variants.

``fn(key, x, rate)`` is a variant with its options bound. The rules: rate 0 is the
identity, rate 1 gives zeros without NaN (even for inf/NaN inputs), the dtype is kept,
integer input raises TypeError, a concrete bad rate ValueError, a traced bad rate NaN,
jit equals eager, vmap over keys equals a loop, a new key or rate does not recompile.
Most checks run jitted with a traced rate (the same code path) to keep compiles few.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

KEY = jax.random.key(0)


def check_semantics(fn, x, *, rate_one_is_zero=True):
    x = jnp.asarray(x, jnp.float32)
    traces = []

    def traced(k, x, r):
        traces.append(1)
        return fn(k, x, r)

    jitted = jax.jit(traced)
    # Integer input and bad concrete rates raise.
    with pytest.raises(TypeError):
        fn(KEY, x.astype(jnp.int32), 0.5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            fn(KEY, x, bad)
    # jit == eager (concrete rate).
    np.testing.assert_allclose(jitted(KEY, x, 0.3), fn(KEY, x, 0.3), rtol=1e-6)
    # Rate 0: the identity, exactly. A new key or rate does not retrace.
    np.testing.assert_array_equal(jitted(jax.random.key(7), x, 0.0), x)
    # Rate 1: zeros, no NaN, even where the input is inf or NaN.
    if rate_one_is_zero:
        poisoned = x.at[(0,) * x.ndim].set(jnp.nan).at[(-1,) * x.ndim].set(jnp.inf)
        np.testing.assert_array_equal(jitted(KEY, poisoned, 1.0), jnp.zeros_like(x))
    # A bad traced rate poisons the output.
    assert bool(jnp.all(jnp.isnan(jitted(KEY, x, 1.5))))
    assert len(traces) == 1
    # dtype kept.
    assert jitted(KEY, x.astype(jnp.bfloat16), 0.3).dtype == jnp.bfloat16
    # vmap over keys == loop over keys, and keys matter.
    keys = jax.random.split(jax.random.key(3), 8)
    batched = jax.jit(jax.vmap(lambda k: fn(k, x, 0.4)))(keys)
    for i in range(2):
        np.testing.assert_allclose(batched[i], jitted(keys[i], x, 0.4), rtol=1e-6)
    assert len({np.asarray(b).tobytes() for b in batched}) > 1
