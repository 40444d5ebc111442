"""One process of a 2-process JAX job on this machine (see test_multiprocess.py).

Started by ``launch.start`` with ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID``, it connects through :func:`lab.distributed.initialize` (gloo
collectives on CPU, one device per process) and compares, on the 2-device global mesh
against the same computation on one device: (b) ``dl.mc.sample`` with its passes
split over both processes, (c) a sweep's grid split over both processes, (a)
data-parallel training of the comparison MLP with its learning curve (MC predictions
on the mesh scored each epoch), (d) an orbax checkpoint saved by both processes, the
fit interrupted and resumed. The one-device references run concurrently, training on
process 0 and the sweep on process 1. Process 0 writes the JSON report to ``argv[1]``.
Then (e) both start ``run_experiment`` on the mesh; after its checkpoint of step 6
process 1 writes ``killable`` and waits to be SIGKILLed by the test (conftest.py).
"""

import json
import pathlib
import sys
import time

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")  # the default; said here

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import dropout_lab as dl  # noqa: E402

# The lab lives in experiments/ (not in the wheel); a subprocess has no pytest path.
ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))  # tests._tree_diffs
from lab import distributed, load_config, load_dataset, run_experiment  # noqa: E402
from lab import grid as G  # noqa: E402
from lab.evaluate import curve_points  # noqa: E402
from lab.fit import fit, make_setup  # noqa: E402
from lab.sweep_config import load_sweep_config  # noqa: E402
from tests._tree_diffs import max_diffs  # noqa: E402

CONFIG = ROOT / "configs" / "compare_digits.yaml"
# The comparison MLP, MC dropout only, tiny; the fault tests run compare.py with these.
# 98 training and 98 test rows (one shape to compile for), 3 steps per epoch.
BASE = [
    "data.max_examples=240",
    "data.val_fraction=0",  # 98 training rows: the step counts below assume them
    "data.test_fraction=0.5",
    "model.hidden=[16]",
    "train.epochs=4",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.eval_every=0",
    "train.checkpoint_every=2",  # saves at steps 6 and 12
    "methods.mc.num_samples=4",
    *(f"methods.{m}.enabled=false" for m in ("none", "classic", "inverted", "rdrop")),
    "seeds=[0,1]",
    "progress=false",
    "plots=false",
]
MESH = ["mesh.data=-1"]
SWEEP = [  # trained on BASE's data
    "data.max_examples=240",
    "model.hidden=[16]",
    "train.epochs=1",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "sweep.methods=[inverted]",
    "sweep.rates=[0.0,0.3,0.5]",  # 3 points: padded to 4 on the 2-device mesh
    "sweep.seeds=1",
    "progress=false",
    "plots=false",
]
KILL_AFTER_POINTS = 2  # (e): process 1 waits to be killed after this many curve points


class Interrupted(Exception):
    """Raised from ``on_eval`` to cut a fit short."""


def host(tree) -> list[np.ndarray]:
    """The leaves of ``tree`` as numpy arrays (gathered across processes)."""
    return [distributed.fetch(leaf) for leaf in jax.tree.leaves(tree)]


def equal(a, b) -> bool:
    """Bit for bit, leaf by leaf."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)


def fit_seed0(setup, cfg, data, checkpoint_dir=None, stop_after=None):
    """``fit`` of seed 0; ``stop_after``: interrupted after that many curve points."""
    points = curve_points(setup, data, 0, cfg.train.eval_batch_size, cfg.eval.ece_bins)
    seen = []

    def on_eval(step, point):
        seen.append(step)
        if stop_after is not None and len(seen) >= stop_after:
            raise Interrupted

    return fit(setup, data, 0, checkpoint_dir, points, on_eval=on_eval)


def save(path: pathlib.Path, leaves: list[np.ndarray], extra) -> None:
    """A reference for the other process: arrays and a JSON value."""
    np.savez(path.with_suffix(".npz"), *leaves)
    path.with_suffix(".json").write_text(json.dumps(extra))


def load(path: pathlib.Path):
    with np.load(path.with_suffix(".npz")) as z:
        leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    return leaves, json.loads(path.with_suffix(".json").read_text())


def reference_training(data, folder: pathlib.Path) -> None:
    """(a) on one device: parameters and learning curve."""
    cfg = load_config(CONFIG, BASE)
    setup = make_setup(cfg, "mc", data)
    state, history, _ = fit_seed0(setup, cfg, data)
    save(folder / "ref_training", host(state["params"]), history)


def reference_sweep(data, folder: pathlib.Path) -> None:
    """(c) on one device: the grid's states and losses."""
    cfg = load_sweep_config(None, SWEEP)
    setup = make_setup(cfg, "inverted", data)
    trained = G.train_grid(setup, data, G.grid_points(cfg, "inverted"))
    save(folder / "ref_sweep", [*host(trained.states), trained.losses], None)


def references(data, folder: pathlib.Path) -> None:
    """The one-device references, concurrently: training on process 0, the sweep on 1."""
    if jax.process_index() == 0:
        reference_training(data, folder)
    else:
        reference_sweep(data, folder)


