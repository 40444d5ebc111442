"""Fitting: a pure ``step(state, batch, key, hparams)``, scanned over steps, checkpointed.

The hyperparameters (rates, R-Drop's alpha, the weight decay) are a pytree of traced
scalars (:data:`lab.methods.Hparams`), so one compiled step serves every value and a
sweep is the same step ``vmap``-ed over a grid (:func:`chunk_program` with
``grid=True``). Batches depend only on the global step (epoch ``e`` is the
permutation drawn from ``fold_in(data_key, e)``), so a run cut into chunks,
interrupted and resumed from a checkpoint gives bit for bit the same parameters as a
run in one piece.
"""

from __future__ import annotations

import functools
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from lab import checkpoints, distributed
from lab.data import Dataset
from lab.methods import METHODS, Hparams, Method, hyperparameters
from lab.model import build_model, token_edges
from lab.rate_schedule import scheduled


@dataclass(frozen=True)
class RunKeys:
    """The four independent streams of one seed (same for every method)."""

    init: jax.Array
    data: jax.Array
    dropout: jax.Array
    eval: jax.Array

    @classmethod
    def from_seed(cls, seed: int) -> RunKeys:
        """Splits ``jax.random.key(seed)`` into the four streams."""
        init, data, dropout, eval_ = jax.random.split(jax.random.key(seed), 4)
        return cls(init, data, dropout, eval_)

    @classmethod
    def stacked(cls, seeds: list[int]) -> RunKeys:
        """The streams of several seeds, stacked ``[P]`` (a grid's keys)."""
        keys = [cls.from_seed(int(s)) for s in seeds]
        return cls(*(jnp.stack([getattr(k, f) for k in keys]) for f in cls.__annotations__))

    def prediction_keys(self) -> dict[str, jax.Array]:
        """One key per evaluated split (``train``, ``val``, ``test``, ``ood``, ``grid``).

        The learning curves and the final evaluation predict with these same keys, so
        an MC method's last curve point and its table row see the same masks.
        """
        names = ("train", "val", "test", "ood", "grid")
        return dict(zip(names, jax.random.split(self.eval, len(names)), strict=True))


@dataclass(frozen=True)
class Schedule:
    """Which rows each global step reads, and when to evaluate.

    Attributes:
      num_train: training rows ``n``.
      batch_size: rows per step (the last partial batch of an epoch is dropped).
      steps_per_epoch: ``n // batch_size``.
      total_steps: ``epochs * steps_per_epoch``.
      eval_every: steps between learning-curve points.
    """

    num_train: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    eval_every: int

    @classmethod
    def of(cls, train_cfg: Any, num_train: int) -> Schedule:
        """From the ``train`` section and the training-set size."""
        batch = min(train_cfg.batch_size, num_train)
        spe = num_train // batch
        return cls(num_train, batch, spe, train_cfg.epochs * spe, train_cfg.eval_every or spe)

    def chunks(self, start: int) -> list[int]:
        """Lengths of the chunks from step ``start`` to the end, one per curve point."""
        out, step = [], start
        while step < self.total_steps:
            num = min(self.eval_every - step % self.eval_every, self.total_steps - step)
            out.append(num)
            step += num
        return out


def epoch_permutation(data_key: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
    """Row order ``[n]`` of epoch ``epoch``: drawn from ``fold_in(data_key, epoch)``.

    ``argsort`` of random bits: a uniform permutation (ties have probability about
    ``n^2 / 2^33``), much cheaper to compile than ``jax.random.permutation``.
    """
    return jnp.argsort(jax.random.bits(jax.random.fold_in(data_key, epoch), (n,)))


def batch_rows(perm: jax.Array, step: jax.Array, schedule: Schedule) -> jax.Array:
    """Rows of global step ``step``: slice ``step % steps_per_epoch`` of its epoch's order."""
    b = schedule.batch_size
    return jax.lax.dynamic_slice_in_dim(perm, (step % schedule.steps_per_epoch) * b, b)


def make_optimizer(train_cfg: Any, weight_decay: jax.Array | float) -> optax.GradientTransformation:
    """The Optax optimizer of the ``train`` section with a (possibly traced) weight decay.

    ``adamw``: decoupled decay; ``adam`` / ``sgd``: the decay added to the gradient
    (L2). The state's structure does not depend on the decay's value.
    """
    lr = train_cfg.learning_rate
    if train_cfg.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay)
    if train_cfg.optimizer == "adam":
        base = optax.adam(lr)
    else:
        base = optax.sgd(lr, momentum=train_cfg.momentum)
    return optax.chain(optax.add_decayed_weights(weight_decay), base)


