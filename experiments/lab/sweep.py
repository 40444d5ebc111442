"""Vmapped sweeps: a whole grid of dropout rates x seeds (x hyperparameters) per method.

Each method's grid trains as one program (:func:`lab.grid.train_grid`: the fit's step
vmapped over grid points) and is evaluated point by point with the comparison's
metrics; :func:`run_sweep` writes the tables and plots.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

from lab import distributed, provenance
from lab.config import to_yaml
from lab.data import Dataset, load_dataset
from lab.fit import make_setup
from lab.grid import curve_rows, evaluate_grid, grid_curve, grid_points, train_grid
from lab.model import describe
from lab.run import check_output_dir, run_dir, write_atomic
from lab.sweep_config import SweepConfig
from lab.tables import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    best_rates,
    csv_text,
    flat_summary,
    markdown_table,
    plot_vs,
    summarize_rows,
)


def run_sweep(
    cfg: SweepConfig,
    *,
    data: Dataset | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Trains and evaluates every method's grid; writes tables and plots.

    Run folder (``cfg.output_dir``, default ``runs/<name>``): ``config.yaml``,
    ``sweep.json`` (per-point rows, summaries, best rates, timings, and with
    ``sweep.curves`` every point's learning curve), ``sweep.md``,
    ``sweep_points.csv``, ``sweep_summary.csv`` and the PNG plots ``test_vs_rate``,
    ``gap_vs_rate``, ``ece_vs_rate`` and ``ood_vs_rate`` (classification).

    Args:
      cfg: a checked sweep config (:func:`~lab.sweep_config.load_sweep_config`).
      data: an already loaded data set (default: loaded from ``cfg.data``).
      on_progress: ``on_progress(method, done, total)`` (steps x points).

    Returns:
      The content of ``sweep.json``.
    """
    distributed.initialize(cfg.distributed)  # before anything touches a device
    check_output_dir(run_dir(cfg))  # before any work
    data = data if data is not None else load_dataset(cfg.data)
    folder = run_dir(cfg)
    write_atomic(folder / "config.yaml", to_yaml(cfg))
    rows: list[dict] = []
    timing: dict[str, dict] = {}
    curves: list[dict] = []
    for method in cfg.sweep.methods:
        rows.extend(_sweep_method(cfg, data, method, timing, on_progress, curves))
    metrics = CLASSIFICATION_METRICS if data.task == "classification" else REGRESSION_METRICS
    summary = summarize_rows(
        rows, [m[0] for m in metrics], ("series", "method", "alpha", "weight_decay", "rate")
    )
    best = best_rates(summary, metrics)
    table = markdown_table(summary, metrics, best, ("series", "rate"))
    record = provenance.of_run(cfg, provenance.data_hash(data))
    out = {
        "name": cfg.name,
        "task": data.task,
        "seeds": list(range(cfg.sweep.first_seed, cfg.sweep.first_seed + cfg.sweep.seeds)),
        "rows": rows,
        "summary": summary,
        "best_rate": best,
        "timing": timing,
        "table": table,
        "provenance": record,
    }
    if cfg.sweep.curves:
        out["curves"] = curves
    _write_outputs(cfg, data, folder, out)
    if cfg.plots and distributed.is_primary():
        _sweep_plots(summary, best, data.task, folder)
    return out


def _sweep_method(
    cfg, data: Dataset, method: str, timing: dict, on_progress, curves: list
) -> list[dict]:
    """Trains and evaluates ``method``'s grid; records its timing and curves; returns its rows."""
    setup = make_setup(cfg, method, data)
    hook = None
    if on_progress is not None:

        def hook(done, total):
            on_progress(method, done, total)

    points = grid_points(cfg, method)
    s = cfg.sweep
    curve = grid_curve(setup, data, cfg.train.eval_batch_size) if s.curves else None
    training = train_grid(
        setup, data, points, input_rate=s.input_rate, chunk_size=s.chunk_size,
        on_progress=hook, curve=curve,
    )  # fmt: skip
    timing[method] = {"points": len(points), "train_seconds": training.seconds}
    timing[method]["train_cpu_seconds"] = training.cpu_seconds
    curves.extend(curve_rows(training, setup.schedule.steps_per_epoch) if s.curves else [])
    return evaluate_grid(setup, data, training, cfg, input_rate=s.input_rate)


def _write_outputs(cfg, data: Dataset, folder, out: dict) -> None:
    """``sweep.json``, the two CSVs and ``sweep.md``."""
    write_atomic(folder / "sweep.json", json.dumps(out, indent=1))
    write_atomic(folder / "sweep_points.csv", csv_text(out["rows"]))
    write_atomic(folder / "sweep_summary.csv", csv_text(flat_summary(out["summary"])))
    best_lines = [
        f"- {series}: " + ", ".join(f"{k} at rate {r:g}" for k, r in picks.items())
        for series, picks in out["best_rate"].items()
    ]
    header = (
        f"# {cfg.name}: sweep\n\nmean ± standard error over {cfg.sweep.seeds} seeds; "
        f"data `{cfg.data.name}` ({len(data.x_train)} train / {len(data.x_test)} test), "
        f"{describe(cfg.model)}, {cfg.train.epochs} epochs, input rate "
        f"{cfg.sweep.input_rate:g}. Best rate per metric in bold.\n\n"
    )
    best_text = "\n\n## Best rate per metric\n\n" + "\n".join(best_lines) + "\n"
    footer = "\n" + provenance.footer(out["provenance"])
    write_atomic(folder / "sweep.md", header + out["table"] + best_text + footer)


def _sweep_plots(summary: list[dict], best: dict, task: str, folder: pathlib.Path) -> None:
    if task == "classification":
        plot_vs(
            summary,
            [("test accuracy", [("test_acc", "-", "")]), ("test NLL", [("test_nll", "-", "")])],
            folder / "test_vs_rate.png",
            best=best,
        )
        plot_vs(
            summary,
            [
                ("train - test accuracy", [("gap", "-", "")]),
                ("test - train NLL", [("nll_gap", "-", "")]),
            ],
            folder / "gap_vs_rate.png",
        )
        plot_vs(
            summary, [("ECE (test)", [("ece", "-", "")])], folder / "ece_vs_rate.png", best=best
        )
        if any("entropy_out" in e["stats"] for e in summary):
            panels = [
                (
                    "predictive entropy: in (solid) vs OOD (dashed)",
                    [("entropy_in", "-", " in"), ("entropy_out", "--", " OOD")],
                ),
                (
                    "OOD AUROC (entropy; MI dashed)",
                    [("ood_auroc", "-", ""), ("ood_auroc_mi", "--", " MI")],
                ),
            ]
            if any("mi_out" in e["stats"] for e in summary):
                panels.insert(
                    1,
                    (
                        "mutual information: in vs OOD",
                        [("mi_in", "-", " in"), ("mi_out", "--", " OOD")],
                    ),
                )
            plot_vs(summary, panels, folder / "ood_vs_rate.png", best=best)
    else:
        plot_vs(
            summary,
            [("test RMSE", [("test_rmse", "-", "")]), ("test log-lik", [("test_ll", "-", "")])],
            folder / "test_vs_rate.png",
            best=best,
        )
        plot_vs(summary, [("test - train RMSE", [("gap", "-", "")])], folder / "gap_vs_rate.png")
