"""Random words and Bernoulli keep-masks for the dropout ops (private).

Every mask element depends only on the key and its row-major flat index, never on
jit, vmap, the backend, the shape or sharding. The key's *word stream*:

* threefry keys: words ``2j`` and ``2j + 1`` are the two output words of
  Threefry-2x32 (20 rounds) applied to the counter ``(0, j)``. The cipher is
  unrolled in ``lax`` ops so XLA can fuse it.
* other keys (``philox2x32``, ``rbg``, ...): word ``j`` is
  ``jax.random.bits(key, (num_words,), jnp.uint32)[j]`` (for ``philox2x32`` this does
  not depend on ``num_words``; for ``rbg`` it may).

Generators:

* exact (default): element ``i`` is kept when word ``i`` is below
  ``ceil(keep * 2**32)`` (:func:`word_threshold`). :func:`mask_words` computes each
  element's word where it is used (one fused loop, no buffer of words).
* fast (opt-in): element ``i`` is kept when 16-bit *lane* ``i`` (the low, then the
  high half of word ``i // 2``) is below ``round(keep * 2**16)``: four elements per
  cipher call, keep probability on a ``2**-16`` grid.

Performance notes for the fast path (XLA:CPU). A fused loop is evaluated once per
output element, so a word feeding four lanes would be recomputed four times if fused
into the consumer. The words are therefore materialised inside a ``lax.cond`` whose
two branches are identical (so its predicate is irrelevant) and whose predicate XLA
cannot fold: the conditional is a fusion barrier. The predicate depends on no
input, so under ``vmap`` over keys it stays unbatched (the barrier survives) and
under sharding it is replicated (no collective). XLA:CPU has no multi-output loop
fusion: two output words of one cipher call would be computed by two fusions, each
running the whole cipher. The two words of a block are thus packed bit-for-bit into
one ``complex64`` element (bitcasts only, no arithmetic, so every bit pattern, NaN
payloads included, survives) and unpacked by the consumer. Above :data:`CHUNK`
elements the fast forward pass draws and applies the mask piece by piece
(:func:`select_chunked`, same values): a full-size word buffer would be page-faulted
again on each call. The exact path needs 32 bits per element, two elements per cipher
call: sharing a call through a buffer cost more than running the cipher once per
element inside the fused loop (``make bench``), so it does the latter.

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
    """Row-major flat index of every element of ``shape`` as ``uint32`` (at most 2**32 elements)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    return index


