"""Prediction: a method's outputs per pass, in padded batches, compiled once per setup.

A method predicts with one deterministic pass (``T = 1``) or, when its record says
``mc``, with ``num_samples`` stochastic passes (``dl.mc.sample``). Classifiers give
log-probabilities per pass ``[T, n, classes]`` (``log_softmax``: exact where a
probability is tiny), regressors their means per pass ``[T, n]`` (standardized units).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import jax
import numpy as np

from dropout_lab import mc
from lab import distributed
from lab.fit import Setup
from lab.methods import Hparams

# XLA:CPU in jax 0.10 can fuse a deterministic MLP forward over >= 1024 rows into a
# library call ~15x slower than plain dots; evaluation forwards use this option.
CPU_COMPILER_OPTIONS: dict[str, str | bool] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
}


def compile_forward(fn: Callable, *args: Any) -> Callable:
    """``jax.jit(fn)`` compiled ahead for ``args``' shapes, with the CPU option above."""
    lowered = jax.jit(fn).lower(*args)
    if jax.default_backend() == "cpu":
        return lowered.compile(compiler_options=CPU_COMPILER_OPTIONS)
    return lowered.compile()


def mc_passes(model, num_samples: int, chunk_size: int | None, transform) -> Callable:
    """``f(params, rows, key, hparams) -> [num_samples, rows, out]``: MC dropout passes.

    ``dl.mc.sample`` of ``model`` with dropout on, ``chunk_size`` passes at a time,
    each pass's output through ``transform`` (``None``: as is). Pure: vmap it.
    """

    def passes(params, rows, key, hp: Hparams):
        def one_pass(k):
            return model.apply(
                {"params": params}, rows, hp["rate"], hp["input_rate"],
                deterministic=False, rngs={"dropout": k},
            )  # fmt: skip

        return mc.sample(one_pass, key, num_samples, chunk_size=chunk_size, transform=transform)

    return passes


def passes_fn(setup: Setup, *, log_probs: bool = True) -> Callable:
    """``f(params, rows, key, hparams) -> [T, rows, out]``: the method's passes on ``rows``.

    Classification: log-probabilities (``log_probs``) or probabilities; regression:
    the outputs. An MC method's ``T`` passes (:func:`mc_passes`), else one
    deterministic pass. Pure: vmap it over grid points.
    """
    model, task = setup.model, setup.task
    transform = None
    if task == "classification":
        transform = jax.nn.log_softmax if log_probs else jax.nn.softmax
    if setup.method.mc:
        s = setup.settings
        return mc_passes(model, s.num_samples, s.chunk_size, transform)

    def deterministic(params, rows, key, hp: Hparams):
        out = cast(jax.Array, model.apply({"params": params}, rows, hp["rate"], hp["input_rate"]))
        return (out if transform is None else transform(out))[None]

    return deterministic


class Predictor:
    """The method's passes on any rows, batch by batch; programs compiled on first use.

    Args:
      setup: the method's setup.
      eval_batch_size: rows per compiled forward (the last batch is padded).
    """

    def __init__(self, setup: Setup, eval_batch_size: int):
        self.setup, self.batch = setup, eval_batch_size
        # By input width; kept with the setup, so every seed reuses the programs.
        self._compiled = setup.programs.setdefault(("predict", eval_batch_size), {})

    def _program(self, params: Any, num_features: int, hp: Hparams) -> Callable:
        if num_features not in self._compiled:
            rows = distributed.example_rows(self.setup.mesh, (self.batch, num_features))
            self._compiled[num_features] = compile_forward(
                passes_fn(self.setup), params, rows, jax.random.key(0), hp
            )
        return self._compiled[num_features]

    def passes(self, params: Any, x: np.ndarray, key: jax.Array, hp: Hparams) -> np.ndarray:
        """``[T, n, out]``: batch ``i`` of ``x`` uses ``fold_in(key, i)``."""
        params = distributed.place_state(self.setup.mesh, params)
        f = self._program(params, x.shape[1], hp)
        outs = []
        for i, start in enumerate(range(0, len(x), self.batch)):
            rows = x[start : start + self.batch]
            pad = np.zeros((self.batch - len(rows), x.shape[1]), np.float32)
            out = f(params, np.concatenate([rows, pad]), jax.random.fold_in(key, i), hp)
            outs.append(distributed.fetch(out)[:, : len(rows)])
        return np.concatenate(outs, axis=1)

    def log_probs(self, params: Any, x: np.ndarray, key: jax.Array, hp: Hparams) -> np.ndarray:
        """Classification: log-probabilities per pass ``[T, n, classes]``."""
        return self.passes(params, x, key, hp)

    def means(self, params: Any, x: np.ndarray, key: jax.Array, hp: Hparams) -> np.ndarray:
        """Regression: the predicted means per pass ``[T, n]`` (standardized units)."""
        return self.passes(params, x, key, hp)[..., 0]
