"""Checks dropout's known results (dropout_lab.theory) against Monte Carlo.

Usage:
  python experiments/theory_checks.py [configs/theory_checks.yaml] [key=value ...]

Writes table.md, results.json, jensen_gap.png and bn_shift.png to ``output_dir``.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import jax

from lab import ConfigError
from lab.console import START_OVER, Display
from lab.theory_checks import run_theory_checks, write_theory_outputs
from lab.theory_config import load_theory_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "theory_checks.yaml")


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    path = argv.pop(0) if argv and "=" not in argv[0] else DEFAULT_CONFIG
    cfg = load_theory_config(path, argv)
    start = time.perf_counter()
    with Display(resume=START_OVER) as display:
        result = run_theory_checks(cfg)
    meta = {
        "wall_time_s": round(time.perf_counter() - start, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }
    paths = write_theory_outputs(result, cfg, cfg.output_dir, meta)
    result["meta"], result["paths"] = meta, {k: str(v) for k, v in paths.items()}
    display.table(paths["table"].read_text())
    passed = sum(r["passed"] for r in result["rows"])
    display.note(f"{passed}/{len(result['rows'])} rows pass; {meta['wall_time_s']} s; "
                 f"outputs in {cfg.output_dir}")  # fmt: skip
    return result


if __name__ == "__main__":
    try:
        result = main()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if all(r["passed"] for r in result["rows"]) else 1)
