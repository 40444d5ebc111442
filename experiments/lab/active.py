r"""Active learning with MC dropout: Gal, Islam & Ghahramani (ICML 2017) on the digits.

Every round retrains each model from scratch on its labelled set, measures its test
error, scores the unlabelled pool and labels ``acquire`` more points. The pool and the
labelled sets keep static shapes (a model's labelled set is a boolean mask ``[N]`` over
the pool), so a round is **one compiled program** for every (heuristic, seed) model:

- training: the lab's pure ``step(state, batch, key, hparams)`` (:func:`lab.fit.
  make_step`) scanned over ``active.steps`` steps, vmapped over the models; a step's
  ``train.batch_size`` rows are drawn uniformly, with replacement, among the labelled
  rows (the mask), so the expected minibatch loss is the mean loss over the labelled
  set and a step costs the same for 20 labels as for 500;
- test error: of the MC predictive mean (``methods.mc.num_samples`` passes,
  :func:`lab.predict.mc_passes`, :func:`lab.scores.classification`);
- pool scores: *consistent* MC dropout (each point goes through the model alone,
  vmapped with the pass key shared, so pass ``t`` is one sub-network for the whole
  pool), chunk by chunk (``dl.mc.sample_pool``, ``active.pool_chunk_size``: the
  scoring memory is set by the chunk, not by the pool);
- selection, in two groups: the score heuristics (Random, BALD, Variation ratios, Max
  entropy, Mean std, PowerBALD) reduce each chunk to their scores and pick by
  ``lax.switch`` on a heuristic index; BatchBALD keeps the passes ``[T, N, C]`` for
  ``dl.acquisition.batch_bald``. Under ``vmap`` a switch on a batched index runs every
  branch, so BatchBALD (the costly one) is a vmap of its own over its seeds, inside
  the same compiled round.

Every heuristic of a seed shares the seed's keys (common random numbers: start set,
initialisations, minibatches, masks), so the first round's models are identical
across heuristics and the curves differ only through what was acquired.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dropout_lab import acquisition, mc
from lab import active_results, decision_figures, provenance, report, scores
from lab.active_acquire import consistent_fn, reduction, selector
from lab.active_config import HEURISTICS, ActiveConfig, ActiveSection
from lab.checks import ConfigError
from lab.config import to_yaml
from lab.data import Dataset, load_dataset
from lab.fit import RunKeys, Schedule, Setup, init_state, make_setup, make_step
from lab.predict import mc_passes
from lab.run import check_output_dir, run_dir, write_atomic

LAST_STEPS = 20  # the reported training loss: mean of the last steps of a round


class Pool(NamedTuple):
    """The pool ``x [N, features]``, its labels ``y [N]`` (revealed when acquired: pool
    point ``i`` is training row ``i % n_train``) and the test set."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


class Layout(NamedTuple):
    """The models of a round: heuristic-major, BatchBALD's seeds last.

    Attributes:
      heuristics: the heuristics in model order (score group first).
      seeds: the training seeds.
      score_names: the scores the score group computes (columns of its reduction).
      num_batch_bald: models of the BatchBALD group (``len(seeds)`` or 0).
    """

    heuristics: tuple[str, ...]
    seeds: tuple[int, ...]
    score_names: tuple[str, ...]
    num_batch_bald: int

    @classmethod
    def of(cls, heuristics: list[str], seeds: list[int]) -> Layout:
        """From the configured heuristics (any order) and seeds."""
        ordered = tuple(h for h in heuristics if h != "batch_bald")
        bb = "batch_bald" in heuristics
        names = tuple(dict.fromkeys(s for h in ordered if (s := HEURISTICS[h][0]) is not None))
        return cls(ordered + (("batch_bald",) if bb else ()), tuple(seeds), names, len(seeds) * bb)

    @property
    def num_models(self) -> int:
        """Models per round: heuristics x seeds."""
        return len(self.heuristics) * len(self.seeds)

    def selectors(self) -> np.ndarray:
        """``[models]`` index of each model's heuristic among the score group's."""
        return np.repeat(np.arange(len(self.heuristics)), len(self.seeds)).astype(np.int32)


