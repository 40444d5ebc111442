"""The docs' measured results: tables and figures generated from results JSON.

    python docs/generate.py [--runs DIR] [--bench FILE] [--render-only]

Collect: each result of :data:`SOURCES` that is found (``runs/<config>/...json``,
``benchmarks/results/latest.json``) is copied to ``docs/results/<name>.json`` with its
provenance (less its learning curves, which the figures show), its figures to
``docs/figures/<name>_<file>.png`` (shrunk to at most :data:`MAX_FIGURE_BYTES`), listed
with caption and SHA-256 in ``docs/results/figures.json``. A result not found keeps its
committed copy. Render: from ``docs/results/`` alone, writes ``docs/generated/*.md``
(included by the guides) and the README's headline lines; ``tests/test_docs.py`` checks
that the committed files equal this output, so no number can be edited by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import pathlib
import re
import sys
from typing import Any, NamedTuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from lab import report  # noqa: E402  (the lab lives in experiments/, not in the wheel)

DOCS = ROOT / "docs"
RESULTS, FIGURES = DOCS / "results", DOCS / "figures"
MANIFEST = "figures.json"
MAX_FIGURE_BYTES = 150_000
README_START = "<!-- generated:headline (make docs-results; do not edit by hand) -->"
README_END = "<!-- /generated:headline -->"


class Source(NamedTuple):
    """One result: its name, kind, file (under the runs folder), command, title, figures."""

    name: str
    kind: str  # "metrics", "sweep", "mc_sweep", "theory" or "bench"
    path: str
    command: str
    title: str
    figures: tuple[str, ...] = ()


def _compare(name: str, title: str, *figures: str, script: str = "compare") -> Source:
    command = f"python experiments/{script}.py configs/{name}.yaml"
    return Source(name, "metrics", f"{name}/metrics.json", command, title, figures)


# fmt: off
SOURCES = (
    _compare("compare_digits", "MLP on the digits: the five methods (`make run`)",
             "learning_curves.png", "reliability.png", "ood_histograms.png",
             "risk_coverage.png"),
    _compare("regression_toy", "1-D regression with a gap", "toy_predictive.png"),
    _compare("structured_cnn_digits", "Residual CNN on the digits: structured dropout"),
    _compare("structured_rnn_mnist1d", "GRU on MNIST-1D: recurrent dropout"),
    _compare("embedding_rnn_mnist1d", "Tokenized GRU on MNIST-1D: embedding dropout"),
    _compare("graph_digits", "GCN on a k-NN graph of the digits: DropEdge and DropNode",
             script="graph"),
    _compare("concrete_toy", "Learned rates: Concrete dropout on the toy regression"),
    _compare("sparse_vd_digits", "Sparse variational dropout on the digits"),
    Source("sweep_digits", "sweep", "sweep_digits/sweep.json",
           "python experiments/sweep.py configs/sweep_digits.yaml", "Rate sweep on the digits",
           ("test_vs_rate.png",)),
    Source("mc_sweep_toy", "mc_sweep", "mc_sweep_toy/mc_sweep.json",
           "python experiments/mc_sweep.py configs/mc_sweep_toy.yaml",
           "MC dropout against the rate and the number of passes",
           ("mc_spread_vs_T.png", "mc_in_out_vs_rate.png")),
    Source("theory_checks", "theory", "theory_checks/results.json",
           "python experiments/theory_checks.py configs/theory_checks.yaml", "Theory checks",
           ("jensen_gap.png", "bn_shift.png")),
    Source("bench", "bench", "benchmarks/results/latest.json", "make bench", "Benchmarks"),
)
CAPTIONS = {  # figures whose run writes no caption of its own
    "jensen_gap.png": "Jensen gap E[φ(z_drop)] − φ(E z) against the rate p: closed form and "
                      "Monte Carlo.",
    "bn_shift.png": "Test-time BatchNorm shift against the rate p: mean shift and variance "
                    "ratio, formula and measurement.",
    "test_vs_rate.png": "Test accuracy and NLL against the rate, one curve per method; band: "
                        "±1 standard error over seeds; star: the best rate.",
    "mc_spread_vs_T.png": "Spread of the MC mean probability over disjoint blocks of T passes, "
                          "with σ/√T dotted.",
    "mc_in_out_vs_rate.png": "Predictive entropy and mutual information on test and "
                             "out-of-distribution inputs against the rate.",
}
# (key, header, format) of the result tables: the lab's own (lab.report), less the
# timings, which depend on the machine's load; absent keys are left out.
CLASSIFICATION, REGRESSION = (
    tuple(c for c in columns if c[0] != "seconds_per_epoch")
    for columns in (report.CLASSIFICATION_COLUMNS, report.REGRESSION_COLUMNS)
)
SWEEP_KEYS = ("test_acc", "test_nll", "ece", "ood_auroc", "ood_auroc_mi", "test_rmse", "test_ll")
SWEEP_COLUMNS = tuple(c for c in CLASSIFICATION + REGRESSION if c[0] in SWEEP_KEYS)
# fmt: on
NO_RESULTS = "No {} committed yet: run `{}`, then `make docs-results`.\n"


def sha256(path: pathlib.Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(results: pathlib.Path) -> dict[str, dict[str, str]]:
    """``{figure file: {"source", "caption", "sha256"}}`` of the committed figures."""
    path = results / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def current(path: pathlib.Path) -> str:
    """A generated file's text, or the README's generated region."""
    text = path.read_text()
    return text.split(README_START, 1)[1].split(README_END, 1)[0] if README_START in text else text


def shrink(png: bytes) -> bytes:
    """The PNG as 256 colours, scaled down until it is at most MAX_FIGURE_BYTES."""
    from PIL import Image

    image, scale = Image.open(io.BytesIO(png)).convert("RGB"), 1.0
    while True:
        size = (round(image.width * scale), round(image.height * scale))
        small = image.resize(size, Image.Resampling.LANCZOS) if scale < 1 else image
        buffer = io.BytesIO()
        small.quantize(256).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= MAX_FIGURE_BYTES or scale < 0.3:
            return buffer.getvalue()
        scale *= 0.85


def run_captions(folder: pathlib.Path) -> dict[str, str]:
    """``{figure file: caption}`` from the run's Markdown reports (``**name**: caption``)."""
    pattern = re.compile(r"^\*\*([\w.-]+\.png)\*\*: (.+)$", re.MULTILINE)
    return {
        n: c.strip() for r in sorted(folder.glob("*.md")) for n, c in pattern.findall(r.read_text())
    }


