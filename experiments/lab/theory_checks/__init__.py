r"""Checks every closed form of :mod:`dropout_lab.theory` numerically.

Each check compares a closed form with a Monte Carlo estimate made with the library's
own :func:`dropout_lab.dropout`, vmapped over many keys (or, for identities, with the
other side computed independently; for training runs, with the measured result). A row
records the claim, the function, both numbers, the standard error, the z-score and
whether it passed its stated criterion (:mod:`~lab.theory_checks.estimate`).

One module per subject, each with its rows: :mod:`~lab.theory_checks.linear` (a linear
unit, paths through a network), :mod:`~lab.theory_checks.regression` (linear
regression), :mod:`~lab.theory_checks.jensen` (Jensen gaps, and their plot's data),
:mod:`~lab.theory_checks.batchnorm` (BatchNorm after dropout, and its plot's data),
:mod:`~lab.theory_checks.bn_mlp` (the same in a trained MLP).
:func:`run_theory_checks` returns the rows and the plot data;
:func:`~lab.theory_checks.report.write_theory_outputs` writes ``table.md``,
``results.json``, ``jensen_gap.png`` and ``bn_shift.png``.
"""

from __future__ import annotations

from typing import Any

import jax

from lab.theory_checks.batchnorm import batchnorm_rows, bn_curves
from lab.theory_checks.bn_mlp import bn_mlp_rows
from lab.theory_checks.jensen import jensen_curves, jensen_rows
from lab.theory_checks.linear import active_paths_rows, linear_unit_rows
from lab.theory_checks.regression import regression_rows
from lab.theory_checks.report import markdown_table, write_theory_outputs
from lab.theory_config import TheoryChecksConfig

__all__ = ["markdown_table", "run_theory_checks", "write_theory_outputs"]


def run_theory_checks(cfg: TheoryChecksConfig) -> dict[str, Any]:
    """Runs every check; returns ``{"rows", "extras", "jensen_curves", "bn_curves"}``.

    The plot data (the last two) only when ``cfg.plots``.
    """
    keys = jax.random.split(jax.random.key(cfg.seed), 8)
    regression, regression_extras = regression_rows(cfg, keys[1])
    mlp, mlp_extras = bn_mlp_rows(cfg, keys[5])
    rows = [
        *linear_unit_rows(cfg, keys[0]),
        *regression,
        *jensen_rows(cfg, keys[2]),
        *active_paths_rows(cfg, keys[3]),
        *batchnorm_rows(cfg, keys[4]),
        *mlp,
    ]
    result: dict[str, Any] = {
        "rows": rows,
        "extras": {"regression": regression_extras, "batchnorm_mlp": mlp_extras},
    }
    if cfg.plots:
        result["jensen_curves"] = jensen_curves(cfg, keys[6])
        result["bn_curves"] = bn_curves(cfg, keys[7])
    return result
