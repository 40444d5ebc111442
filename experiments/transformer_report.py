"""The transformers guide's tables and figures, generated from the runs' ``sweep.json``.

    python experiments/transformer_report.py time runs/NAME -- python experiments/sweep.py ...
    python experiments/transformer_report.py [--runs runs]

``time``: runs the command and writes ``runs/NAME/timing.json`` (wall and CPU seconds,
the machine's load average before and after). Without it: reads each claim's run
folder (:data:`CLAIMS`) and writes ``docs/generated/transformers_<claim>.md`` (the
table, mean ± standard error over seeds; the paired differences the claim is judged
by; the provenance) and ``docs/figures/transformers_<claim>.png`` (learning curves with
the rate schedule drawn under them), plus ``transformers_speed.md`` from
``runs/transformer_speed/speed.json`` (``experiments/transformer_speed.py``). No number
is typed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import resource
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np

from lab import report
from lab.rate_schedule import rate_curve, schedule_hparams

ROOT = pathlib.Path(__file__).resolve().parents[1]
GENERATED, FIGURES = ROOT / "docs" / "generated", ROOT / "docs" / "figures"
MAX_FIGURE_BYTES = 150_000
COLUMNS = (  # (key, header) of the tables
    ("train_nll", "train NLL"), ("train_acc", "train acc"), ("test_acc", "test acc"),
    ("test_nll", "test NLL"), ("ece", "ECE"), ("final_train_loss", "last training loss"),
)  # fmt: skip
CURVES = (("train_loss", "training loss (dropout on)"), ("train_nll", "train NLL"),
          ("test_nll", "test NLL"), ("test_acc", "test accuracy"))  # fmt: skip


class Claim(NamedTuple):
    """A claim: its run folder and the paired differences ``(a, b, metric, sign)`` that
    test it (``sign``: +1 when the claim says ``a`` is higher, -1 lower); ``extra``: more
    run folders, each with the suffix that marks its rows."""

    key: str
    run: str
    pairs: tuple[tuple[str, str, str, int], ...]
    extra: tuple[tuple[str, str], ...] = ()


# The methods' names in the tables (a row: the name, then its schedule, if any).
NAMES = {
    "none": "no dropout", "inverted": "standard dropout", "rdrop": "R-Drop",
    "attention": "attention dropout", "dropkey": "DropKey", "droppath": "drop path",
}  # fmt: skip
NONE, STANDARD = NAMES["none"], NAMES["inverted"]
EARLY, LATE = "standard dropout early until 0.2", "drop path late from 0.2"
UNIFORM = "DropKey (uniform profile)"
CLAIMS = (
    Claim("early", "transformer_digits", (
        (EARLY, STANDARD, "train_nll", -1), (EARLY, NONE, "train_nll", -1),
        (EARLY, STANDARD, "test_acc", 1), (EARLY, NONE, "test_acc", 1),
        (STANDARD, NONE, "test_acc", -1),
    )),
    Claim("late", "transformer_large", (
        (LATE, "drop path", "test_acc", 1), (LATE, NONE, "test_acc", 1),
        (LATE, "drop path", "test_nll", -1), (LATE, NONE, "test_nll", -1),
        ("drop path", NONE, "test_acc", 1),
    )),
    Claim("rdrop", "transformer_rdrop", (
        ("R-Drop alpha=1", STANDARD, "test_acc", 1), ("R-Drop alpha=1", STANDARD, "test_nll", -1),
        (STANDARD, NONE, "test_acc", 1),
    )),
    Claim("dropkey", "transformer_dropkey", (
        ("DropKey", "attention dropout", "test_acc", 1),
        ("DropKey", "attention dropout", "test_nll", -1), ("DropKey", NONE, "test_acc", 1),
        (UNIFORM, "attention dropout", "test_acc", 1), (UNIFORM, "DropKey", "test_acc", -1),
        ("attention dropout", NONE, "test_acc", 1),
    ), extra=(("transformer_dropkey_uniform", " (uniform profile)"),)),
    Claim("mnist1d", "transformer_mnist1d", (
        (EARLY, STANDARD, "train_nll", -1), (EARLY, NONE, "train_nll", -1),
        (EARLY, STANDARD, "test_acc", 1), (EARLY, NONE, "test_acc", 1),
    )),
)  # fmt: skip


def label(entry: dict) -> str:
    """A row's name: ``no dropout`` at rate 0, else its series with the method's name."""
    if entry["rate"] == 0:
        return NONE
    name = entry["series"].replace(entry["method"], NAMES[entry["method"]], 1)
    return name + entry.get("suffix", "")


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (std with ddof 1 over sqrt(n)) of ``values``."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def groups(items: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """``items`` (rows or curves, one per grid point) by (name, rate), in grid order."""
    out: dict[tuple[str, float], list[dict]] = {}
    for item in items:
        out.setdefault((label(item), item["rate"]), []).append(item)
    return out


def table(sweep: dict) -> str:
    """One row per (name, rate): each column's mean ± standard error over seeds."""
    head = "| | rate | seeds | " + " | ".join(h for _, h in COLUMNS) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for (name, rate), rows in groups(sweep["rows"]).items():
        stats = [mean_se([r[k] for r in rows]) for k, _ in COLUMNS]
        cells = " | ".join(f"{m:.4f} ± {se:.4f}" for m, se in stats)
        lines.append(f"| {name} | {rate:g} | {len(rows)} | {cells} |")
    return "\n".join(lines) + "\n"


