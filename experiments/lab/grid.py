"""A grid of models trained as one program: the fit's step, vmapped over grid points.

Point ``i`` of a grid has its own seed (:class:`~lab.fit.RunKeys`) and hyperparameters
(rate, its schedule, alpha, weight decay) in the :data:`~lab.methods.Hparams` pytree
(the schedule's kind too, so constant, early and late points share the program); the grid is
trained by :func:`lab.fit.chunk_program` with ``grid=True``: the same step, batches
and masks as the sequential fit of that seed and those values, vmapped. Only the
matmuls may round differently (batched kernels).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from lab import distributed, evaluate, scores
from lab.data import Dataset
from lab.fit import RunKeys, Setup, init_state, train_program
from lab.methods import METHODS, Hparams
from lab.predict import Predictor
from lab.rate_schedule import describe, schedule_hparams


@dataclass(frozen=True)
class GridPoint:
    """One model of a sweep.

    Attributes:
      method: a method name (``inverted``, ``rdrop``, ...).
      rate: dropout rate after every hidden activation.
      seed: training seed (:meth:`RunKeys.from_seed`).
      alpha: R-Drop's KL weight (ignored by other methods).
      weight_decay: adamw's weight decay (``None``: ``train.weight_decay``).
      schedule, start, until, end_rate: the rate's schedule (kind and fields of
        :class:`~lab.settings.ScheduleSettings`).
    """

    method: str
    rate: float
    seed: int
    alpha: float = 0.0
    weight_decay: float | None = None
    schedule: str = "constant"
    start: float = 0.0
    until: float = 1.0
    end_rate: float = 0.0

    @property
    def series(self) -> str:
        """Name of the curve this point belongs to (method and fixed hyper-parameters)."""
        name = self.method
        if self.schedule != "constant":
            name += " " + describe(self.schedule, self.start, self.until, self.end_rate)
        if METHODS[self.method].sweeps_alpha:
            name += f" alpha={self.alpha:g}"
        if self.weight_decay is not None:
            name += f" wd={self.weight_decay:g}"
        return name


def _schedules(cfg, method: str) -> list[tuple]:
    """``(kind, start, until, end_rate)`` of ``sweep.schedules`` (else the method's own)."""
    chosen = list(getattr(cfg.sweep, "schedules", None) or [])
    own = getattr(getattr(cfg.methods, method), "schedule", None)
    if not chosen and own is not None:
        chosen = [own]
    return [(s.kind, float(s.start), float(s.until), float(s.end_rate)) for s in chosen] or [
        _CONSTANT
    ]


_CONSTANT = ("constant", 0.0, 1.0, 0.0)


def grid_points(cfg, method: str) -> list[GridPoint]:
    """The grid of ``method``: alphas x decays x schedules x rates x seeds (seed fastest).

    A point whose schedule never drops (rate 0 and end rate 0) is trained once, as
    the constant schedule.
    """
    s, record = cfg.sweep, METHODS[method]
    rates = [float(r) for r in s.rates] if record.sweeps_rate else [0.0]
    alphas = [float(a) for a in s.alphas] if record.sweeps_alpha else [0.0]
    decays: list[float | None] = [float(w) for w in s.weight_decays] or [None]
    seeds = range(s.first_seed, s.first_seed + s.seeds)
    points = [
        GridPoint(method, rate, seed, alpha, wd, *schedule)
        if rate or schedule[3]
        else GridPoint(method, rate, seed, alpha, wd)
        for alpha in alphas
        for wd in decays
        for schedule in (_schedules(cfg, method) if record.sweeps_rate else [_CONSTANT])
        for rate in rates
        for seed in seeds
    ]
    return list(dict.fromkeys(points))


def point_hparams(point: GridPoint, input_rate: float, default_decay: float) -> Hparams:
    """The hyperparameters of one grid point."""
    decay = default_decay if point.weight_decay is None else point.weight_decay
    values = {"rate": point.rate, "input_rate": input_rate, "alpha": point.alpha}
    values |= schedule_hparams(point.schedule, point.start, point.until, point.end_rate)
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
      seconds: wall-clock seconds of the training (compilation included, the
        ``curve`` evaluations not).
      steps: ``[num_periods]`` the global step at the end of each period.
      curves: ``{metric: [P, num_periods]}`` from :func:`train_grid`'s ``curve``.
      cpu_seconds: CPU seconds of this process (all threads) over the same span.
    """

    points: list[GridPoint]
    states: dict
    losses: np.ndarray
    seconds: float
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    cpu_seconds: float = 0.0


def _train_chunk(setup: Setup, data_xy: tuple, points: list[GridPoint], hp: Hparams, tick, curve):
    """Trains one chunk of points to the end; returns (states, [P, periods] losses, curves)."""
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
    losses, curves = [], []
    for num in setup.schedule.chunks(0):
        program = train_program(setup, num, grid=True)
        states, loss = program(states, *data_xy, data_keys, dropout_keys, hp)
        losses.append(distributed.fetch(loss).mean(axis=1))
        curves.append(curve(states))
        tick(num)
    stacked = {k: np.stack([c[k] for c in curves], axis=1) for k in curves[0]}
    return states, np.stack(losses, axis=1), stacked


def train_grid(
    setup: Setup,
    data: Dataset,
    points: Sequence[GridPoint],
    *,
    input_rate: float = 0.0,
    chunk_size: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    curve: Callable[[dict], dict[str, np.ndarray]] | None = None,
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
      curve: ``curve(states) -> {metric: [P]}`` after every ``eval_every`` steps
        (e.g. :func:`grid_curve`), for learning curves.

    Returns:
      A :class:`GridTraining` (states stacked in ``points`` order).
    """
    points, start_time, start_cpu = list(points), time.perf_counter(), time.process_time()
    size = len(points) if chunk_size is None else min(int(chunk_size), len(points))
    if setup.mesh is not None:
        size = -(-size // setup.mesh.size) * setup.mesh.size
    data_xy = distributed.replicate(setup.mesh, (data.x_train, data.y_train))
    total, done, states, losses = len(points) * setup.schedule.total_steps, [0], [], []
    curves: list[dict] = []
    curve_seconds = np.zeros(2)  # wall, CPU

    def timed_curve(states: dict) -> dict[str, np.ndarray]:
        begin = np.array([time.perf_counter(), time.process_time()])
        out = curve(states) if curve is not None else {}
        curve_seconds[:] += np.array([time.perf_counter(), time.process_time()]) - begin
        return out

    for start in range(0, len(points), size):
        chunk = points[start : start + size]
        padded = chunk + [chunk[0]] * (size - len(chunk))
        hp = stack_hparams(padded, input_rate, setup.train.weight_decay)

        def tick(num: int, count: int = len(chunk)) -> None:
            done[0] += count * num
            if on_progress is not None:
                on_progress(done[0], total)

        state, loss, curve_chunk = _train_chunk(setup, data_xy, padded, hp, tick, timed_curve)
        states.append(jax.tree.map(lambda a, k=len(chunk): a[:k], state))
        losses.append(loss[: len(chunk)])
        curves.append({k: v[: len(chunk)] for k, v in curve_chunk.items()})
    stacked = jax.tree.map(lambda *a: jnp.concatenate(a), *states)
    seconds = float(time.perf_counter() - start_time - curve_seconds[0])
    cpu = float(time.process_time() - start_cpu - curve_seconds[1])
    steps = np.cumsum(setup.schedule.chunks(0))
    joined = {k: np.concatenate([c[k] for c in curves]) for k in curves[0]}
    return GridTraining(points, stacked, np.concatenate(losses), seconds, steps, joined, cpu)


def grid_curve(setup: Setup, data: Dataset, batch_size: int) -> Callable[[dict], dict]:
    """``curve(states) -> {metric: [P]}``: every point's deterministic train and test metrics.

    Classification: ``train_nll``, ``train_acc``, ``test_nll``, ``test_acc``
    (:func:`lab.scores.classification` of one deterministic pass, every method alike);
    regression: ``train_rmse``, ``test_rmse``. One vmapped forward of all points per
    ``batch_size`` rows (the last batch padded), compiled once.
    """
    classify = setup.task == "classification"

    def forward(params, rows):
        out = setup.model.apply({"params": params}, rows)
        return jax.nn.log_softmax(out) if classify else out[:, 0]

    program = jax.jit(jax.vmap(forward, in_axes=(0, None)))

    def outputs(params, x: np.ndarray) -> np.ndarray:
        outs = []
        for start in range(0, len(x), batch_size):
            rows = x[start : start + batch_size]
            pad = np.zeros((batch_size - len(rows), x.shape[1]), np.float32)
            outs.append(np.asarray(program(params, np.concatenate([rows, pad])))[:, : len(rows)])
        return np.concatenate(outs, axis=1)

    def curve(states: dict) -> dict[str, np.ndarray]:
        out: dict[str, list[float]] = {}
        for split, x, y in (
            ("train", data.x_train, data.y_train),
            ("test", data.x_test, data.y_test),
        ):
            for o in outputs(states["params"], x):
                if classify:
                    got = scores.classification(o[None], y)
                    out.setdefault(f"{split}_nll", []).append(float(got["nll"]))
                    out.setdefault(f"{split}_acc", []).append(float(got["acc"]))
                else:
                    rmse = scores.rmse(o[None], y, data.y_std)
                    out.setdefault(f"{split}_rmse", []).append(float(rmse))
        return {k: np.array(v) for k, v in out.items()}

    return curve


def curve_rows(training: GridTraining, steps_per_epoch: int) -> list[dict]:
    """One learning curve per point: its fields and ``series``, ``step``, ``epoch``,
    ``train_loss`` (the mean training loss of each period, dropout on) and the curve's
    metrics, as lists."""
    rows = []
    for i, point in enumerate(training.points):
        row = {**asdict(point), "series": point.series, "step": training.steps.tolist()}
        row["epoch"] = (training.steps / steps_per_epoch).tolist()
        row["train_loss"] = training.losses[i].tolist()
        rows.append(row | {k: v[i].tolist() for k, v in training.curves.items()})
    return rows


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
