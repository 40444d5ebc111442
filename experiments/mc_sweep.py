"""MC-dropout uncertainty against the dropout rate and the number of passes T.

    python experiments/mc_sweep.py configs/mc_sweep_toy.yaml [key=value ...]

Trains one MC-dropout model per rate x seed (one vmapped program), draws up to
max(T) passes per model (vmapped over the models), and writes ``mc_sweep.md``,
``mc_sweep.json``, CSV tables and plots (metrics vs T and vs rate, in- vs
out-of-distribution uncertainty, the spread of the MC estimate vs T with its log-log
slope) into the run folder (default ``runs/<config name>``).
"""

import sys

from lab import ConfigError, DataError, run_dir
from lab.sweep_config import load_sweep_config


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_sweep_config(argv[0], argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from lab.sweep import run_mc_sweep

    console = Console()
    console.print(f"run folder: {run_dir(cfg)}")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        disable=not cfg.progress,
    )
    tasks = {}

    def on_progress(stage, done, total):
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done)

    try:
        with progress:
            out = run_mc_sweep(cfg, on_progress=on_progress)
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    console.print(out["table"])
    for rate, s in out["spread_slope"].items():
        console.print(f"rate {rate}: spread of the MC mean ~ T^{s['mean']:.3f} (expect -0.5)")
    console.print(f"wrote {run_dir(cfg)}/mc_sweep.md, mc_sweep.json, CSV tables and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
