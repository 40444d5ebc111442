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
from lab.console import START_OVER, Display, stage_hook
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

    from lab.sweep import run_sweep

    try:
        with Display(enabled=cfg.progress, resume=START_OVER) as display:
            display.note(f"run folder: {run_dir(cfg)}")
            out = run_sweep(cfg, on_progress=stage_hook(display, "{} (grid steps)"))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    display.table(out["table"])
    for method, t in out["timing"].items():
        display.note(f"{method}: {t['points']} models trained in {t['train_seconds']:.1f} s")
    display.note(f"wrote {run_dir(cfg)}/sweep.md, sweep.json, sweep_*.csv and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
