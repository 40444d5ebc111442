"""Compare feature dropout, DropEdge and DropNode on a GCN (node classification).

    python experiments/graph.py configs/graph_digits.yaml [key=value ...]

Overrides are dotted keys, e.g. ``steps=100 data.num_neighbors=5
methods.drop_edge.rate=0.5``. Writes ``results.md`` and ``metrics.json`` to the run
folder (default ``runs/<config name>``) and prints the results table.
"""

import sys

from lab import ConfigError, DataError
from lab.console import START_OVER, Display
from lab.graph_config import load_graph_config


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_graph_config(argv[0], argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from lab.graph import run_graph

    try:
        with Display(resume=START_OVER) as display:
            out = run_graph(cfg)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    display.table(out["table"])
    display.note(f"wrote {cfg.output_dir or 'runs/' + cfg.name}/results.md and metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
