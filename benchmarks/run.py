"""`make bench`: dropout_lab against Flax, plain JAX and PyTorch, as ratios.

    python benchmarks/run.py            # full run (~10-20 min on 2 cores)
    python benchmarks/run.py --quick    # every comparison at tiny sizes (< 1 min)
    python benchmarks/run.py --only forward mc

Each comparison of a full run has its own Python process (so one cannot warm or
fragment the heap for another); ``--quick``, which checks that every comparison runs
and whose timings mean nothing, runs them all in this process. The machine probe (jax
matmul GFLOP/s, numpy x*2 GB/s) is taken at the start and at the end. Results: a
printed table of medians and ratios, and JSON in benchmarks/results/ (``latest.json``
/ ``latest-quick.json`` plus a timestamped copy). Torch contenders run only when torch
is installed (`make bench` installs the CPU wheel torch==2.13.0); they use 2 threads
and OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))  # the lab (eval_forward builds its MLP)

SUITE_NAMES = [
    "forward",
    "forward_backward",
    "residuals",
    "train_step",
    "mc",
    "eval_forward",
    "attention",
]


def _run_suite_in_process(name: str, quick: bool, out: pathlib.Path) -> None:
    import suites

    t0 = time.perf_counter()
    result = suites.SUITES[name](quick)
    result["seconds"] = time.perf_counter() - t0
    out.write_text(json.dumps(result))


def _run_suite(name: str, quick: bool, out: pathlib.Path) -> int:
    """Runs one comparison (a child process unless ``quick``); returns its exit code."""
    if quick:
        _run_suite_in_process(name, quick, out)
        return 0
    cmd = [sys.executable, str(HERE / "run.py"), "--suite", name, "--suite-out", str(out)]
    return subprocess.run(cmd, cwd=ROOT).returncode


def _environment() -> dict:
    import _harness as H
    import jax
    import numpy as np

    import dropout_lab

    env = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "dropout_lab": dropout_lab.__version__,
        "backend": jax.default_backend(),
        "default_prng": jax.config.jax_default_prng_impl,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    try:
        import flax

        env["flax"] = flax.__version__
    except ImportError:
        pass
    torch = H.load_torch()
    env["torch"] = torch.__version__ if torch is not None else None
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return env


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def format_table(table: dict) -> str:
    lines = [f"\n## {table['title']}"]
    if "residual_bytes" in table:
        lines.append("| contender | array bytes | bytes / element | scalar bytes (key, rate) |")
        lines.append("|---|---|---|---|")
        for k, v in table["residual_bytes"].items():
            lines.append(
                f"| {k} | {v} | {table['bytes_per_element'][k]:.3g} | {table['scalar_bytes'][k]} |"
            )
        return "\n".join(lines)
    res, base, vs = table["results"], table["base"], table.get("vs")
    head = f"| contender | median ms | min ms | faults/call | x {base} |"
    if vs:
        head += f" speed-up vs {vs} |"
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for name, r in res.items():
        row = (
            f"| {name} | {_fmt(r['median_ms'])} | {_fmt(r['min_ms'])} | "
            f"{r['faults_per_call']:.0f} | {r['median_ms'] / res[base]['median_ms']:.2f} |"
        )
        if vs:
            row += f" {res[vs]['median_ms'] / r['median_ms']:.2f} |"
        lines.append(row)
    return "\n".join(lines)


def format_targets(targets: list[dict]) -> str:
    lines = ["\n## Targets", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in targets:
        lines.append(
            f"| {t['target']} | {t['measured']} | {t['goal']} | "
            f"{'-' if t['met'] is None else 'yes' if t['met'] else '**no**'} |"
        )
    return "\n".join(lines)


def format_probe(label: str, p: dict) -> str:
    return (
        f"probe ({label}): matmul {p['matmul_size']}^2 {p['matmul_gflops']:.0f} GFLOP/s, "
        f"numpy x*2 {p['memory_gbps']:.1f} GB/s, load average {p['loadavg_1min']:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, < 1 minute")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch contenders")
    parser.add_argument("--only", nargs="+", choices=SUITE_NAMES, help="run these suites only")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=HERE / "results",
        help="folder for the JSON and Markdown results",
    )
    parser.add_argument("--suite", choices=SUITE_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--suite-out", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.no_torch:
        os.environ["DROPOUT_LAB_BENCH_NO_TORCH"] = "1"  # inherited by the children
    if args.suite:  # child process: one comparison
        _run_suite_in_process(args.suite, args.quick, args.suite_out)
        return 0

    import _harness as H

    started = datetime.datetime.now(datetime.UTC)
    report = {"started": started.isoformat(), "quick": args.quick, "environment": _environment()}
    report["probe_start"] = H.probe(args.quick)
    print(f"# dropout_lab benchmarks{' (quick)' if args.quick else ''}")
    print(json.dumps(report["environment"]))
    print(format_probe("start", report["probe_start"]))
    report["suites"] = {}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or SUITE_NAMES:
            out = pathlib.Path(tmp) / f"{name}.json"
            code = _run_suite(name, args.quick, out)
            if code != 0 or not out.exists():
                failed.append(name)
                print(f"\n## {name}: FAILED (exit code {code})")
                continue
            result = json.loads(out.read_text())
            report["suites"][name] = result
            for table in result["tables"]:
                print(format_table(table))
            print(f"({name}: {result['seconds']:.1f} s)")
            sys.stdout.flush()
    report["probe_end"] = H.probe(args.quick)
    print(format_probe("end", report["probe_end"]))
    targets = [t for r in report["suites"].values() for t in r["targets"]]
    report["targets"] = targets
    print(format_targets(targets))
    report["failed"] = failed

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "latest-quick" if args.quick else "latest"
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(report, indent=1)
    (args.out / f"{stem}.json").write_text(text)
    (args.out / f"{stamp}{'-quick' if args.quick else ''}.json").write_text(text)
    md = [
        f"# dropout_lab benchmarks ({started:%Y-%m-%d %H:%M} UTC)",
        json.dumps(report["environment"]),
        format_probe("start", report["probe_start"]),
        format_probe("end", report["probe_end"]),
    ]
    md += [format_table(t) for r in report["suites"].values() for t in r["tables"]]
    md.append(format_targets(targets))
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print(f"\nwrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