def training(data, folder: pathlib.Path) -> dict:
    """(a) data parallel over the 2 processes; (d) checkpointed, interrupted, resumed."""
    cfg = load_config(CONFIG, [*BASE, *MESH])
    setup = make_setup(cfg, "mc", data)
    state, history, _ = fit_seed0(setup, cfg, data)
    ckpt = folder / "checkpoints"
    try:
        fit_seed0(setup, cfg, data, ckpt, stop_after=2)
    except Interrupted:
        pass
    resumed, history_resumed, timing = fit_seed0(setup, cfg, data, ckpt)
    ref_params, ref_history = load(folder / "ref_training")
    sharding = jax.tree.leaves(state["params"])[0].sharding
    return {
        "processes": len({d.process_index for d in sharding.device_set}),
        "params": max_diffs(ref_params, host(state["params"])),
        "history": max_diffs(ref_history, history),  # train loss, MC NLL and accuracy
        "num_points": [len(ref_history), len(history)],
        "history_2": history,  # the uninterrupted 2-process run (the kill test's reference)
        "resumed_from": timing["resumed_from"],
        "resumed_params_equal": equal(host(state["params"]), host(resumed["params"])),
        "resumed_history_equal": history == history_resumed,
    }


def mc_sampling() -> dict:
    """(b) ``dl.mc.sample`` with its passes split over both processes' devices."""
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, P("data"))
    x = np.asarray(jax.random.normal(jax.random.key(1), (6, 5)))  # the same on every host

    def drop(k):
        return dl.dropout(k, x, 0.3)

    key, out = jax.random.key(0), {}
    for name, fn, chunk in (("dropout", drop, None), ("dropout", drop, 4)):
        plain = jax.jit(lambda k, fn=fn, c=chunk: dl.mc.sample(fn, k, 16, chunk_size=c))(key)
        sharded = jax.jit(
            lambda k, fn=fn, c=chunk: dl.mc.sample(fn, k, 16, chunk_size=c, sharding=sharding)
        )(key)
        out[f"{name}/chunk={chunk}"] = {
            "equal": equal(plain, distributed.fetch(sharded)),
            "diff": max_diffs(plain, distributed.fetch(sharded)),
            "processes": len({d.process_index for d in sharded.sharding.device_set}),
        }
    # A batch's rows split over the processes get the masks of the whole batch.
    ones = np.ones((8, 16), np.float32)
    rows = distributed.put(ones, NamedSharding(mesh, P("data")))
    split = jax.jit(lambda k, a: dl.dropout(k, a, 0.5))(key, rows)
    out["rows_mask_equal"] = equal(dl.dropout(key, jnp.asarray(ones), 0.5), host(split))
    return out


def sweeping(data, folder: pathlib.Path) -> dict:
    """(c) a sweep's grid points split over both processes."""
    cfg = load_sweep_config(None, [*SWEEP, *MESH])
    setup = make_setup(cfg, "inverted", data)
    trained = G.train_grid(setup, data, G.grid_points(cfg, "inverted"))
    ref, _ = load(folder / "ref_sweep")
    leaf = jax.tree.leaves(trained.states)[0]
    return {
        "shape": list(np.shape(trained.losses)),
        "processes": len({d.process_index for d in leaf.sharding.device_set}),
        "states": max_diffs(ref[:-1], host(trained.states)),
        "losses": max_diffs(ref[-1], trained.losses),
    }


def killed_run(folder: pathlib.Path) -> None:
    """(e) ``run_experiment`` on the mesh; process 1 waits to be killed mid-run."""
    cfg = load_config(CONFIG, [*BASE, *MESH, f"output_dir={folder / 'run'}"])
    seen = []

    def on_eval(method, seed, step, point):
        seen.append(step)
        if jax.process_index() == 1 and len(seen) == KILL_AFTER_POINTS:
            (folder / "killable").write_text(str(step))
            time.sleep(600)  # the test SIGKILLs this process now

    run_experiment(cfg, on_eval=on_eval)


def main(report_path: str, folder_name: str) -> None:
    distributed.initialize(load_config(None, []).distributed)  # from the launcher's env
    folder = pathlib.Path(folder_name)
    data = load_dataset(load_config(CONFIG, BASE).data)
    out: dict = {"process_count": jax.process_count()}
    seconds: dict = {}
    parts = (
        ("mc", mc_sampling),
        ("references", lambda: references(data, folder)),
        ("sweep", lambda: sweeping(data, folder)),
        ("training", lambda: training(data, folder)),
    )
    for name, run in parts:
        start, cpu = time.perf_counter(), time.process_time()
        out[name] = run()
        seconds[name] = [time.process_time() - cpu]  # this process's CPU seconds
        distributed.sync(name)
        seconds[name].append(time.perf_counter() - start)  # wall, both done
    out["seconds"] = seconds  # process 0's
    if distributed.is_primary():
        path = pathlib.Path(report_path)
        path.with_suffix(".tmp").write_text(json.dumps(out, indent=1))
        path.with_suffix(".tmp").replace(path)
    killed_run(folder)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
