"""Reusable trainer: jitted steps scanned over chunks, orbax checkpoints, resumable.

The unit is a pure step ``step(state, x, y, key, rate, input_rate) -> (state, loss)``
with the rates as traced arguments, so later experiments can ``vmap`` it over rates and
seeds. :meth:`Trainer.train_chunk` scans it over ``num_steps`` steps whose batches
depend only on the global step (epoch ``e`` is the permutation drawn from
``fold_in(data_key, e)``), so a run cut into chunks, interrupted and resumed from a
checkpoint gives bit-for-bit the same parameters as a run in one piece.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lab import distributed, scores
from lab.config import ConfigError, ExperimentConfig, TrainConfig
from lab.data import Dataset
from lab.model import (
    SOWN_LOSSES,
    build_model,
    learned_rates,
    pruned_fraction,
    token_edges,
)

# XLA:CPU in jax 0.10 can fuse a deterministic MLP forward over >= 1024 rows into a
# library call ~15x slower than plain dots; evaluation forwards use this option.
CPU_COMPILER_OPTIONS: dict[str, str | bool] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
}


_PROGRAMS: dict[tuple, dict] = {}


def compile_forward(fn: Callable, *args: Any) -> Callable:
    """``jax.jit(fn)`` compiled ahead for ``args``' shapes, with the CPU option above."""
    lowered = jax.jit(fn).lower(*args)
    if jax.default_backend() == "cpu":
        return lowered.compile(compiler_options=CPU_COMPILER_OPTIONS)
    return lowered.compile()


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """The Optax optimizer named by ``cfg.optimizer``."""
    if cfg.optimizer == "adamw":
        return optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        opt = optax.adam(cfg.learning_rate)
    else:
        opt = optax.sgd(cfg.learning_rate, momentum=cfg.momentum)
    if cfg.weight_decay:
        opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)
    return opt


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

    def prediction_keys(self) -> dict[str, jax.Array]:
        """One key per evaluated split (``train``, ``val``, ``test``, ``ood``, ``grid``).

        The learning curves and the final evaluation predict with these same keys, so
        an MC method's last curve point and its table row see the same masks.
        """
        names = ("train", "val", "test", "ood", "grid")
        return dict(zip(names, jax.random.split(self.eval, len(names)), strict=True))


