"""Random words and Bernoulli keep-masks for the dropout ops (private).

The default mask generator draws 32-bit words and cuts each into two 16-bit lanes,
one per mask element, compared against an integer threshold. For threefry keys the
words come from a fully unrolled Threefry-2x32 written in ``lax`` ops, which XLA can
fuse into the consumer; its words are bit-identical to
``jax.random.bits(key, shape, jnp.uint32)`` with ``jax_threefry_partitionable`` on,
whatever that flag is set to, so the masks do not depend on the flag, the backend, jit,
vmap or how the array is sharded (every word depends only on its index and the key).

References:
  Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

LANE_BITS = 16
LANE_LEVELS = 1 << LANE_BITS

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _rotate_left(x: jax.Array, distance: int) -> jax.Array:
    return lax.shift_left(x, jnp.uint32(distance)) | lax.shift_right_logical(
        x, jnp.uint32(32 - distance)
    )


def threefry2x32(
    key_words: tuple[jax.Array, jax.Array], counters: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds, unrolled, on arrays of ``uint32`` counters."""
    k0, k1 = key_words
    schedule = (k0, k1, k0 ^ k1 ^ jnp.uint32(_PARITY))
    x0 = counters[0] + k0
    x1 = counters[1] + k1
    for block in range(5):
        for distance in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + jnp.uint32(block + 1)
    return x0, x1


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
    """Row-major flat index of every element of ``shape`` as ``uint32``."""
    if math.prod(shape) > 2**32:
        raise ValueError(f"masks of more than 2**32 words are not supported (shape {shape}).")
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    return index


def is_threefry(key: jax.Array) -> bool:
    """Whether a typed key uses the Threefry-2x32 implementation."""
    return "threefry2x32" in str(jax.random.key_impl(key))


def random_words(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``uint32`` random words of ``shape``; equals ``jax.random.bits(key, shape)``.

    For threefry keys this is the partitionable Threefry layout computed by the
    unrolled cipher; other key implementations use ``jax.random.bits``.
    """
    if not is_threefry(key):
        return jax.random.bits(key, shape, jnp.uint32)
    key_words = jax.random.key_data(key)
    counters = (jnp.zeros(shape, jnp.uint32), _flat_index(shape))
    x0, x1 = threefry2x32((key_words[0], key_words[1]), counters)
    return x0 ^ x1


def lane_keep_mask(
    key: jax.Array, shape: tuple[int, ...], keep: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Bernoulli keep-mask from 16-bit lanes and the keep probability it realises.

    Element ``i`` of the last axis uses the low (even ``i``) or high (odd ``i``) half
    of word ``i // 2``. It is kept when its lane is below
    ``threshold = round(keep * 2**16)``, so the realised keep probability is
    ``threshold / 2**16``, within ``2**-17`` of ``keep``; it is returned so callers
    scale by exactly the probability used.

    Args:
      key: a typed PRNG key.
      shape: shape of the mask.
      keep: scalar keep probability in [0, 1] (may be traced).

    Returns:
      ``(mask, keep_used)``: a boolean mask of ``shape`` and a float32 scalar.
    """
    threshold = jnp.round(keep.astype(jnp.float32) * LANE_LEVELS).astype(jnp.uint32)
    keep_used = threshold.astype(jnp.float32) / LANE_LEVELS
    full_shape = shape if shape else (1,)
    last = full_shape[-1]
    words = random_words(key, (*full_shape[:-1], (last + 1) // 2))
    lanes = jnp.stack([words & jnp.uint32(0xFFFF), lax.shift_right_logical(words, jnp.uint32(16))], axis=-1)
    lanes = lanes.reshape((*full_shape[:-1], -1))[..., :last]
    return (lanes < threshold).reshape(shape), keep_used
