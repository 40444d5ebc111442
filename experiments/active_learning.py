"""Active learning with MC dropout (Gal et al. 2017) on the digits: every heuristic x seed.

    python experiments/active_learning.py configs/active_learning_digits.yaml [key=value ...]
    python experiments/active_learning.py configs/active_learning_repeated_digits.yaml

Overrides are dotted keys, e.g. ``active.rounds=10 seeds=[0,1,2,3,4]
active.heuristics=[random,bald]``. Writes ``active.json``, ``results.md``,
``active_learning.png`` and ``config.yaml`` into the run folder (default
``runs/<config name>``) and prints the table of labels needed per error target.
"""

import sys

from lab import ConfigError, DataError, run_dir
from lab.active_config import load_active_config
from lab.console import START_OVER, Display


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_active_config(argv[0], argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from lab.active import run_active
    from lab.active_results import table

    name = f"rounds ({len(cfg.active.heuristics)} heuristics x {len(cfg.seeds)} seeds)"

    def on_round(r: int, labels: int, errors: dict[str, float]) -> None:
        if name not in display:
            display.start(name, cfg.active.rounds + 1)
        best = min(errors, key=errors.__getitem__)
        info = f"{labels} labels, test error " + " ".join(f"{h}={e:.3f}" for h, e in errors.items())
        display.update(name, r + 1, f"{info} (best {best})")

    try:
        with Display(enabled=cfg.progress, resume=START_OVER) as display:
            display.note(f"run folder: {run_dir(cfg)}")
            out = run_active(cfg, on_round=on_round)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    display.table(table(out))
    display.note(f"wrote {run_dir(cfg)}/active.json, results.md and active_learning.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
