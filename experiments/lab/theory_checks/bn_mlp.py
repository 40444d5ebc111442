r"""A trained MLP ``relu(Dense) -> dropout -> BatchNorm -> Dense`` next to Li et al.'s formula.

The formula (:func:`dropout_lab.theory.bn_test_shift`) takes each hidden unit's
measured pre-dropout mean and variance :math:`(\mu_j, \sigma_j^2)` on the training
inputs; the measurement compares BatchNorm's output in test mode (saved statistics,
dropout off) with its output in training mode (batch statistics, dropout on) on the
same inputs. Both are averaged over live units. The test error of each evaluation rule
is measured on held-out inputs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dropout_lab import theory
from dropout_lab.ops import dropout
from lab.theory_checks.batchnorm import BN_CASES, TRAIN_MODE
from lab.theory_checks.estimate import relative_row
from lab.theory_config import BatchNormCheckConfig, TheoryChecksConfig

LIVE_VARIANCE = 1e-4  # a hidden unit is live when its pre-dropout variance exceeds this


def mlp_data(cfg: TheoryChecksConfig, key: jax.Array) -> tuple[jax.Array, ...]:
    """A smooth target of two random directions of Gaussian inputs.

    Returns:
      ``(x_train, y_train, x_test, y_test)``.
    """
    b = cfg.batchnorm
    key_a, key_tr, key_te = jax.random.split(key, 3)
    directions = jax.random.normal(key_a, (b.num_features, 2)) / math.sqrt(b.num_features)

    def target(x):
        proj = x @ directions
        return jnp.sin(2.0 * proj[:, 0]) + proj[:, 1] ** 2

    x_train = jax.random.normal(key_tr, (b.num_train, b.num_features))
    x_test = jax.random.normal(key_te, (b.num_test, b.num_features))
    return x_train, target(x_train), x_test, target(x_test)


def hidden(params: dict, x: jax.Array) -> jax.Array:
    """:math:`h = \\mathrm{relu}(x W_1 + b_1)`, ``[n, hidden]``."""
    return jax.nn.relu(x @ params["w1"] + params["b1"])


def batchnorm(params: dict, z: jax.Array, mean, var, eps: float) -> jax.Array:
    r""":math:`\gamma (z - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta` per unit."""
    return params["gamma"] * (z - mean[None]) / jnp.sqrt(var[None] + eps) + params["beta"]


def moments(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-unit mean and (biased) variance over the batch, as BatchNorm computes them."""
    return jnp.mean(z, axis=0), jnp.var(z, axis=0)


def predict(params: dict, z: jax.Array, mean, var, eps: float) -> jax.Array:
    """The output ``Dense`` after BatchNorm with the given statistics, ``[n]``."""
    return batchnorm(params, z, mean, var, eps) @ params["w2"] + params["b2"]


def init_params(b: BatchNormCheckConfig, key_1: jax.Array, key_2: jax.Array) -> dict:
    """LeCun-normal weights, a small positive first bias, BatchNorm's identity."""
    return {
        "w1": jax.random.normal(key_1, (b.num_features, b.hidden)) / math.sqrt(b.num_features),
        "b1": jnp.full((b.hidden,), 0.1),
        "gamma": jnp.ones(b.hidden),
        "beta": jnp.zeros(b.hidden),
        "w2": jax.random.normal(key_2, (b.hidden,)) / math.sqrt(b.hidden),
        "b2": jnp.zeros(()),
    }


