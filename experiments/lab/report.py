"""Summaries over seeds (mean +- standard error), the Markdown table, figure captions.

Also the plotting setup every figure shares (pyplot, fonts, panel grid, saving); the
run folder's figures are drawn by :mod:`lab.figures`.
"""

from __future__ import annotations

import contextlib
import math
import pathlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# (key, header, format) in table order; missing keys are skipped.
CLASSIFICATION_COLUMNS = (
    ("test_acc", "test acc", "{:.4f}"),
    ("gap", "acc gap (train-test)", "{:.4f}"),
    ("test_nll", "test NLL", "{:.4f}"),
    ("nll_gap", "NLL gap (test-train)", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("brier", "Brier", "{:.4f}"),
    ("temperature", "T (fitted)", "{:.3f}"),
    ("test_nll_ts", "test NLL after T", "{:.4f}"),
    ("ece_ts", "ECE after T", "{:.4f}"),
    ("aurc", "AURC", "{:.4f}"),
    ("augrc", "AUGRC", "{:.4f}"),
    ("ood_auroc", "OOD AUROC (entropy)", "{:.3f}"),
    ("ood_auroc_mi", "OOD AUROC (MI)", "{:.3f}"),
    ("pruned_fraction", "pruned weights", "{:.3f}"),
    ("test_acc_unpruned", "test acc unpruned", "{:.4f}"),
    ("seconds_per_epoch", "s/epoch", "{:.2g}"),
)
REGRESSION_COLUMNS = (
    ("test_rmse", "test RMSE", "{:.4f}"),
    ("train_rmse", "train RMSE", "{:.4f}"),
    ("test_ll", "test log-lik", "{:.3f}"),
    ("coverage_90", "90% cover", "{:.3f}"),
    ("coverage_95", "95% cover", "{:.3f}"),
    ("std_in", "pred. std", "{:.3f}"),
    ("mc_std_data", "MC std at data", "{:.3f}"),
    ("mc_std_gap", "MC std in gap", "{:.3f}"),
    ("pruned_fraction", "pruned weights", "{:.3f}"),
    ("seconds_per_epoch", "s/epoch", "{:.2g}"),
)

# Readable at the saved size: font sizes in points, figures in inches at DPI.
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9}
STYLE |= {"xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 11}
DPI = 120
MAX_COLUMNS = 4  # panels per row before wrapping
# What the out-of-distribution set is, per ``data.ood`` (``lab.config.OOD_KINDS``).
OOD_SETS = {
    "held_out_classes": "held-out classes {classes}, never trained on",
    "noise": "Gaussian noise inputs with the training inputs' mean and std",
    "permuted": "test inputs with their features shuffled by one fixed permutation",
}


class Plot(NamedTuple):
    """A written figure: its file, the (closed) figure object and its caption."""

    path: pathlib.Path
    figure: Figure
    caption: str


def summarize(per_seed: dict[str, dict]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "se", "n"}}`` over seeds; se = std (ddof 1) / sqrt(n)."""
    keys = sorted({k for m in per_seed.values() for k in m})
    out = {}
    for key in keys:
        vals = np.array([m[key] for m in per_seed.values() if key in m], dtype=np.float64)
        se = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
        out[key] = {"mean": float(vals.mean()), "se": se, "n": len(vals)}
    return out


def table(summary: dict[str, dict], task: str) -> str:
    """Markdown table: one row per method, ``mean ± se`` per column."""
    columns = CLASSIFICATION_COLUMNS if task == "classification" else REGRESSION_COLUMNS
    present = [c for c in columns if any(c[0] in s for s in summary.values())]
    # Concrete dropout's learned rates, one column per layer.
    learned = sorted({k for s in summary.values() for k in s if k.startswith("learned_rate_")})
    present[-1:-1] = [(k, k.replace("_", " "), "{:.3f}") for k in learned]
    lines = [
        "| method | " + " | ".join(h for _, h, _ in present) + " |",
        "|---|" + "---:|" * len(present),
    ]
    for method, stats in summary.items():
        cells = []
        for key, _, fmt in present:
            if key not in stats:
                cells.append("–")
                continue
            s = stats[key]
            cell = fmt.format(s["mean"])
            if not math.isnan(s["se"]):
                cell += " ± " + fmt.format(s["se"])
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plt():
    """``matplotlib.pyplot`` on the file-only Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Font sizes of :data:`STYLE` while a figure is drawn and saved."""
    with _plt().rc_context(STYLE):
        yield


def save(fig: Figure, path: pathlib.Path, caption: str) -> Plot:
    """Writes ``fig`` (legends outside the axes included) and closes it."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return Plot(path, fig, caption)


def panels(
    num: int,
    width: float,
    height: float,
    ratios: tuple[float, ...] = (1.0,),
    sharey: bool = False,
    legend_width: float = 0.0,
) -> tuple[Figure, list[tuple[tuple[Axes, ...], bool]]]:
    """A figure of ``num`` panels, at most :data:`MAX_COLUMNS` per row.

    Args:
      num: number of panels.
      width: inches per column.
      height: inches per panel.
      ratios: relative heights of the axes stacked in each panel, top first.
      sharey: every panel's first axes shares the first panel's y axis.
      legend_width: inches added for a legend beside the panels.

    Returns:
      ``(fig, panels)``: per panel, its stacked axes (sharing x) and whether it is
      in the first column.
    """
    grid_rows = math.ceil(num / MAX_COLUMNS)
    cols = math.ceil(num / grid_rows)  # rows as full as possible, e.g. 5 = 3 + 2
    size = (width * cols + legend_width, height * grid_rows)
    fig = _plt().figure(figsize=size, layout="constrained")
    outer = fig.add_gridspec(grid_rows, cols)
    panels: list[tuple[tuple[Axes, ...], bool]] = []
    for i in range(num):
        inner = outer[divmod(i, cols)].subgridspec(len(ratios), 1, height_ratios=ratios)
        y = panels[0][0][0] if sharey and panels else None
        top = fig.add_subplot(inner[0], sharey=y)
        rest = [fig.add_subplot(inner[k], sharex=top) for k in range(1, len(ratios))]
        panels.append(((top, *rest), i % cols == 0))
    return fig, panels


def captions(plots: Sequence[Plot | None]) -> str:
    """Markdown ``## Figures`` section: each figure embedded under its caption."""
    lines = ["## Figures", ""]
    for plot in plots:
        if plot is not None:
            name = plot.path.name
            lines += [f"**{name}**: {plot.caption}", "", f"![{name}]({name})", ""]
    return "\n".join(lines) if len(lines) > 2 else ""


def ood_description(kind: str, classes: list[int] | tuple[int, ...] = ()) -> str:
    """What "out" means for ``data.ood == kind`` (empty for ``none``)."""
    if kind not in OOD_SETS:
        return ""
    return OOD_SETS[kind].format(classes=", ".join(str(c) for c in classes))
