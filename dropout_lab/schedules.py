r"""Drop-rate schedules: functions of the training step that return a (traced) rate.

A schedule is a function ``step -> rate``, as in :mod:`optax.schedules`: build it once
with its parameters, call it inside the jitted train step with the step counter, and pass
the result to any op as its ``rate``::

    schedule = dl.schedules.early(0.1, until=1_000)
    y = dl.dropout(key, x, schedule(step), deterministic=False)

Everything here is ``jit``- and ``vmap``-friendly. The step may be traced (one compiled
step for the whole run), and so may every parameter (``rate``, ``until``,
``transition_steps``, ...), so a grid of schedules is one program::

    rate_at = lambda rate, until, step: dl.schedules.early(rate, until)(step)
    jax.vmap(rate_at, in_axes=(0, 0, None))(rates, untils, step)  # [grid]

Every schedule returns float32 rates of the step's shape, in :math:`[0, 1)`; the step
may be an array (``schedule(jnp.arange(num_steps))`` draws the whole schedule). Steps
count from 0. Concrete parameters are checked when the schedule is built and a concrete
step when it is called (``ValueError`` naming the value and the fix); a traced value that
would have raised makes the rate NaN instead, which the ops turn into a NaN output, as
they do for a traced rate outside [0, 1].

Per-layer profiles (:func:`linear_depth`, :func:`decreasing_depth`) give ``[num_layers]``
rates; they are linear in their ``rate``, so :func:`per_layer` composes one with a step
schedule as :math:`\text{rate}(t, l) = s(t)\,w_l`.

The linear and cosine curves are optax's (:func:`optax.linear_schedule`,
:func:`optax.cosine_decay_schedule`), evaluated on the fraction of the transition done:
optax's constructors test ``transition_steps`` / ``decay_steps`` in Python, so they
cannot take them traced, while these can.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops import drop_path_rates

__all__ = [
    "constant",
    "cosine",
    "decreasing_depth",
    "early",
    "late",
    "linear",
    "linear_depth",
    "per_layer",
]

_Schedule = Callable[[ArrayLike], jax.Array]  # step (scalar or array) -> float32 rates

_DECAYS = ("constant", "linear")


def _concrete_real(value: ArrayLike, name: str) -> float | None:
    """``value`` as a float when concrete, None when traced; type and shape checked.

    Raises:
      TypeError: a PRNG key, None, a bool, a string or a non-real array.
      ValueError: not a scalar.
    """
    if _checks._is_key(value) or value is None or isinstance(value, bool | str | np.bool_):
        raise TypeError(f"{name} must be a real number, got {_checks._describe(value)}.")
    if not _checks.is_concrete(value):
        if jnp.shape(value) != ():
            raise ValueError(
                f"{name} must be a scalar, got a traced array of shape {jnp.shape(value)}; "
                "vmap over the schedule's parameters to build several."
            )
        return None
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number, got {_checks._describe(value)}.")
    if array.shape != ():
        raise ValueError(
            f"{name} must be a scalar, got an array of shape {array.shape}; vmap over the "
            "schedule's parameters to build several."
        )
    return float(array)


def _check_rate(rate: ArrayLike, name: str = "rate") -> jax.Array:
    """A scheduled rate: a real scalar in [0, 1), returned as float32."""
    value = _concrete_real(rate, name)
    if value is not None and not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name}={value!r} is outside [0, 1): it is the probability of dropping a unit "
            f"(keep probability = 1 - {name}); give a value below 1, e.g. {name}=0.1."
        )
    return jnp.asarray(rate, jnp.float32)


def _check_count(value: ArrayLike, name: str, *, positive: bool = False) -> jax.Array:
    """A number of steps: a real scalar >= 0 (> 0 when ``positive``), returned as an array."""
    number = _concrete_real(value, name)
    if number is not None and (math.isnan(number) or number < 0 or (positive and number == 0)):
        what = (
            "a positive number of steps" if positive else "a step number >= 0 (steps count from 0)"
        )
        raise ValueError(f"{name}={value!r} must be {what}; e.g. {name}=1000.")
    return jnp.asarray(value)


def _check_step(step: ArrayLike) -> jax.Array:
    """The step counter: a real scalar or array; a concrete one must be >= 0."""
    if _checks._is_key(step) or step is None or isinstance(step, bool | str | np.bool_):
        raise TypeError(f"step must be an integer step count, got {_checks._describe(step)}.")
    if not _checks.is_concrete(step):
        return jnp.asarray(step)
    array = np.asarray(step)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"step must be an integer step count, got {_checks._describe(step)}.")
    if array.size and not np.all(array >= 0):
        found = f"step={array.item()!r} is" if array.ndim == 0 else "the steps have a value"
        raise ValueError(
            f"{found} negative (or NaN); steps count from 0: pass the optimizer's step "
            "counter (e.g. state.step)."
        )
    return jnp.asarray(step)


def _invalid_rate(rate: jax.Array) -> jax.Array:
    """Boolean scalar: a (possibly traced) scheduled rate is NaN or outside [0, 1)."""
    return ~((rate >= 0) & (rate < 1))


def _schedule(body: Callable[[jax.Array], jax.Array], invalid: jax.Array) -> _Schedule:
    """Wraps ``body(step)``: checks the step, makes invalid traced inputs NaN, casts to float32."""

    def schedule(step: ArrayLike) -> jax.Array:
        t = _check_step(step)
        rate = jnp.asarray(body(t), jnp.float32)
        return jnp.where(invalid | (t < 0), jnp.float32(jnp.nan), rate)

    return schedule


def _progress(t: jax.Array, begin: jax.Array, steps: jax.Array) -> jax.Array:
    r"""Fraction of a transition done at step :math:`t`: :math:`\mathrm{clip}((t - B)/T, 0, 1)`.

    ``max(t, B) - B`` never goes below 0, so unsigned step counters do not wrap.
    """
    return jnp.clip((jnp.maximum(t, begin) - begin) / steps, 0.0, 1.0)


def constant(rate: ArrayLike) -> Callable[[ArrayLike], jax.Array]:
    r"""The same rate at every step: :math:`s(t) = r`.

    Standard dropout, written as a schedule so that it shares a grid with the others.

    Args:
      rate: the drop rate :math:`r \in [0, 1)`, possibly traced.

    Returns:
      A schedule ``step -> rate``: float32 rates of the step's shape.

    Raises:
      ValueError: a concrete ``rate`` outside [0, 1).
      TypeError: ``rate`` is not a real number.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> schedule = dl.schedules.constant(0.25)
      >>> schedule(jnp.arange(3)).tolist(), schedule(7).dtype
      ([0.25, 0.25, 0.25], dtype('float32'))
    """
    r = _check_rate(rate)
    return _schedule(lambda t: jnp.broadcast_to(r, jnp.shape(t)), _invalid_rate(r))


def early(
    rate: ArrayLike, until: ArrayLike, *, decay: str = "constant"
) -> Callable[[ArrayLike], jax.Array]:
    r"""Early dropout: rate :math:`r` for the first ``until`` steps, 0 afterwards.

    .. math::
        \text{constant:}\quad s(t) = r \ \ (t < U),\qquad
        \text{linear:}\quad s(t) = r\,\Bigl(1 - \frac{t}{\max(U - 1, 1)}\Bigr) \ \ (t < U),
        \qquad s(t) = 0 \ \ (t \ge U)

    with :math:`U` = ``until``. ``decay="linear"`` is the paper's linear early schedule,
    ``np.linspace(rate, 0, until)`` followed by zeros: it reaches 0 at step
    :math:`U - 1`. Liu et al. find that dropout on only at the start of training lowers
    the final training loss of models that underfit (ImageNet ViT-T: 73.9% top-1
    without dropout, 67.9% with standard dropout, 74.3% with early dropout); early
    stochastic depth is this schedule fed to :func:`linear_depth` (see
    :func:`per_layer`).

    Args:
      rate: the drop rate :math:`r \in [0, 1)` during the early phase, possibly traced.
      until: :math:`U \ge 0`, the first step with rate 0, possibly traced (the paper's
        ``cutoff_epoch`` times the steps per epoch).
      decay: ``"constant"`` or ``"linear"`` (the paper's ``--drop_schedule``), static.

    Returns:
      A schedule ``step -> rate``: float32 rates of the step's shape, non-increasing in
      the step.

    Raises:
      ValueError: a concrete ``rate`` outside [0, 1), a negative ``until`` or an
        unknown ``decay``.
      TypeError: ``rate`` or ``until`` is not a real number.

    References:
      Liu, Xu, Jin, Shen & Darrell, "Dropout Reduces Underfitting", ICML 2023.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.schedules.early(0.5, until=3)(jnp.arange(5)).tolist()
      [0.5, 0.5, 0.5, 0.0, 0.0]
      >>> dl.schedules.early(0.5, until=3, decay="linear")(jnp.arange(5)).tolist()
      [0.5, 0.25, 0.0, 0.0, 0.0]
    """
    if decay not in _DECAYS:
        raise ValueError(f"decay={decay!r} is not one of {_DECAYS}; e.g. decay='linear'.")
    r, u = _check_rate(rate), _check_count(until, "until")

    def body(t: jax.Array) -> jax.Array:
        on = r
        if decay == "linear":
            on = r * (1.0 - jnp.minimum(t / jnp.maximum(u - 1, 1), 1.0))
        return jnp.where(t < u, on, 0.0)

    return _schedule(body, _invalid_rate(r) | ~(u >= 0))


def late(rate: ArrayLike, start: ArrayLike) -> Callable[[ArrayLike], jax.Array]:
    r"""Late dropout: rate 0 before step ``start``, :math:`r` from then on.

    .. math::
        s(t) = 0 \ \ (t < S),\qquad s(t) = r \ \ (t \ge S)

    Liu et al.'s late stochastic depth (feed it to :func:`linear_depth` with
    :func:`per_layer`) helps models that overfit (ImageNet ViT-B: 81.6% → 82.3% top-1).

    Args:
      rate: the drop rate :math:`r \in [0, 1)` after ``start``, possibly traced.
      start: :math:`S \ge 0`, the first step with rate :math:`r`, possibly traced.

    Returns:
      A schedule ``step -> rate``: float32 rates of the step's shape, non-decreasing in
      the step.

    Raises:
      ValueError: a concrete ``rate`` outside [0, 1) or a negative ``start``.
      TypeError: ``rate`` or ``start`` is not a real number.

    References:
      Liu, Xu, Jin, Shen & Darrell, "Dropout Reduces Underfitting", ICML 2023.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.schedules.late(0.5, start=2)(jnp.arange(4)).tolist()
      [0.0, 0.0, 0.5, 0.5]
    """
    r, s = _check_rate(rate), _check_count(start, "start")
    return _schedule(lambda t: jnp.where(t >= s, r, 0.0), _invalid_rate(r) | ~(s >= 0))


def _ramp(
    curve: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    init_rate: ArrayLike,
    end_rate: ArrayLike,
    transition_steps: ArrayLike,
    transition_begin: ArrayLike,
) -> Callable[[ArrayLike], jax.Array]:
    """A schedule ``curve(init, end, progress)`` from ``init_rate`` to ``end_rate``."""
    init, end = _check_rate(init_rate, "init_rate"), _check_rate(end_rate, "end_rate")
    steps = _check_count(transition_steps, "transition_steps", positive=True)
    begin = _check_count(transition_begin, "transition_begin")
    lo, hi = jnp.minimum(init, end), jnp.maximum(init, end)

    def body(t: jax.Array) -> jax.Array:
        p = _progress(t, begin, steps)
        inside = jnp.clip(curve(init, end, p), lo, hi)
        return jnp.where(p <= 0, init, jnp.where(p >= 1, end, inside))

    invalid = _invalid_rate(init) | _invalid_rate(end) | ~(steps > 0) | ~(begin >= 0)
    return _schedule(body, invalid)


def _linear_curve(init: jax.Array, end: jax.Array, p: jax.Array) -> jax.Array:
    """Optax's linear schedule over one unit of progress: :math:`(I - E)(1 - p) + E`."""
    return jnp.asarray(optax.linear_schedule(init, end, transition_steps=1)(p))


