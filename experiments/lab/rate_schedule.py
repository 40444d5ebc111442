"""A method's rate as a traced function of the step, from :mod:`dropout_lab.schedules`.

A method's ``schedule`` settings (:class:`lab.settings.ScheduleSettings`) travel in the
hyperparameters pytree as four float32 scalars (:func:`schedule_hparams`), and the train
step replaces ``hparams["rate"]`` by the schedule's rate at its step (:func:`scheduled`).
The kind is an index into :data:`~lab.settings.SCHEDULE_KINDS`, so the points of a grid
with different kinds (constant, early, late, linear, cosine) share one compiled step:
every kind's rate is computed (a few scalar operations) and the point's one selected.
The ``constant`` kind gives ``rate`` itself, bit for bit: a method without a schedule
trains exactly as before schedules existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dropout_lab import schedules
from lab.checks import check_choice, check_range, fail
from lab.settings import PROFILES, SCHEDULE_KINDS

KIND_INDEX = {kind: i for i, kind in enumerate(SCHEDULE_KINDS)}


def schedule_hparams(
    kind: str = "constant", start: float = 0.0, until: float = 1.0, end_rate: float = 0.0
) -> dict[str, float]:
    """The schedule's entries of the hyperparameters (see :class:`~lab.settings.ScheduleSettings`).

    Returns:
      ``{"schedule_kind", "schedule_start", "schedule_until", "schedule_end_rate"}``:
      the kind's index in :data:`~lab.settings.SCHEDULE_KINDS` and the times as
      fractions of training.
    """
    return {
        "schedule_kind": float(KIND_INDEX[kind]),
        "schedule_start": float(start),
        "schedule_until": float(until),
        "schedule_end_rate": float(end_rate),
    }


def of_settings(settings: Any) -> dict[str, float]:
    """:func:`schedule_hparams` of a method's settings (constant when it has no schedule)."""
    s = getattr(settings, "schedule", None)
    if s is None:
        return schedule_hparams()
    return schedule_hparams(s.kind, s.start, s.until, s.end_rate)


def scheduled(hp: Mapping[str, jax.Array], step: jax.Array, total_steps: int) -> dict:
    r"""``hp`` with ``rate`` replaced by the schedule's rate at ``step``.

    .. math:: \text{rate}_t = s_k(t),\qquad k = \text{hp["schedule\_kind"]}

    with :math:`s_k` the :mod:`dropout_lab.schedules` function of kind :math:`k` built
    from ``hp["rate"]``, ``hp["schedule_end_rate"]`` and the times
    ``round(fraction * total_steps)``; a ramp (linear, cosine) lasts at least one step.

    Args:
      hp: the hyperparameters (:func:`lab.methods.hyperparameters`), possibly traced.
      step: the global step counter (starts at 0), possibly traced.
      total_steps: steps of the whole run (static).

    Returns:
      A new dict; only ``rate`` differs (``constant``: ``hp["rate"]`` itself).
    """
    rate, end = hp["rate"], hp["schedule_end_rate"]
    start = jnp.round(hp["schedule_start"] * total_steps)
    until = jnp.round(hp["schedule_until"] * total_steps)
    ramp = jnp.maximum(until - start, 1.0)
    kinds = (
        schedules.constant(rate),
        schedules.early(rate, until),
        schedules.late(rate, start),
        schedules.linear(rate, end, ramp, start),
        schedules.cosine(rate, end, ramp, start),
    )
    rates = jnp.stack([s(step) for s in kinds])
    return {**hp, "rate": rates[jnp.asarray(hp["schedule_kind"]).astype(jnp.int32)]}


def rate_curve(hp: Mapping[str, Any], total_steps: int) -> np.ndarray:
    """``[total_steps]`` the rate :func:`scheduled` gives at every step (for figures)."""
    hp = {k: jnp.float32(v) for k, v in hp.items()}
    steps = jnp.arange(total_steps)
    return np.asarray(jax.vmap(lambda t: scheduled(hp, t, total_steps)["rate"])(steps))


def describe(kind: str, start: float, until: float, end_rate: float) -> str:
    """A short label of a schedule, empty for ``constant`` (e.g. ``early until 0.25``)."""
    if kind == "constant":
        return ""
    if kind == "early":
        return f"early until {until:g}"
    if kind == "late":
        return f"late from {start:g}"
    return f"{kind} {start:g}-{until:g} to {end_rate:g}"


def check_schedule(prefix: str, s: Any) -> None:
    """Kind and profile known, times in [0, 1], ``end_rate`` in [0, 1), ramps not empty."""
    check_choice(f"{prefix}.kind", s.kind, SCHEDULE_KINDS)
    check_choice(f"{prefix}.profile", s.profile, PROFILES)
    check_range(f"{prefix}.start", s.start, 0.0, 1.0)
    check_range(f"{prefix}.until", s.until, 0.0, 1.0)
    check_range(f"{prefix}.end_rate", s.end_rate, 0.0, 1.0, high_open=True)
    if s.kind in ("linear", "cosine") and not s.start < s.until:
        fail(f"{prefix}.until", s.until, f"a {s.kind} ramp needs start < until.")
