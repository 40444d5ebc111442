"""MC-dropout uncertainty against the dropout rate and the number of passes T.

``mc`` models (inverted dropout) are trained for every rate x seed as one vmapped
grid (:func:`lab.grid.train_grid`); then, vmapped over grid points, ``max(T)`` MC
passes on the test and OOD inputs are drawn once and the first T scored for every T
(accuracy, NLL, ECE, Brier, entropy and mutual information in and out of
distribution, OOD AUROCs), and the spread of the MC estimate is measured on further
passes: it falls as :math:`T^{-1/2}`.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lab import distributed, provenance, report, scores
from lab.config import to_yaml
from lab.data import Dataset, load_dataset
from lab.fit import RunKeys, Setup, make_setup
from lab.grid import GridPoint, GridTraining, grid_points, stack_hparams, train_grid
from lab.predict import compile_forward, mc_passes
from lab.run import check_output_dir, run_dir, write_atomic
from lab.sweep_config import SweepConfig
from lab.tables import (
    CLASSIFICATION_METRICS,
    best_rates,
    csv_text,
    flat_summary,
    markdown_table,
    plot_vs,
    summarize_rows,
)

MC_METRICS = [m for m in CLASSIFICATION_METRICS if m[0] != "final_train_loss"]


@jax.jit(static_argnames="num_bins")
def _mc_metrics_jit(log_in, log_out, labels, num_bins: int) -> dict[str, jax.Array]:
    got = scores.classification(log_in, labels, num_bins)
    u_in = scores.uncertainty(log_in)
    out = {
        "test_acc": got["acc"],
        "test_nll": got["nll"],
        "ece": got["ece"],
        "brier": got["brier"],
        "entropy_in": jnp.mean(u_in.predictive_entropy),
        "mi_in": jnp.mean(u_in.mutual_information),
    }
    if log_out is not None:
        u_out = scores.uncertainty(log_out)
        out["entropy_out"] = jnp.mean(u_out.predictive_entropy)
        out["mi_out"] = jnp.mean(u_out.mutual_information)
        out["ood_auroc"] = scores.ood_auroc(u_in.predictive_entropy, u_out.predictive_entropy)
        out["ood_auroc_mi"] = scores.ood_auroc(u_in.mutual_information, u_out.mutual_information)
    return out


def _mc_metrics(log_in, log_out, labels, num_bins: int) -> dict[str, float]:
    """Metrics of T passes of log-probabilities ``[T, n, classes]`` in and out of distribution.

    All from :mod:`lab.scores`, as the comparison's table (one program per T).
    """
    out = _mc_metrics_jit(log_in, log_out, labels, num_bins=num_bins)
    return {k: float(v) for k, v in out.items()}


def mc_spread(probs_t: np.ndarray, counts: Sequence[int]) -> dict[int, float]:
    r"""Spread of the MC mean over disjoint blocks of ``T`` passes, for each ``T``.

    .. math::
        s(T) = \Big(\operatorname{mean}_{i,c}\ \operatorname{Var}_b\big[\bar p^{(b)}_{ic}
        \big]\Big)^{1/2},\qquad \bar p^{(b)} = \tfrac1T \textstyle\sum_{t\in b} p_t

    with the unbiased (ddof 1) variance over the ``M // T`` blocks, averaged before
    the square root so few blocks do not bias :math:`s` low. For independent passes
    :math:`s(T) = \sigma / \sqrt T`.

    Args:
      probs_t: ``[M, n, classes]`` passes.
      counts: sample counts ``T`` (each ``<= M / 2``).

    Returns:
      ``{T: s(T)}``.
    """
    probs_t = np.asarray(probs_t, np.float64)
    out = {}
    for t in counts:
        blocks = probs_t.shape[0] // t
        means = probs_t[: blocks * t].reshape(blocks, t, *probs_t.shape[1:]).mean(1)
        out[int(t)] = float(np.sqrt(means.var(axis=0, ddof=1).mean()))
    return out


def loglog_slope(counts: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(counts)``."""
    return float(np.polyfit(np.log(counts), np.log(values), 1)[0])


