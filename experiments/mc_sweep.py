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

    from lab.mc_sweep import run_mc_sweep

    try:
        with Display(enabled=cfg.progress, resume=START_OVER) as display:
            display.note(f"run folder: {run_dir(cfg)}")
            out = run_mc_sweep(cfg, on_progress=stage_hook(display))
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    display.table(out["table"])
    for rate, s in out["spread_slope"].items():
        display.note(f"rate {rate}: spread of the MC mean ~ T^{s['mean']:.3f} (expect -0.5)")
    display.note(f"wrote {run_dir(cfg)}/mc_sweep.md, mc_sweep.json, CSV tables and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
