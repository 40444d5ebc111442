r"""Train and evaluate a grid of dropout rates x seeds (x methods) as one vmapped program.

    python experiments/sweep.py configs/sweep_digits.yaml [key=value ...]
    python experiments/sweep.py configs/sweep_digits.yaml \
        sweep.rates=[0,0.1,0.2,0.3,0.5,0.7] sweep.seeds=8

Writes ``sweep.md``, ``sweep.json``, ``sweep_points.csv``, ``sweep_summary.csv`` and
plots (metric vs rate with standard-error bands, best rate starred) into the run
folder (default ``runs/<config name>``) and prints the table.
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

    from lab.sweep import run_sweep

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

    def on_progress(method, done, total):
        if method not in tasks:
            tasks[method] = progress.add_task(f"{method} (grid steps)", total=total)
        progress.update(tasks[method], completed=done)

    try:
        with progress:
            out = run_sweep(cfg, on_progress=on_progress)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    console.print(out["table"])
    for method, t in out["timing"].items():
        console.print(f"{method}: {t['points']} models trained in {t['train_seconds']:.1f} s")
    console.print(f"wrote {run_dir(cfg)}/sweep.md, sweep.json, sweep_*.csv and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
