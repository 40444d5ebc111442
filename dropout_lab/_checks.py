"""Argument validation shared by every dropout variant (private)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

MODES = ("inverted", "classic")


def is_concrete(value: ArrayLike) -> bool:
    """True when ``value`` is known at trace time (a Python number or a concrete array)."""
    return not isinstance(value, jax.core.Tracer)


def check_rate(rate: ArrayLike, name: str = "rate") -> jax.Array:
    """Validates a drop rate and returns it as a scalar float array.

    A concrete rate outside [0, 1] (or NaN) raises ``ValueError``. A traced rate
    cannot be checked at trace time; the ops turn an out-of-range traced rate into a
    NaN output instead of silently clipping it (see :func:`invalid_rate`).
    """
    if is_concrete(rate):
        value = np.asarray(rate)
        if value.shape != ():
            raise ValueError(
                f"{name} must be a scalar, got an array of shape {value.shape}; "
                "vmap over rates to use several."
            )
        if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(
            value.dtype, np.integer
        ):
            raise TypeError(f"{name} must be a real number, got dtype {value.dtype}.")
        r = float(value)
        if math.isnan(r) or not 0.0 <= r <= 1.0:
            raise ValueError(
                f"{name}={r!r} is outside [0, 1]; it is the probability of dropping a unit "
                f"(keep probability = 1 - {name})."
            )
    else:
        if jnp.shape(rate) != ():
            raise ValueError(
                f"{name} must be a scalar, got a traced array of shape {jnp.shape(rate)}; "
                "vmap over rates to use several."
            )
    return jnp.asarray(rate, dtype=jnp.result_type(float))


def keep_probability(rate: ArrayLike, rate_array: jax.Array) -> jax.Array:
    """``1 - rate`` as a scalar array, rounded once when ``rate`` is concrete.

    ``jax.random.bernoulli(key, 1 - rate)`` (and so Flax) rounds ``1 - rate`` computed in
    double precision; ``1 - float32(rate)`` can land one float32 step away (rate 0.33:
    0.66999996 instead of 0.67), which flips the masks of the rare elements whose
    uniform draw falls in between. A traced rate is subtracted in its own precision.
    """
    if is_concrete(rate):
        return jnp.asarray(1.0 - float(np.asarray(rate)), dtype=rate_array.dtype)
    return 1.0 - rate_array


def invalid_rate(rate: jax.Array) -> jax.Array:
    """Boolean scalar: the (possibly traced) rate is NaN or outside [0, 1]."""
    return ~((rate >= 0) & (rate <= 1))


def check_float_array(x: ArrayLike, name: str = "x") -> jax.Array:
    """Returns ``x`` as an array, raising ``TypeError`` unless its dtype is floating."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got "
            f"{x.dtype}; cast it first, e.g. {name}.astype(jnp.float32)."
        )
    return x


def check_mode(mode: str) -> str:
    """Validates the scaling mode."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    return mode


def mask_shape(shape: Sequence[int], broadcast_dims: Sequence[int]) -> tuple[int, ...]:
    """Shape of a mask shared along ``broadcast_dims`` (those axes set to 1)."""
    ndim = len(shape)
    out = list(shape)
    for dim in broadcast_dims:
        if not -ndim <= dim < ndim:
            raise ValueError(
                f"broadcast_dims contains {dim}, which is not an axis of an array of "
                f"shape {tuple(shape)}."
            )
        out[dim] = 1
    return tuple(out)


def as_key(key: ArrayLike) -> jax.Array:
    """Returns a typed PRNG key, wrapping a legacy ``uint32`` key with the default impl."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"expected a single PRNG key, got a key array of shape {key.shape}; "
                "vmap over keys to use several."
            )
        return key
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32:
        raise TypeError(
            f"key must be a PRNG key from jax.random.key (or a legacy uint32 key from "
            f"jax.random.PRNGKey), got an array of dtype {key.dtype}."
        )
    try:
        return jax.random.wrap_key_data(key)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"key of shape {key.shape} is not a single legacy key for the default PRNG; "
            "pass jax.random.key(seed)."
        ) from err


def nan_if_invalid(y: jax.Array, rate: ArrayLike, rate_array: jax.Array) -> jax.Array:
    """A traced rate outside [0, 1] cannot raise under jit: poison the output instead."""
    if is_concrete(rate):
        return y
    return jnp.where(invalid_rate(rate_array), jnp.asarray(jnp.nan, y.dtype), y)
