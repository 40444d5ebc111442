"""Two JAX processes on this machine, one device each, against one device.

The processes (conftest.py, _worker.py) connect through ``lab.distributed.initialize``
on 127.0.0.1 with gloo collectives and run every check on the 2-device global mesh.
Tolerances as tests/sharding/test_scaling.py: dropout masks are the same bits on any
mesh, so only reductions reorder (the batch mean of the loss, the gradient all-reduce
across processes, matmuls split differently): float32 rounding, a few ulp per step.
Measured: parameters 2.4e-7 relative after 12 steps, learning curves equal.
"""

TOL = 1e-5


def test_two_processes_one_device_each(report):
    assert report["process_count"] == 2
    assert report["training"]["processes"] == 2  # parameters live on both processes
    assert report["sweep"]["processes"] == 2
    for name, row in report["mc"].items():
        if isinstance(row, dict):
            assert row["processes"] == 2, name


def test_data_parallel_training_matches_one_device(report):
    row = report["training"]
    n1, n2 = row["num_points"]
    assert n1 == n2 > 0
    assert row["params"][1] < TOL
    # Each epoch: train loss, and the MC prediction on the mesh (rows split over the
    # processes, gathered) scored: train and test NLL and accuracy.
    assert row["history"][0] < TOL


def test_sharded_mc_sample_equals_unsharded_bit_for_bit(report):
    mc = report["mc"]
    assert mc["dropout/chunk=None"]["equal"]  # masks: bit for bit across processes
    assert mc["dropout/chunk=4"]["equal"]
    assert mc["rows_mask_equal"]  # rows of a batch split over processes: the same masks


def test_sharded_sweep_matches_one_device(report):
    sweep = report["sweep"]
    assert sweep["shape"][0] == 3  # the point padding the grid to 4 is discarded
    assert sweep["states"][1] < TOL
    assert sweep["losses"][0] < TOL


def test_checkpoint_saved_and_restored_by_both_processes(report):
    row = report["training"]
    assert row["resumed_from"] == 6  # 2 curve points of 3 steps, then interrupted
    assert row["resumed_params_equal"]  # bit for bit, as the uninterrupted run
    assert row["resumed_history_equal"]
