"""1 device vs a 4-device mesh: training, evaluation, MC sampling and sweeps agree.

One subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=4) runs every check
(_scale_worker.py); the tests read its JSON. Tolerances: dropout masks are the same
bits on any mesh (tests/sharding/test_sharded_ops.py), so only reductions reorder
(batch means, gradient all-reduces, matmuls split differently): float32 rounding, a
few ulp per step. Adam's first steps amplify a gradient entry near 0 up to the
learning rate, so parameters are bounded relatively at 1e-5 (measured: 2.4e-7
after 14 steps) and metrics at 1e-5 (measured 2.4e-7).
"""

import json
import pathlib
import subprocess
import sys

import pytest

from lab import ConfigError, load_config
from lab import distributed as D

WORKER = pathlib.Path(__file__).with_name("_scale_worker.py")
TOL = 1e-5


@pytest.fixture(scope="module")
def report():
    out = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, check=True, timeout=600
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["4", "2x2"])
def test_training_on_a_mesh_matches_one_device(report, mesh):
    assert report["devices"] == 4
    row = report["training"][mesh]
    n1, n4 = row["num_points"]
    assert n1 == n4 > 0
    assert row["params"][1] < TOL
    assert row["history"][0] < TOL  # train loss, train/test NLL and accuracy
    # Log-probabilities (values up to ~10 in size): bounded relative to the largest.
    assert row["predict"][1] < 1e-6
    assert row["predict_mc"][1] < 1e-6  # same masks: only the matmul split differs
    assert row["sharding"] == ("P()" if mesh == "4" else "P('model',)")


def test_sharded_mc_sample_equals_unsharded(report):
    mc = report["mc"]
    for chunk in ("None", "4"):
        assert mc[f"dropout/chunk={chunk}"]["equal"]  # masks: bit for bit
    assert mc["net/chunk=None"]["diff"][0] < 1e-6  # a matmul after the mask: a few ulp
    assert mc["dropout/chunk=None"]["sharding"] == "P('data',)"
    # Each device draws its own passes: no collective at all (no gather of masks or
    # inputs; the masks' fusion-barrier predicate depends on no key, so nothing is
    # broadcast either).
    assert mc["dropout/chunk=None"]["collectives"] == []
    assert mc["net/chunk=None"]["collectives"] == []
    assert mc["partition_spec_equal"]


def test_sharded_sweep_equals_unsharded(report):
    sw = report["sweep"]
    assert sw["shape"][0] == 3  # the padding point is discarded
    assert sw["states"][1] < TOL
    assert sw["losses"][0] < TOL


def test_mesh_config_and_errors():
    assert load_config(None, []).mesh is None  # default: no mesh, one device
    cfg = load_config(None, ["mesh.data=-1"])
    mesh = D.make_mesh(cfg.mesh)
    assert dict(mesh.shape) == {"data": 1, "model": 1}  # this process sees one device
    with pytest.raises(ConfigError, match="mesh"):
        D.make_mesh(load_config(None, ["mesh.data=2"]).mesh)
    with pytest.raises(ConfigError, match="mesh.model"):
        load_config(None, ["mesh.model=0"])
    with pytest.raises(ConfigError, match="process_id"):
        load_config(None, ["distributed.num_processes=2", "distributed.process_id=2"])


def test_distributed_initialize_arguments_from_config_and_environment():
    cfg = load_config(None, []).distributed
    assert D.initialize_kwargs(cfg, {}) is None  # plain single-process run
    assert D.initialize_kwargs(cfg, {"SLURM_NTASKS": "1"}) is None
    assert D.initialize_kwargs(cfg, {"SLURM_NTASKS": "4"})["num_processes"] is None  # JAX fills
    assert D.initialize_kwargs(cfg, {"JAX_COORDINATOR_ADDRESS": "h:1"}) is not None
    explicit = load_config(
        None,
        [
            "distributed.coordinator_address=10.0.0.1:1234",
            "distributed.num_processes=2",
            "distributed.process_id=1",
        ],
    ).distributed
    kwargs = D.initialize_kwargs(explicit, {})
    assert (kwargs["coordinator_address"], kwargs["num_processes"], kwargs["process_id"]) == (
        "10.0.0.1:1234",
        2,
        1,
    )
    off = load_config(None, ["distributed.enabled=false"]).distributed
    assert D.initialize_kwargs(off, {"JAX_COORDINATOR_ADDRESS": "h:1"}) is None
    assert D.initialize(cfg, {}) is False  # nothing to do in this process
    assert D.is_primary()


def test_process_rows_and_global_batch_single_process():
    import jax
    import numpy as np

    mesh = D.make_mesh(load_config(None, ["mesh.data=-1"]).mesh)
    sharding = D.batch_sharding(mesh)
    assert D.process_rows(sharding, (8, 3)) == slice(0, 8)
    local = np.arange(24.0).reshape(8, 3)
    batch = D.global_batch(local, sharding, (8, 3))
    np.testing.assert_array_equal(D.fetch(batch), local)
    assert batch.sharding == sharding
    assert D.fetch(jax.numpy.ones(2)).tolist() == [1.0, 1.0]
