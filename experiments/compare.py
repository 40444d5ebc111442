"""Compare dropout methods on one data set.

    python experiments/compare.py configs/compare_digits.yaml [key=value ...]

Overrides are dotted keys, e.g. ``train.epochs=50 methods.rdrop.alpha=0.5
seeds=[0,1,2,3,4]``. Writes the run folder (default ``runs/<config name>``) and
prints the results table. Interrupted runs (Ctrl-C, SIGTERM) resume where they stopped.
"""

import sys

from lab import ConfigError, DataError, load_config, run_dir, run_experiment
from lab.console import Display, experiment_hooks


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    try:
        with Display(enabled=cfg.progress) as display:
            display.note(f"run folder: {run_dir(cfg)}")
            out = run_experiment(cfg, **experiment_hooks(display))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    display.table(out["table"])
    display.note(f"wrote {run_dir(cfg)}/results.md, metrics.json, config.yaml and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