def _cosine_curve(init: jax.Array, end: jax.Array, p: jax.Array) -> jax.Array:
    r"""Optax's cosine decay over one unit of progress, from I to E: :math:`E + (I - E)\,c(p)`."""
    return end + (init - end) * jnp.asarray(optax.cosine_decay_schedule(1.0, decay_steps=1)(p))


def linear(
    init_rate: ArrayLike,
    end_rate: ArrayLike,
    transition_steps: ArrayLike,
    transition_begin: ArrayLike = 0,
) -> Callable[[ArrayLike], jax.Array]:
    r"""A linear ramp from ``init_rate`` to ``end_rate`` (up or down), as optax's.

    .. math::
        s(t) = I + (E - I)\,p(t),\qquad p(t) = \mathrm{clip}\Bigl(\frac{t - B}{T}, 0, 1\Bigr)

    :math:`I` up to step :math:`B`, :math:`E` from step :math:`B + T` on (both exactly).
    In between it is :func:`optax.linear_schedule`'s :math:`(I - E)(1 - p) + E`, with
    traceable step counts.

    Args:
      init_rate: :math:`I \in [0, 1)`, possibly traced.
      end_rate: :math:`E \in [0, 1)`, possibly traced.
      transition_steps: :math:`T > 0`, the length of the ramp, possibly traced.
      transition_begin: :math:`B \ge 0`, the step the ramp starts, possibly traced.

    Returns:
      A schedule ``step -> rate``: float32 rates of the step's shape between
      :math:`I` and :math:`E`, monotone in the step.

    Raises:
      ValueError: a concrete rate outside [0, 1), ``transition_steps <= 0`` or a
        negative ``transition_begin``.
      TypeError: a parameter is not a real number.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.schedules.linear(0.0, 0.5, transition_steps=4)(jnp.arange(0, 6, 2)).tolist()
      [0.0, 0.25, 0.5]
    """
    return _ramp(_linear_curve, init_rate, end_rate, transition_steps, transition_begin)


