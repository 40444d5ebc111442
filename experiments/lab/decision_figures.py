"""Figures of decisions taken on MC dropout: risk-coverage curves, active learning.

As in :mod:`lab.figures`: each ``plot_*`` writes one PNG and returns a
:class:`~lab.report.Plot` with its caption; what is drawn is computed first by a plain
function (:func:`risk_coverage_curves`, :func:`error_bands`) with the metrics of
``dropout_lab.metrics``.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import numpy as np

from dropout_lab import metrics
from lab import calibrate, report
from lab.figures import _seeds_text, seed_band


class Curve(NamedTuple):
    """One seed's risk-coverage curve and its areas."""

    seed: str
    coverage: np.ndarray
    risk: np.ndarray
    aurc: float
    augrc: float


def risk_coverage_curves(runs: dict[str, dict[str, np.ndarray]]) -> list[Curve]:
    """Every seed's risk-coverage curve of its test predictions.

    Args:
      runs: ``{seed: arrays}`` with ``test_probs [n, classes]`` and ``test_labels [n]``.

    Returns:
      One :class:`Curve` per seed: ``dl.metrics.risk_coverage`` with the top
      probability as the confidence (:func:`lab.calibrate.selective`) and the
      table's ``aurc`` and ``augrc`` (:func:`lab.calibrate.areas`).
    """
    out = []
    for seed, a in runs.items():
        rc = metrics.risk_coverage(*calibrate.selective(a["test_probs"], a["test_labels"]))
        got = calibrate.areas(a["test_probs"], a["test_labels"])
        out.append(Curve(seed, np.asarray(rc.coverage), np.asarray(rc.risk),
                         float(got["aurc"]), float(got["augrc"])))  # fmt: skip
    return out


def plot_risk_coverage(
    arrays: dict[str, dict[str, dict[str, np.ndarray]]], path: pathlib.Path
) -> report.Plot:
    """Risk against coverage per method, one line per seed, AURC in the title."""
    curves = {method: risk_coverage_curves(runs) for method, runs in arrays.items()}
    seeds = list(next(iter(arrays.values())))
    with report.style():
        fig, panels = report.panels(len(curves), 3.4, 3.0, sharey=True)
        for ((ax,), first), (method, lines) in zip(panels, curves.items(), strict=True):
            for i, c in enumerate(lines):
                ax.plot(c.coverage, c.risk, color=f"C{i}", lw=1.2, label=f"seed {c.seed}")
            mean = np.mean([c.aurc for c in lines])
            ax.set(title=f"{method}: AURC {mean:.4f}", xlabel="coverage", xlim=(0, 1))
            ax.set_ylabel("selective risk (error rate)" if first else "")
            ax.grid(alpha=0.3)
        panels[0][0][0].legend(loc="upper left")
        fig.suptitle(f"Test predictions, {_seeds_text(seeds)}, one line each")
    caption = (
        "selective risk (error rate among the accepted examples) against coverage, accepting "
        "the test examples of highest top-class probability first, one line per seed "
        f"({_seeds_text(seeds)}); the title's AURC is the mean over seeds (the table's)."
    )
    return report.save(fig, path, caption)


def error_bands(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over seeds of test errors ``[seeds, rounds]``."""
    return seed_band(errors)


def plot_active_learning(
    labels: list[int],
    errors: dict[str, np.ndarray],
    names: dict[str, str],
    targets: list[float],
    path: pathlib.Path,
    title: str,
) -> report.Plot:
    """Test error against the number of labels, mean ± 1 s.e. over seeds per heuristic.

    Args:
      labels: labelled points of each round ``[rounds]``.
      errors: ``{heuristic: test errors [seeds, rounds]}``.
      names: display name of each heuristic.
      targets: test errors of the table, drawn as dotted lines.
      path: the PNG.
      title: the figure's title (the data and the pool).
    """
    from matplotlib.ticker import FuncFormatter

    x = np.asarray(labels)
    num_seeds = len(next(iter(errors.values())))
    with report.style():
        fig, panels = report.panels(1, 6.4, 4.2, legend_width=2.2)
        (ax,), _ = panels[0]
        for i, (h, err) in enumerate(errors.items()):
            mean, se = error_bands(err)
            ax.plot(x, 100 * mean, color=f"C{i}", lw=1.6, label=names[h])
            ax.fill_between(x, 100 * (mean - se), 100 * (mean + se), color=f"C{i}", alpha=0.18)
        for t in targets:
            ax.axhline(100 * t, color="0.35", ls=":", lw=1)
            ax.text(x[0], 100 * t, f"{100 * t:g}% ", va="bottom", ha="left", color="0.35")
        ax.set(xlabel="labelled points", ylabel="test error (%)", yscale="log", title=title)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(alpha=0.3, which="both")
        fig.legend(loc="outside right center", frameon=False,
                   title=f"mean ± 1 s.e., {num_seeds} seeds")  # fmt: skip
    caption = (
        f"test error (log scale) against the number of labelled points, mean over {num_seeds} "
        "seeds with a ±1 standard-error band per heuristic; dotted: the error targets of "
        "the table."
    )
    return report.save(fig, path, caption)