def train_bn_mlp(cfg: TheoryChecksConfig, mode: str, data, key: jax.Array) -> tuple[dict, dict]:
    """Trains ``relu(Dense) -> dropout(mode) -> BatchNorm -> Dense`` with Adam.

    BatchNorm normalizes with the batch statistics in training and keeps running
    averages (``momentum``) for the test, as ``flax.linen.BatchNorm`` does.

    Returns:
      ``(params, batch_stats)``.
    """
    b = cfg.batchnorm
    x_train, y_train = data[0], data[1]
    key_1, key_2, key_steps = jax.random.split(key, 3)
    params = init_params(b, key_1, key_2)
    stats = {"mean": jnp.zeros(b.hidden), "var": jnp.ones(b.hidden)}
    optimizer = optax.adam(b.learning_rate)

    def loss(p, k, x, y):
        z = dropout(k, hidden(p, x), cfg.rate, mode=mode)
        mean, var = moments(z)
        return jnp.mean(jnp.square(predict(p, z, mean, var, b.eps) - y)), (mean, var)

    def step(carry, k):
        p, s, state = carry
        key_batch, key_mask = jax.random.split(k)
        idx = jax.random.choice(key_batch, b.num_train, (b.batch_size,), replace=False)
        grads, (mean, var) = jax.grad(loss, has_aux=True)(p, key_mask, x_train[idx], y_train[idx])
        updates, state = optimizer.update(grads, state)
        s = {
            "mean": b.momentum * s["mean"] + (1 - b.momentum) * mean,
            "var": b.momentum * s["var"] + (1 - b.momentum) * var,
        }
        return (optax.apply_updates(p, updates), s, state), None

    keys = jax.random.split(key_steps, b.num_steps)
    (params, stats, _), _ = jax.jit(
        lambda ks: lax.scan(step, (params, stats, optimizer.init(params)), ks)
    )(keys)
    return params, stats


def population_statistics(cfg: TheoryChecksConfig, params: dict, mode: str, x, key) -> dict:
    """BatchNorm statistics of the whole training set with dropout on, over several masks.

    The mean over ``batchnorm.recalibration_passes`` passes of the full-set mean and
    variance: what the running averages estimate once the weights stop moving, and
    what Li et al.'s analysis assumes.
    """

    def one(k):
        return moments(dropout(k, hidden(params, x), cfg.rate, mode=mode))

    keys = jax.random.split(key, cfg.batchnorm.recalibration_passes)
    means, variances = lax.map(one, keys)
    return {"mean": jnp.mean(means, axis=0), "var": jnp.mean(variances, axis=0)}


def _bn_inputs(params: dict, x, rate: float, mode: str, case: str, key) -> tuple:
    """Hidden units, their dropped training-mode input and their test-mode input.

    Returns:
      ``(h, z_train, z_test)``: case (a) tests with ``h`` itself (classic dropout
      switched off, unscaled), (b) and (c) with dropout's deterministic mode.
    """
    h = hidden(params, x)
    z_train = dropout(key, h, rate, mode=mode)
    if case == "classic_unscaled":
        return h, z_train, h
    return h, z_train, dropout(key, h, rate, mode=mode, deterministic=True)


def _shift(cfg: TheoryChecksConfig, params, stats, case: str, inputs: tuple) -> dict:
    """The formula's and the measured output shift, per hidden unit.

    Args:
      inputs: :func:`_bn_inputs` of the training inputs.

    Returns:
      ``{"live", "formula", "shift", "ratio"}``: live units, the formula's
      ``BNShift`` from the units' moments, the measured mean shift (test - train) and
      variance ratio (test / train) of BatchNorm's output.
    """
    eps = cfg.batchnorm.eps
    h, z_train, z_test = inputs
    mu, var = moments(h)
    out_train = batchnorm(params, z_train, *moments(z_train), eps)
    out_test = batchnorm(params, z_test, stats["mean"], stats["var"], eps)
    return {
        "live": var > LIVE_VARIANCE,
        "formula": theory.bn_test_shift(
            mu, var, cfg.rate, case=case, gamma=params["gamma"], eps=eps
        ),
        "shift": jnp.mean(out_test, axis=0) - jnp.mean(out_train, axis=0),
        "ratio": jnp.var(out_test, axis=0) / jnp.var(out_train, axis=0),
    }


def _test_errors(cfg: TheoryChecksConfig, params, stats, y, inputs: tuple) -> dict:
    """Mean squared error of the case's test rule and of one dropout mask.

    Args:
      inputs: :func:`_bn_inputs` of the test inputs, whose targets are ``y``.
    """
    _, z_drop, z_eval = inputs

    def mse(z):
        return jnp.mean(
            jnp.square(predict(params, z, stats["mean"], stats["var"], cfg.batchnorm.eps) - y)
        )

    return {"mse": mse(z_eval), "mse_one_mask": mse(z_drop)}


