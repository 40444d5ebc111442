"""Random words and Bernoulli keep-masks for the dropout ops (private).

The default mask generator cuts 16-bit *lanes* from a stream of 32-bit random words
and compares each lane with an integer threshold. Element ``i`` of a mask (row-major
flat index) uses lane ``i``: the low (even ``i``) or high (odd ``i``) half of word
``i // 2``. The word stream depends only on the key, so every mask element depends
only on the key and its flat index, never on jit, vmap, the backend or sharding:

* threefry keys: words ``2j`` and ``2j + 1`` are the two output words of
  Threefry-2x32 (20 rounds) applied to the counter ``(0, j)``, so one cipher call
  feeds four mask elements. The cipher is unrolled in ``lax`` ops so XLA can fuse it.
* other keys (``philox2x32``, ``rbg``, ...): word ``j`` is
  ``jax.random.bits(key, (num_words,), jnp.uint32)[j]`` (for ``philox2x32`` this does
  not depend on ``num_words``; for ``rbg`` it may).

Performance notes (XLA:CPU). A fused loop is evaluated once per output element, so a
word feeding four lanes would be recomputed four times if fused into the consumer.
The words are therefore materialised inside a ``lax.cond`` whose two branches are
identical (so its predicate is irrelevant) and whose predicate XLA cannot fold: the
conditional is a fusion barrier. The predicate depends on no input, so under
``vmap`` over keys it stays unbatched (the barrier survives) and under sharding it
is replicated (no collective). XLA:CPU has no multi-output loop fusion: two output
words of one cipher call would be computed by two fusions, each running the whole
cipher. The two words of a block are thus packed bit-for-bit into one ``complex64``
element (bitcasts only, no arithmetic, so every bit pattern, NaN payloads included,
survives) and unpacked by the consumer.

Above :data:`CHUNK` elements the forward pass draws and applies the mask piece by piece
(:func:`select_lanes_chunked`, same values): a full-size word buffer would be 2 bytes
per element, and every fresh buffer above ~32 MiB is page-faulted again on each call.

References:
  Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

LANE_BITS = 16
LANE_LEVELS = 1 << LANE_BITS
_LANE_MASK = LANE_LEVELS - 1

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


def uniform_from_words(words: jax.Array) -> jax.Array:
    """``float32`` in [0, 1) from ``uint32`` words, exactly as ``jax.random.uniform``."""
    one = jnp.uint32(0x3F800000)
    mantissa = lax.shift_right_logical(words, jnp.uint32(32 - 23))
    return lax.bitcast_convert_type(mantissa | one, jnp.float32) - jnp.float32(1.0)


def _opaque_predicate() -> jax.Array:
    """A boolean scalar XLA cannot constant-fold (it is always false).

    It depends on no input, so it is unbatched under ``vmap`` and replicated under
    sharding: the ``lax.cond`` it guards needs no communication between devices.
    """
    return lax.optimization_barrier(jnp.uint32(0)) > jnp.uint32(0)


def _materialize(fn: Callable[[jax.Array], jax.Array], key: jax.Array) -> jax.Array:
    """``fn(key)`` computed into its own buffer (a fusion barrier for XLA)."""
    return lax.cond(_opaque_predicate(), fn, fn, key)


def _threefry_blocks(key_words: jax.Array, num_blocks: int, first_block: jax.Array) -> jax.Array:
    """Threefry-2x32 of counters ``(0, first_block + j)``, both words packed as ``complex64``."""
    counters = (
        jnp.zeros((num_blocks,), jnp.uint32),
        lax.iota(jnp.uint32, num_blocks) + first_block,
    )
    x0, x1 = threefry2x32((key_words[0], key_words[1]), counters)
    as_float = lambda w: lax.bitcast_convert_type(w, jnp.float32)  # noqa: E731
    return lax.complex(as_float(x0), as_float(x1))


def random_lanes(key: jax.Array, num_lanes: int, first_block: ArrayLike = 0) -> jax.Array:
    """``num_lanes`` 16-bit lanes of the key's word stream, as ``uint32``.

    Lane ``i`` is the low (even ``i``) or high (odd ``i``) half of word ``i // 2``;
    see the module docstring for the word stream of each key implementation.

    Args:
      key: a typed PRNG key.
      num_lanes: how many lanes to draw.
      first_block: threefry keys only: start at lane ``4 * first_block`` (may be
        traced); lets a long mask be drawn in pieces.

    Returns:
      ``uint32`` array ``[num_lanes]`` with values in ``[0, 2**16)``.
    """
    if is_threefry(key):
        num_blocks = -(-num_lanes // 4)
        if num_blocks > 2**32:
            raise ValueError(f"masks of more than 2**34 elements are not supported ({num_lanes}).")
        first = jnp.asarray(first_block, jnp.uint32)
        blocks = _materialize(
            lambda k: _threefry_blocks(jax.random.key_data(k), num_blocks, first), key
        )
        as_word = lambda f: lax.bitcast_convert_type(f, jnp.uint32)  # noqa: E731
        first = lax.broadcasted_iota(jnp.int32, (num_blocks, 2, 2), 1) == 0
        words = jnp.where(
            first,
            as_word(jnp.real(blocks))[:, None, None],
            as_word(jnp.imag(blocks))[:, None, None],
        )
    else:
        num_words = -(-num_lanes // 2)
        words = _materialize(lambda k: jax.random.bits(k, (num_words,), jnp.uint32), key)[:, None]
    halves = lax.broadcasted_iota(jnp.uint32, (*words.shape[:-1], 2), words.ndim - 1)
    lanes = lax.shift_right_logical(words, halves * jnp.uint32(LANE_BITS)) & jnp.uint32(_LANE_MASK)
    return lanes.reshape(-1)[:num_lanes]


def lane_threshold(keep: jax.Array) -> jax.Array:
    """``round(keep * 2**16)`` as ``uint32``: a lane below it keeps its element."""
    return jnp.round(keep.astype(jnp.float32) * LANE_LEVELS).astype(jnp.uint32)


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    r"""Float32 standard normals; equals ``jax.random.normal(key, shape)`` (partitionable).

    Uses :func:`random_words`, so it is local to each shard whatever the
    ``jax_threefry_partitionable`` flag says: uniform ``u`` in (-1, 1) from the top
    23 bits of each word, then :math:`\sqrt 2\,\mathrm{erf}^{-1}(u)`.
    """
    words = random_words(key, shape)
    one_bits = jnp.uint32(0x3F800000)
    floats = lax.bitcast_convert_type(
        lax.shift_right_logical(words, jnp.uint32(9)) | one_bits, jnp.float32
    ) - jnp.float32(1.0)
    low = jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0))
    uniform = lax.max(low, floats * (jnp.float32(1.0) - low) + low)
    return jnp.float32(math.sqrt(2)) * lax.erf_inv(uniform)


def lane_keep_mask(
    key: jax.Array, shape: tuple[int, ...], keep: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Bernoulli keep-mask from 16-bit lanes and the keep probability it realises.

    Element ``i`` (row-major flat index) is kept when lane ``i`` (see
    :func:`random_lanes`) is below ``threshold = round(keep * 2**16)``, so the realised
    keep probability is ``threshold / 2**16``, within ``2**-17`` of ``keep``; it is
    returned so callers scale by exactly the probability used.

    Args:
      key: a typed PRNG key.
      shape: shape of the mask.
      keep: scalar keep probability in [0, 1] (may be traced).

    Returns:
      ``(mask, keep_used)``: a boolean mask of ``shape`` and a float32 scalar.
    """
    threshold = lane_threshold(keep)
    keep_used = threshold.astype(jnp.float32) / LANE_LEVELS
    lanes = random_lanes(key, math.prod(shape))
    return (lanes < threshold).reshape(shape), keep_used