def collect(runs: pathlib.Path, bench: pathlib.Path) -> list[str]:
    """Copies every result found, and its figures; returns the names collected."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    figures, found = manifest(RESULTS), []
    for source in SOURCES:
        path = bench if source.kind == "bench" else runs / source.path
        if not path.is_file():
            continue
        found.append(source.name)
        data = {k: v for k, v in json.loads(path.read_text()).items() if k != "learning_curves"}
        (RESULTS / f"{source.name}.json").write_text(json.dumps(data, indent=1) + "\n")
        for name in [n for n, e in figures.items() if e["source"] == source.name]:
            (FIGURES / name).unlink(missing_ok=True)
            del figures[name]
        captions = CAPTIONS | run_captions(path.parent)
        for figure in [f for f in source.figures if (path.parent / f).is_file()]:
            target = FIGURES / f"{source.name}_{figure}"
            target.write_bytes(shrink((path.parent / figure).read_bytes()))
            entry = {"source": source.name, "caption": captions.get(figure, figure)}
            figures[target.name] = entry | {"sha256": sha256(target)}
    (RESULTS / MANIFEST).write_text(json.dumps(dict(sorted(figures.items())), indent=1) + "\n")
    return found


def provenance(data: dict[str, Any]) -> str:
    """``commit `abc1234`, versions, date`` as the result records them."""
    record = data.get("provenance") or {}
    code = record.get("code") or {}
    commit = str(code.get("commit", "unknown"))[:7]
    commit += " with uncommitted changes" if code.get("dirty") is True else ""
    versions = f"dropout_lab {code.get('package', '?')}, jax {code.get('jax', '?')}"
    return f"commit `{commit}`, {versions}, written {record.get('written_at', '?')}"


def _cell(stats: Any, fmt: str) -> str:
    if not isinstance(stats, dict) or stats.get("mean") is None:
        return "–"
    se = stats.get("se")
    text = fmt.format(stats["mean"])
    return text if se is None or math.isnan(se) else f"{text} ± {fmt.format(se)}"


def table(rows: list[tuple[str, dict]], columns: tuple, first: str) -> str:
    """Markdown table of ``(label, {metric: {mean, se}})`` rows, present columns only."""
    present = [c for c in columns if any(c[0] in stats for _, stats in rows)]
    lines = [f"| {first} | " + " | ".join(h for _, h, _ in present) + " |"]
    lines.append("|---|" + "---:|" * len(present))
    for label, stats in rows:
        lines.append(
            f"| {label} | " + " | ".join(_cell(stats.get(k), f) for k, _, f in present) + " |"
        )
    return "\n".join(lines) + "\n"


def figures_md(source: Source, figures: dict[str, dict], where: str, data: dict) -> str:
    """Each of the source's figures under its caption and the commit it came from."""
    commit = provenance(data).split(",")[0]
    out = []
    for figure in source.figures:
        entry = figures.get(f"{source.name}_{figure}")
        if entry is not None:
            out.append(
                f"![{figure}]({where}{source.name}_{figure})\n\n*{entry['caption']}* ({commit})\n"
            )
    return "\n".join(out)


