"""Active-learning results: labels needed per error target, tables, the Markdown reports.

Everything here is a plain function of the saved results (``active.json``), so the
run folder's ``results.md`` and the docs' section (``experiments/active_report.py``)
are drawn from the same numbers.

Labels needed: for each seed, the first labelled-set size at which the test error is
at or below the target (Gal et al. 2017, Table 1, read off the curves the same way);
mean ± standard error over the seeds that reach it. The ratio to Random is the ratio
of the means, as the paper's 145 / 255 = 0.57; it is given only when every seed of
both heuristics reaches the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lab import provenance
from lab.model import describe

NAMES = {
    "random": "Random",
    "bald": "BALD",
    "variation_ratio": "Variation ratios",
    "max_entropy": "Max entropy",
    "mean_std": "Mean std",
    "power_bald": "PowerBALD (stochastic)",
    "batch_bald": "BatchBALD",
}
GOAL = 0.6  # BALD and Variation ratios: at most this fraction of Random's labels
GOAL_HEURISTICS = ("bald", "variation_ratio")


def protocol_record(cfg: Any, pool: Any) -> dict[str, Any]:
    """What ``protocol`` describes, from the config and the pool (:class:`lab.active.Pool`)."""
    a, s = cfg.active, cfg.methods.mc
    return {
        "pool": len(pool.x), "test": len(pool.x_test), "repeat": a.repeat,
        "repeat_noise": a.repeat_noise, "initial_per_class": a.initial_per_class,
        "acquire": a.acquire, "model": describe(cfg.model), "rate": s.rate,
        "input_rate": s.input_rate, "steps": a.steps, "batch_size": cfg.train.batch_size,
        "num_samples": s.num_samples, "batch_bald_samples": a.batch_bald_samples,
    }  # fmt: skip


def collect(cfg: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """Per heuristic (configured order): its curves ``[seeds][rounds]`` and acquisitions."""
    layout, seeds = raw["layout"], [str(s) for s in cfg.seeds]
    curves, acquired = {}, {}
    for h in cfg.active.heuristics:
        rows = slice(layout.heuristics.index(h) * len(seeds), None)
        rows = slice(rows.start, rows.start + len(seeds))
        curves[h] = {k: raw[k][rows].tolist() for k in ("test_error", "train_loss")}
        acquired[h] = dict(zip(seeds, raw["picks"][rows].tolist(), strict=True))
    initial = {s: np.flatnonzero(m).tolist() for s, m in zip(seeds, raw["initial"], strict=True)}
    return {"curves": curves, "acquired": acquired, "initial": initial}


def labels_needed(errors: np.ndarray, labels: Sequence[int], target: float) -> list[int | None]:
    """Per seed, the first number of labels with test error ``<= target`` (else ``None``).

    Args:
      errors: test errors ``[seeds, rounds]``.
      labels: labelled points of each round ``[rounds]``.
      target: the test error to reach.
    """
    out: list[int | None] = []
    for row in np.asarray(errors):
        hit = np.flatnonzero(row <= target + 1e-12)
        out.append(int(labels[hit[0]]) if len(hit) else None)
    return out


def target_summary(
    errors: dict[str, np.ndarray], labels: Sequence[int], targets: Sequence[float]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{target: {heuristic: {"per_seed", "reached", "mean", "se", "ratio"}}}``.

    ``mean`` and ``se`` over the seeds that reach the target (``None`` if none does);
    ``ratio``: the mean over Random's mean when both reach it with every seed.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for target in targets:
        rows: dict[str, dict[str, Any]] = {}
        for h, err in errors.items():
            per_seed = labels_needed(err, labels, target)
            hit = np.array([n for n in per_seed if n is not None], dtype=np.float64)
            se = float(hit.std(ddof=1) / math.sqrt(len(hit))) if len(hit) > 1 else None
            mean = float(hit.mean()) if len(hit) else None
            rows[h] = {"per_seed": per_seed, "reached": len(hit), "mean": mean, "se": se}
        base = rows.get("random")
        for row in rows.values():
            both = base is not None and all(r["reached"] == len(r["per_seed"]) for r in (row, base))
            row["ratio"] = row["mean"] / base["mean"] if base is not None and both else None
        out[f"{target:g}"] = rows
    return out


def _labels_cell(row: dict[str, Any], last: int) -> str:
    if row["reached"] < len(row["per_seed"]):
        return f"> {last} ({row['reached']}/{len(row['per_seed'])} seeds reach it)"
    return f"{row['mean']:.0f}" + (f" ± {row['se']:.0f}" if row["se"] is not None else "")


def table(result: dict[str, Any]) -> str:
    """Markdown: labels needed per target (mean ± s.e.), ratio to Random, final error."""
    labels, targets = result["labels"], result["targets"]
    heads = [f"labels to {100 * float(t):g}% error | × Random" for t in targets]
    lines = [f"| heuristic | {' | '.join(heads)} | test error at {labels[-1]} labels |"]
    lines.append("|---|" + "---:|---:|" * len(targets) + "---:|")
    for h, curve in result["curves"].items():
        cells = []
        for t in targets:
            row = result["targets"][t][h]
            ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}"
            cells += [_labels_cell(row, labels[-1]), ratio]
        err = np.asarray(curve["test_error"])[:, -1]
        se = err.std(ddof=1) / math.sqrt(len(err)) if len(err) > 1 else float("nan")
        final = f"{100 * err.mean():.2f}%" + ("" if math.isnan(se) else f" ± {100 * se:.2f}")
        lines.append(f"| {NAMES[h]} | {' | '.join(cells)} | {final} |")
    return "\n".join(lines) + "\n"


def verdicts(result: dict[str, Any]) -> str:
    """One line per goal heuristic: its ratio to Random at each target against the goal."""
    lines = []
    for h in [h for h in GOAL_HEURISTICS if h in result["curves"]]:
        parts = []
        for t in result["targets"]:
            ratio = result["targets"][t][h]["ratio"]
            verdict = "undecided" if ratio is None else ("met" if ratio <= GOAL else "not met")
            shown = "–" if ratio is None else f"{ratio:.2f}x"
            parts.append(f"{100 * float(t):g}%: {shown} (**{verdict}**)")
        lines.append(f"- {NAMES[h]}, labels against Random's (goal ≤ {GOAL}x): {'; '.join(parts)}.")
    if {"bald", "batch_bald"} <= set(result["curves"]):
        parts = []
        for t, rows in result["targets"].items():
            bb, bald = rows["batch_bald"], rows["bald"]
            full = all(r["reached"] == len(r["per_seed"]) for r in (bb, bald))
            shown = f"{bb['mean'] / bald['mean']:.2f}x" if full else "– (not every seed reaches it)"
            parts.append(f"{100 * float(t):g}%: {shown}")
        lines.append(f"- BatchBALD, labels against top-k BALD's: {'; '.join(parts)}.")
    return "\n".join(lines) + ("\n" if lines else "")


def protocol(result: dict[str, Any]) -> str:
    """One paragraph: pool, model, rounds, steps, passes, seeds."""
    p = result["protocol"]
    pool = f"{p['pool']} points"
    if p["repeat"] > 1:
        pool += (f" (the {p['pool'] // p['repeat']} training digits × {p['repeat']}, "
                 f"Gaussian noise of std {p['repeat_noise']:g} on every copy)")  # fmt: skip
    return (
        f"Pool: {pool}; test: {p['test']} digits. Start: {p['initial_per_class']} labels per "
        f"class ({result['labels'][0]}), then {len(result['labels']) - 1} rounds of "
        f"{p['acquire']} labels. Each round retrains from scratch: {p['model']}, dropout "
        f"{p['rate']:g} (inputs {p['input_rate']:g}), {p['steps']} Adam steps of "
        f"{p['batch_size']} rows drawn from the labelled set; test error of the MC "
        f"predictive mean and pool scores from {p['num_samples']} consistent MC dropout "
        f"passes; BatchBALD's joint entropy exact while the labellings of the batch so far "
        f"number at most {p['batch_bald_samples']}, from {p['batch_bald_samples']} sampled "
        "labellings beyond; "
        f"{len(result['seeds'])} seeds {result['seeds']}."
    )


def figure_title(data_name: str, p: dict[str, Any]) -> str:
    """The figure's title: the data and the pool."""
    copies = f" ({p['repeat']} noisy copies of each digit)" if p["repeat"] > 1 else ""
    return f"{data_name}: pool of {p['pool']}{copies}, {p['acquire']} labels per round"


