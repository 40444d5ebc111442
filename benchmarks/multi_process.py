"""Training, MC sampling and a sweep as 1, 2 and 4 JAX processes on this machine.

    python benchmarks/multi_process.py [--processes 1 2 4] [--quick]
        [--json benchmarks/results/multi_process.json] [--figure docs/figures/multi_process.png]

N processes (N = 1: one plain process; N > 1: started by ``experiments/launch.py``'s
functions on 127.0.0.1, connected by ``lab.distributed.initialize``, gloo collectives),
one CPU device each, everything on the N-device global mesh:

- *train*: the comparison MLP [64, 256, 256, 10] (``inverted``) on digits, data
  parallel (``mesh.data=-1``): one compiled call of 20 steps of a global batch of 128
  rows (``lab.fit.train_program``);
- *mc*: a jitted ``dl.mc.sample`` of 64 dropout passes of the same MLP on 256 rows,
  the passes split over the N devices;
- *sweep*: ``lab.grid.train_grid`` of 8 grid points (MLP [64], 2 epochs), the points
  split over the N devices.

For each: the compile time (``lower(...).compile()``; for the sweep its first call
minus the median of the later ones), the median wall time of a compiled call and its
CPU time summed over the N processes (all their threads); also the start-up (from
starting the processes to all of them connected, imports included). This machine has
2 cores: N processes share them, so the ratios show what splitting costs here
(collectives over loopback, one core per process, 4 processes on 2 cores), not what N
hosts would gain. On a machine shared with other work, N processes also take a
larger share of the cores from that work: the summed CPU time is the fairer measure
of what the split costs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "experiments"))

import launch  # noqa: E402  (experiments/launch.py: standard library only)

WORKLOADS = ("train", "mc", "sweep")


def _timed(fn, repeats: int) -> dict:
    """Median wall and CPU seconds (this process, all threads) of ``repeats`` blocking
    calls of ``fn``."""
    import jax

    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return {"run_s": statistics.median(walls), "run_cpu_s": statistics.median(cpus)}


def _compiled(jitted, *args):
    """``jitted`` compiled for ``args``, and the seconds it took."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _train(quick: bool) -> dict:
    import jax

    from lab import distributed, load_config, load_dataset
    from lab.fit import RunKeys, init_state, make_setup, train_program

    cfg = load_config(None, ["model.hidden=[256,256]", "train.batch_size=128", "mesh.data=-1"])
    data = load_dataset(cfg.data)
    setup = make_setup(cfg, "inverted", data)
    keys, hp = RunKeys.from_seed(0), setup.hparams()
    x, y = distributed.replicate(setup.mesh, (data.x_train, data.y_train))
    state = jax.jit(lambda k, rows: init_state(setup, k, rows))(keys.init, x[:1])
    state = distributed.place_state(setup.mesh, state)
    program, compile_s = _compiled(
        train_program(setup, 5 if quick else 20), state, x, y, keys.data, keys.dropout, hp
    )
    run = _timed(lambda: program(state, x, y, keys.data, keys.dropout, hp), 3 if quick else 7)
    return {"compile_s": compile_s, **run}


def _mc(quick: bool) -> dict:
    import _harness as H
    import jax
    import numpy as np
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import dropout_lab as dl

    sizes = [64, 256, 256, 10]
    rng = np.random.default_rng(0)
    shapes = zip(sizes[:-1], sizes[1:], strict=True)
    params = [rng.normal(size=(a, b)).astype(np.float32) / a**0.5 for a, b in shapes]
    x = rng.normal(size=(256, sizes[0])).astype(np.float32)  # the same on every process
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, P("data")) if jax.device_count() > 1 else None

    forward = H.mlp_mc_pass(params, x)
    num_samples = 16 if quick else 64
    mc = jax.jit(lambda k: dl.mc.sample(forward, k, num_samples, sharding=sharding))
    key = jax.random.key(1)
    program, compile_s = _compiled(mc, key)
    return {"compile_s": compile_s, **_timed(lambda: program(key), 3 if quick else 9)}


def _sweep(quick: bool) -> dict:
    from lab import grid as G
    from lab import load_dataset
    from lab.fit import make_setup
    from lab.sweep_config import load_sweep_config

    overrides = ["model.hidden=[64]", f"train.epochs={1 if quick else 2}", "mesh.data=-1"]
    overrides += ["sweep.rates=[0.0,0.1,0.3,0.5]", "sweep.seeds=2", "progress=false"]
    cfg = load_sweep_config(None, overrides)
    data = load_dataset(cfg.data)
    setup = make_setup(cfg, "inverted", data)  # its programs compile on the first call
    points = G.grid_points(cfg, "inverted")
    start = time.perf_counter()
    G.train_grid(setup, data, points)  # compiles; fetches its losses: blocks
    first = time.perf_counter() - start
    run = _timed(lambda: G.train_grid(setup, data, points).states, 1 if quick else 3)
    return {"compile_s": first - run["run_s"], **run, "points": len(points)}