def paired(sweep: dict, claim: Claim) -> str:
    """Per pair, the mean ± SE over seeds of ``a - b`` (same seed) and the 2-SE verdict."""
    by = {(label(r), r["seed"]): r for r in sweep["rows"]}
    lines = [
        "| comparison | metric | a − b (same seed) | claim says | here |",
        "|---|---|---:|---|---|",
    ]
    for a, b, metric, sign in claim.pairs:
        seeds = sorted(s for (name, s) in by if name == a and (b, s) in by)
        if not seeds:
            continue
        mean, se = mean_se([by[a, s][metric] - by[b, s][metric] for s in seeds])
        verdict = "within 2 SE (not resolved)"
        if abs(mean) > 2 * se:
            verdict = "holds (beyond 2 SE)" if mean * sign > 0 else "reversed (beyond 2 SE)"
        says = "higher" if sign > 0 else "lower"
        lines.append(f"| {a} vs {b} | {metric} | {mean:+.4f} ± {se:.4f} | {says} | {verdict} |")
    return "\n".join(lines) + "\n"


def provenance(sweep: dict, timing: dict | None) -> str:
    """Where the numbers came from: commit, source hash, when; the run's time and load."""
    p, code = sweep["provenance"], sweep["provenance"]["code"]
    dirty = " with uncommitted changes" if code.get("dirty") is True else ""
    text = (
        f"Run `{sweep['name']}`: commit `{str(code.get('commit'))[:7]}`{dirty} (source "
        f"`{code.get('source')}`, jax {code.get('jax')}), config `{p['config_hash'][:10]}`, "
        f"written {p['written_at']}."
    )
    if timing:
        text += (
            f" The whole run took {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s CPU "
            f"on {timing['cpu_count']} cores at load average {timing['load_start'][0]:.1f} "
            f"(start) to {timing['load_end'][0]:.1f} (end)."
        )
    return text + "\n"


