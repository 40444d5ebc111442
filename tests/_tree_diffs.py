"""The difference of two pytrees, for the device and process workers' reports."""

import jax
import numpy as np


def max_diffs(a, b) -> tuple[float, float]:
    """Max absolute and max relative (to max |a|) difference over matching leaves."""
    abs_, rel = 0.0, 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        d = float(np.max(np.abs(x - y))) if x.size else 0.0
        abs_, rel = max(abs_, d), max(rel, d / max(float(np.max(np.abs(x))), 1e-30))
    return abs_, rel
