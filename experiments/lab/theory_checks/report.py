"""The theory checks' outputs: ``table.md``, ``results.json`` and two PNG plots."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from lab import provenance
from lab.run import write_atomic
from lab.theory_checks.batchnorm import BN_CASES, BN_STATS, CASE_LABELS
from lab.theory_config import TheoryChecksConfig

DPI = 120
# The legend's label of case (b) is shorter than the table's.
LEGEND_LABELS = {**CASE_LABELS, "classic": "(b) classic, x q at test"}


def _cell(value: float) -> str:
    """A number with 5 significant digits; NaN (no standard error or z) as empty."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return f"{value:.5g}"


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| claim | function | closed form | estimate | std. err. | z | criterion | pass |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        claim = r["claim"] + (f" ({r['note']})" if r["note"] else "")
        cells = (
            claim,
            f"`theory.{r['function']}`",
            _cell(r["closed_form"]),
            _cell(r["estimate"]),
            _cell(r["std_err"]),
            _cell(r["z"]),
            r["criterion"],
            "pass" if r["passed"] else "**FAIL**",
        )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: pathlib.Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)


def plot_jensen(curves: dict, path: pathlib.Path) -> None:
    """Closed-form Jensen gaps over the rates, Monte Carlo points with 2 s.e. bars."""
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    for i, (name, values) in enumerate(curves["closed"].items()):
        color = f"C{i}"
        ax.plot(curves["fine"], values, color=color, label=f"{name}: closed form")
        estimate, se = curves["mc"][name]
        ax.errorbar(curves["rates"], estimate, yerr=2 * np.asarray(se), fmt="o", color=color,
                    ms=4, capsize=2, label=f"{name}: MC (+-2 s.e.)")  # fmt: skip
    ax.set_xlabel("drop rate p")
    ax.set_ylabel("E[phi(z_drop)] - phi(E z_drop)")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_title("Jensen gap of inverted dropout")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_bn(curves: dict, mlp_rows: list[dict], rate: float, path: pathlib.Path) -> None:
    """BatchNorm's output mean shift and variance ratio over the rates, per case.

    Formula curves, Monte Carlo points with 2 s.e. bars, and the trained MLPs'
    measurement (star) next to their formula (cross) at ``rate``.
    """
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4))
    for i, case in enumerate(BN_CASES):
        for ax, stat in zip(axes, BN_STATS, strict=True):
            style, z = ("--", 3) if case == "classic" else ("-", 2)
            ax.plot(curves["fine"], curves["closed"][case][stat], style, color=f"C{i}",
                    label=f"{LEGEND_LABELS[case]}: formula", zorder=z)  # fmt: skip
            est, se = np.asarray(curves["mc"][case][stat]).T
            ax.errorbar(curves["rates"], est, yerr=2 * se, fmt="o", color=f"C{i}", ms=4,
                        capsize=2, label=f"{LEGEND_LABELS[case]}: MC")  # fmt: skip
    for r in mlp_rows:
        ax = axes[0] if "shift" in r["claim"] else axes[1]
        ax.plot([rate], [r["estimate"]], "*", color="k", ms=10, zorder=5)
        ax.plot([rate], [r["closed_form"]], "x", color="r", ms=8, zorder=6)
    axes[0].plot([], [], "*", color="k", label="trained MLP: measured (mean over units)")
    axes[0].plot([], [], "x", color="r", label="trained MLP: formula from its units' moments")
    axes[0].set_ylabel("BN output mean shift (test - train), γ = 1")
    axes[1].set_ylabel("BN output variance ratio (test / train)")
    for ax in axes:
        ax.set_xlabel("drop rate p")
    # One legend under both panels: inside a panel it hid the trained MLP's star.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=7)
    fig.suptitle("BatchNorm after dropout: test-time shift (Li et al. 2019)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)


def write_theory_outputs(
    result: dict[str, Any], cfg: TheoryChecksConfig, output_dir: str | pathlib.Path, meta: dict
) -> dict[str, pathlib.Path]:
    """Writes ``table.md``, ``results.json`` and (if computed) the two PNG plots.

    Both files record their provenance (:mod:`lab.provenance`; no data set: every draw
    comes from the config's seeds).

    Returns:
      The written paths by name.
    """
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "table.md", "json": out / "results.json"}
    record = provenance.of_run(cfg, None)
    write_atomic(paths["table"], markdown_table(result["rows"]) + "\n" + provenance.footer(record))
    payload = {"meta": meta, "config": OmegaConf.to_container(OmegaConf.structured(cfg))}
    payload["provenance"] = record
    payload.update(result)
    write_atomic(paths["json"], json.dumps(payload, indent=1, default=float))
    if "jensen_curves" in result:
        paths["jensen_plot"] = out / "jensen_gap.png"
        plot_jensen(result["jensen_curves"], paths["jensen_plot"])
        paths["bn_plot"] = out / "bn_shift.png"
        mlp_rows = [r for r in result["rows"] if r["claim"].startswith("trained MLP")]
        plot_bn(result["bn_curves"], mlp_rows, cfg.rate, paths["bn_plot"])
    return paths
