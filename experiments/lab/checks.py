"""Config errors and the range checks every schema shares; each error names its key."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NoReturn


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""


def fail(key: str, value: Any, why: str) -> NoReturn:
    """Raises ``ConfigError("config key 'key' = value: why")``."""
    raise ConfigError(f"config key {key!r} = {value!r}: {why}")


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        fail(key, value, f"must be one of {tuple(choices)}.")


def check_range(key: str, value, low=None, high=None, *, low_open=False, high_open=False) -> None:
    """``low <= value <= high`` (``<`` where open); NaN is refused."""
    if isinstance(value, float) and math.isnan(value):
        fail(key, value, "must not be NaN.")
    if low is not None and (value <= low if low_open else value < low):
        fail(key, value, f"must be {'>' if low_open else '>='} {low}.")
    if high is not None and (value >= high if high_open else value > high):
        fail(key, value, f"must be {'<' if high_open else '<='} {high}.")


def check_sizes(key: str, values: Sequence[int], *, nonempty: bool = True) -> None:
    """Every entry of ``values`` is >= 1 (and there is at least one when ``nonempty``)."""
    if nonempty and not values:
        fail(key, [], "needs at least one layer.")
    for i, size in enumerate(values):
        check_range(f"{key}[{i}]", size, 1)


def check_rate(key: str, value: float) -> None:
    """A dropout rate in [0, 1): a rate of 1 drops everything, nothing can be learned."""
    check_range(key, value, 0.0, 1.0, high_open=True)