def render_metrics(source: Source, data: dict[str, Any]) -> str:
    """A compare or graph run: its summary table (Concrete dropout's learned rates too)."""
    rows = list((data.get("summary") or {}).items())
    learned = sorted({k for _, stats in rows for k in stats if k.startswith("learned_rate_")})
    columns = REGRESSION if data.get("task") == "regression" else CLASSIFICATION
    columns += tuple((k, k.replace("_", " "), "{:.3f}") for k in learned)
    head = f"Mean ± standard error over {len(data.get('seeds') or [])} seeds; `{source.command}`."
    return f"{head}\n\n{table(rows, columns, 'method')}"


def render_sweep(source: Source, data: dict[str, Any]) -> str:
    """A rate sweep: metrics per (method, rate) and the best rate per metric."""
    rows = [(f"{e['series']} @ {e['rate']:g}", e.get("stats", {})) for e in data.get("summary", [])]
    best = [
        f"- {series}: " + ", ".join(f"{k} at {v:g}" for k, v in picks.items())
        for series, picks in (data.get("best_rate") or {}).items()
    ]
    text = f"Mean ± standard error over seeds; `{source.command}`.\n\n"
    text += table(rows, SWEEP_COLUMNS, "method @ rate")
    return text + ("\nBest rate per metric:\n\n" + "\n".join(best) + "\n" if best else "")


def render_mc_sweep(source: Source, data: dict[str, Any]) -> str:
    """The MC sweep: metrics per rate at the largest T, and the spread's slope against T."""
    summary = data.get("summary") or []
    t_max = max((e.get("num_samples", 0) for e in summary), default=0)
    rows = [
        (f"{e['rate']:g}", e.get("stats", {})) for e in summary if e.get("num_samples") == t_max
    ]
    text = f"At T = {t_max} passes; mean ± standard error over seeds; `{source.command}`.\n\n"
    text += table(rows, SWEEP_COLUMNS, "rate")
    slopes = [(rate, {"slope": s}) for rate, s in (data.get("spread_slope") or {}).items()]
    if slopes:
        text += "\nLog-log slope of the spread of the MC estimate against T (σ/√T: −0.5):\n\n"
        text += table(slopes, (("slope", "slope", "{:.3f}"),), "rate")
    return text