@dataclass(frozen=True, eq=False)
class Setup:
    """Everything static about one method's runs: model, loss, batches, optimizer, mesh.

    Attributes:
      method: the method's record.
      settings: its ``methods.<name>`` section.
      model: the Flax model.
      task: ``classification`` or ``regression``.
      schedule: the batches.
      train: the ``train`` section (optimizer).
      mesh: the device mesh, or ``None``.
      programs: the compiled programs of this setup (training chunks, prediction),
        built on first use and reused by every seed and grid of the setup.
    """

    method: Method
    settings: Any
    model: nn.Module
    task: str
    schedule: Schedule
    train: Any
    mesh: Mesh | None
    programs: dict = field(default_factory=dict, repr=False)

    def hparams(self) -> Hparams:
        """The configured hyperparameters of the method."""
        return hyperparameters(self.settings, self.train.weight_decay)


def make_setup(cfg: Any, method: str, data: Dataset) -> Setup:
    """The :class:`Setup` of ``method`` on ``data`` under ``cfg``."""
    bins = cfg.model.token_bins
    model = build_model(
        cfg,
        method,
        data.num_features,
        data.num_classes if data.task == "classification" else 1,
        len(data.x_train),
        token_edges=token_edges(data.x_train, bins) if bins else (),
    )
    schedule = Schedule.of(cfg.train, len(data.x_train))
    mesh = distributed.make_mesh(cfg.mesh)
    if mesh is not None:
        distributed.check_divides(mesh, schedule.batch_size, cfg.train.eval_batch_size)
    settings = getattr(cfg.methods, method)
    return Setup(METHODS[method], settings, model, data.task, schedule, cfg.train, mesh)


def init_state(setup: Setup, key: jax.Array, x_example: jax.Array) -> dict:
    """Initial state ``{"params", "opt_state", "step"}`` (pure; vmap it over keys)."""
    params = setup.model.init(key, x_example)["params"]
    opt_state = make_optimizer(setup.train, 0.0).init(params)
    return {"params": params, "opt_state": opt_state, "step": jnp.int32(0)}