def make_pool(data: Dataset, a: ActiveSection) -> Pool:
    """The training split as the pool, ``a.repeat`` copies each with Gaussian noise."""
    x = np.tile(data.x_train, (a.repeat, 1))
    if a.repeat > 1 and a.repeat_noise > 0:
        noise = np.random.default_rng(a.repeat_seed).standard_normal(x.shape)
        x = (x + a.repeat_noise * noise).astype(np.float32)
    y = np.tile(data.y_train, a.repeat)
    return Pool(x, y, data.x_test, data.y_test, data.num_classes)


def round_keys(seed: int) -> dict[str, jax.Array]:
    """The seed's streams: ``start`` (the start set), ``init``, ``data``, ``dropout``,
    ``acquire`` and ``test``; a round folds its index into each but ``start``."""
    keys = RunKeys.from_seed(seed)
    start, data = jax.random.split(keys.data)
    acquire, test = jax.random.split(keys.eval)
    return {"start": start, "init": keys.init, "data": data, "dropout": keys.dropout,
            "acquire": acquire, "test": test}  # fmt: skip


def initial_set(key: jax.Array, y: jax.Array, per_class: int, num_classes: int) -> jax.Array:
    """A balanced start set: ``per_class`` points of every class, uniformly, ``[N]`` bool."""

    def of_class(c):  # uniform: equal scores, softmax sampling among the class's points
        k, zeros = jax.random.fold_in(key, c), jnp.zeros(y.shape, jnp.float32)
        return acquisition.stochastic_batch(k, zeros, per_class, mode="softmax", pool_mask=y == c)

    picks = jax.vmap(of_class)(jnp.arange(num_classes)).reshape(-1)
    return jnp.zeros(y.shape, bool).at[picks].set(True)


def active_setup(cfg: ActiveConfig, data: Dataset, pool: Pool) -> Setup:
    """The ``mc`` method's setup (model, loss, optimizer) with a schedule of one round."""
    setup = make_setup(cfg, "mc", data)
    batch = cfg.train.batch_size
    schedule = Schedule(len(pool.x), batch, 1, cfg.active.steps, cfg.active.steps)
    return dataclasses.replace(setup, schedule=schedule, programs={})


def trainer(setup: Setup, num_steps: int) -> Callable:
    """``train(keys, labelled [N], r, x, y) -> (params, loss)``: round ``r``'s model.

    From a fresh initialisation, ``num_steps`` steps of the lab's ``step``, each on
    ``schedule.batch_size`` rows drawn uniformly with replacement among the labelled
    ones; ``loss``: the mean training loss of the last :data:`LAST_STEPS` steps.
    """
    step, hp, batch = make_step(setup), setup.hparams(), setup.schedule.batch_size

    def train(keys, labelled, r, x, y):
        state = init_state(setup, jax.random.fold_in(keys["init"], r), x[:1])
        rows = jnp.nonzero(labelled, size=labelled.shape[0], fill_value=0)[0]  # labelled first
        count = jnp.sum(labelled)
        data_key = jax.random.fold_in(keys["data"], r)
        drop_key = jax.random.fold_in(keys["dropout"], r)

        def body(state, i):
            picked = rows[jax.random.randint(jax.random.fold_in(data_key, i), (batch,), 0, count)]
            return step(state, (x[picked], y[picked]), jax.random.fold_in(drop_key, i), hp)

        state, losses = jax.lax.scan(body, state, jnp.arange(num_steps))
        return state["params"], jnp.mean(losses[-LAST_STEPS:])

    return train