def cosine(
    init_rate: ArrayLike,
    end_rate: ArrayLike,
    transition_steps: ArrayLike,
    transition_begin: ArrayLike = 0,
) -> Callable[[ArrayLike], jax.Array]:
    r"""A half-cosine from ``init_rate`` to ``end_rate`` (up or down), as optax's.

    .. math::
        s(t) = E + (I - E)\,\tfrac{1}{2}\bigl(1 + \cos(\pi\,p(t))\bigr),\qquad
        p(t) = \mathrm{clip}\Bigl(\frac{t - B}{T}, 0, 1\Bigr)

    :math:`I` up to step :math:`B`, :math:`E` from step :math:`B + T` on (both exactly).
    In between the curve is :func:`optax.cosine_decay_schedule`'s (Loshchilov & Hutter)
    over one unit of progress, so the step counts may be traced; ``end_rate >
    init_rate`` gives a cosine warm-up of the rate.

    Args:
      init_rate: :math:`I \in [0, 1)`, possibly traced.
      end_rate: :math:`E \in [0, 1)`, possibly traced.
      transition_steps: :math:`T > 0`, the length of the transition, possibly traced.
      transition_begin: :math:`B \ge 0`, the step it starts, possibly traced.

    Returns:
      A schedule ``step -> rate``: float32 rates of the step's shape between
      :math:`I` and :math:`E`, monotone in the step.

    Raises:
      ValueError: a concrete rate outside [0, 1), ``transition_steps <= 0`` or a
        negative ``transition_begin``.
      TypeError: a parameter is not a real number.

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
      ICLR 2017.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.schedules.cosine(0.5, 0.0, transition_steps=4)(jnp.arange(0, 6, 2)).round(4).tolist()
      [0.5, 0.25, 0.0]
    """
    return _ramp(_cosine_curve, init_rate, end_rate, transition_steps, transition_begin)