def make_step(setup: Setup) -> Callable:
    """``step(state, batch, key, hparams) -> (state, loss)``: one optimizer step, pure.

    The loss sees the rate of the step: ``hparams``' schedule at ``state["step"]``
    (:func:`lab.rate_schedule.scheduled`; the constant schedule leaves it as it is).
    """
    total_steps = setup.schedule.total_steps

    def loss_fn(params, x, y, key, hp):
        return setup.method.loss(setup.model, params, x, y, key, hp, setup.task)

    def step(state: dict, batch: tuple, key: jax.Array, hp: Hparams):
        x, y = batch
        hp = scheduled(hp, state["step"], total_steps)
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], x, y, key, hp)
        tx = make_optimizer(setup.train, hp["weight_decay"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss

    return step


def chunk_program(setup: Setup, num_steps: int, *, grid: bool = False) -> Callable:
    """``jit(scan(step))`` over ``num_steps`` global steps; ``grid``: the step vmapped.

    ``chunk(state, x_all, y_all, data_key, dropout_key, hparams) -> (state, losses)``.
    With ``grid`` every argument but the data has a leading axis of grid points and
    ``losses`` is ``[P, num_steps]``. The step counter stays unbatched (all points of a
    chunk start at the same step), so each epoch's permutation is drawn under a real
    ``lax.cond``, once per epoch: on CPU a 1257-row argsort costs more than a whole
    step of a 256-wide MLP.
    """
    sched, n = setup.schedule, setup.schedule.num_train
    spe = sched.steps_per_epoch

    def over_grid(f, in_axes):
        return jax.vmap(f, in_axes=in_axes) if grid else f

    step = over_grid(make_step(setup), 0)
    permutation = over_grid(functools.partial(epoch_permutation, n=n), (0, None))
    rows = over_grid(functools.partial(batch_rows, schedule=sched), (0, None))
    fold_in = over_grid(jax.random.fold_in, (0, None))
    on_mesh = setup.mesh if not grid else None

    def chunk(state, x_all, y_all, data_key, dropout_key, hp):
        def body(carry, _):
            state, perm, i = carry
            perm = jax.lax.cond(i % spe == 0, lambda: permutation(data_key, i // spe), lambda: perm)
            idx = rows(perm, i)
            batch = distributed.constrain_rows(on_mesh, (x_all[idx], y_all[idx]))
            state, loss = step(state, batch, fold_in(dropout_key, i), hp)
            return (distributed.constrain_state(on_mesh, state), perm, i + 1), loss

        i0 = state["step"][0] if grid else state["step"]
        carry = (state, permutation(data_key, i0 // spe), i0)
        (state, _, _), losses = jax.lax.scan(body, carry, None, length=num_steps)
        return state, (losses.T if grid else losses)

    return jax.jit(chunk)


def train_program(setup: Setup, num_steps: int, *, grid: bool = False) -> Callable:
    """:func:`chunk_program`, built once per setup, length and kind."""
    name = ("chunk", num_steps, grid)
    if name not in setup.programs:
        setup.programs[name] = chunk_program(setup, num_steps, grid=grid)
    return setup.programs[name]


def fit(
    setup: Setup,
    data: Dataset,
    seed: int,
    checkpoint_dir: str | pathlib.Path | None,
    curve_point: Callable[[Any], dict],
    *,
    on_eval: Callable[[int, dict], None] | None = None,
) -> tuple[dict, list[dict], dict]:
    """Trains from scratch or from the latest checkpoint in ``checkpoint_dir``.

    Every ``eval_every`` steps: one learning-curve point (``step``, ``epoch``,
    ``train_loss`` and ``curve_point(params)``), ``on_eval(step, point)`` (progress;
    tests raise here to simulate an interruption), and every ``checkpoint_every``
    points a checkpoint (state, curve so far, timings).

    Returns:
      ``(state, history, timing)``; timing: ``seconds_per_epoch`` (median over
      chunks, so compilation is left out), ``train_seconds``, ``resumed_from``.
    """
    keys = RunKeys.from_seed(seed)
    x_train, y_train = distributed.replicate(setup.mesh, (data.x_train, data.y_train))
    if "init" not in setup.programs:
        setup.programs["init"] = jax.jit(functools.partial(init_state, setup))
    state = setup.programs["init"](keys.init, x_train[:1])
    saved = checkpoints.Saved(checkpoint_dir, setup.train.checkpoint_every)
    state, history, seconds = saved.restore(distributed.place_state(setup.mesh, state))
    state = distributed.place_state(setup.mesh, state)
    hp = setup.hparams()
    resumed_from = int(state["step"])
    for num in setup.schedule.chunks(resumed_from):
        start = time.perf_counter()
        program = train_program(setup, num)
        state, losses = program(state, x_train, y_train, keys.data, keys.dropout, hp)
        losses = distributed.fetch(losses)
        seconds.append([time.perf_counter() - start, num])
        step = int(state["step"])
        point = {"step": step, "epoch": step / setup.schedule.steps_per_epoch}
        point |= {"train_loss": float(losses.mean()), **curve_point(state["params"])}
        history.append(point)
        saved.maybe_save(step, step == setup.schedule.total_steps, state, history, seconds)
        if on_eval is not None:
            on_eval(step, point)
    saved.close()
    return state, history, _timing(seconds, setup.schedule.steps_per_epoch, resumed_from)


def _timing(seconds: list[list[float]], steps_per_epoch: int, resumed_from: int) -> dict:
    """Median seconds per step x steps per epoch, total seconds, the resumed step."""
    secs = np.array(seconds, dtype=np.float64).reshape(-1, 2)
    per_step = float(np.median(secs[:, 0] / secs[:, 1])) if len(secs) else float("nan")
    return {
        "seconds_per_epoch": per_step * steps_per_epoch,
        "train_seconds": float(secs[:, 0].sum()),
        "resumed_from": resumed_from,
    }
