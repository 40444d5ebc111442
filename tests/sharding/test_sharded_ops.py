"""Dropout on arrays sharded over a 4-device mesh: same bits, no communication.

The checks run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4,
so CI's CPU shows four devices.
"""

import json
import pathlib
import subprocess
import sys

import pytest

WORKER = pathlib.Path(__file__).with_name("_ops_worker.py")


@pytest.fixture(scope="module", params=[True, False], ids=["partitionable", "legacy-threefry"])
def report(request):
    out = subprocess.run(
        [sys.executable, str(WORKER), "1" if request.param else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return request.param, json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_equals_unsharded_bit_for_bit(report):
    _, data = report
    assert data["devices"] == 4
    for name, row in data["results"].items():
        assert row["equal"], name


def test_masks_are_generated_locally_without_collectives(report):
    partitionable, data = report
    for name, row in data["results"].items():
        if name.startswith("dropout_bernoulli") and not partitionable:
            # jax.random.bernoulli itself is not partitionable with the legacy flag;
            # the default impl does not depend on the flag.
            continue
        assert row["collectives"] == [], name
        assert "data" in row["sharding"], name  # output keeps the input's sharding