def linear_depth(rate: ArrayLike, num_layers: int, *, include_zero: bool = False) -> jax.Array:
    r"""Rates rising linearly in depth (stochastic depth): :math:`r_l = \frac{l}{L}\,r`.

    :func:`dropout_lab.drop_path_rates` with the schedules' conventions (rate in
    :math:`[0, 1)`, float32). Block :math:`l = 1, \ldots, L` gets :math:`\frac{l}{L}r`;
    with ``include_zero=True``, ``linspace(0, rate, L)`` (timm's and DeiT's
    ``drop_path_rate``: the first block is never dropped).

    Args:
      rate: :math:`r \in [0, 1)`, the rate of the last layer, possibly traced (for
        example ``schedule(step)``; see :func:`per_layer`).
      num_layers: :math:`L \ge 1`, static.
      include_zero: start at 0 instead of :math:`r / L`.

    Returns:
      ``[num_layers]`` float32 rates, non-decreasing.

    Raises:
      ValueError: a concrete ``rate`` outside [0, 1) or ``num_layers < 1``.
      TypeError: ``rate`` is not a real number.

    References:
      Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with Stochastic Depth",
      ECCV 2016.

    Examples:
      >>> import dropout_lab as dl
      >>> dl.schedules.linear_depth(0.5, 4).tolist()
      [0.125, 0.25, 0.375, 0.5]
    """
    r = _check_rate(rate)
    rates = drop_path_rates(rate, num_layers, include_zero=include_zero).astype(jnp.float32)
    return jnp.where(_invalid_rate(r), jnp.float32(jnp.nan), rates)