def run_mc_sweep(
    cfg: SweepConfig,
    *,
    data: Dataset | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """MC-dropout uncertainty against the rate and the number of passes T.

    Trains ``mc`` models for every rate x seed of ``cfg.sweep`` with
    :func:`~lab.grid.train_grid`, then, vmapped over the grid points (in chunks of
    ``sweep.chunk_size``), draws ``max(T)`` MC passes on the test and OOD inputs
    (``dl.mc.sample``, ``mc_sweep.chunk_size`` passes at a time) and scores the
    first T passes for every T. The spread of the MC estimate (:func:`mc_spread`)
    uses ``spread_blocks * max(T)`` further passes on ``spread_examples`` test rows;
    its log-log slope against T should be -1/2.

    Writes ``mc_sweep.json``, ``mc_sweep.md``, ``mc_sweep_points.csv``,
    ``mc_sweep_summary.csv`` and the plots ``mc_metrics_vs_T``, ``mc_spread_vs_T``,
    ``mc_metrics_vs_rate`` and ``mc_in_out_vs_rate`` into the run folder.

    Args:
      cfg: a checked sweep config; the data must be a classification task.
      data: an already loaded data set (default: loaded from ``cfg.data``).
      on_progress: ``on_progress(stage, done, total)``.

    Returns:
      The content of ``mc_sweep.json``.

    Raises:
      ValueError: the task is regression.
    """
    distributed.initialize(cfg.distributed)  # before anything touches a device
    check_output_dir(run_dir(cfg))  # before any work
    data = data if data is not None else load_dataset(cfg.data)
    if data.task != "classification":
        raise ValueError("the MC sweep scores classifiers; data.task is regression.")
    folder = run_dir(cfg)
    write_atomic(folder / "config.yaml", to_yaml(cfg))
    setup, points = make_setup(cfg, "mc", data), grid_points(cfg, "mc")
    hook = None
    if on_progress is not None:

        def hook(done: int, total: int) -> None:
            on_progress("train", done, total)

    training = train_grid(
        setup, data, points, input_rate=cfg.sweep.input_rate,
        chunk_size=cfg.sweep.chunk_size, on_progress=hook,
    )  # fmt: skip
    start = time.perf_counter()
    rows, spread_rows = _evaluate(cfg, setup, data, training, on_progress)
    out = {"name": cfg.name, **_summaries(cfg, points, rows, spread_rows)}
    out["timing"] = {"train_seconds": training.seconds, "eval_seconds": time.perf_counter() - start}
    out["provenance"] = provenance.of_run(cfg, provenance.data_hash(data))
    _write_outputs(cfg, folder, out)
    if cfg.plots and distributed.is_primary():
        _mc_plots(out, folder)
    return out


def _passes_program(setup: Setup, num_samples: int, chunk: int | None) -> Callable:
    """``f(params [P], rows, keys [P], hparams [P]) -> [P, T, rows, classes]`` log-probs."""
    one = mc_passes(setup.model, num_samples, chunk, jax.nn.log_softmax)
    compiled: dict[tuple, Callable] = {}

    def run(params, rows, keys, hp):
        shape = (rows.shape, keys.shape)
        if shape not in compiled:
            batched = jax.vmap(one, in_axes=(0, None, 0, 0))
            compiled[shape] = compile_forward(batched, params, rows, keys, hp)
        return np.asarray(compiled[shape](params, rows, keys, hp))

    return run


def _evaluate(cfg, setup: Setup, data: Dataset, training: GridTraining, on_progress):
    """Per-point metric rows for every T, and spread rows; vmapped over chunks of points."""
    m, points = cfg.mc_sweep, training.points
    counts = sorted(int(t) for t in m.num_samples)
    main = _passes_program(setup, counts[-1], m.chunk_size)
    spread = _passes_program(setup, m.spread_blocks * counts[-1], m.chunk_size)
    x_all = jnp.asarray(
        np.concatenate([data.x_test] + ([data.x_ood] if data.x_ood is not None else []))
    )
    x_spread = jnp.asarray(data.x_test[: m.spread_examples])
    size = len(points) if cfg.sweep.chunk_size is None else min(cfg.sweep.chunk_size, len(points))
    rows: list[dict] = []
    spread_rows: list[dict] = []
    for start in range(0, len(points), size):
        chunk = points[start : start + size]  # padded with its first point
        idx = list(range(start, start + len(chunk))) + [start] * (size - len(chunk))
        params = jax.tree.map(lambda a, idx=np.array(idx): a[idx], training.states["params"])
        hp = stack_hparams([points[i] for i in idx], cfg.sweep.input_rate, 0.0)
        keys = jax.vmap(lambda k: jax.random.split(k, 2))(
            RunKeys.stacked([points[i].seed for i in idx]).eval
        )
        log_probs = main(params, x_all, keys[:, 0], hp)
        probs_s = np.exp(spread(params, x_spread, keys[:, 1], hp))
        for j, point in enumerate(chunk):
            rows.extend(_point_rows(point, log_probs[j], data, counts, cfg.eval.ece_bins))
            spread_rows.extend(_spread_rows(point, probs_s[j], counts))
        if on_progress is not None:
            on_progress("evaluate", min(start + size, len(points)), len(points))
    return rows, spread_rows


def _point_rows(point: GridPoint, log_probs, data: Dataset, counts, num_bins: int) -> list[dict]:
    """Metrics of the first T passes ``log_probs [max T, test (+ OOD), classes]`` per T."""
    n_test, rows = len(data.x_test), []
    for t in counts:
        lp_out = log_probs[:t, n_test:] if data.x_ood is not None else None
        row = {"rate": point.rate, "seed": point.seed, "num_samples": t}
        row.update(_mc_metrics(log_probs[:t, :n_test], lp_out, data.y_test, num_bins))
        rows.append(row | {"series": f"T={t}"})
    return rows


def _spread_rows(point: GridPoint, probs_s: np.ndarray, counts) -> list[dict]:
    """Measured spread of the MC mean per T, and sigma / sqrt(T) from one pass's variance."""
    spread = mc_spread(probs_s, counts)
    sigma = float(np.sqrt(probs_s.astype(np.float64).var(axis=0, ddof=1).mean()))
    return [
        {
            "rate": point.rate,
            "seed": point.seed,
            "num_samples": t,
            "spread": spread[t],
            "predicted": sigma / math.sqrt(t),
            "series": f"rate={point.rate:g}",
        }
        for t in counts
    ]


def _slopes(points: list[GridPoint], counts: list[int], spread_rows: list[dict]) -> dict:
    """Log-log slope of the spread against T per rate: mean ± standard error over seeds."""
    slopes = {}
    for rate in dict.fromkeys(p.rate for p in points):
        if rate == 0.0:
            continue  # no dropout: every pass is the same, the spread is 0.
        per_seed = [
            loglog_slope(counts, [r["spread"] for r in spread_rows
                                  if r["rate"] == rate and r["seed"] == seed])
            for seed in dict.fromkeys(p.seed for p in points)
        ]  # fmt: skip
        se = np.std(per_seed, ddof=1) / math.sqrt(len(per_seed)) if len(per_seed) > 1 else np.nan
        slopes[f"{rate:g}"] = {"mean": float(np.mean(per_seed)), "se": float(se)}
    return slopes


def _summaries(cfg, points: list[GridPoint], rows: list[dict], spread_rows: list[dict]) -> dict:
    """Summaries over seeds, slopes, best rates and the table at the largest T."""
    counts = sorted(int(t) for t in cfg.mc_sweep.num_samples)
    keys = [k for k, _, _ in MC_METRICS]
    summary = summarize_rows(rows, keys, ("series", "num_samples", "rate"))
    at_max = [e for e in summary if e["num_samples"] == counts[-1]]
    best = best_rates(at_max, MC_METRICS)
    return {
        "counts": counts,
        "rows": rows,
        "spread_rows": spread_rows,
        "summary": summary,
        "spread_summary": summarize_rows(
            spread_rows, ["spread", "predicted"], ("series", "rate", "num_samples")
        ),
        "spread_slope": _slopes(points, counts, spread_rows),
        "best_rate": best,
        "table": markdown_table(at_max, MC_METRICS, best, ("rate",)),
    }


def _write_outputs(cfg, folder: pathlib.Path, out: dict) -> None:
    """``mc_sweep.json``, the two CSVs and ``mc_sweep.md``."""
    write_atomic(folder / "mc_sweep.json", json.dumps(out, indent=1))
    write_atomic(folder / "mc_sweep_points.csv", csv_text(out["rows"] + out["spread_rows"]))
    summaries = flat_summary(out["summary"]) + flat_summary(out["spread_summary"])
    write_atomic(folder / "mc_sweep_summary.csv", csv_text(summaries))
    shown = ("test_acc", "test_nll", "ece", "mi_in", "ood_auroc_mi")
    table_t = markdown_table(
        out["summary"], [m for m in MC_METRICS if m[0] in shown], {}, ("num_samples", "rate")
    )
    slope_lines = "\n".join(
        f"| {rate} | {s['mean']:.3f} ± {s['se']:.3f} |" for rate, s in out["spread_slope"].items()
    )
    text = (
        f"# {cfg.name}: MC dropout vs rate and T\n\nmean ± standard error over "
        f"{cfg.sweep.seeds} seeds; data `{cfg.data.name}`, MLP {list(cfg.model.hidden)}, "
        f"{cfg.train.epochs} epochs.\n\n## At T = {out['counts'][-1]} (best rate in bold)\n\n"
        f"{out['table']}\n## Against T\n\n{table_t}\n## Spread of the MC estimate\n\n"
        f"Log-log slope of the spread against T (1/sqrt(T) gives -0.5):\n\n"
        f"| rate | slope |\n|---|---:|\n{slope_lines}\n"
    )
    write_atomic(folder / "mc_sweep.md", text + "\n" + provenance.footer(out["provenance"]))


def _mc_plots(out: dict, folder: pathlib.Path) -> None:
    """Metrics against T and against the rate, in vs OOD, and the spread against T."""
    summary_t, best, t_max = out["summary"], out["best_rate"], out["counts"][-1]
    by_rate = [dict(e, series=f"rate={e['rate']:g}") for e in summary_t]
    panels = [
        ("test accuracy", [("test_acc", "-", "")]),
        ("test NLL", [("test_nll", "-", "")]),
        ("ECE", [("ece", "-", "")]),
        ("mutual information (in)", [("mi_in", "-", "")]),
    ]
    if any("ood_auroc_mi" in e["stats"] for e in summary_t):
        panels.append(("OOD AUROC (MI)", [("ood_auroc_mi", "-", "")]))
    plot_vs(by_rate, panels, folder / "mc_metrics_vs_T.png", x="num_samples", logx=True)
    at_max = [e for e in summary_t if e["num_samples"] == t_max]
    plot_vs(at_max, panels, folder / "mc_metrics_vs_rate.png", best=best)
    if any("mi_out" in e["stats"] for e in at_max):
        plot_vs(
            at_max,
            [
                (
                    "mutual information: in vs OOD",
                    [("mi_in", "-", " in"), ("mi_out", "--", " OOD")],
                ),
                (
                    "predictive entropy: in vs OOD",
                    [("entropy_in", "-", " in"), ("entropy_out", "--", " OOD")],
                ),
                ("OOD AUROC", [("ood_auroc_mi", "-", " MI"), ("ood_auroc", "--", " entropy")]),
            ],
            folder / "mc_in_out_vs_rate.png",
            best=best,
        )
    _spread_plot(out["spread_summary"], out["spread_slope"], folder)


def _spread_plot(spread_summary: list[dict], slopes: dict, folder: pathlib.Path) -> None:
    """Measured spread of the MC mean against T per rate, with sigma / sqrt(T) dotted."""
    plt = report._plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    names = list(dict.fromkeys(e["series"] for e in spread_summary if e["rate"] != 0.0))
    for i, name in enumerate(names):
        entries = sorted(
            (e for e in spread_summary if e["series"] == name), key=lambda e: e["num_samples"]
        )
        ts = np.array([e["num_samples"] for e in entries], dtype=np.float64)
        s = np.array([e["stats"]["spread"]["mean"] for e in entries])
        pred = np.array([e["stats"]["predicted"]["mean"] for e in entries])
        slope = slopes[f"{entries[0]['rate']:g}"]["mean"]
        ax.loglog(ts, s, "o-", color=f"C{i}", label=f"{name}: slope {slope:.3f}")
        ax.loglog(ts, pred, ":", color=f"C{i}")
    ax.set_xlabel("T (MC passes)")
    ax.set_ylabel("spread of the MC mean probability")
    ax.set_title("measured (o) vs sigma/sqrt(T) (dotted)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "mc_spread_vs_T.png", dpi=110)
    plt.close(fig)