class Trainer:
    """Trains and evaluates one method's model; reusable across seeds (compiles once).

    Args:
      cfg: the experiment config.
      method: a key of ``lab.model.METHOD_VARIANT`` (``none``,
        ``classic``, ``inverted``, ``rdrop``, ``mc``, ``dropconnect``, ``gaussian``,
        ``channel``, ``dropblock``, ``locked``, ``zoneout``, ``concrete``, ``droppath``,
        ``weightdrop``, ``sparse_vd``, ``embedding``); the model
        is ``cfg.model.architecture``'s (:func:`~lab.model.build_model`).
      data: the split data set.
    """

    def __init__(self, cfg: ExperimentConfig, method: str, data: Dataset):
        self.cfg, self.method, self.data = cfg, method, data
        self.task = data.task
        mcfg = getattr(cfg.methods, method)
        self.rate = float(getattr(mcfg, "rate", 0.0))
        self.input_rate = float(getattr(mcfg, "input_rate", 0.0))
        self.alpha = float(getattr(mcfg, "alpha", 0.0))
        bins = cfg.model.token_bins
        self.model = build_model(
            cfg,
            method,
            data.num_features,
            data.num_classes if self.task == "classification" else 1,
            len(data.x_train),
            token_edges=token_edges(data.x_train, bins) if bins else (),
        )
        self.tx = make_optimizer(cfg.train)
        n = len(data.x_train)
        self.batch_size = min(cfg.train.batch_size, n)
        self.steps_per_epoch = n // self.batch_size
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        self.eval_every = cfg.train.eval_every or self.steps_per_epoch
        self.x_train = jnp.asarray(data.x_train)
        self.y_train = jnp.asarray(data.y_train)
        # A ``mesh`` config splits batches over its ``data`` axis (distributed.py).
        self.mesh = distributed.make_mesh(cfg.mesh)
        if self.mesh is not None:
            self._check_mesh(self.mesh)
            self.x_train, self.y_train = distributed.put(
                (self.x_train, self.y_train), NamedSharding(self.mesh, P())
            )
        # Compiled programs are shared by every Trainer with the same program key
        # (e.g. ``mc`` reuses ``inverted``'s training step; reruns compile nothing).
        t = cfg.train
        self.program_key = (
            self.model,
            "rdrop" if method == "rdrop" else self.task,
            self.alpha,
            (t.optimizer, t.learning_rate, t.weight_decay, t.momentum),
            self.batch_size,
            self.steps_per_epoch,
            self.x_train.shape,
            t.eval_batch_size,
            self.mesh,
        )
        self._compiled = _PROGRAMS.setdefault(self.program_key, {})

    # ----------------------------------------------------------------- training
    def init(self, keys: RunKeys) -> dict:
        """Initial state ``{"params", "opt_state", "step"}``."""
        if "init" not in self._compiled:
            self._compiled["init"] = jax.jit(self.model.init)
        params = self._compiled["init"](keys.init, self.x_train[:1])["params"]
        return {"params": params, "opt_state": self.tx.init(params), "step": jnp.int32(0)}

    def loss(self, params, x, y, key, rate, input_rate) -> jax.Array:
        """Training loss of one batch ``x [batch, features]``, ``y [batch]``."""
        if self.method == "rdrop":
            from dropout_lab import losses

            # One forward over the batch concatenated with itself: two independent
            # masks, one kernel launch per layer.
            def apply(xx, k):
                return self.model.apply(
                    {"params": params}, xx, rate, input_rate,
                    deterministic=False, rngs={"dropout": k},
                )  # fmt: skip

            out_a, out_b = losses.rdrop_forward(apply, x, key)
            if self.task == "classification":
                return losses.rdrop(out_a, out_b, y, alpha=self.alpha)
            # 1/4 of the sum of both squared errors = the mean of 0.5 (y - pred)^2,
            # the scale of the other methods' regression loss.
            return 0.25 * losses.rdrop_regression(out_a[:, 0], out_b[:, 0], y, alpha=self.alpha)
        rngs = {"dropout": key}
        if self.method in SOWN_LOSSES:
            # The data loss is a mean over examples: the sown regularizers (concrete
            # dropout's, sparse VD's KL) carry 1/N.
            out, sown = self.model.apply(
                {"params": params}, x, rate, input_rate,
                deterministic=False, rngs=rngs, mutable=["losses"],
            )  # fmt: skip
            return self._data_loss(out, y) + sum(jax.tree.leaves(sown))
        # Flax types ``apply`` as output-or-(output, state) whatever ``mutable`` is.
        out = self.model.apply(
            {"params": params}, x, rate, input_rate, deterministic=False, rngs=rngs
        )
        return self._data_loss(cast(jax.Array, out), y)

    def _data_loss(self, out: jax.Array, y: jax.Array) -> jax.Array:
        if self.task == "classification":
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        return 0.5 * jnp.mean((out[:, 0] - y) ** 2)

    def step(self, state, x, y, key, rate, input_rate):
        """One optimizer step (pure; jit/vmap it): returns ``(state, loss)``."""
        loss, grads = jax.value_and_grad(self.loss)(state["params"], x, y, key, rate, input_rate)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss

    def epoch_permutation(self, data_key: jax.Array, epoch: jax.Array) -> jax.Array:
        """Row order ``[n]`` of epoch ``epoch``: drawn from ``fold_in(data_key, epoch)``."""
        n = self.x_train.shape[0]
        # argsort of random bits: a uniform permutation (ties have probability
        # ~n^2/2^33), and much cheaper to compile than jax.random.permutation.
        return jnp.argsort(jax.random.bits(jax.random.fold_in(data_key, epoch), (n,)))

    def next_permutation(self, data_key: jax.Array, step: jax.Array, perm: jax.Array):
        """``perm``, or the new epoch's permutation when ``step`` starts an epoch.

        The sort runs once per epoch under ``lax.cond``, not once per step: on CPU a
        1257-row argsort costs more than a whole step of a 256-wide MLP.
        """
        spe = self.steps_per_epoch
        return jax.lax.cond(
            step % spe == 0, lambda: self.epoch_permutation(data_key, step // spe), lambda: perm
        )

    def batch_rows(self, perm: jax.Array, step: jax.Array) -> jax.Array:
        """Rows of global step ``step`` from its epoch's permutation: slice ``step % spe``."""
        b = self.batch_size
        return jax.lax.dynamic_slice_in_dim(perm, (step % self.steps_per_epoch) * b, b)

    def _chunk_fn(self, num_steps: int) -> Callable:
        @jax.jit
        def chunk(state, x_all, y_all, data_key, dropout_key, rate, input_rate):
            def body(carry, _):
                state, perm = carry
                step = state["step"]
                perm = self.next_permutation(data_key, step, perm)
                idx = self.batch_rows(perm, step)
                key = jax.random.fold_in(dropout_key, step)
                x, y = self.shard_rows((x_all[idx], y_all[idx]))
                state, loss = self.step(state, x, y, key, rate, input_rate)
                return (self.shard_state(state), perm), loss

            perm = self.epoch_permutation(data_key, state["step"] // self.steps_per_epoch)
            (state, _), losses = jax.lax.scan(body, (state, perm), None, length=num_steps)
            return state, losses

        return chunk

    def train_chunk(self, state: dict, keys: RunKeys, num_steps: int):
        """Runs ``num_steps`` jitted steps from ``state["step"]``; returns (state, losses)."""
        name = ("chunk", num_steps)
        if name not in self._compiled:
            self._compiled[name] = self._chunk_fn(num_steps)
        return self._compiled[name](
            self.place(state),
            self.x_train,
            self.y_train,
            keys.data,
            keys.dropout,
            jnp.float32(self.rate),
            jnp.float32(self.input_rate),
        )

    # --------------------------------------------------------------------- mesh
    def _check_mesh(self, mesh: Mesh) -> None:
        data = mesh.shape["data"]
        for key, size in (
            ("train.batch_size", self.batch_size),
            ("train.eval_batch_size", self.cfg.train.eval_batch_size),
        ):
            if size % data:
                raise ConfigError(
                    f"config key {key!r} = {size}: must be a multiple of the mesh's "
                    f"data axis ({data} devices)."
                )

    def shard_rows(self, tree):
        """Inside jit: rows (axis 0) of every leaf split over the mesh's ``data`` axis."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, distributed.batch_sharding(self.mesh))

    def shard_state(self, tree):
        """Inside jit: parameters and optimizer state replicated (or split over ``model``)."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, distributed.state_shardings(self.mesh, tree))

    def place(self, tree):
        """Outside jit: puts a state or parameters on the mesh as :meth:`shard_state` does."""
        if self.mesh is None:
            return tree
        return distributed.put(tree, distributed.state_shardings(self.mesh, tree))

    def _example_rows(self, shape: tuple[int, ...]):
        """Evaluation rows to compile for: split over ``data`` when there is a mesh."""
        if self.mesh is None:
            return jnp.zeros(shape)
        sharding = distributed.batch_sharding(self.mesh)
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)

    # --------------------------------------------------------------- prediction
    def _batched(self, fn: Callable, x: np.ndarray) -> np.ndarray:
        """Applies ``fn(batch_index, rows [B, features])`` to padded batches of B rows."""
        b = self.cfg.train.eval_batch_size
        outs = []
        for i, start in enumerate(range(0, len(x), b)):
            rows = x[start : start + b]
            pad = np.zeros((b - len(rows), x.shape[1]), np.float32)
            out = distributed.fetch(fn(i, np.concatenate([rows, pad])))
            outs.append(out[..., : len(rows), :])
        return np.concatenate(outs, axis=-2)

    def predict(self, params, x: np.ndarray) -> np.ndarray:
        """Deterministic outputs ``[n, out]`` (classic dropout scales by keep here)."""
        params = self.place(params)
        if "forward" not in self._compiled:

            def forward(params, rows, rate, input_rate):
                return self.model.apply({"params": params}, rows, rate, input_rate)

            b = self.cfg.train.eval_batch_size
            self._compiled["forward"] = compile_forward(
                forward, params, self._example_rows((b, x.shape[1])), jnp.float32(0), jnp.float32(0)
            )
        f = self._compiled["forward"]
        rate, input_rate = jnp.float32(self.rate), jnp.float32(self.input_rate)
        return self._batched(lambda i, rows: f(params, rows, rate, input_rate), x)

    def predict_mc(
        self, params, x: np.ndarray, key: jax.Array, *, log_probs: bool = False
    ) -> np.ndarray:
        """``num_samples`` stochastic passes ``[T, n, out]``.

        Classification: softmax probabilities, or with ``log_probs`` log-probabilities
        (``log_softmax``, exact where a probability is tiny). Regression: the outputs.
        """
        params = self.place(params)
        from dropout_lab import mc

        mcfg = self.cfg.methods.mc
        num_samples, chunk = mcfg.num_samples, mcfg.chunk_size
        transform = None
        if self.task == "classification":
            transform = jax.nn.log_softmax if log_probs else jax.nn.softmax
        name = ("mc", num_samples, chunk, log_probs)
        if name not in self._compiled:

            def forward(params, rows, key, rate, input_rate):
                def fn(k):
                    return self.model.apply(
                        {"params": params},
                        rows,
                        rate,
                        input_rate,
                        deterministic=False,
                        rngs={"dropout": k},
                    )

                return mc.sample(fn, key, num_samples, chunk_size=chunk, transform=transform)

            b = self.cfg.train.eval_batch_size
            self._compiled[name] = compile_forward(
                forward,
                params,
                self._example_rows((b, x.shape[1])),
                key,
                jnp.float32(0),
                jnp.float32(0),
            )
        f = self._compiled[name]
        rate, input_rate = jnp.float32(self.rate), jnp.float32(self.input_rate)
        return self._batched(
            lambda i, rows: f(params, rows, jax.random.fold_in(key, i), rate, input_rate), x
        )

    def predict_log_probs(self, params, x: np.ndarray, key: jax.Array) -> np.ndarray:
        """The method's prediction as log-probabilities per pass ``[T, n, classes]``.

        ``mc``: ``num_samples`` stochastic passes; every other method one deterministic
        pass (``T = 1``). Scored by :func:`lab.scores.classification`.
        """
        if self.method == "mc":
            return self.predict_mc(params, x, key, log_probs=True)
        return np.asarray(jax.nn.log_softmax(jnp.asarray(self.predict(params, x))))[None]

    def predict_means(self, params, x: np.ndarray, key: jax.Array) -> np.ndarray:
        """The method's regression prediction per pass ``[T, n]`` (standardized units)."""
        if self.method == "mc":
            return self.predict_mc(params, x, key)[..., 0]
        return self.predict(params, x)[None, :, 0]

    # ------------------------------------------------------------------ fitting
    def param_metrics(self, params) -> dict[str, float]:
        """Concrete dropout's learned rates; sparse VD's ``pruned_fraction`` (else empty)."""
        out = learned_rates(params)
        if self.method == "sparse_vd":
            out.update(pruned_fraction(params, self.cfg.methods.sparse_vd.threshold))
        return out

    def unpruned_metrics(self, params) -> dict[str, float]:
        """Sparse VD classifiers: ``test_acc_unpruned``, the test accuracy with every weight.

        (:meth:`predict` and the reported test metrics use the pruned weights.)
        """
        if self.method != "sparse_vd" or self.task != "classification":
            return {}
        params = self.place(params)
        x = self.data.x_test
        if "unpruned" not in self._compiled:
            model = self.model.clone(vd_threshold=None)

            def forward(params, rows):
                return model.apply({"params": params}, rows)

            b = self.cfg.train.eval_batch_size
            self._compiled["unpruned"] = compile_forward(
                forward, params, self._example_rows((b, x.shape[1]))
            )
        f = self._compiled["unpruned"]
        pred = self._batched(lambda i, rows: f(params, rows), x)
        return {"test_acc_unpruned": float(np.mean(pred.argmax(-1) == self.data.y_test))}

    def curve_point(self, params, keys: RunKeys) -> dict[str, float]:
        """Train and test NLL and accuracy (or RMSE) of the method's prediction.

        The same prediction (MC passes for ``mc``, with
        :meth:`RunKeys.prediction_keys`) and the same definitions
        (:mod:`lab.scores`) as the final evaluation, so the last point of a curve is
        the number in the table. Adds :meth:`param_metrics` (learned rates, pruned
        fraction).
        """
        out: dict[str, float] = self.param_metrics(params)
        pred_keys = keys.prediction_keys()
        for split, x, y in (
            ("train", self.data.x_train, self.data.y_train),
            ("test", self.data.x_test, self.data.y_test),
        ):
            if self.task == "classification":
                log_probs_t = self.predict_log_probs(params, x, pred_keys[split])
                got = scores.classification(log_probs_t, y, self.cfg.eval.ece_bins)
                out[f"{split}_nll"], out[f"{split}_acc"] = float(got["nll"]), float(got["acc"])
            else:
                means_t = self.predict_means(params, x, pred_keys[split])
                out[f"{split}_rmse"] = float(scores.rmse(means_t, y, self.data.y_std))
        return out

    def fit(
        self,
        seed: int,
        checkpoint_dir: str | pathlib.Path | None = None,
        *,
        on_eval: Callable[[int, dict], None] | None = None,
    ) -> tuple[dict, list[dict], dict]:
        """Trains from scratch or from the latest checkpoint in ``checkpoint_dir``.

        Every ``eval_every`` steps: one learning-curve point, ``on_eval(step, point)``
        (progress bars; tests raise here to simulate an interruption), and every
        ``checkpoint_every`` evaluations a checkpoint (parameters, optimizer state,
        step, curve so far, timings).

        Args:
          seed: training seed (initialization, batch order, dropout masks).
          checkpoint_dir: where checkpoints live (``None``: no checkpoints).
          on_eval: optional callback.

        Returns:
          ``(state, history, timing)``: the final state, the learning curve (list of
          dicts with ``step``, ``epoch``, ``train_loss`` and :meth:`curve_point`'s
          keys), and ``{"train_seconds", "seconds_per_epoch", "resumed_from"}``
          (seconds per epoch: median over chunks, so compilation is left out).
        """
        keys = RunKeys.from_seed(seed)
        state = self.place(self.init(keys))
        history: list[dict] = []
        chunk_seconds: list[list[float]] = []
        manager = None
        resumed_from = 0
        if checkpoint_dir is not None:
            manager = _manager(checkpoint_dir)
            latest = manager.latest_step()
            if latest is not None:
                state, meta = _restore(manager, latest, state)
                history, chunk_seconds = meta["history"], meta["chunk_seconds"]
                resumed_from = int(latest)
        evals_since_ckpt = 0
        step = int(state["step"])
        while step < self.total_steps:
            num = min(self.eval_every - step % self.eval_every, self.total_steps - step)
            start = time.perf_counter()
            state, losses = self.train_chunk(state, keys, num)
            losses = distributed.fetch(losses)
            chunk_seconds.append([time.perf_counter() - start, num])
            step = int(state["step"])
            point = {
                "step": step,
                "epoch": step / self.steps_per_epoch,
                "train_loss": float(losses.mean()),
                **self.curve_point(state["params"], keys),
            }
            history.append(point)
            evals_since_ckpt += 1
            if manager is not None and (
                evals_since_ckpt >= self.cfg.train.checkpoint_every or step == self.total_steps
            ):
                _save(manager, step, state, {"history": history, "chunk_seconds": chunk_seconds})
                evals_since_ckpt = 0
            if on_eval is not None:
                on_eval(step, point)
        if manager is not None:
            manager.close()
        # The first chunk of a fresh run includes compilation: report the median.
        secs = np.array(chunk_seconds, dtype=np.float64).reshape(-1, 2)
        per_step = float(np.median(secs[:, 0] / secs[:, 1])) if len(secs) else float("nan")
        timing = {
            "seconds_per_epoch": per_step * self.steps_per_epoch,
            "train_seconds": float(secs[:, 0].sum()),
            "resumed_from": resumed_from,
        }
        return state, history, timing


def _manager(directory: str | pathlib.Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def _save(manager, step: int, state: dict, meta: dict) -> None:
    import orbax.checkpoint as ocp

    manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    )
    manager.wait_until_finished()


def _restore(manager, step: int, template: dict) -> tuple[dict, dict]:
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], restored["meta"]