def wide_mul(a: jax.Array, b: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(hi, lo)`` words of the exact 64-bit product of ``uint32`` values ``a * b``.

    Computed from 16-bit halves, so nothing wraps: ``hi * 2**32 + lo == a * b``.
    """
    b = jnp.asarray(b, jnp.uint32)
    half, low = jnp.uint32(16), jnp.uint32(0xFFFF)
    a0, a1 = a & low, lax.shift_right_logical(a, half)
    b0, b1 = b & low, lax.shift_right_logical(b, half)
    p01, p10 = a0 * b1, a1 * b0
    middle = lax.shift_right_logical(a0 * b0, half) + (p01 & low) + (p10 & low)
    hi = (
        a1 * b1
        + lax.shift_right_logical(p01, half)
        + lax.shift_right_logical(p10, half)
        + lax.shift_right_logical(middle, half)
    )
    return hi, a * b


def wide_add(
    x: tuple[jax.Array, jax.Array], y: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """``(hi, lo)`` of the sum of two 64-bit values given as ``(hi, lo)`` ``uint32`` words."""
    lo = x[1] + y[1]
    carry = (lo < x[1]).astype(jnp.uint32)
    return x[0] + y[0] + carry, lo


def flat_index_2x32(shape: tuple[int, ...]) -> tuple[jax.Array | None, jax.Array]:
    """Row-major flat index of every element of ``shape`` as ``(hi, lo)`` ``uint32`` words.

    ``hi`` is ``None`` when every index fits in 32 bits (``lo`` is then
    :func:`_flat_index`); beyond, the index is carried exactly in 64 bits.
    """
    if math.prod(shape) <= 2**32:
        return None, _flat_index(shape)
    if math.prod(shape) > 2**64:
        raise ValueError(f"masks of more than 2**64 elements are not supported (shape {shape}).")
    index = (jnp.zeros(shape, jnp.uint32), jnp.zeros(shape, jnp.uint32))
    stride = 1
    for axis in reversed(range(len(shape))):
        coord = lax.broadcasted_iota(jnp.uint32, shape, axis)
        hi, lo = wide_mul(coord, stride & 0xFFFFFFFF)
        index = wide_add(index, (hi + coord * jnp.uint32(stride >> 32), lo))
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
    hi, lo = flat_index_2x32(shape)
    counters = (jnp.zeros(shape, jnp.uint32) if hi is None else hi, lo)
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


def materialize(fn: Callable[[jax.Array], jax.Array], key: jax.Array) -> jax.Array:
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


def stream_words(key: jax.Array, num_words: int, first_block: ArrayLike = 0) -> jax.Array:
    """``num_words`` 32-bit words of the key's word stream, materialised (``uint32``).

    Words ``2j`` and ``2j + 1`` are the two output words of Threefry-2x32 at counter
    ``(0, j)`` for threefry keys; other keys use ``jax.random.bits`` (see the module
    docstring). The words are computed behind a fusion barrier, so each cipher call
    runs once however many mask elements read its words.

    Args:
      key: a typed PRNG key.
      num_words: how many words to draw.
      first_block: threefry keys only: start at word ``2 * first_block`` (may be
        traced); lets a long mask be drawn in pieces.

    Returns:
      ``uint32`` array ``[num_words]``.
    """
    if not is_threefry(key):
        return materialize(lambda k: jax.random.bits(k, (num_words,), jnp.uint32), key)
    num_blocks = -(-num_words // 2)
    if num_blocks > 2**32:
        raise ValueError(f"masks of more than 2**33 words are not supported ({num_words}).")
    first = jnp.asarray(first_block, jnp.uint32)
    blocks = materialize(lambda k: _threefry_blocks(jax.random.key_data(k), num_blocks, first), key)
    as_word = lambda f: lax.bitcast_convert_type(f, jnp.uint32)  # noqa: E731
    low = lax.broadcasted_iota(jnp.int32, (num_blocks, 2), 1) == 0
    words = jnp.where(low, as_word(jnp.real(blocks))[:, None], as_word(jnp.imag(blocks))[:, None])
    return words.reshape(-1)[:num_words]


def random_lanes(key: jax.Array, num_lanes: int, first_block: ArrayLike = 0) -> jax.Array:
    """``num_lanes`` 16-bit lanes of the key's word stream, as ``uint32``.

    Lane ``i`` is the low (even ``i``) or high (odd ``i``) half of word ``i // 2`` of
    :func:`stream_words`.

    Args:
      key: a typed PRNG key.
      num_lanes: how many lanes to draw.
      first_block: threefry keys only: start at lane ``4 * first_block`` (may be
        traced); lets a long mask be drawn in pieces.

    Returns:
      ``uint32`` array ``[num_lanes]`` with values in ``[0, 2**16)``.
    """
    num_words = -(-num_lanes // 2)
    words = stream_words(key, num_words, first_block)[:, None]
    halves = lax.broadcasted_iota(jnp.uint32, (num_words, 2), 1)
    lanes = lax.shift_right_logical(words, halves * jnp.uint32(LANE_BITS)) & jnp.uint32(_LANE_MASK)
    return lanes.reshape(-1)[:num_lanes]


def word_threshold(keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""``(ceil(keep * 2**32), keep >= 1)``: a word below the threshold keeps its element.

    The threshold is exact (a power-of-two scaling and a ``ceil`` of a float whose
    integer part fits in ``uint32``), so the realised keep probability is
    :math:`\lceil q\,2^{32}\rceil / 2^{32} \in [q, q + 2^{-32})` for the keep probability
    :math:`q` as its dtype holds it. ``keep >= 1`` (threshold :math:`2^{32}`, beyond
    ``uint32``) is returned as a flag that keeps every element.
    """
    keep_all = keep >= 1
    scaled = jnp.ceil(jnp.where(keep_all, 0.0, keep) * jnp.asarray(2.0**32, keep.dtype))
    return scaled.astype(jnp.uint32), keep_all


def words_keep(words: jax.Array, threshold: jax.Array, keep_all: jax.Array) -> jax.Array:
    """Boolean keep decisions of ``uint32`` words against :func:`word_threshold`."""
    return (words < threshold) | keep_all


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


Decide = Callable[[jax.Array, int, ArrayLike], jax.Array]
"""``decide(key, size, first_element)``: keep decisions of flat mask elements
``first_element, ..., first_element + size - 1`` (``first_element`` a multiple of 4)."""


def lane_decisions(keep: jax.Array) -> tuple[Decide, jax.Array]:
    """The 16-bit-lane generator (``impl="fast"``) and the keep probability it realises.

    Element ``i`` is kept when lane ``i`` (:func:`random_lanes`) is below
    ``threshold = round(keep * 2**16)``, so the realised keep probability is
    ``threshold / 2**16``, within ``2**-17`` of ``keep``; it is returned so callers
    can scale by the probability used.
    """
    threshold = lane_threshold(keep)

    def decide(key: jax.Array, size: int, first_element: ArrayLike = 0) -> jax.Array:
        first_block = jnp.asarray(first_element, jnp.uint32) // jnp.uint32(4)
        return random_lanes(key, size, first_block) < threshold

    return decide, threshold.astype(jnp.float32) / LANE_LEVELS


def words_at(key_words: jax.Array, hi: jax.Array | None, lo: jax.Array) -> jax.Array:
    """Word ``i`` of a threefry key's stream at 64-bit word indices ``i = (hi, lo)``.

    Word ``i`` is output ``i % 2`` of the cipher at counter ``(j >> 32, j & 0xffffffff)``
    with ``j = i >> 1``: for ``i < 2**33`` (``hi`` zero or ``None``) the counter is
    ``(0, i >> 1)``, the layout of :func:`stream_words`; beyond, the high counter word
    takes the rest, so no two indices share a word.

    Args:
      key_words: ``jax.random.key_data`` of a threefry key, ``uint32 [2]``.
      hi: high words of the indices (``None``: all zero).
      lo: low words of the indices, ``uint32``.

    Returns:
      ``uint32`` array shaped like ``lo`` (broadcast with ``hi``).
    """
    one = jnp.uint32(1)
    block = lax.shift_right_logical(lo, one)
    if hi is None:
        counters = (jnp.zeros_like(lo), block)
    else:
        counters = (lax.shift_right_logical(hi, one), block | lax.shift_left(hi, jnp.uint32(31)))
    x0, x1 = threefry2x32((key_words[0], key_words[1]), counters)
    return jnp.where((lo & one) == 0, x0, x1)


def mask_words(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Word ``i`` of :func:`stream_words` for every element ``i`` of ``shape`` (row-major).

    For threefry keys each element runs the cipher at counter ``(0, i // 2)`` and keeps
    output word ``i % 2`` (:func:`words_at`; beyond ``2**33`` elements the high counter
    word carries the rest of ``i // 2``): twice the cipher work of :func:`stream_words`
    (which shares each call between two elements), but fused into the consumer, with
    no buffer of words and no pass over memory for them, which is faster at every
    size measured (``make bench``). Other keys use :func:`stream_words`.
    """
    if not is_threefry(key):
        return stream_words(key, math.prod(shape)).reshape(shape)
    return words_at(jax.random.key_data(key), *flat_index_2x32(shape))


CHUNK = 1 << 20
"""Elements per piece in :func:`select_chunked`."""


def can_chunk(key: jax.Array, size: int) -> bool:
    """Whether :func:`select_chunked` applies (threefry key, more than one chunk)."""
    return is_threefry(key) and size > CHUNK


def select_chunked(
    key: jax.Array,
    x: jax.Array,
    decide: Decide,
    kept: Callable[[jax.Array], jax.Array],
) -> jax.Array:
    """``where(decide(key, x.size, 0), kept(x), 0)`` for a whole-array mask, in pieces.

    Same values as deciding the whole flat mask at once: the piece starting at flat
    index ``s`` decides elements ``s, s + 1, ...``. Each piece's random words (at most
    4 MiB) stay in cache and below the ~32 MiB size above which every fresh buffer is
    page-faulted again on each call, and the output is updated in place (in ``x``'s
    buffer when it is donated).

    Args:
      key: a threefry PRNG key.
      x: the array ``[...]``.
      decide: the mask generator (:data:`Decide`).
      kept: elementwise map giving the kept values (e.g. ``x / keep``).

    Returns:
      Array like ``x``.
    """
    size = x.size
    flat = x.reshape(-1)

    def piece(segment: jax.Array, start: jax.Array) -> jax.Array:
        keep = decide(key, segment.size, start)
        return jnp.where(keep, kept(segment), jnp.zeros((), x.dtype))

    def piece_at(y: jax.Array, start: jax.Array) -> jax.Array:
        return piece(lax.dynamic_slice(y, (start,), (CHUNK,)), start)

    def body(i, y):
        # The piece is computed into its own buffer (XLA:CPU's in-place
        # dynamic-update-slice fusion vectorises the mask arithmetic poorly), then
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
