"""Vmapped vs sequential training of the same 16-point grid (4 rates x 4 seeds).

    python benchmarks/sweep_speed.py [--hidden 64,64] [--epochs 5] [--json out.json]

Three contenders train the same models on the 8x8 digits with the lab's step
(:func:`lab.fit.make_step`): *sequential* runs :func:`lab.fit.chunk_program` once per
grid point (one compiled ``lax.scan`` over all steps, reused for every point, as
``experiments/compare.py`` does); *per-step loop* is the common hand-written loop
(one jitted step per Python call, the epoch's permutation drawn once per epoch);
*vmapped* runs :func:`lab.grid.train_grid` (the same step vmapped, one compiled
program for all 16 points). Each is timed twice in the same process: the first call
includes compilation, the second is the steady-state run (median of ``--repeats``).
Prints times and the ratios sequential / vmapped and per-step loop / vmapped.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))  # the lab is not in the wheel

from lab import fit as F  # noqa: E402
from lab import grid as G  # noqa: E402
from lab import load_dataset  # noqa: E402
from lab.sweep_config import load_sweep_config  # noqa: E402

RATES = [0.0, 0.1, 0.3, 0.5]
SEEDS = 4


def _config(hidden, epochs):
    return load_sweep_config(
        "configs/sweep_digits.yaml",
        [
            f"model.hidden=[{hidden}]",
            f"train.epochs={epochs}",
            f"sweep.rates={RATES}".replace(" ", ""),
            f"sweep.seeds={SEEDS}",
            "progress=false",
        ],
    )


def _state(setup, data, seed):
    keys = F.RunKeys.from_seed(seed)
    return keys, F.init_state(setup, keys.init, jnp.asarray(data.x_train[:1]))


def _sequential(setup, data, points):
    program = F.train_program(setup, setup.schedule.total_steps)
    out = []
    for p in points:
        keys, state = _state(setup, data, p.seed)
        hp = G.point_hparams(p, 0.0, setup.train.weight_decay)
        state, _ = program(state, data.x_train, data.y_train, keys.data, keys.dropout, hp)
        out.append(state)
    jax.block_until_ready(out)
    return out


def _per_step_loop(setup, data, points):
    spe, n = setup.schedule.steps_per_epoch, setup.schedule.num_train
    if "per_step" not in setup.programs:
        step_fn = F.make_step(setup)

        def one(state, perm, x_all, y_all, dropout_key, hp):
            idx = F.batch_rows(perm, state["step"], setup.schedule)
            key = jax.random.fold_in(dropout_key, state["step"])
            return step_fn(state, (x_all[idx], y_all[idx]), key, hp)

        permutation = jax.jit(lambda k, e: F.epoch_permutation(k, e, n))
        setup.programs["per_step"] = (jax.jit(one), permutation)
    step, permutation = setup.programs["per_step"]
    out = []
    for p in points:
        keys, state = _state(setup, data, p.seed)
        hp = G.point_hparams(p, 0.0, setup.train.weight_decay)
        for i in range(setup.schedule.total_steps):
            if i % spe == 0:
                perm = permutation(keys.data, i // spe)
            state, _ = step(state, perm, data.x_train, data.y_train, keys.dropout, hp)
        out.append(state)
    jax.block_until_ready(out)
    return out


def _vmapped(setup, data, points):
    result = G.train_grid(setup, data, points)
    jax.block_until_ready(result.states)
    return result


def bench(hidden: str, epochs: int, repeats: int) -> dict:
    cfg = _config(hidden, epochs)
    data = load_dataset(cfg.data)
    points = G.grid_points(cfg, "inverted")
    contenders = {"sequential": _sequential, "per_step_loop": _per_step_loop, "vmapped": _vmapped}
    first, steady, setups = {}, {name: [] for name in contenders}, {}
    for name, fn in contenders.items():
        setup = F.make_setup(cfg, "inverted", data)  # fresh programs per contender
        setups[name] = setup
        start = time.perf_counter()
        fn(setup, data, points)
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn(setups[name], data, points)
            steady[name].append(time.perf_counter() - start)
    run = {name: float(np.median(v)) for name, v in steady.items()}
    schedule = setups["vmapped"].schedule
    return {
        "hidden": hidden,
        "epochs": epochs,
        "points": len(points),
        "steps_per_point": schedule.total_steps,
        "batch_size": schedule.batch_size,
        "first_call_s": first,
        "run_s": run,
        "compile_s_estimate": {n: first[n] - run[n] for n in contenders},
        "ratio_run": run["sequential"] / run["vmapped"],
        "ratio_run_per_step_loop": run["per_step_loop"] / run["vmapped"],
        "ratio_first_call": first["sequential"] / first["vmapped"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", action="append", help="widths, e.g. 64,64 (repeatable)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sizes = args.hidden or ["32", "128,128", "512,512"]
    print(f"jax {jax.__version__} on {jax.default_backend()}; load: {os.getloadavg()}")
    results = []
    for hidden in sizes:
        r = bench(hidden, args.epochs, args.repeats)
        results.append(r)
        print(
            f"MLP [{hidden}] {r['points']} points x {r['steps_per_point']} steps "
            f"(batch {r['batch_size']}): run sequential {r['run_s']['sequential']:.2f} s, "
            f"vmapped {r['run_s']['vmapped']:.2f} s -> {r['ratio_run']:.2f}x; per-step loop "
            f"{r['run_s']['per_step_loop']:.2f} s -> {r['ratio_run_per_step_loop']:.2f}x; "
            f"first call (with compile) sequential {r['first_call_s']['sequential']:.2f} s, "
            f"vmapped {r['first_call_s']['vmapped']:.2f} s -> {r['ratio_first_call']:.2f}x"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": os.getloadavg(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