def child(out: str, quick: bool, started_at: float) -> None:
    """One process: connects (N > 1), times every workload, writes ``out`` (process 0)
    and ``<out>.<i>`` (process i: its CPU times)."""
    import jax

    from lab import distributed, load_config

    distributed.initialize(load_config(None, []).distributed)  # from the launcher's env
    result: dict = {"processes": jax.process_count(), "devices": jax.device_count()}
    distributed.sync("connected")
    result["startup_s"] = time.time() - started_at
    for name, fn in (("train", _train), ("mc", _mc), ("sweep", _sweep)):
        distributed.sync(name)
        result[name] = fn(quick)
    pathlib.Path(f"{out}.{jax.process_index()}").write_text(json.dumps(result))
    distributed.sync("written")


def run(processes: int, quick: bool, folder: pathlib.Path) -> dict:
    """Starts ``processes`` processes of :func:`child`; returns process 0's result."""
    out = folder / f"processes_{processes}.json"
    command = [__file__, "--child", str(out)] + (["--quick"] if quick else [])
    env = {k: v for k, v in os.environ.items() if k not in launch.ENV}
    env["BENCH_STARTED_AT"] = repr(time.time())
    start = time.perf_counter()
    if processes == 1:
        code = subprocess.run(launch.command_line(command), env=env).returncode
    else:
        procs = launch.start(command, processes, env=env, logs=folder / f"logs_{processes}")
        code = launch.wait(procs, timeout_s=1800)
    if code:
        logs = "".join(p.read_text()[-2000:] for p in folder.glob(f"logs_{processes}/*.log"))
        raise RuntimeError(f"{processes} processes: exit {code}\n{logs}")
    each = [json.loads(pathlib.Path(f"{out}.{i}").read_text()) for i in range(processes)]
    for name in WORKLOADS:  # CPU seconds of a call: summed over the processes
        each[0][name]["run_cpu_s"] = sum(r[name]["run_cpu_s"] for r in each)
    return {**each[0], "wall_s": time.perf_counter() - start}


def plot(report: dict, path: pathlib.Path) -> None:
    """Compiled call, compile time and start-up against the number of processes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    ns = sorted(int(n) for n in runs)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    for key, ax, title in (
        ("run_s", axes[0], "compiled call: wall (s)"),
        ("run_cpu_s", axes[1], "compiled call: CPU, all processes (s)"),
        ("compile_s", axes[2], "compile: wall (s)"),
    ):
        for name, marker in zip(WORKLOADS, "osD", strict=True):
            ax.plot(ns, [runs[str(n)][name][key] for n in ns], marker=marker, label=name)
        ax.set_title(title)
    axes[3].plot(ns, [runs[str(n)]["startup_s"] for n in ns], marker="o", color="gray")
    axes[3].set_title("start-up: imports + connect (s)")
    for ax in axes:
        ax.set_xticks(ns)
        ax.set_xlabel("processes (one CPU device each)")
        ax.set_ylim(bottom=0)
    axes[0].legend()
    load = report["load_start"][0], report["load_end"][0]
    fig.suptitle(
        f"{report['cpus']} cores shared by all processes; load average {load[0]:.1f} at "
        f"start, {load[1]:.1f} at end",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=str(HERE / "results" / "multi_process.json"))
    parser.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "multi_process.png"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.quick, float(os.environ["BENCH_STARTED_AT"]))
        return 0
    report = {"cpus": os.cpu_count(), "load_start": os.getloadavg(), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        report["runs"] = {str(n): run(n, args.quick, pathlib.Path(tmp)) for n in args.processes}
    report["load_end"] = os.getloadavg()
    base = report["runs"][str(args.processes[0])]
    print(f"load average {report['load_start']} -> {report['load_end']}; {report['cpus']} cpus")
    for n, r in report["runs"].items():
        cells = ", ".join(
            f"{w} {r[w]['run_s']:.3f} s/call (x{r[w]['run_s'] / base[w]['run_s']:.2f}; CPU "
            f"x{r[w]['run_cpu_s'] / base[w]['run_cpu_s']:.2f}), compile {r[w]['compile_s']:.1f} s"
            for w in WORKLOADS
        )
        print(f"{n} process(es): start-up {r['startup_s']:.1f} s; {cells}")
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1))
    plot(report, pathlib.Path(args.figure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
