"""MC sampling and a vmapped sweep on 1 vs 4 devices (XLA host devices on CPU).

    python benchmarks/multi_device.py [--devices 1 4] [--json out.json]

Each device count runs in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``: *mc* is a jitted
``dl.mc.sample`` of 64 dropout passes of an MLP [64, 256, 256, 10] on 256 rows with
the sample axis sharded over the N devices (no sharding for N = 1); *sweep* is
``train_grid`` of 8 grid points (digits, MLP [64], 2 epochs) with the grid axis over
the N devices (a ``mesh`` config for N > 1), timed on its second call (compiled).
On a CPU the N "devices" share the same cores, so the ratio measures the overhead of
partitioning, not a speed-up; on N real accelerators it is the scaling.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "experiments"))


def child(devices: int, quick: bool) -> dict:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    import _harness as H
    import jax
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import dropout_lab as dl
    from lab import grid as G
    from lab import load_dataset
    from lab.fit import make_setup
    from lab.sweep_config import load_sweep_config

    sizes = [64, 256, 256, 10]
    keys = jax.random.split(jax.random.key(0), len(sizes))
    params = [
        jax.random.normal(k, (a, b)) / a**0.5
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=False)
    ]
    x = jax.random.normal(keys[-1], (256, sizes[0]))
    sharding = None
    if devices > 1:
        mesh = jax.make_mesh((devices,), ("data",), axis_types=(AxisType.Auto,))
        sharding = NamedSharding(mesh, P("data"))

    forward = H.mlp_mc_pass(params, x)
    num_samples = 16 if quick else 64
    mc = jax.jit(lambda k: dl.mc.sample(forward, k, num_samples, sharding=sharding))
    key = jax.random.key(1)
    repeats, calls = (3, 2) if quick else (9, 5)
    result = {"devices": len(jax.devices())}
    result["mc"] = H.compare({"mc": lambda: mc(key)}, repeats=repeats, calls=calls)["mc"]

    overrides = [
        "model.hidden=[64]",
        f"train.epochs={1 if quick else 2}",
        "sweep.rates=[0.0,0.1,0.3,0.5]",
        "sweep.seeds=2",
        "progress=false",
        "plots=false",
    ]
    if devices > 1:
        overrides.append("mesh.data=-1")
    cfg = load_sweep_config(None, overrides)
    data = load_dataset(cfg.data)
    setup = make_setup(cfg, "inverted", data)  # its programs compile on the first call
    points = G.grid_points(cfg, "inverted")
    times = []
    for _ in range(2 if quick else 4):
        start = time.perf_counter()
        jax.block_until_ready(G.train_grid(setup, data, points).states)
        times.append(time.perf_counter() - start)
    result["sweep"] = {
        "first_call_s": times[0],
        "median_s": sorted(times[1:])[len(times[1:]) // 2],
        "points": len(points),
        "steps_per_point": setup.schedule.total_steps,
    }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return 0
    load_start = os.getloadavg()
    runs = {}
    for n in args.devices:
        cmd = [sys.executable, __file__, "--child", str(n)] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
    base = runs[args.devices[0]]
    print(f"load average at start {load_start}, at end {os.getloadavg()}; cpus {os.cpu_count()}")
    for n, r in runs.items():
        print(
            f"{n} device(s): mc {r['mc']['median_ms']:.1f} ms/call "
            f"(x{r['mc']['median_ms'] / base['mc']['median_ms']:.2f}), "
            f"sweep {r['sweep']['median_s']:.2f} s "
            f"(x{r['sweep']['median_s'] / base['sweep']['median_s']:.2f}; first call "
            f"{r['sweep']['first_call_s']:.1f} s)"
        )
    if args.json:
        report = {"load_start": load_start, "load_end": os.getloadavg(), "runs": runs}
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
