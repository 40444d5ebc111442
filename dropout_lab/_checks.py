"""Argument validation shared by every dropout variant (private)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

MODES = ("inverted", "classic")
MAKE_KEY = "make one with jax.random.key(0) and split it with jax.random.split"
KEY_FIRST = "the key comes first: op(key, x, rate, ...), as in jax.random"


def _is_key(value: Any) -> bool:
    """True for a typed PRNG key array (concrete or traced)."""
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _describe(value: Any) -> str:
    """``value`` in words for an error message: type and shape, not its contents."""
    if value is None:
        return "None"
    if isinstance(value, bool | int | float | complex | str):
        return f"the {type(value).__name__} {value!r}"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"an array of shape {tuple(shape)} and dtype {dtype}"
    return f"an object of type {type(value).__name__}"


def is_concrete(value: ArrayLike) -> bool:
    """True when ``value`` is known at trace time (a Python number or a concrete array)."""
    return not isinstance(value, jax.core.Tracer)


def check_rate(rate: ArrayLike, name: str = "rate") -> jax.Array:
    """Validates a drop rate and returns it as a scalar float array.

    A concrete rate outside [0, 1] (or NaN) raises ``ValueError``. A traced rate
    cannot be checked at trace time; the ops turn an out-of-range traced rate into a
    NaN output instead of silently clipping it (see :func:`invalid_rate`). A PRNG key
    or an array where the rate belongs (arguments swapped) raises naming the order.

    Raises:
      TypeError: ``rate`` is not a real number (a key, None, a string, a bool).
      ValueError: ``rate`` is not a scalar, or a concrete rate is outside [0, 1].
    """
    if _is_key(rate):
        raise TypeError(f"{name} got a PRNG key, not a probability; {KEY_FIRST}.")
    if not is_concrete(rate):
        if jnp.shape(rate) != ():
            raise ValueError(
                f"{name} must be a scalar, got a traced array of shape {jnp.shape(rate)}; "
                f"vmap over rates to use several. Swapped arguments? {KEY_FIRST}."
            )
        return jnp.asarray(rate, dtype=jnp.result_type(float))
    value = np.asarray(rate)
    if value.dtype == np.uint32 and value.shape == (2,):
        raise TypeError(f"{name} got a uint32 array of shape (2,), a legacy PRNG key; {KEY_FIRST}.")
    if value.shape != ():
        raise ValueError(
            f"{name} must be a scalar, got an array of shape {value.shape}; vmap over "
            f"rates to use several. Swapped arguments? {KEY_FIRST}."
        )
    if value.dtype == bool or not (
        np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)
    ):
        raise TypeError(
            f"{name} must be a real number in [0, 1] (the drop probability), got {_describe(rate)}."
        )
    r = float(value)
    if math.isnan(r) or not 0.0 <= r <= 1.0:
        raise ValueError(
            f"{name}={r!r} is outside [0, 1]; it is the probability of dropping a unit "
            f"(keep probability = 1 - {name})."
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
    """Returns ``x`` as an array, raising ``TypeError`` unless its dtype is floating.

    Raises:
      TypeError: ``x`` is None, a PRNG key (arguments swapped), not convertible to an
        array, or not floating point.
    """
    if _is_key(x):
        raise TypeError(f"{name} got a PRNG key, not an array of values; {KEY_FIRST}.")
    if x is None:
        raise TypeError(f"{name} is None; pass a floating array.")
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a floating array, got {_describe(x)}.") from err
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


def check_axis(axis: Any, ndim: int, name: str) -> int:
    """Validates one axis of an ``ndim``-array and returns it non-negative.

    Raises:
      TypeError: ``axis`` is not an int (bools, floats and strings are rejected;
        numpy integers are accepted).
      ValueError: ``axis`` is not in ``[-ndim, ndim)``.
    """
    if isinstance(axis, bool | np.bool_):
        raise TypeError(f"{name}={axis!r} is a bool; give the axis as an int, e.g. {name}=1.")
    try:
        index = operator.index(axis)
    except TypeError as err:
        raise TypeError(
            f"{name} must be an int axis, got {_describe(axis)}; e.g. {name}=1."
        ) from err
    if not -ndim <= index < ndim:
        raise ValueError(f"{name}={index} is not an axis of an array with {ndim} dimensions.")
    return index % ndim


def check_broadcast_dims(broadcast_dims: Any, ndim: int) -> tuple[int, ...]:
    """Validates ``broadcast_dims`` for an ``ndim``-array; returns its axes non-negative.

    Accepts a tuple, list or 1-D integer array of distinct axes, negative ones counted
    from the end, as ``flax.linen.Dropout`` does.

    Raises:
      TypeError: not a sequence (a single int, a string, None, a set), or an entry that
        is not an int (a bool, a float).
      ValueError: an entry out of range, or the same axis twice.
    """
    name = "broadcast_dims"
    if isinstance(broadcast_dims, str | bytes) or not isinstance(
        broadcast_dims, Sequence | np.ndarray | jax.Array
    ):
        hint = (
            f"wrap a single axis in a tuple: {name}=({broadcast_dims!r},)"
            if isinstance(broadcast_dims, int | np.integer)
            else f"e.g. {name}=(1, 2), or () for no shared axis"
        )
        raise TypeError(
            f"{name} must be a sequence of int axes, got {_describe(broadcast_dims)}; {hint}."
        )
    axes: list[int] = []
    for dim in broadcast_dims:
        if isinstance(dim, bool | np.bool_) or not hasattr(dim, "__index__"):
            raise TypeError(
                f"{name} contains {_describe(dim)}; each entry must be an int axis, "
                f"e.g. {name}=(1, 2)."
            )
        try:
            index = operator.index(dim)
        except TypeError as err:  # a traced or non-scalar array entry
            raise TypeError(
                f"{name} contains {_describe(dim)}; each entry must be a static int axis."
            ) from err
        if not -ndim <= index < ndim:
            raise ValueError(
                f"{name} contains {index}, which is not an axis of an array with {ndim} "
                f"dimensions (valid: {-ndim} to {ndim - 1})."
            )
        if index % ndim in axes:
            raise ValueError(
                f"{name} names axis {index % ndim} twice ({tuple(broadcast_dims)!r}); "
                "list each axis once."
            )
        axes.append(index % ndim)
    return tuple(axes)


def mask_shape(shape: Sequence[int], broadcast_dims: Sequence[int]) -> tuple[int, ...]:
    """Shape of a mask shared along ``broadcast_dims`` (those axes set to 1).

    ``broadcast_dims`` is validated by :func:`check_broadcast_dims`.
    """
    shared = check_broadcast_dims(broadcast_dims, len(shape))
    return tuple(1 if d in shared else n for d, n in enumerate(shape))


def check_key(key: Any, *, deterministic: bool | None = None, name: str = "key") -> None:
    """Validates a PRNG key without converting it; ``None`` is allowed when deterministic.

    Accepts a typed key (``jax.random.key``) or a legacy ``uint32[2]`` key
    (``jax.random.PRNGKey``), concrete or traced. Evaluation (``deterministic=True``)
    needs no key, as in Flax, but a key given then must still be a key. Functions
    without an evaluation mode pass ``deterministic=None`` (the message then does not
    suggest it).

    Raises:
      TypeError: ``key`` is missing (None) in training, or not a key; a float there
        usually means the arguments are swapped, and the message says so.
      ValueError: a key array holding several keys.
    """
    if key is None:
        if deterministic:
            return
        hint = "" if deterministic is None else " (evaluation, deterministic=True, needs none)"
        raise TypeError(f"{name} is None, but a PRNG key is needed: {MAKE_KEY}{hint}.")
    if _is_key(key):
        if key.shape != ():
            raise ValueError(
                f"{name} must be a single PRNG key, got a key array of shape {key.shape}; "
                "vmap over keys to use several."
            )
        return
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        dtype = np.result_type(key) if isinstance(key, int | float | np.generic) else None
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a PRNG key, got {_describe(key)}. Swapped arguments? "
            f"{KEY_FIRST}. To get a key, {MAKE_KEY}."
        )
    if dtype != jnp.uint32:
        raise TypeError(
            f"{name} must be a PRNG key, got {_describe(key)}; {MAKE_KEY} (a legacy "
            "uint32 key from jax.random.PRNGKey(0) is accepted too)."
        )
    if jnp.shape(key) != (2,):
        raise ValueError(
            f"{name} of shape {jnp.shape(key)} is not a single legacy key for the default "
            f"PRNG (uint32 of shape (2,)); {MAKE_KEY}, or vmap over keys to use several."
        )


def as_key(key: Any, name: str = "key") -> jax.Array:
    """Returns a typed PRNG key, wrapping a legacy ``uint32`` key with the default impl.

    Validates with :func:`check_key` first (``None`` is not allowed here).
    """
    check_key(key, name=name)
    if _is_key(key):
        return key
    try:
        return jax.random.wrap_key_data(jnp.asarray(key))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} of shape {jnp.shape(key)} is not a single legacy key for the default "
            f"PRNG; {MAKE_KEY}."
        ) from err


def nan_if_invalid(y: jax.Array, rate: ArrayLike, rate_array: jax.Array) -> jax.Array:
    """A traced rate outside [0, 1] cannot raise under jit: poison the output instead."""
    if is_concrete(rate):
        return y
    return jnp.where(invalid_rate(rate_array), jnp.asarray(jnp.nan, y.dtype), y)


_SUM_SLACK = 16


def check_probs(probs: ArrayLike, name: str, axis: int = -1) -> jax.Array:
    r"""Returns ``probs`` as a float array, checking that it holds distributions along ``axis``.

    A concrete array must have every value in :math:`[-\epsilon_C, 1 + \epsilon_C]`
    and every sum along ``axis`` within :math:`\epsilon_C` of 1, where
    :math:`\epsilon_C = (C + 16)\,\mathrm{eps}` for ``C`` classes and the dtype's
    ``eps``. Float rounding stays far inside this: the sum of ``C`` rounded terms in a
    softmax is off by at most :math:`(C - 1)\,\mathrm{eps}/2` (worst case), the
    ``exp``, the division and an average over MC passes add a few ``eps`` (at most
    2.6 ``eps`` measured for float32 softmax outputs and their means over up to 1000
    passes, with 2 to 32000 classes). NaN entries are skipped (they propagate, as
    elsewhere in JAX). A traced array (under ``jit``, ``vmap``, ``grad``) cannot be
    inspected and is returned unchecked.

    Raises:
      TypeError: ``probs`` is not floating point.
      ValueError: ``probs`` is a scalar, or concrete and not a distribution.
    """
    probs = check_float_array(probs, name)
    if probs.ndim < 1:
        raise ValueError(f"{name} must be [..., num_classes], got a scalar.")
    if not is_concrete(probs) or probs.size == 0:
        return probs
    p = np.asarray(probs, np.float64)
    tol = (probs.shape[axis] + _SUM_SLACK) * float(jnp.finfo(probs.dtype).eps)
    values = p[~np.isnan(p)]
    sums = np.sum(p, axis=axis)
    sums = sums[~np.isnan(sums)]
    if values.size and (values.min() < -tol or values.max() > 1 + tol):
        found = f"values range over [{values.min():.4g}, {values.max():.4g}], outside [0, 1]"
    elif np.any(np.abs(sums - 1) > tol):
        found = f"sums along axis {axis} range over [{sums.min():.7g}, {sums.max():.7g}]"
    else:
        return probs
    raise ValueError(
        f"{name} is not a probability distribution along axis {axis}: {found} (tolerance "
        f"{tol:.2g} = (num_classes + {_SUM_SLACK}) * eps of {probs.dtype}). These look like "
        f"logits or unnormalized scores: apply jax.nn.softmax(logits, axis={axis}) first."
    )


def check_log_probs(log_probs: ArrayLike, name: str, axis: int = -1) -> jax.Array:
    r"""Returns ``log_probs`` as a float array, checking it holds log-distributions along ``axis``.

    The log-domain twin of :func:`check_probs`, with the same tolerance
    :math:`\epsilon_C = (C + 16)\,\mathrm{eps}`: a concrete array must have every value
    at most :math:`\epsilon_C` (a log-probability is at most 0; ``-inf`` is a zero
    probability) and every ``logsumexp`` along ``axis`` within :math:`\epsilon_C` of 0
    (``log_softmax`` outputs and their MC log-means pass). NaN entries are skipped; a
    traced array is returned unchecked.

    Raises:
      TypeError: ``log_probs`` is not floating point.
      ValueError: ``log_probs`` is a scalar, or concrete and not normalized.
    """
    log_probs = check_float_array(log_probs, name)
    if log_probs.ndim < 1:
        raise ValueError(f"{name} must be [..., num_classes], got a scalar.")
    if not is_concrete(log_probs) or log_probs.size == 0:
        return log_probs
    lp = np.asarray(log_probs, np.float64)
    tol = (log_probs.shape[axis] + _SUM_SLACK) * float(jnp.finfo(log_probs.dtype).eps)
    values = lp[~np.isnan(lp)]
    top = np.max(lp, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):  # a row of -inf: log(0), reported below
        lse = np.log(np.sum(np.exp(lp - top), axis=axis)) + np.squeeze(top, axis)
    lse = lse[~np.isnan(lse)]
    if values.size and values.max() > tol:
        found = f"values reach {values.max():.4g}, above 0"
    elif np.any(np.abs(lse) > tol):
        found = f"logsumexp along axis {axis} ranges over [{lse.min():.7g}, {lse.max():.7g}]"
    else:
        return log_probs
    raise ValueError(
        f"{name} are not log-probabilities along axis {axis}: {found} (tolerance {tol:.2g} "
        f"= (num_classes + {_SUM_SLACK}) * eps of {log_probs.dtype}). These look like logits "
        f"or unnormalized scores: apply jax.nn.log_softmax(logits, axis={axis}) first."
    )
