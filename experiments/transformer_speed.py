"""The default transformer grid trained as one vmapped program vs one point at a time.

    python experiments/transformer_speed.py [--epochs 10] [--repeats 3] [--out DIR]

Both contenders train the points of ``configs/transformer_digits.yaml`` (no dropout and
three schedules x 3 seeds) with :func:`lab.grid.train_grid`: all points at once (one
vmapped program), or ``chunk_size=1`` (a program of one point, compiled once and run for
each point in turn). Each has its own setup, so its first call includes compilation;
then ``--repeats`` runs alternate between the two (the machine is shared: alternating
spreads its load over both) and the medians are kept. Wall and CPU seconds (this
process, all threads) and the load average go to ``DIR/speed.json`` (default
``runs/transformer_speed``), which ``experiments/transformer_report.py`` renders.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

from lab import grid as G
from lab import load_dataset
from lab.fit import make_setup
from lab.sweep_config import load_sweep_config

CONTENDERS = {"one vmapped program": None, "one point at a time": 1}  # name: chunk_size


def clocked(fn) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()`` (its result waited for)."""
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn().states)
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(epochs: int, repeats: int) -> dict:
    """First-call and median steady-state wall and CPU seconds of each contender."""
    cfg = load_sweep_config("configs/transformer_digits.yaml", [f"train.epochs={epochs}"])
    data = load_dataset(cfg.data)
    method = cfg.sweep.methods[0]
    points = G.grid_points(cfg, method)
    setups = {name: make_setup(cfg, method, data) for name in CONTENDERS}

    def train(name: str):
        return lambda: G.train_grid(setups[name], data, points, chunk_size=CONTENDERS[name])

    load_start = os.getloadavg()
    first = {name: clocked(train(name)) for name in CONTENDERS}
    runs: dict[str, list] = {name: [] for name in CONTENDERS}
    for _ in range(repeats):
        for name in CONTENDERS:
            runs[name].append(clocked(train(name)))
    steady = {name: np.median(np.array(v), axis=0).tolist() for name, v in runs.items()}
    return {
        "config": "configs/transformer_digits.yaml",
        "epochs": epochs,
        "points": len(points),
        "steps_per_point": setups["one vmapped program"].schedule.total_steps,
        "first_call": first,
        "steady": steady,
        "repeats": repeats,
        "cpu_count": os.cpu_count(),
        "load_start": load_start,
        "load_end": os.getloadavg(),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="runs/transformer_speed")
    args = parser.parse_args(argv)
    out = bench(args.epochs, args.repeats)
    folder = pathlib.Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "speed.json").write_text(json.dumps(out, indent=1))
    for name in CONTENDERS:
        (wall, cpu), first = out["steady"][name], out["first_call"][name][0]
        print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU (first call {first:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