def decreasing_depth(rate: ArrayLike, num_layers: int, *, include_zero: bool = False) -> jax.Array:
    r"""Rates falling linearly in depth (DropKey): :math:`r_l = \frac{L + 1 - l}{L}\,r`.

    The mirror image of :func:`linear_depth`: the first layer gets :math:`r`, the last
    :math:`r / L` (0 with ``include_zero=True``, i.e. ``linspace(rate, 0, L)``). Li et
    al. drop keys with a ratio that decreases along the stack of self-attention layers,
    so that low-level features are regularized most and high-level ones are not lost;
    the end point of the decrease is a choice (``include_zero``), not fixed here to the
    paper's values.

    Args:
      rate: :math:`r \in [0, 1)`, the rate of the first layer, possibly traced.
      num_layers: :math:`L \ge 1`, static.
      include_zero: end at 0 instead of :math:`r / L`.

    Returns:
      ``[num_layers]`` float32 rates, non-increasing.

    Raises:
      ValueError: a concrete ``rate`` outside [0, 1) or ``num_layers < 1``.
      TypeError: ``rate`` is not a real number.

    References:
      Li, Hu, Nie, Han, Jiang, Guo & Liu, "DropKey for Vision Transformer", CVPR 2023.

    Examples:
      >>> import dropout_lab as dl
      >>> dl.schedules.decreasing_depth(0.5, 4).tolist()
      [0.5, 0.375, 0.25, 0.125]
    """
    return linear_depth(rate, num_layers, include_zero=include_zero)[::-1]


def per_layer(
    schedule: Callable[[ArrayLike], ArrayLike],
    num_layers: int,
    *,
    profile: Callable[[ArrayLike, int], jax.Array] = linear_depth,
) -> Callable[[ArrayLike], jax.Array]:
    r"""A step schedule spread over layers: :math:`\text{rate}(t, l) = s(t)\,w_l`.

    Returns ``step -> profile(schedule(step), num_layers)``. The profiles here are
    linear in their rate, :math:`\text{profile}(r)_l = r\,w_l`, with
    :math:`w_l = l / L` for :func:`linear_depth` and :math:`(L + 1 - l) / L` for
    :func:`decreasing_depth`: the step schedule sets the rate of the most-dropped layer
    and the profile shares it out. Early stochastic depth (Liu et al. 2023) is
    ``per_layer(early(r, until), L)``; DeiT's drop path is ``per_layer(constant(r), L,
    profile=partial(linear_depth, include_zero=True))``.

    Args:
      schedule: any ``step -> rate`` function (these, or an optax schedule).
      num_layers: :math:`L \ge 1`, static.
      profile: ``(rate, num_layers) -> [num_layers]`` rates; :func:`linear_depth`
        (default) or :func:`decreasing_depth`, or a ``functools.partial`` of one.

    Returns:
      A function ``step -> [*step.shape, num_layers]`` float32 rates.

    Raises:
      ValueError: a concrete negative step (when called).

    References:
      Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016. Liu et al.,
      "Dropout Reduces Underfitting", ICML 2023. Li et al., "DropKey for Vision
      Transformer", CVPR 2023.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> rates = dl.schedules.per_layer(dl.schedules.early(0.5, until=10), 4)
      >>> rates(0).tolist(), rates(10).tolist()
      ([0.125, 0.25, 0.375, 0.5], [0.0, 0.0, 0.0, 0.0])
      >>> rates(jnp.arange(12)).shape, rates(0).dtype
      ((12, 4), dtype('float32'))
    """

    def layer_rates(step: jax.Array) -> jax.Array:
        return jnp.asarray(profile(schedule(step), num_layers), jnp.float32)

    def rates(step: ArrayLike) -> jax.Array:
        return jnp.vectorize(layer_rates, signature="()->(l)")(_check_step(step))

    return rates