def round_program(cfg: ActiveConfig, setup: Setup, layout: Layout) -> Callable:
    """``jit(round)``: one round of every model of ``layout``.

    ``round(labelled [M, N], keys {stream: [M]}, selectors [M], r, x, y, x_test,
    y_test) -> {"labelled", "picks" [M, acquire], "test_error" [M], "train_loss" [M]}``:
    the models of round ``r`` trained on ``labelled``, their test errors, their
    acquisitions and the labelled sets after them.
    """
    a, s = cfg.active, setup.settings
    train, hp = trainer(setup, a.steps), setup.hparams()
    test_passes = mc_passes(setup.model, s.num_samples, s.chunk_size, jax.nn.log_softmax)
    selects = [selector(h, layout.score_names, a) for h in layout.heuristics if h != "batch_bald"]

    def test_error(params, keys, r, x_test, y_test):
        log_probs_t = test_passes(params, x_test, jax.random.fold_in(keys["test"], r), hp)
        return 1.0 - scores.classification(log_probs_t, y_test)["acc"]

    def by_score(params, keys, labelled, h, r, x):
        score_key, select_key = jax.random.split(jax.random.fold_in(keys["acquire"], r))
        fn = consistent_fn(setup, params, hp)
        pool_scores = acquisition.score_pool(
            reduction(layout.score_names), fn, score_key, x, s.num_samples,
            pool_chunk_size=a.pool_chunk_size, chunk_size=s.chunk_size,
        )  # fmt: skip
        return jax.lax.switch(h, selects, select_key, pool_scores, ~labelled)

    def by_batch_bald(params, keys, labelled, r, x):
        score_key, select_key = jax.random.split(jax.random.fold_in(keys["acquire"], r))
        probs_t = mc.sample_pool(
            consistent_fn(setup, params, hp), score_key, x, s.num_samples,
            pool_chunk_size=a.pool_chunk_size, chunk_size=s.chunk_size, transform=jax.nn.softmax,
        )  # fmt: skip
        return acquisition.batch_bald(
            select_key, probs_t, a.acquire, num_samples=a.batch_bald_samples,
            pool_mask=~labelled, pool_chunk_size=a.pool_chunk_size,
        )  # fmt: skip

    def one_round(labelled, keys, selectors, r, x, y, x_test, y_test):
        params, loss = jax.vmap(train, (0, 0, None, None, None))(keys, labelled, r, x, y)
        err = jax.vmap(test_error, (0, 0, None, None, None))(params, keys, r, x_test, y_test)
        split = layout.num_models - layout.num_batch_bald
        first, last = (jax.tree.map(lambda v, sl=sl: v[sl], (params, keys, labelled))
                       for sl in (slice(None, split), slice(split, None)))  # fmt: skip
        picks = []
        if split:
            f = jax.vmap(by_score, (0, 0, 0, 0, None, None))
            picks.append(f(*first, selectors[:split], r, x))
        if layout.num_batch_bald:
            picks.append(jax.vmap(by_batch_bald, (0, 0, 0, None, None))(*last, r, x))
        picks = jnp.concatenate(picks)
        labelled = jax.vmap(lambda m, p: m.at[p].set(True))(labelled, picks)
        return {"labelled": labelled, "picks": picks, "test_error": err, "train_loss": loss}

    fast = {"xla_backend_optimization_level": 0} if a.fast_compile else None
    return jax.jit(one_round, compiler_options=fast)


def model_keys(layout: Layout) -> tuple[list[jax.Array], dict[str, jax.Array]]:
    """Each seed's start-set key, and every model's key streams ``{stream: [M]}``."""
    per_seed = [round_keys(seed) for seed in layout.seeds]
    streams = ("init", "data", "dropout", "acquire", "test")
    stacked = {
        name: jnp.stack([k[name] for _ in layout.heuristics for k in per_seed]) for name in streams
    }
    return [k["start"] for k in per_seed], stacked