def _cases_of(mode: str) -> tuple[str, ...]:
    """The test rules of a network trained with dropout ``mode``."""
    return tuple(case for case in BN_CASES if TRAIN_MODE[case] == mode)


def _measure_mode(cfg: TheoryChecksConfig, data, keys, params, ema, mode: str) -> dict:
    """Every case trained with ``mode``, with the statistics the rows use and the other ones.

    Returns:
      ``{case: (used, other)}``, each ``{"live", "formula", "shift", "ratio", "mse",
      "mse_one_mask"}`` (:func:`_shift`, :func:`_test_errors`).
    """
    x_train, _, x_test, y_test = data
    key_eval, key_pop = keys
    population = population_statistics(cfg, params, mode, x_train, key_pop)
    used, other = (population, ema) if cfg.batchnorm.recalibrate else (ema, population)
    results = {}
    for case in _cases_of(mode):
        on_train = _bn_inputs(params, x_train, cfg.rate, mode, case, key_eval)
        on_test = _bn_inputs(params, x_test, cfg.rate, mode, case, key_eval)
        results[case] = tuple(
            {
                **_shift(cfg, params, stats, case, on_train),
                **_test_errors(cfg, params, stats, y_test, on_test),
            }
            for stats in (used, other)
        )
    return results


def _case_rows(case: str, m: dict, b: BatchNormCheckConfig) -> list[dict]:
    """Formula next to measurement, averaged over live units.

    The mean shift only in case (a): in (b) and (c) the formula's shift is 0, so a
    relative error says nothing.
    """
    live = m["live"]
    note = f"MLP, {int(live.sum())}/{b.hidden} live units"
    tag = "abc"[BN_CASES.index(case)]
    rows = []
    if case == "classic_unscaled":
        rows.append(
            relative_row("trained MLP (a): mean |shift| over units", "bn_test_shift",
                         np.mean(np.abs(m["formula"].mean_shift)[live]),
                         np.mean(np.abs(m["shift"])[live]), b.tolerance, note)
        )  # fmt: skip
    rows.append(
        relative_row(f"trained MLP ({tag}): mean variance ratio", "bn_test_shift",
                     np.mean(m["formula"].variance_ratio[live]), np.mean(m["ratio"][live]),
                     b.tolerance, note)
    )  # fmt: skip
    return rows


def _summary(live: np.ndarray, m: dict) -> dict[str, float]:
    """Mean |shift| and variance ratio over live units, and the test error."""
    return {
        "mean_abs_shift": float(np.mean(np.abs(m["shift"])[live])),
        "mean_variance_ratio": float(np.mean(m["ratio"][live])),
        "test_mse": float(m["mse"]),
    }


def bn_mlp_rows(cfg: TheoryChecksConfig, key: jax.Array) -> tuple[list[dict], dict]:
    """Measured test-time BatchNorm shifts of trained MLPs next to the formula.

    Returns:
      ``(rows, extras)``: extras hold each case's test error, one dropout mask's, and
      the rows' measurements with the other choice of BatchNorm statistics (running
      averages or population statistics, see ``batchnorm.recalibrate``).
    """
    b = cfg.batchnorm
    key_data, key_train, key_eval, key_pop = jax.random.split(key, 4)
    data = mlp_data(cfg, key_data)
    other_stats = "running_average_stats" if b.recalibrate else "population_stats"
    measure = jax.jit(
        functools.partial(_measure_mode, cfg, data, (key_eval, key_pop)), static_argnames="mode"
    )
    rows: list[dict] = []
    extras: dict[str, dict] = {"test_mse": {}, other_stats: {}}
    for mode in ("classic", "inverted"):
        params, ema = train_bn_mlp(cfg, mode, data, key_train)
        results = jax.tree.map(np.asarray, measure(params, ema, mode=mode))
        for case in _cases_of(mode):
            used, other = results[case]
            extras[other_stats][case] = _summary(used["live"], other)
            extras["test_mse"][case] = float(used["mse"])
            rows += _case_rows(case, used, b)
        # One dropout mask at test: the same for every case of the mode (the last one's).
        extras["test_mse"][f"{mode}_one_dropout_mask"] = float(used["mse_one_mask"])
    return rows, extras
