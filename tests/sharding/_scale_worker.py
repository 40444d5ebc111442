"""Runs in a subprocess with 4 host devices (see test_scaling.py); prints JSON.

1 device vs a 4-device mesh: experiment training (data parallel, and 2 x 2 with
parameters split over ``model``), evaluation forwards, ``dl.mc.sample`` with its sample
axis sharded, and a vmapped sweep with its grid axis sharded.
"""

import json
import os
import pathlib
import sys
import time

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import dropout_lab as dl  # noqa: E402

# The lab lives in experiments/ (not in the wheel); a subprocess has no pytest path.
ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))  # tests._tree_diffs
from lab import grid as G  # noqa: E402
from lab import load_config, load_dataset  # noqa: E402
from lab.evaluate import curve_points  # noqa: E402
from lab.fit import fit, make_setup  # noqa: E402
from lab.predict import Predictor  # noqa: E402
from lab.sweep_config import load_sweep_config  # noqa: E402
from tests._tree_diffs import max_diffs  # noqa: E402

COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")
BASE = [
    "data.max_examples=240",
    "model.hidden=[16,16]",
    "train.epochs=2",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "methods.mc.num_samples=8",
    "progress=false",
    "plots=false",
]
MESHES = {"1": [], "4": ["mesh.data=-1"], "2x2": ["mesh.data=2", "mesh.model=2"]}


def training() -> dict:
    data = load_dataset(load_config(None, BASE).data)
    runs = {}
    for name, extra in MESHES.items():
        cfg = load_config(None, BASE + extra)
        setup = make_setup(cfg, "mc", data)
        state, history, _ = fit(setup, data, 0, None, curve_points(setup, data, 0, 64, 15))
        params = jax.tree.map(np.asarray, state["params"])
        runs[name] = {
            "mc": Predictor(setup, 64),
            "deterministic": Predictor(make_setup(cfg, "inverted", data), 64),
            "hparams": setup.hparams(),
            "params": params,
            "history": [
                {k: v for k, v in p.items() if k not in ("step", "epoch")} for p in history
            ],
            "sharding": str(getattr(jax.tree.leaves(state["params"])[0].sharding, "spec", "")),
        }
    ref = runs["1"]
    out = {}
    key = jax.random.key(3)

    def predict(run, kind):
        return run[kind].passes(ref["params"], data.x_test, key, run["hparams"])

    ref_mc, ref_pred = predict(ref, "mc"), predict(ref, "deterministic")
    for name in ("4", "2x2"):
        run = runs[name]
        out[name] = {
            "params": max_diffs(ref["params"], run["params"]),
            "history": max_diffs(ref["history"], run["history"]),
            "num_points": [len(ref["history"]), len(run["history"])],
            "sharding": run["sharding"],
            # Same parameters on both sides: the evaluation forwards alone.
            "predict": max_diffs(ref_pred, predict(run, "deterministic")),
            "predict_mc": max_diffs(ref_mc, predict(run, "mc")),
        }
    return out


def mc_sampling() -> dict:
    mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, P("data"))
    x = jax.random.normal(jax.random.key(1), (6, 5))
    w = jax.random.normal(jax.random.key(2), (5, 3))

    def drop(k):
        return dl.dropout(k, x, 0.3)

    def net(k):
        return jnp.tanh(dl.dropout(k, x, 0.3) @ w)

    key = jax.random.key(0)
    out = {}
    for fname, fn, chunk in (("dropout", drop, None), ("dropout", drop, 4), ("net", net, None)):

        def run(k, s, fn=fn, chunk=chunk):
            return dl.mc.sample(fn, k, 16, chunk_size=chunk, sharding=s)

        plain = jax.jit(lambda k, run=run: run(k, None))(key)
        compiled = jax.jit(lambda k, run=run: run(k, sharding)).lower(key).compile()
        sharded = compiled(key)
        hlo = compiled.as_text()
        out[f"{fname}/chunk={chunk}"] = {
            "equal": bool(np.array_equal(np.asarray(plain), np.asarray(sharded))),
            "diff": max_diffs(plain, sharded),
            "collectives": [c for c in COLLECTIVES if c in hlo],
            "sharding": str(sharded.sharding.spec) if chunk is None else "",
        }
    with jax.set_mesh(mesh):
        spec = jax.jit(lambda k: dl.mc.sample(drop, k, 16, sharding=P("data")))(key)
    out["partition_spec_equal"] = bool(
        np.array_equal(np.asarray(spec), np.asarray(dl.mc.sample(drop, key, 16)))
    )
    return out


def sweeping() -> dict:
    overrides = [
        "data.max_examples=240",
        "model.hidden=[16]",
        "train.epochs=1",
        "train.batch_size=32",
        "sweep.rates=[0.0,0.3,0.5]",  # 3 points: padded to 4 on the mesh
        "sweep.seeds=1",
        "progress=false",
        "plots=false",
    ]
    cfg1 = load_sweep_config(None, overrides)
    cfg4 = load_sweep_config(None, [*overrides, "mesh.data=-1"])
    data = load_dataset(cfg1.data)
    results = {}
    for name, cfg in (("1", cfg1), ("4", cfg4)):
        setup = make_setup(cfg, "inverted", data)
        results[name] = (G.train_grid(setup, data, G.grid_points(cfg, "inverted")), setup)
    g1, g4 = results["1"][0], results["4"][0]
    states1 = jax.tree.map(np.asarray, g1.states)
    states4 = jax.tree.map(np.asarray, g4.states)
    return {
        "shape": list(np.shape(g4.losses)),
        "sharding": str(jax.tree.leaves(g4.states)[0].sharding.spec),
        "states_equal": all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(states1), jax.tree.leaves(states4), strict=True)
        ),
        "states": max_diffs(states1, states4),
        "losses": max_diffs(g1.losses, g4.losses),
    }


def main() -> None:
    times = {}
    out = {"devices": len(jax.devices())}
    for name, fn in (("mc", mc_sampling), ("sweep", sweeping), ("training", training)):
        start = time.perf_counter()
        out[name] = fn()
        times[name] = time.perf_counter() - start
    out["seconds"] = times
    print(json.dumps(out))


if __name__ == "__main__":
    main()