CHUNK = 1 << 20
"""Elements per piece in :func:`select_lanes_chunked` (its lanes take 2 MiB)."""


def can_chunk(key: jax.Array, size: int) -> bool:
    """Whether :func:`select_lanes_chunked` applies (threefry key, more than one chunk)."""
    return is_threefry(key) and size > CHUNK


def select_lanes_chunked(
    key: jax.Array,
    x: jax.Array,
    threshold: jax.Array,
    kept: Callable[[jax.Array], jax.Array],
) -> jax.Array:
    """``where(lanes < threshold, kept(x), 0)`` for a whole-array mask, in pieces.

    Same values as building the :func:`lane_keep_mask` of ``x.shape`` and selecting
    with it: the piece starting at flat index ``s`` uses lanes ``s, s + 1, ...``. Each
    piece's lanes (2 MiB) stay in cache and below the ~32 MiB size above which every
    fresh buffer is page-faulted again on each call, and the output is updated in
    place (in ``x``'s buffer when it is donated).

    Args:
      key: a threefry PRNG key.
      x: the array ``[...]``.
      threshold: ``uint32`` scalar from :func:`lane_threshold`.
      kept: elementwise map giving the kept values (e.g. ``x / keep``).

    Returns:
      Array like ``x``.
    """
    size = x.size
    flat = x.reshape(-1)

    def piece(segment: jax.Array, start: jax.Array) -> jax.Array:
        lanes = random_lanes(key, segment.size, start // 4)
        return jnp.where(lanes < threshold, kept(segment), jnp.zeros((), x.dtype))

    def piece_at(y: jax.Array, start: jax.Array) -> jax.Array:
        return piece(lax.dynamic_slice(y, (start,), (CHUNK,)), start)

    def body(i, y):
        # The piece is computed into its own buffer (XLA:CPU's in-place
        # dynamic-update-slice fusion vectorises the lane arithmetic poorly), then
        # copied into place while it is still in cache.
        start = i.astype(jnp.uint32) * jnp.uint32(CHUNK)
        segment = lax.cond(_opaque_predicate(), piece_at, piece_at, y, start)
        return lax.dynamic_update_slice(y, segment, (start,))

    num_full = size // CHUNK
    flat = lax.fori_loop(0, num_full, body, flat)
    tail = num_full * CHUNK
    if tail < size:
        flat = flat.at[tail:].set(piece(flat[tail:], jnp.uint32(tail)))
    return flat.reshape(x.shape)