def render_theory(data: dict[str, Any]) -> str:
    """The theory checks: every claim, its closed form, the estimate and the verdict."""

    def cell(value: Any) -> str:
        if isinstance(value, int | float):
            return "" if math.isnan(value) else f"{value:.5g}"
        return str(value or "").replace("|", "\\|")

    lines = [
        "| claim | function | closed form | estimate | std. err. | z | criterion | pass |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in data.get("rows", []):
        keys = ("closed_form", "estimate", "std_err", "z", "criterion")
        claim = r["claim"] + (f" ({r['note']})" if r.get("note") else "")
        cells = [cell(claim), f"`{r['function']}`", *(cell(r.get(k)) for k in keys)]
        lines.append("| " + " | ".join([*cells, "pass" if r["passed"] else "**FAIL**"]) + " |")
    meta = data.get("meta") or {}
    passed = sum(bool(r["passed"]) for r in data.get("rows", []))
    return (
        f"{passed} of {len(lines) - 2} checks pass ({meta.get('machine', '?')}, "
        f"{meta.get('backend', '?')} backend; {provenance(data)}).\n\n" + "\n".join(lines) + "\n"
    )


def render_bench(data: dict[str, Any] | None) -> str:
    """The targets of ``make bench`` with the machine they were measured on."""
    if data is None:
        return NO_RESULTS.format("benchmark results", "make bench")
    env = data.get("environment", {})
    lines = ["| comparison | measured | goal | met |", "|---|---:|---|---|"]
    for t in data.get("targets", []):
        met = {True: "yes", False: "**no**"}.get(t.get("met"), "–")
        lines.append(f"| {t['target']} | {t['measured']:.3g} | {t.get('goal', '')} | {met} |")
    machine = f"{env.get('cpu', env.get('machine', '?'))}, {env.get('cpu_count', '?')} cores"
    versions = ", ".join(
        f"{k} {env.get(k) or 'not installed'}" for k in ("dropout_lab", "jax", "flax", "torch")
    )
    quick = " (`--quick`: tiny sizes)" if data.get("quick") else ""
    commit = env.get("commit", "not recorded in the JSON")
    return (
        f"`make bench` of {data.get('started', '?')}{quick}: {machine}, "
        f"{env.get('backend', '?')} backend, {versions}; commit: {commit}.\n\n"
        + "\n".join(lines)
        + "\n"
    )


RENDERERS = {"metrics": render_metrics, "sweep": render_sweep, "mc_sweep": render_mc_sweep}


def load(results: pathlib.Path) -> dict[str, dict[str, Any]]:
    """The committed results by source name."""
    paths = {s.name: results / f"{s.name}.json" for s in SOURCES}
    return {name: json.loads(p.read_text()) for name, p in paths.items() if p.is_file()}


def results_page(loaded: dict[str, dict], figures: dict[str, dict]) -> str:
    """The body of the results guide: one section per run, with its figures."""
    parts = []
    for source in [s for s in SOURCES if s.kind in RENDERERS and s.name in loaded]:
        data = loaded[source.name]
        body = RENDERERS[source.kind](source, data)
        pictures = figures_md(source, figures, "../figures/", data)
        parts.append(
            f"## {source.title}\n\n{body}\nFrom {provenance(data)}.\n\n{pictures}".rstrip()
        )
    return "\n\n".join(parts) + "\n" if parts else NO_RESULTS.format("results", "make run")


def headline(loaded: dict[str, dict], figures: dict[str, dict]) -> str:
    """The README's generated lines: results, theory, performance, and one figure."""
    lines, run, theory = [], loaded.get("compare_digits"), loaded.get("theory_checks")
    if run:
        accs = [f"{m} {s['test_acc']['mean']:.4f}" for m, s in run["summary"].items()]
        lines.append(
            f"- **Results** ([all of them](docs/guides/results.md)): `make run` (an MLP "
            f"on the digits), test accuracy {', '.join(accs)}; mean of "
            f"{len(run['seeds'])} seeds, {provenance(run).split(',')[0]}."
        )
    if theory:
        passed = sum(bool(r["passed"]) for r in theory["rows"])
        lines.append(
            f"- **Theory** ([the table](docs/guides/theory.md)): {passed} of "
            f"{len(theory['rows'])} closed-form results agree with measurement."
        )
    targets = (loaded.get("bench") or {}).get("targets", [])
    ratios = [t["measured"] for t in targets if t["target"].endswith(": flax / ours")]
    speed = "not measured in the committed results yet: `make bench`, then `make docs-results`."
    if ratios:
        speed = (
            f"the `dl.dropout` forward pass is {min(ratios):.1f}-{max(ratios):.1f}x as fast "
            "as `flax.linen.Dropout` in `make bench`."
        )
    lines.append(f"- **Performance** ([performance](docs/guides/performance.md)): {speed}")
    if run and (entry := figures.get("compare_digits_reliability.png")):
        commit = provenance(run).split(",")[0]
        figure = "docs/figures/compare_digits_reliability.png"
        lines.append(f"\n![reliability]({figure})\n\n*{entry['caption']}* ({commit})")
    return "\n" + "\n".join(lines) + "\n"


def render_all(results: pathlib.Path) -> dict[str, str]:
    """``{path relative to the repository: generated text}`` from the committed results."""
    loaded, figures = load(results), manifest(results)
    theory, source = loaded.get("theory_checks"), next(s for s in SOURCES if s.kind == "theory")
    no_theory = NO_RESULTS.format("theory results", source.command)
    return {
        "docs/generated/results.md": results_page(loaded, figures),
        "docs/generated/theory_table.md": render_theory(theory) if theory else no_theory,
        "docs/generated/theory_figures.md": figures_md(source, figures, "../figures/", theory or {})
        or no_theory,
        "docs/generated/bench.md": render_bench(loaded.get("bench")),
        "README.md": headline(loaded, figures),
    }


def write(outputs: dict[str, str]) -> None:
    """Writes the generated files, and the README's region between its markers."""
    for relative, text in outputs.items():
        path = ROOT / relative
        if README_START in (old := path.read_text() if path.exists() else ""):
            before, rest = old.split(README_START, 1)
            text = before + README_START + text + README_END + rest.split(README_END, 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Collects the results found, then renders the docs' tables from docs/results/."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs", help="runs folder")
    bench = ROOT / "benchmarks" / "results" / "latest.json"
    parser.add_argument("--bench", type=pathlib.Path, default=bench, help="make bench's JSON")
    parser.add_argument("--render-only", action="store_true", help="only render docs/results/")
    args = parser.parse_args(argv)
    if not args.render_only:
        found = collect(args.runs, args.bench)
        print(f"collected: {', '.join(found) or 'nothing'} (the rest kept as committed)")
    outputs = render_all(RESULTS)
    write(outputs)
    print("wrote " + ", ".join(sorted(outputs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
