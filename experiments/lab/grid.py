"""A grid of models trained as one program: the fit's step, vmapped over grid points.

Point ``i`` of a grid has its own seed (:class:`~lab.fit.RunKeys`) and hyperparameters
(rate, alpha, weight decay) in the :data:`~lab.methods.Hparams` pytree; the grid is
trained by :func:`lab.fit.chunk_program` with ``grid=True``: the same step, batches
and masks as the sequential fit of that seed and those values, vmapped. Only the
matmuls may round differently (batched kernels).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lab import distributed, evaluate
from lab.data import Dataset
from lab.fit import RunKeys, Setup, init_state, train_program
from lab.methods import METHODS, Hparams
from lab.predict import Predictor


@dataclass(frozen=True)
class GridPoint:
    """One model of a sweep.

    Attributes:
      method: a method name (``inverted``, ``rdrop``, ...).
      rate: dropout rate after every hidden activation.
      seed: training seed (:meth:`RunKeys.from_seed`).
      alpha: R-Drop's KL weight (ignored by other methods).
      weight_decay: adamw's weight decay (``None``: ``train.weight_decay``).
    """

    method: str
    rate: float
    seed: int
    alpha: float = 0.0
    weight_decay: float | None = None

    @property
    def series(self) -> str:
        """Name of the curve this point belongs to (method and fixed hyper-parameters)."""
        name = self.method
        if METHODS[self.method].sweeps_alpha:
            name += f" alpha={self.alpha:g}"
        if self.weight_decay is not None:
            name += f" wd={self.weight_decay:g}"
        return name


def grid_points(cfg, method: str) -> list[GridPoint]:
    """The grid of ``method``: alphas x weight decays x rates x seeds (seed fastest)."""
    s, record = cfg.sweep, METHODS[method]
    rates = [float(r) for r in s.rates] if record.sweeps_rate else [0.0]
    alphas = [float(a) for a in s.alphas] if record.sweeps_alpha else [0.0]
    decays: list[float | None] = [float(w) for w in s.weight_decays] or [None]
    seeds = range(s.first_seed, s.first_seed + s.seeds)
    return [
        GridPoint(method, rate, seed, alpha, wd)
        for alpha in alphas
        for wd in decays
        for rate in rates
        for seed in seeds
    ]


def point_hparams(point: GridPoint, input_rate: float, default_decay: float) -> Hparams:
    """The hyperparameters of one grid point."""
    decay = default_decay if point.weight_decay is None else point.weight_decay
    values = {"rate": point.rate, "input_rate": input_rate, "alpha": point.alpha}
    return {k: jnp.float32(v) for k, v in (values | {"weight_decay": decay}).items()}


def stack_hparams(points: Sequence[GridPoint], input_rate: float, default_decay: float) -> Hparams:
    """The grid's hyperparameters stacked ``[P]``."""
    each = [point_hparams(p, input_rate, default_decay) for p in points]
    return jax.tree.map(lambda *v: jnp.stack(v), *each)


@dataclass
class GridTraining:
    """Trained grid.

    Attributes:
      points: the grid points, in order.
      states: stacked final states ``{"params", "opt_state", "step"}`` (leading axis P).
      losses: ``[P, num_periods]`` mean training loss per ``eval_every`` steps.
      seconds: wall-clock seconds of the training (compilation included).
    """

    points: list[GridPoint]
    states: dict
    losses: np.ndarray
    seconds: float


def _train_chunk(setup: Setup, data_xy: tuple, points: list[GridPoint], hp: Hparams, tick):
    """Trains one chunk of points to the end; returns (states, [P, periods] losses)."""
    keys = RunKeys.stacked([p.seed for p in points])
    if "grid_init" not in setup.programs:
        init = jax.vmap(functools.partial(init_state, setup), in_axes=(0, None))
        setup.programs["grid_init"] = jax.jit(init)
    states = setup.programs["grid_init"](keys.init, data_xy[0][:1])
    data_keys, dropout_keys = keys.data, keys.dropout
    if setup.mesh is not None:
        on_grid = distributed.grid_sharding(setup.mesh)
        states, hp, data_keys, dropout_keys = distributed.put(
            (states, hp, data_keys, dropout_keys), on_grid
        )
    losses = []
    for num in setup.schedule.chunks(0):
        program = train_program(setup, num, grid=True)
        states, loss = program(states, *data_xy, data_keys, dropout_keys, hp)
        losses.append(distributed.fetch(loss).mean(axis=1))
        tick(num)
    return states, np.stack(losses, axis=1)


