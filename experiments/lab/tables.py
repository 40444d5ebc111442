"""Sweep results as tables and figures: mean ± standard error over seeds, best rates.

Rows are flat dicts (one per grid point and seed); :func:`summarize_rows` groups them
and :func:`markdown_table`, :func:`csv_text` and :func:`plot_vs` show the groups.
"""

from __future__ import annotations

import csv
import io
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from lab import report

# (key, label, direction) of the metrics summarized against the rate; direction +1:
# higher is better, -1: lower is better, 0: no best marked.
CLASSIFICATION_METRICS = (
    ("test_acc", "test accuracy", 1),
    ("train_acc", "train accuracy", 0),
    ("gap", "gap (train - test acc)", 0),
    ("test_nll", "test NLL", -1),
    ("nll_gap", "NLL gap (test - train)", 0),
    ("ece", "ECE", -1),
    ("brier", "Brier", -1),
    ("entropy_in", "entropy (in)", 0),
    ("entropy_out", "entropy (OOD)", 0),
    ("ood_auroc", "OOD AUROC (entropy)", 1),
    ("mi_in", "MI (in)", 0),
    ("mi_out", "MI (OOD)", 0),
    ("ood_auroc_mi", "OOD AUROC (MI)", 1),
    ("final_train_loss", "final train loss", 0),
)
REGRESSION_METRICS = (
    ("test_rmse", "test RMSE", -1),
    ("train_rmse", "train RMSE", 0),
    ("gap", "gap (test - train RMSE)", 0),
    ("test_ll", "test log-lik", 1),
    ("coverage_95", "95% coverage", 0),
    ("std_in", "pred. std", 0),
    ("final_train_loss", "final train loss", 0),
)


def summarize_rows(rows: list[dict], metric_keys: Sequence[str], by: Sequence[str]) -> list[dict]:
    """Mean and standard error over seeds of ``metric_keys`` for each ``by`` group."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[b] for b in by)
        groups.setdefault(key, {})[str(row["seed"])] = {
            k: row[k] for k in metric_keys if k in row and row[k] is not None
        }
    out = []
    for key, per_seed in groups.items():
        entry = dict(zip(by, key, strict=True))
        entry["n"] = len(per_seed)
        entry["stats"] = report.summarize(per_seed)
        out.append(entry)
    return out


def best_rates(summary: list[dict], metrics: Sequence[tuple]) -> dict[str, dict[str, float]]:
    """``{series: {metric: best rate}}`` for the metrics with a direction."""
    best: dict[str, dict[str, float]] = {}
    for series in dict.fromkeys(e["series"] for e in summary):
        entries = [e for e in summary if e["series"] == series]
        for key, _, direction in metrics:
            vals = [(e["stats"][key]["mean"], e["rate"]) for e in entries if key in e["stats"]]
            if direction and len(vals) > 1:
                pick = max(vals) if direction > 0 else min(vals)
                best.setdefault(series, {})[key] = pick[1]
    return best


def _fmt(stats: dict, key: str) -> str:
    if key not in stats:
        return "–"
    s = stats[key]
    text = f"{s['mean']:.4f}"
    if not math.isnan(s["se"]):
        text += f" ± {s['se']:.4f}"
    return text


def markdown_table(
    summary: list[dict], metrics: Sequence[tuple], best: dict, index: Sequence[str]
) -> str:
    """Markdown table, one row per summary entry; the best value per series in bold."""
    present = [m for m in metrics if any(m[0] in e["stats"] for e in summary)]
    lines = [
        "| " + " | ".join([*index, "n", *(label for _, label, _ in present)]) + " |",
        "|" + "---|" * len(index) + "---:|" * (len(present) + 1),
    ]
    for e in summary:
        cells = [str(e[i]) for i in index] + [str(e["n"])]
        for key, _, _ in present:
            cell = _fmt(e["stats"], key)
            if best.get(e.get("series"), {}).get(key) == e.get("rate") and cell != "–":
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    """Rows (flat dicts) as CSV, the union of their keys as header."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def flat_summary(summary: list[dict]) -> list[dict]:
    rows = []
    for e in summary:
        row = {k: v for k, v in e.items() if k != "stats"}
        for key, s in e["stats"].items():
            row[f"{key}_mean"], row[f"{key}_se"] = s["mean"], s["se"]
        rows.append(row)
    return rows


def plot_vs(
    summary: list[dict],
    panels: Sequence[tuple],
    path: pathlib.Path,
    *,
    x: str = "rate",
    series: str = "series",
    best: dict | None = None,
    logx: bool = False,
) -> None:
    """Mean ± standard error (band) of each panel's metrics against ``x``, per series.

    Args:
      summary: entries of :func:`summarize_rows`.
      panels: ``(title, [(metric_key, line_style, label_suffix), ...])`` per panel.
      path: PNG file.
      x: the x-axis field.
      series: the field that names a curve.
      best: ``{series: {metric: x}}`` marked with a star.
      logx: log-scaled x axis.
    """
    plt = report._plt()
    names = list(dict.fromkeys(e[series] for e in summary))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels, strict=True):
        for i, name in enumerate(names):
            entries = sorted((e for e in summary if e[series] == name), key=lambda e: e[x])
            for key, style, suffix in lines:
                pts = [(e[x], e["stats"][key]) for e in entries if key in e["stats"]]
                if not pts:
                    continue
                xs = np.array([p[0] for p in pts], dtype=np.float64)
                mean = np.array([p[1]["mean"] for p in pts])
                se = np.nan_to_num(np.array([p[1]["se"] for p in pts]))
                ax.plot(xs, mean, style, color=f"C{i}", label=f"{name}{suffix}", marker=".")
                ax.fill_between(xs, mean - se, mean + se, color=f"C{i}", alpha=0.2)
                at = (best or {}).get(name, {}).get(key)
                if at is not None:
                    j = int(np.argmin(np.abs(xs - at)))
                    ax.plot(xs[j], mean[j], "*", color=f"C{i}", markersize=14, mec="k")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(x)
        if logx:
            ax.set_xscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------- training sweep