def timing_line(result: dict[str, Any]) -> str:
    """Wall time, the first round (compilation included), and the machine's load."""
    t = result["timing"]
    load = " / ".join(f"{v:.1f}" for v in t["load_average"])
    return (
        f"Wall time {t['seconds']:.0f} s ({t['first_round_seconds']:.0f} s for the first "
        f"round, compilation included; {t['median_round_seconds']:.1f} s per later round) "
        f"on {t['cpus']} CPU cores; load average (1/5/15 min) at the end: {load}."
    )


def results_md(result: dict[str, Any], captions: str) -> str:
    """The run folder's ``results.md``."""
    return (
        f"# {result['name']}\n\n{protocol(result)}\n\n{table(result)}\n{verdicts(result)}\n"
        f"{timing_line(result)}\n\n{captions}\n\n" + provenance.footer(result["provenance"])
    )


def docs_section(result: dict[str, Any], command: str, figure: str, title: str) -> str:
    """A section of ``docs/generated/active_learning.md``: command, protocol, table, figure."""
    code = result["provenance"]["code"]
    commit = str(code.get("commit", "unknown"))[:7]
    commit += " with uncommitted changes" if code.get("dirty") is True else ""
    return (
        f"### {title}\n\n```bash\n{command}\n```\n\n{protocol(result)}\n\n{table(result)}\n"
        f"{verdicts(result)}\n{timing_line(result)}\n\n![{title}]({figure})\n\n"
        f"*{result['caption']}* Results from commit `{commit}`, written "
        f"{result['provenance']['written_at']}.\n"
    )