def band(curves: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and standard error over seeds of one curve ``key``."""
    values = np.array([c[key] for c in curves], np.float64)
    se = values.std(0, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0 * values[0]
    return np.asarray(curves[0]["epoch"]), values.mean(0), se


def schedule_line(curve: dict) -> tuple[np.ndarray, np.ndarray]:
    """Epoch and rate at every training step of a curve's grid point (its schedule)."""
    total = int(curve["step"][-1])
    kind = (curve["schedule"], curve["start"], curve["until"], curve["end_rate"])
    rates = rate_curve({"rate": curve["rate"], **schedule_hparams(*kind)}, total)
    return np.arange(total) * curve["epoch"][-1] / total, rates


def _minor_label(value: float, _: int) -> str:
    """Log-axis minor ticks labelled at 2, 3 and 5 times a power of ten only."""
    mantissa = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if mantissa in (2, 3, 5) else ""


def figure(sweep: dict, path: pathlib.Path) -> str:
    """Learning curves (mean ± SE over seeds) with each row's rate schedule under them."""
    curve_sets = {name: curves for (name, _), curves in groups(sweep["curves"]).items()}
    with report.style():
        fig, panels = report.panels(len(CURVES), 3.2, 3.2, ratios=(3.0, 1.0), legend_width=2.4)
        for ((top, bottom), _), (key, name) in zip(panels, CURVES, strict=True):
            for i, (row, curves) in enumerate(curve_sets.items()):
                epochs, mean, se = band(curves, key)
                top.plot(epochs, mean, color=f"C{i}", lw=1.5, label=row)
                top.fill_between(epochs, mean - se, mean + se, color=f"C{i}", alpha=0.2, lw=0)
                width = 1.0 + 1.5 * (len(curve_sets) - 1 - i)  # overlaps show as nested bands
                bottom.plot(*schedule_line(curves[0]), color=f"C{i}", lw=width)
            top.set(ylabel=name, yscale="linear" if key.endswith("acc") else "log")
            top.yaxis.set_major_formatter("{x:g}")
            top.yaxis.set_minor_formatter(_minor_label)
            bottom.set(xlabel="epoch", ylabel="rate")
            top.grid(alpha=0.3)
            bottom.grid(alpha=0.3)
        handles, labels = panels[0][0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        report.save(fig, path, "")
    seeds = len(next(iter(curve_sets.values())))
    return (
        f"Learning curves, mean over {seeds} seeds with a ±1 standard-error band (top), and "
        "the rate each row trains with at every step (bottom; with a per-block profile, the "
        "rate of the most-dropped block). Training loss: each method's own objective on "
        "its batches (R-Drop's: two cross-entropies and the KL); NLL and accuracy: a "
        "deterministic forward."
    )


def load(runs: pathlib.Path, claim: Claim) -> tuple[dict, list[tuple[dict, dict | None]]]:
    """The claim's sweep, with the rows and curves of its ``extra`` runs (found) marked by
    their suffix, and ``(sweep, timing)`` of every run read."""
    sources = []
    for name, suffix in ((claim.run, ""), *claim.extra):
        folder = runs / name
        if not (folder / "sweep.json").is_file():
            continue
        sweep = json.loads((folder / "sweep.json").read_text())
        timing_file = folder / "timing.json"
        timing = json.loads(timing_file.read_text()) if timing_file.is_file() else None
        for item in (*sweep["rows"], *sweep["curves"]):
            item["suffix"] = suffix
        sources.append((sweep, timing))
    merged = dict(sources[0][0])
    for key in ("rows", "curves"):
        merged[key] = [item for sweep, _ in sources for item in sweep[key]]
    return merged, sources


def render(runs: pathlib.Path) -> None:
    """Writes every claim's generated Markdown and figure whose run folder exists."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    FIGURES.mkdir(parents=True, exist_ok=True)
    for claim in CLAIMS:
        if not (runs / claim.run / "sweep.json").is_file():
            print(f"{claim.key}: no {runs / claim.run}/sweep.json, skipped")
            continue
        sweep, sources = load(runs, claim)
        png = FIGURES / f"transformers_{claim.key}.png"
        caption = figure(sweep, png)
        if png.stat().st_size > MAX_FIGURE_BYTES:
            print(f"warning: {png} is {png.stat().st_size} bytes")
        text = table(sweep) + "\n" + paired(sweep, claim) + "\n"
        text += f"![{claim.key}](../figures/{png.name})\n\n{caption}\n\n"
        text += "\n".join(provenance(*source) for source in sources)
        (GENERATED / f"transformers_{claim.key}.md").write_text(text)
        print(f"wrote {claim.key}")
    speed(runs)


def speed(runs: pathlib.Path) -> None:
    """``transformers_speed.md`` from ``transformer_speed/speed.json``
    (``experiments/transformer_speed.py``): the grid as one program vs point by point."""
    path = runs / "transformer_speed" / "speed.json"
    if not path.is_file():
        print(f"speed: no {path}, skipped")
        return
    b = json.loads(path.read_text())
    base_wall, base_cpu = b["steady"]["one vmapped program"]
    lines = [
        "| training | first call (compiling), wall s | then, wall s | wall ratio "
        "| then, CPU s | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (wall, cpu) in b["steady"].items():
        first = b["first_call"][name][0]
        ratio = f"{wall / base_wall:.2f}x | {cpu:.1f} | {cpu / base_cpu:.2f}x"
        lines.append(f"| {name} | {first:.1f} | {wall:.1f} | {ratio} |")
    note = (
        f"\n{b['points']} models of `{b['config']}` at {b['epochs']} epochs "
        f'({b["steps_per_point"]} steps each); "then": the median of {b["repeats"]} runs, '
        f"the two alternating, on {b['cpu_count']} cores at load average "
        f"{b['load_start'][0]:.1f} (start) to {b['load_end'][0]:.1f} (end).\n"
    )
    (GENERATED / "transformers_speed.md").write_text("\n".join(lines) + "\n" + note)
    print("wrote speed")


def timed(folder: pathlib.Path, command: list[str]) -> int:
    """Runs ``command``; writes ``folder/timing.json`` (wall, CPU of children, load)."""
    start, load_start = time.perf_counter(), os.getloadavg()
    code = subprocess.call(command)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {"command": command, "returncode": code, "wall_s": time.perf_counter() - start,
           "cpu_s": usage.ru_utime + usage.ru_stime, "cpu_count": os.cpu_count(),
           "load_start": load_start, "load_end": os.getloadavg()}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "timing.json").write_text(json.dumps(out, indent=1))
    return code


def main(argv: list[str]) -> int:
    if argv[:1] == ["time"]:
        return timed(pathlib.Path(argv[1]), argv[argv.index("--") + 1 :])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="the folder holding the run folders")
    render(pathlib.Path(parser.parse_args(argv).runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