def run_rounds(
    cfg: ActiveConfig,
    setup: Setup,
    pool: Pool,
    *,
    on_round: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Runs ``active.rounds + 1`` rounds (the last only trains and tests) for every model.

    Args:
      cfg: a checked config (:func:`~lab.active_config.load_active_config`).
      setup: :func:`active_setup`'s.
      pool: :func:`make_pool`'s.
      on_round: ``on_round(round, labels, {heuristic: mean test error})`` after each.

    Returns:
      ``layout``, ``labels [R + 1]``, ``initial [seeds, N]`` (bool), ``test_error`` and
      ``train_loss`` ``[M, R + 1]``, ``picks [M, R, acquire]``, ``seconds [R + 1]``
      (the first includes compilation).

    Raises:
      ConfigError: the pool has fewer points than the rounds acquire.
    """
    a = cfg.active
    layout = Layout.of(list(a.heuristics), list(cfg.seeds))
    start = a.initial_per_class * pool.num_classes
    needed = start + (a.rounds + 1) * a.acquire  # the last round's program acquires too
    if needed > len(pool.x):
        raise ConfigError(
            f"config key 'active.rounds' = {a.rounds}: {needed} labels needed, the pool holds "
            f"{len(pool.x)}; lower active.rounds or active.acquire."
        )
    y = jnp.asarray(pool.y)
    starts, keys = model_keys(layout)
    draw = jax.jit(initial_set, static_argnums=(2, 3))
    initial = np.stack([np.asarray(draw(k, y, a.initial_per_class, pool.num_classes))
                        for k in starts])  # fmt: skip
    labelled = jnp.asarray(np.tile(initial, (len(layout.heuristics), 1)))
    program = round_program(cfg, setup, layout)
    arrays = [jnp.asarray(v) for v in (pool.x, pool.y, pool.x_test, pool.y_test)]
    selectors = jnp.asarray(layout.selectors())
    errors, losses, picks, seconds = [], [], [], []
    for r in range(a.rounds + 1):
        t0 = time.perf_counter()
        out = jax.device_get(program(labelled, keys, selectors, r, *arrays))
        seconds.append(time.perf_counter() - t0)
        errors.append(out["test_error"])
        losses.append(out["train_loss"])
        if r < a.rounds:
            picks.append(out["picks"])
            labelled = jnp.asarray(out["labelled"])
        if on_round is not None:
            means = out["test_error"].reshape(len(layout.heuristics), -1).mean(1)
            means = dict(zip(layout.heuristics, means.tolist(), strict=True))
            on_round(r, start + r * a.acquire, means)
    return {
        "layout": layout,
        "labels": [start + r * a.acquire for r in range(a.rounds + 1)],
        "initial": initial,
        "test_error": np.stack(errors, 1),
        "train_loss": np.stack(losses, 1),
        "picks": np.stack(picks, 1),
        "seconds": seconds,
    }


def run_active(
    cfg: ActiveConfig,
    *,
    data: Dataset | None = None,
    on_round: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Runs the experiment and writes the run folder (``cfg.output_dir`` or ``runs/<name>``).

    Outputs: ``config.yaml``, ``active.json`` (every curve, acquisition and start set,
    the labels-needed summary, timing and load, provenance), ``results.md`` (the
    table, the verdicts against the goal, the figure) and ``active_learning.png``.

    Args:
      cfg: a checked config (:func:`~lab.active_config.load_active_config`).
      data: an already loaded data set (default: loaded from ``cfg.data``).
      on_round: ``on_round(round, labels, {heuristic: mean test error})``.

    Returns:
      The content of ``active.json``.
    """
    folder = run_dir(cfg)
    check_output_dir(folder)
    data = data if data is not None else load_dataset(cfg.data)
    pool = make_pool(data, cfg.active)
    start = time.perf_counter()
    raw = run_rounds(cfg, active_setup(cfg, data, pool), pool, on_round=on_round)
    seconds = time.perf_counter() - start
    result = {"name": cfg.name, "seeds": list(cfg.seeds), "labels": raw["labels"],
              **active_results.collect(cfg, raw)}  # fmt: skip
    errors = {h: np.asarray(c["test_error"]) for h, c in result["curves"].items()}
    result["targets"] = active_results.target_summary(errors, raw["labels"], cfg.active.targets)
    result["protocol"] = active_results.protocol_record(cfg, pool)
    result["timing"] = {
        "seconds": seconds, "round_seconds": raw["seconds"],
        "first_round_seconds": raw["seconds"][0],
        "median_round_seconds": float(np.median(raw["seconds"][1:] or raw["seconds"])),
        "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
    }  # fmt: skip
    result["provenance"] = provenance.of_run(cfg, provenance.data_hash(data))
    write_atomic(folder / "config.yaml", to_yaml(cfg))
    captions = ""
    if cfg.plots:
        names = {h: active_results.NAMES[h] for h in errors}
        title = active_results.figure_title(cfg.data.name, result["protocol"])
        plot = decision_figures.plot_active_learning(
            raw["labels"], errors, names, list(cfg.active.targets),
            folder / "active_learning.png", title,
        )  # fmt: skip
        result["caption"] = plot.caption
        captions = report.captions([plot])
    write_atomic(folder / "active.json", json.dumps(result, indent=1))
    write_atomic(folder / "results.md", active_results.results_md(result, captions))
    return result
