"""Scaling out: the device mesh of the experiment trainer, and multi-host setup.

A config's ``mesh`` section (:class:`~lab.config.MeshConfig`)
becomes a ``jax.sharding.Mesh`` with axes ``("data", "model")`` (:func:`make_mesh`).
The trainer splits every batch over ``data`` and keeps the parameters replicated, or
split along their last dimension over ``model`` (:func:`param_sharding`); sweeps
split their grid points over all the mesh's devices. Dropout masks are the same bits
on any mesh (``jax_threefry_partitionable``, JAX's default), so only reductions
(the batch mean of the loss, gradient sums) may round differently.

Several hosts: :func:`initialize` calls ``jax.distributed.initialize`` from the
config's ``distributed`` section or the environment (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, as ``experiments/launch.py`` sets them, or
a cluster JAX detects), before anything touches a device; a process that is not
connected to all the others within ``initialization_timeout`` exits with one line
naming the coordinator and the time-out. Every process then runs the same program on
the global mesh; every process loads the (small, in-memory) data set whole and each
device gathers its own rows of each batch on the device, so no host ever sends a
batch. Loops over data too big for one host load only their rows
(:func:`process_rows`) and assemble the global batch with :func:`global_batch`.
Values are put on the mesh with :func:`put` and fetched with :func:`fetch` (an
all-gather across processes) and written by process 0 only (:func:`is_primary`);
orbax checkpoints are saved by every process together (each writes the shards it
owns, process 0 the metadata), so the run folder must be on a file system all hosts
share. Tested with 2 processes on one machine (``tests/multiprocess``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lab.checks import ConfigError, check_range, fail

MESH_AXES = ("data", "model")

# Environment variables that name a multi-process job, with the variable holding the
# number of processes (None: its presence alone). Those JAX itself reads or detects.
_JOB_ENV = (
    ("JAX_COORDINATOR_ADDRESS", None),
    ("SLURM_NTASKS", "SLURM_NTASKS"),
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE"),
)
# Exit status of a process that could not connect to the others in time.
NOT_CONNECTED_EXIT = 3
# JAX's own connect deadline is set this much later than ours: JAX aborts the process
# (SIGABRT) without saying which address it waited for; :func:`initialize` exits first.
_JAX_GRACE_S = 10


@dataclass
class MeshConfig:
    """Device mesh of data-parallel training (``jax.sharding.Mesh``, axes ``data``, ``model``).

    Attributes:
      data: devices on the ``data`` axis, which splits each training batch, each
        evaluation batch and (in sweeps) the grid points; ``-1``: every device left
        after ``model``.
      model: devices on the ``model`` axis: parameters and optimizer moments whose
        last dimension it divides are split along that dimension (the rest are
        replicated); ``1``: every device holds all parameters (plain data parallel).
    """

    data: int = -1
    model: int = 1


@dataclass
class DistributedConfig:
    """Multi-process setup (``jax.distributed.initialize``), one process per host.

    Attributes:
      enabled: ``true``: always initialize; ``false``: never; ``null`` (default):
        initialize when a field below is set or the environment names a
        multi-process job (``JAX_COORDINATOR_ADDRESS``, or SLURM / Open MPI with
        more than one task).
      coordinator_address: ``host:port`` of process 0 (``null``: from the
        environment or the cluster).
      num_processes: number of processes (``null``: from the environment).
      process_id: this process's index (``null``: from the environment).
      initialization_timeout: seconds to wait for every process to connect.
    """

    enabled: bool | None = None
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    initialization_timeout: int = 300


def validate_mesh(mesh: MeshConfig | None) -> None:
    """Checks the ``mesh`` section (``None``: one device)."""
    if mesh is None:
        return
    if mesh.data != -1:
        check_range("mesh.data", mesh.data, 1)
    check_range("mesh.model", mesh.model, 1)


def validate_distributed(dist: DistributedConfig) -> None:
    """Checks the ``distributed`` section."""
    if dist.num_processes is not None:
        check_range("distributed.num_processes", dist.num_processes, 1)
    if dist.process_id is not None:
        check_range("distributed.process_id", dist.process_id, 0)
        if dist.num_processes is not None and dist.process_id >= dist.num_processes:
            fail("distributed.process_id", dist.process_id, "must be < num_processes.")
    check_range("distributed.initialization_timeout", dist.initialization_timeout, 1)


def initialize_kwargs(
    cfg: DistributedConfig, environ: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """Arguments of ``jax.distributed.initialize`` for ``cfg``, or ``None`` (one process).

    Unset fields come from the environment: ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (``experiments/launch.py`` sets all
    three); those still ``None`` JAX fills from the cluster it detects (SLURM, Open
    MPI, Kubernetes, Cloud TPU).

    Args:
      cfg: the config's ``distributed`` section.
      environ: environment variables (default ``os.environ``).

    Returns:
      Keyword arguments, or ``None`` when this is a single-process run.
    """
    environ = os.environ if environ is None else environ
    if cfg.enabled is False:
        return None
    explicit = (cfg.coordinator_address, cfg.num_processes, cfg.process_id)
    if cfg.enabled is None and all(v is None for v in explicit):
        in_job = any(
            name in environ and (count is None or int(environ[count]) > 1)
            for name, count in _JOB_ENV
        )
        if not in_job:
            return None

    def from_env(value, name):
        return int(environ[name]) if value is None and name in environ else value

    return {
        "coordinator_address": cfg.coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS"),
        "num_processes": from_env(cfg.num_processes, "JAX_NUM_PROCESSES"),
        "process_id": from_env(cfg.process_id, "JAX_PROCESS_ID"),
        "initialization_timeout": cfg.initialization_timeout,
    }


def initialize(cfg: DistributedConfig, environ: Mapping[str, str] | None = None) -> bool:
    """Starts JAX's multi-process runtime when ``cfg`` or the environment asks for it.

    Call it before anything touches a device (the runners do, first thing). A second
    call, or a call in an already initialized process, does nothing. Connecting waits
    until every process has connected; if that takes longer than
    ``initialization_timeout`` seconds (the coordinator unreachable, a process
    missing), the process writes one line naming the coordinator and the time-out to
    stderr and exits with status :data:`NOT_CONNECTED_EXIT` (JAX itself would abort
    a little later without naming them).

    Returns:
      Whether the runtime is (now) initialized.
    """
    if jax.distributed.is_initialized():
        return True
    kwargs = initialize_kwargs(cfg, environ)
    if kwargs is None:
        return False
    timeout = kwargs["initialization_timeout"]
    connected = threading.Event()

    def watchdog() -> None:
        if not connected.wait(timeout):
            sys.stderr.write(f"error: {not_connected_message(kwargs)}\n")
            sys.stderr.flush()
            os._exit(NOT_CONNECTED_EXIT)  # the main thread is blocked inside JAX

    threading.Thread(target=watchdog, name="distributed-watchdog", daemon=True).start()
    try:
        jax.distributed.initialize(**{**kwargs, "initialization_timeout": timeout + _JAX_GRACE_S})
    finally:
        connected.set()
    return True


def not_connected_message(kwargs: Mapping[str, Any]) -> str:
    """The line :func:`initialize` says when the processes did not all connect in time."""
    address = kwargs["coordinator_address"] or "the cluster's coordinator"
    who = f"process {kwargs['process_id']} of {kwargs['num_processes']}"
    if kwargs["process_id"] is None:
        who = "this process"
    return (
        f"jax.distributed: {who} was not connected to all processes through coordinator "
        f"{address} within {kwargs['initialization_timeout']} s "
        "(distributed.initialization_timeout): the coordinator (process 0) is unreachable "
        "or a process did not start."
    )


def is_primary() -> bool:
    """Whether this is process 0, the one that writes results."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Waits until every process reaches the point called ``name`` (one process: no-op)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def make_mesh(cfg: MeshConfig | None, devices: list | None = None) -> Mesh | None:
    """The ``("data", "model")`` mesh of ``cfg`` (``None``: no mesh, one device).

    Args:
      cfg: the config's ``mesh`` section; ``data=-1`` takes every device left.
      devices: the devices (default ``jax.devices()``, all processes').

    Raises:
      ConfigError: the mesh needs more devices than there are.
    """
    if cfg is None:
        return None
    devices = jax.devices() if devices is None else list(devices)
    data = len(devices) // cfg.model if cfg.data == -1 else cfg.data
    if data < 1 or data * cfg.model > len(devices):
        raise ConfigError(
            f"config key 'mesh' = data {cfg.data} x model {cfg.model}: needs more than "
            f"the {len(devices)} devices there are."
        )
    return jax.make_mesh(
        (data, cfg.model),
        MESH_AXES,
        axis_types=(AxisType.Auto,) * 2,
        devices=devices[: data * cfg.model],
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (axis 0) split over ``data``, other axes replicated."""
    return NamedSharding(mesh, P("data"))


def grid_sharding(mesh: Mesh) -> NamedSharding:
    """Axis 0 (grid points, MC samples) split over every device of the mesh."""
    return NamedSharding(mesh, P(mesh.axis_names))


def param_sharding(mesh: Mesh, leaf: Any) -> NamedSharding:
    """A parameter's (or optimizer moment's) sharding: last axis over ``model`` if it divides."""
    model = mesh.shape["model"]
    shape = np.shape(leaf)
    if model > 1 and len(shape) >= 1 and shape[-1] % model == 0:
        return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), "model"))
    return NamedSharding(mesh, P())


def state_shardings(mesh: Mesh, tree: Any) -> Any:
    """:func:`param_sharding` of every leaf of ``tree`` (parameters, optimizer state)."""
    return jax.tree.map(lambda leaf: param_sharding(mesh, leaf), tree)


def put(tree: Any, shardings: Any) -> Any:
    """``jax.device_put`` that also works across processes.

    With several processes, values this process holds whole (host arrays, arrays on
    its own devices) go through host memory (every process must pass the same value);
    global arrays that span other processes' devices are resharded by a jitted
    identity, which moves only what must move.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(leaf: Any, sharding: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.jit(lambda a: a, out_shardings=sharding)(leaf)
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            bits = one(jax.random.key_data(leaf), sharding)  # keys travel as their bits
            return jax.random.wrap_key_data(bits, impl=jax.random.key_impl(leaf))
        return jax.device_put(np.asarray(leaf), sharding)

    if not isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(one, tree, shardings)
    return jax.tree.map(lambda leaf: one(leaf, shardings), tree)


def fetch(x: Any) -> np.ndarray:
    """``np.asarray(x)``; across processes, all-gathers the shards other hosts hold."""
    if jax.process_count() > 1 and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def process_rows(sharding: NamedSharding, global_shape: tuple[int, ...]) -> slice:
    """The rows (axis 0) of a global array that this process's devices hold.

    A loader reads only these rows of each global batch and passes them to
    :func:`global_batch`. With one process: every row.
    """
    global_map = sharding.devices_indices_map(tuple(global_shape))
    index = [global_map[device] for device in sharding.addressable_devices]
    starts = [rows[0].indices(global_shape[0])[0] for rows in index]
    stops = [rows[0].indices(global_shape[0])[1] for rows in index]
    return slice(min(starts), max(stops))


def global_batch(
    local: np.ndarray, sharding: NamedSharding, global_shape: tuple[int, ...]
) -> jax.Array:
    """The global array of ``global_shape`` from each process's rows (:func:`process_rows`).

    ``jax.make_array_from_process_local_data``: no host sends its rows to another.
    """
    return jax.make_array_from_process_local_data(sharding, local, tuple(global_shape))


def check_divides(mesh: Mesh, batch_size: int, eval_batch_size: int) -> None:
    """Training and evaluation batches split evenly over the ``data`` axis.

    Raises:
      ConfigError: naming the batch-size key that is not a multiple of it.
    """
    data = mesh.shape["data"]
    for key, size in (("train.batch_size", batch_size), ("train.eval_batch_size", eval_batch_size)):
        if size % data:
            raise ConfigError(
                f"config key {key!r} = {size}: must be a multiple of the mesh's "
                f"data axis ({data} devices)."
            )


def replicate(mesh: Mesh | None, tree: Any) -> Any:
    """Outside jit: ``tree`` as device arrays, on every device of ``mesh`` when there is one."""
    if mesh is None:
        return jax.tree.map(jnp.asarray, tree)
    return put(tree, NamedSharding(mesh, P()))


def place_state(mesh: Mesh | None, tree: Any) -> Any:
    """Outside jit: a state or parameters put on ``mesh`` as :func:`constrain_state` does."""
    if mesh is None:
        return tree
    return put(tree, state_shardings(mesh, tree))


def constrain_rows(mesh: Mesh | None, tree: Any) -> Any:
    """Inside jit: rows (axis 0) of every leaf split over the ``data`` axis."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))


def constrain_state(mesh: Mesh | None, tree: Any) -> Any:
    """Inside jit: parameters and optimizer state replicated (or split over ``model``)."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, state_shardings(mesh, tree))


def example_rows(mesh: Mesh | None, shape: tuple[int, ...]) -> Any:
    """Evaluation rows to compile for: split over ``data`` when there is a mesh."""
    if mesh is None:
        return jnp.zeros(shape, jnp.float32)
    return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=batch_sharding(mesh))
