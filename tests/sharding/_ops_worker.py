"""Runs in a subprocess with 4 host devices (see test_sharded_ops.py); prints JSON."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import dropout_lab as dl  # noqa: E402

COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")

VARIANTS = {
    "dropout": lambda k, x: dl.dropout(k, x, 0.3),
    "dropout_classic": lambda k, x: dl.dropout(k, x, 0.3, mode="classic"),
    "dropout_broadcast": lambda k, x: dl.dropout(k, x, 0.3, broadcast_dims=(0,)),
    "dropout_bernoulli": lambda k, x: dl.dropout(k, x, 0.3, impl="bernoulli"),
    "dropconnect": lambda k, x: dl.dropconnect(k, x, 0.3),
    "gaussian": lambda k, x: dl.gaussian_dropout(k, x, 0.3),
    "alpha": lambda k, x: dl.alpha_dropout(k, x, 0.3),
}


def main(partitionable: bool) -> None:
    jax.config.update("jax_threefry_partitionable", partitionable)
    mesh = jax.make_mesh((4,), ("data",))
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (32, 24))
    results = {}
    for spec in (P("data", None), P(None, "data")):
        xs = jax.device_put(x, NamedSharding(mesh, spec))
        for name, fn in VARIANTS.items():
            compiled = jax.jit(fn).lower(key, xs).compile()
            ys = compiled(key, xs)
            hlo = compiled.as_text()
            results[f"{name}/{spec}"] = {
                "equal": bool(np.array_equal(np.asarray(ys), np.asarray(fn(key, x)))),
                "collectives": [c for c in COLLECTIVES if c in hlo],
                "sharding": str(ys.sharding.spec),
            }
    print(json.dumps({"devices": len(jax.devices()), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1] == "1")