def train_grid(
    setup: Setup,
    data: Dataset,
    points: Sequence[GridPoint],
    *,
    input_rate: float = 0.0,
    chunk_size: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> GridTraining:
    """Trains every grid point with one vmapped, jitted step (per chunk of points).

    Point ``i`` follows the sequential recipe of :func:`lab.fit.fit` (initialization,
    batches and masks from ``RunKeys.from_seed(seed)``) with its own rate, alpha and
    weight decay as traced values. Masks and batches are bit-identical to the
    sequential run; the vmapped matmuls are batched kernels that may round
    differently (a few float32 ulp per step; the tests bound the parameters to 1e-4
    relative after 2 epochs).

    Args:
      setup: the method's setup (model, loss, optimizer, batches, mesh).
      data: the data set.
      points: grid points of ``setup.method``.
      input_rate: input dropout rate of every point.
      chunk_size: points per compiled program (``None``: all at once). The last
        chunk is padded with copies of its first point, so every chunk runs the same
        program; the padding is discarded. With a mesh each chunk's points are split
        over all its devices (chunks padded to a multiple of the device count).
      on_progress: ``on_progress(point_steps_done, total_point_steps)``.

    Returns:
      A :class:`GridTraining` (states stacked in ``points`` order).
    """
    points, start_time = list(points), time.perf_counter()
    size = len(points) if chunk_size is None else min(int(chunk_size), len(points))
    if setup.mesh is not None:
        size = -(-size // setup.mesh.size) * setup.mesh.size
    data_xy = distributed.replicate(setup.mesh, (data.x_train, data.y_train))
    total, done, states, losses = len(points) * setup.schedule.total_steps, [0], [], []
    for start in range(0, len(points), size):
        chunk = points[start : start + size]
        padded = chunk + [chunk[0]] * (size - len(chunk))
        hp = stack_hparams(padded, input_rate, setup.train.weight_decay)

        def tick(num: int, count: int = len(chunk)) -> None:
            done[0] += count * num
            if on_progress is not None:
                on_progress(done[0], total)

        state, loss = _train_chunk(setup, data_xy, padded, hp, tick)
        states.append(jax.tree.map(lambda a, k=len(chunk): a[:k], state))
        losses.append(loss[: len(chunk)])
    stacked = jax.tree.map(lambda *a: jnp.concatenate(a), *states)
    return GridTraining(points, stacked, np.concatenate(losses), time.perf_counter() - start_time)


def point_params(states: dict, index: int):
    """Parameters of grid point ``index`` from stacked states."""
    return jax.tree.map(lambda a: a[index], states["params"])


def evaluate_grid(
    setup: Setup, data: Dataset, training: GridTraining, cfg, *, input_rate: float = 0.0
) -> list[dict]:
    """Final metrics of every point (:func:`lab.evaluate.classification` / ``regression``).

    Returns:
      One dict per point: the point's fields, ``final_train_loss`` and the metrics.
    """
    predictor = Predictor(setup, cfg.train.eval_batch_size)
    rows = []
    for i, point in enumerate(training.points):
        hp = point_hparams(point, input_rate, setup.train.weight_decay)
        params, keys = point_params(training.states, i), RunKeys.from_seed(point.seed)
        if setup.task == "classification":
            metrics, _ = evaluate.classification(
                predictor, params, hp, keys, data, cfg.eval.ece_bins
            )
        else:
            metrics, _ = evaluate.regression(
                predictor, params, hp, keys, data, list(cfg.eval.tau_grid)
            )
        row = {**asdict(point), "series": point.series}
        row["final_train_loss"] = float(training.losses[i, -1])
        rows.append(row | metrics)
    return rows
