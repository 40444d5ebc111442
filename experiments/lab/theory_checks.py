r"""Checks every closed form of :mod:`dropout_lab.theory` numerically.

Each check compares a closed form with a Monte Carlo estimate made with the library's
own :func:`dropout_lab.dropout`, vmapped over many keys (or, for identities, with the
other side computed independently; for training runs, with the measured result). A row
records the claim, the function, both numbers, the standard error, the z-score and
whether it passed its stated criterion. :func:`run_theory_checks` returns the rows and
the plot data; :func:`write_theory_outputs` writes ``table.md``, ``results.json``,
``jensen_gap.png`` and ``bn_shift.png``.

Standard errors: for a mean, the sample standard deviation over :math:`\sqrt{N}`; for
a nonlinear statistic (variance, ratio), batch means: the statistic on ``num_groups``
disjoint groups, their standard deviation over :math:`\sqrt{G}`.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dropout_lab import theory
from dropout_lab.ops import dropout
from lab import provenance
from lab.theory_config import TheoryChecksConfig

_BATCH = 2048  # keys per lax.map step when sampling
BN_ORDER = {"classic_unscaled": 0, "classic": 1, "inverted": 2}


# --- Rows ---------------------------------------------------------------------------


def _row(claim, function, closed, estimate, std_err, kind, threshold, note=""):
    closed, estimate = float(closed), float(estimate)
    diff = estimate - closed
    if kind == "z":
        std_err = float(std_err)
        z = 0.0 if diff == 0 else (diff / std_err if std_err > 0 else math.inf)
        passed, criterion = abs(z) < threshold, f"|z| < {threshold:g}"
    else:
        std_err, z = math.nan, math.nan
        scale = max(abs(closed), 1.0) if kind == "exact" else max(abs(closed), 1e-12)
        if kind == "distance":
            scale = 1.0
        passed = abs(diff) / scale < threshold
        criterion = {"exact": "rel. err <", "relative": "rel. err <", "distance": "value <"}[kind]
        criterion = f"{criterion} {threshold:g}"
    return {
        "claim": claim,
        "function": function,
        "closed_form": closed,
        "estimate": estimate,
        "std_err": std_err,
        "z": z,
        "criterion": criterion,
        "passed": bool(passed),
        "note": note,
    }


def _mean_row(cfg, claim, function, closed, samples, note=""):
    samples = np.asarray(samples, np.float64)
    se = samples.std(ddof=1) / math.sqrt(samples.shape[0])
    return _row(claim, function, closed, samples.mean(), se, "z", cfg.z_threshold, note)


def _group_stat(stat: Callable, arrays: tuple, num_groups: int) -> tuple[float, float]:
    """Statistic on all samples and its batch-means standard error."""
    arrays = tuple(np.asarray(a, np.float64) for a in arrays)
    estimate = stat(*arrays)
    size = arrays[0].shape[0] // num_groups
    groups = [stat(*(a[g * size : (g + 1) * size] for a in arrays)) for g in range(num_groups)]
    return float(estimate), float(np.std(groups, ddof=1) / math.sqrt(num_groups))


def _stat_row(cfg, claim, function, closed, stat, arrays, note=""):
    estimate, se = _group_stat(stat, arrays, cfg.num_groups)
    return _row(claim, function, closed, estimate, se, "z", cfg.z_threshold, note)


def _sample(fn: Callable, key: jax.Array, num: int):
    """``fn(key_i)`` for ``num`` split keys, ``_BATCH`` keys per step (bounded memory)."""
    keys = jax.random.split(key, num)
    return jax.jit(lambda ks: lax.map(fn, ks, batch_size=min(_BATCH, num)))(keys)


def _var(a):
    return np.var(a, ddof=1)


# --- Checks -------------------------------------------------------------------------


def linear_unit_rows(cfg: TheoryChecksConfig, key: jax.Array) -> list[dict]:
    """Expected pre-activation, single-pass and T-pass variance, expected ambiguity."""
    key_x, key_w, key_inv, key_cl = jax.random.split(key, 4)
    x = jax.random.normal(key_x, (cfg.num_inputs,))
    w = jax.random.normal(key_w, (cfg.num_inputs,))
    rate, num_t = cfg.rate, cfg.ensemble_size
    z = _sample(lambda k: jnp.dot(w, dropout(k, x, rate)), key_inv, cfg.num_samples)
    z_classic = _sample(
        lambda k: jnp.dot(w, dropout(k, x, rate, mode="classic")), key_cl, cfg.num_samples
    )
    passes = z.reshape(-1, num_t)

    @jax.jit
    def compute(w, x, passes):
        def ambiguity(f):
            a = theory.ambiguity_decomposition(f[:, None], jnp.zeros(1))
            return a.individual_error - a.ensemble_error

        closed = (
            theory.preactivation_mean(w, x, rate),
            theory.preactivation_mean(w, x, rate, mode="classic"),
            theory.preactivation_variance(w, x, rate),
            theory.mc_dropout_variance(w, x, rate, num_t),
            theory.expected_ambiguity(w, x, rate, num_t),
        )
        return closed, jax.vmap(ambiguity)(passes), passes.mean(axis=1)

    closed, ambiguity, averages = compute(w, x, passes)
    return [
        _mean_row(cfg, "inverted: E[w.dropout(x)] = w.x", "preactivation_mean", closed[0], z),
        _mean_row(cfg, "classic: E[w.(m*x)] = q w.x", "preactivation_mean(mode='classic')",
                  closed[1], z_classic),
        _stat_row(cfg, "one pass: Var = (p/q) sum (w_i x_i)^2", "preactivation_variance",
                  closed[2], _var, (z,)),
        _stat_row(cfg, f"MC dropout, T={num_t} passes: Var = (1/T)(p/q) sum (w_i x_i)^2",
                  "mc_dropout_variance", closed[3], _var, (averages,)),
        _mean_row(cfg, f"T={num_t} passes: E[E_ind - E_ens] = ((T-1)/T) Var",
                  "expected_ambiguity", closed[4], ambiguity),
    ]  # fmt: skip


def _regression_data(cfg: TheoryChecksConfig, key: jax.Array):
    r = cfg.regression
    key_x, key_w, key_n = jax.random.split(key, 3)
    x = jax.random.normal(key_x, (r.num_examples, r.num_features))
    x = x * jnp.linspace(0.5, 2.0, r.num_features)  # unequal feature scales
    w_true = jax.random.normal(key_w, (r.num_features,))
    y = x @ w_true + r.noise * jax.random.normal(key_n, (r.num_examples,))
    return x, y, w_true


def train_dropout_regression(cfg: TheoryChecksConfig, x, y, key) -> tuple[jax.Array, jax.Array]:
    """SGD with a fresh inverted-dropout mask on the inputs at every step.

    Returns:
      ``(w_avg, w_path)``: the Polyak-Ruppert average of the iterates after
      ``average_from`` of the run, and every iterate ``[num_steps, d]``.
    """
    r = cfg.regression
    schedule = optax.cosine_decay_schedule(r.learning_rate, r.num_steps, alpha=0.01)
    optimizer = optax.sgd(schedule)

    def loss(w, k):
        return 0.5 * jnp.mean(jnp.square(y - dropout(k, x, cfg.rate) @ w))

    def step(carry, k):
        w, state = carry
        updates, state = optimizer.update(jax.grad(loss)(w, k), state)
        w = optax.apply_updates(w, updates)
        return (w, state), w

    w0 = jnp.zeros(x.shape[1])
    keys = jax.random.split(key, r.num_steps)
    _, path = jax.jit(lambda ks: lax.scan(step, (w0, optimizer.init(w0)), ks))(keys)
    start = int(r.average_from * r.num_steps)
    return path[start:].mean(axis=0), path


def regression_rows(cfg: TheoryChecksConfig, key: jax.Array) -> tuple[list[dict], dict]:
    """Expected loss, Hessian, minimizer, SGD convergence, ambiguity identities."""
    key_data, key_w, key_loss, key_h, key_g, key_sgd, key_ens = jax.random.split(key, 7)
    rate, n = cfg.rate, cfg.regression.num_examples

    @jax.jit
    def setup(key_data, key_w, key_ens):
        x, y, w_true = _regression_data(cfg, key_data)
        w_star = theory.dropout_regression_minimizer(x, y, rate)
        w_eval = w_true + 0.5 * jax.random.normal(key_w, w_true.shape)
        hessian = theory.dropout_regression_hessian(x, rate)
        autodiff = jax.hessian(theory.dropout_regression_loss)(w_eval, x, y, rate)
        # T dropout sub-networks of the fitted model on the training inputs.
        keys = jax.random.split(key_ens, cfg.ensemble_size)
        preds = jax.vmap(lambda k: dropout(k, x, rate) @ w_star)(keys)
        votes = (preds > 0).astype(jnp.float32)
        return {
            "x": x, "y": y, "w_star": w_star, "w_eval": w_eval,
            "w_ols": jnp.linalg.lstsq(x, y)[0],
            "loss": theory.dropout_regression_loss(w_eval, x, y, rate),
            "hessian": hessian,
            "hessian_err": jnp.max(jnp.abs(autodiff - hessian)) / jnp.max(jnp.abs(hessian)),
            "amb": theory.ambiguity_decomposition(preds, y),
            "votes": votes,
            "amb01": theory.ambiguity_decomposition(votes, (y > 0).astype(jnp.float32)),
        }  # fmt: skip

    c = setup(key_data, key_w, key_ens)
    x, y, w_star, w_eval, w_ols = c["x"], c["y"], c["w_star"], c["w_eval"], c["w_ols"]
    hessian, hessian_err, amb, amb01 = c["hessian"], float(c["hessian_err"]), c["amb"], c["amb01"]

    losses = _sample(
        lambda k: 0.5 * jnp.mean(jnp.square(y - dropout(k, x, rate) @ w_eval)),
        key_loss,
        cfg.num_samples,
    )

    def hessian_parts(k):
        x_drop = dropout(k, x, rate)
        gram = x_drop.T @ x_drop / n
        return jnp.trace(gram), jnp.sum(gram) - jnp.trace(gram)

    traces, off_sums = _sample(hessian_parts, key_h, cfg.num_samples)

    def grad_at_star(k):
        x_drop = dropout(k, x, rate)
        return -x_drop.T @ (y - x_drop @ w_star) / n

    grads = np.asarray(_sample(grad_at_star, key_g, cfg.num_samples), np.float64)
    grad_se = grads.std(axis=0, ddof=1) / math.sqrt(grads.shape[0])
    worst = int(np.argmax(np.abs(grads.mean(axis=0)) / grad_se))

    w_sgd, w_path = train_dropout_regression(cfg, x, y, key_sgd)
    norm_star = float(np.linalg.norm(w_star))
    sgd_dist = float(np.linalg.norm(np.asarray(w_sgd) - np.asarray(w_star))) / norm_star
    ols_dist = float(np.linalg.norm(np.asarray(w_ols) - np.asarray(w_star))) / norm_star
    v = np.asarray(c["votes"])
    num_t = v.shape[0]
    disagreement = np.mean(
        [np.mean(v[t] != v[s]) for t in range(num_t) for s in range(num_t) if t != s]
    )

    rows = [
        _mean_row(
            cfg,
            "E[L_drop(w)] = L(w) + p/(2nq) sum w_j^2 x_ij^2",
            "dropout_regression_loss",
            c["loss"],
            losses,
        ),
        _mean_row(
            cfg,
            "Hessian trace: tr(X'X/n) (1 + p/q)",
            "dropout_regression_hessian",
            np.trace(hessian),
            traces,
        ),
        _mean_row(
            cfg,
            "Hessian off-diagonal sum: unchanged by dropout",
            "dropout_regression_hessian",
            np.sum(hessian) - np.trace(hessian),
            off_sums,
        ),
        _row(
            "Hessian = jax.hessian of the expected loss",
            "dropout_regression_hessian",
            0.0,
            hessian_err,
            None,
            "distance",
            cfg.exact_tolerance,
            "max |difference| / max |H|",
        ),
        _row(
            f"E[grad L_drop(w*)] = 0 at the generalized ridge w* (coordinate {worst})",
            "dropout_regression_minimizer",
            0.0,
            grads.mean(axis=0)[worst],
            grad_se[worst],
            "z",
            cfg.z_threshold,
            f"largest |z| of {grads.shape[1]} coordinates",
        ),
        _row(
            "SGD with dropout converges to w*: |w_sgd - w*| / |w*|",
            "dropout_regression_minimizer",
            0.0,
            sgd_dist,
            None,
            "distance",
            cfg.regression.tolerance,
            f"OLS is {ols_dist:.3f} away: dropout's fixed point is the ridge solution",
        ),
        _row(
            f"ambiguity identity, T={num_t} sub-networks: E_ind - E_ens = ((T-1)/(2T)) D",
            "ambiguity_decomposition",
            amb.ambiguity,
            amb.individual_error - amb.ensemble_error,
            None,
            "exact",
            cfg.exact_tolerance,
        ),
        _row(
            "0/1 predictions: D = pairwise disagreement rate",
            "ambiguity_decomposition",
            disagreement,
            amb01.diversity,
            None,
            "exact",
            cfg.exact_tolerance,
        ),
    ]
    extras = {
        "w_star": np.asarray(w_star).tolist(),
        "w_sgd": np.asarray(w_sgd).tolist(),
        "w_ols": np.asarray(w_ols).tolist(),
        "sgd_distance_path": (
            np.linalg.norm(np.asarray(w_path) - np.asarray(w_star), axis=1) / norm_star
        )[:: max(1, cfg.regression.num_steps // 100)].tolist(),
    }
    return rows, extras


_jensen_gap_mc = jax.jit(
    theory.jensen_gap_mc, static_argnums=(1,), static_argnames=("num_samples",)
)


def _jensen_unit(cfg: TheoryChecksConfig) -> tuple[jax.Array, jax.Array]:
    """Inputs and weights of the several-input ReLU unit (the same in table and plot)."""
    key_x, key_w = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 7))
    return (
        jax.random.normal(key_x, (cfg.num_inputs,)),
        jax.random.normal(key_w, (cfg.num_inputs,)),
    )


def _relu_gap_exact(x: jax.Array, w: jax.Array, rate) -> jax.Array:
    relu = jax.nn.relu
    exact = theory.exact_mask_expectation(lambda xd: relu(jnp.dot(w, xd)), x, rate)
    return exact - relu(jnp.dot(w, x))


def jensen_rows(cfg: TheoryChecksConfig, key: jax.Array) -> list[dict]:
    """Jensen gaps: z^2 and ReLU of one input (closed forms), ReLU of several (exact)."""
    keys = jax.random.split(key, 4)
    rate, num = cfg.rate, cfg.num_samples
    one = jnp.array([1.5])
    relu = jax.nn.relu
    x, w = _jensen_unit(cfg)
    closed = jax.jit(
        lambda x, w: (
            theory.jensen_gap_square(1.5, rate),
            theory.jensen_gap_relu(1.5, rate),
            theory.jensen_gap_relu(1.5, rate, -0.5),
            _relu_gap_exact(x, w, rate),
        )
    )(x, w)
    rows: list[dict] = []
    for claim, function, phi, inputs, weights, bias in (
        ("z^2, one input x=1.5: gap = x^2 p/q", "jensen_gap_square", jnp.square, one, None, 0.0),
        ("ReLU, one input x=1.5, no bias: gap = 0", "jensen_gap_relu", relu, one, None, 0.0),
        ("ReLU, one input x=1.5, bias b=-0.5: q relu(x/q+b) + p relu(b) - relu(x+b)",
         "jensen_gap_relu", relu, one, None, -0.5),
        (f"ReLU of {cfg.num_inputs} inputs, no bias: gap by exact enumeration (not 0)",
         "exact_mask_expectation", relu, x, w, 0.0),
    ):  # fmt: skip
        i = len(rows)
        estimate, se = _jensen_gap_mc(
            keys[i], phi, inputs, rate, num_samples=num, w=weights, bias=bias
        )
        rows.append(_row(claim, function, closed[i], estimate, se, "z", cfg.z_threshold))
    return rows


def active_paths_rows(cfg: TheoryChecksConfig, key: jax.Array) -> list[dict]:
    """Expected active input-output paths: N_total q^L."""
    widths = tuple(int(width) for width in cfg.widths)
    hidden = widths[1:-1]

    def count(k):
        layer_keys = jax.random.split(k, len(hidden))
        kept = [
            jnp.sum(dropout(layer_keys[i], jnp.ones(h), cfg.rate, mode="classic") != 0)
            for i, h in enumerate(hidden)
        ]
        return widths[0] * widths[-1] * math.prod(kept).astype(jnp.float32)

    paths = _sample(count, key, cfg.num_samples)
    return [
        _mean_row(
            cfg,
            f"active paths, widths {list(widths)}: N_total q^L",
            "expected_active_paths",
            theory.expected_active_paths(widths, cfg.rate),
            paths,
        )
    ]


@jax.jit
def _bn_draw(keys, rate, mean, std):
    def one(k):
        key_x, key_m, key_t = jax.random.split(k, 3)
        x = mean + std * jax.random.normal(key_x, (1,))
        x_test = mean + std * jax.random.normal(key_t, (1,))
        return (
            dropout(key_m, x, rate, mode="classic")[0],
            dropout(key_m, x, rate)[0],
            x_test[0],  # (a) classic switched off, no scaling
            dropout(key_m, x_test, rate, mode="classic", deterministic=True)[0],  # (b)
            dropout(key_m, x_test, rate, deterministic=True)[0],  # (c)
        )

    return lax.map(one, keys, batch_size=min(_BATCH, keys.shape[0]))


def _bn_samples(key, rate, mean, std, num):
    """Train-mode inputs after classic and inverted dropout, and test-mode inputs."""
    return _bn_draw(jax.random.split(key, num), rate, mean, std)


def _shift(train, test):
    return (np.mean(test) - np.mean(train)) / math.sqrt(np.var(train, ddof=1))


def _ratio(train, test):
    return np.var(test, ddof=1) / np.var(train, ddof=1)


def batchnorm_rows(cfg: TheoryChecksConfig, key: jax.Array) -> list[dict]:
    """Li et al.'s BatchNorm statistics and test-time shifts, x ~ N(mu, sigma^2)."""
    mean, var = cfg.bn_mean, cfg.bn_std**2
    classic, inverted, test_a, test_b, test_c = _bn_samples(
        key, cfg.rate, cfg.bn_mean, cfg.bn_std, cfg.num_samples
    )
    cl_mean, cl_var = theory.bn_train_statistics(mean, var, cfg.rate, mode="classic")
    inv_mean, inv_var = theory.bn_train_statistics(mean, var, cfg.rate, mode="inverted")
    rows = [
        _mean_row(cfg, "BN input, classic: mean q mu", "bn_train_statistics", cl_mean, classic),
        _stat_row(cfg, "BN input, classic: var q s^2 + q(1-q) mu^2", "bn_train_statistics",
                  cl_var, _var, (classic,)),
        _mean_row(cfg, "BN input, inverted: mean mu", "bn_train_statistics", inv_mean, inverted),
        _stat_row(cfg, "BN input, inverted: var s^2/q + (1-q) mu^2/q", "bn_train_statistics",
                  inv_var, _var, (inverted,)),
    ]  # fmt: skip
    for label, case, train, test in (
        ("(a) classic, unscaled at test", "classic_unscaled", classic, test_a),
        ("(b) classic, scaled by q at test", "classic", classic, test_b),
        ("(c) inverted", "inverted", inverted, test_c),
    ):
        shift = theory.bn_test_shift(mean, var, cfg.rate, case=case)
        rows.append(
            _stat_row(cfg, f"BN test shift {label}: mean shift", "bn_test_shift",
                      shift.mean_shift, _shift, (train, test))
        )  # fmt: skip
        rows.append(
            _stat_row(cfg, f"BN test shift {label}: variance ratio", "bn_test_shift",
                      shift.variance_ratio, _ratio, (train, test))
        )  # fmt: skip
    return rows


# --- A trained MLP with BatchNorm after dropout ---------------------------------------


def _mlp_data(cfg: TheoryChecksConfig, key: jax.Array):
    b = cfg.batchnorm
    key_a, key_tr, key_te = jax.random.split(key, 3)
    directions = jax.random.normal(key_a, (b.num_features, 2)) / math.sqrt(b.num_features)

    def target(x):
        proj = x @ directions
        return jnp.sin(2.0 * proj[:, 0]) + proj[:, 1] ** 2

    x_train = jax.random.normal(key_tr, (b.num_train, b.num_features))
    x_test = jax.random.normal(key_te, (b.num_test, b.num_features))
    return x_train, target(x_train), x_test, target(x_test)


def _bn_apply(params, z, mean, var, eps):
    return params["gamma"] * (z - mean[None]) / jnp.sqrt(var[None] + eps) + params["beta"]


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
    params = {
        "w1": jax.random.normal(key_1, (b.num_features, b.hidden)) / math.sqrt(b.num_features),
        "b1": jnp.full((b.hidden,), 0.1),
        "gamma": jnp.ones(b.hidden),
        "beta": jnp.zeros(b.hidden),
        "w2": jax.random.normal(key_2, (b.hidden,)) / math.sqrt(b.hidden),
        "b2": jnp.zeros(()),
    }
    stats = {"mean": jnp.zeros(b.hidden), "var": jnp.ones(b.hidden)}
    optimizer = optax.adam(b.learning_rate)

    def loss(p, k, x, y):
        z = dropout(k, jax.nn.relu(x @ p["w1"] + p["b1"]), cfg.rate, mode=mode)
        mean, var = jnp.mean(z, axis=0), jnp.var(z, axis=0)
        out = _bn_apply(p, z, mean, var, b.eps) @ p["w2"] + p["b2"]
        return jnp.mean(jnp.square(out - y)), (mean, var)

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
        z = dropout(k, jax.nn.relu(x @ params["w1"] + params["b1"]), cfg.rate, mode=mode)
        return jnp.mean(z, axis=0), jnp.var(z, axis=0)

    keys = jax.random.split(key, cfg.batchnorm.recalibration_passes)
    means, variances = lax.map(one, keys)
    return {"mean": jnp.mean(means, axis=0), "var": jnp.mean(variances, axis=0)}


def bn_mlp_rows(cfg: TheoryChecksConfig, key: jax.Array) -> tuple[list[dict], dict]:
    """Measured test-time BatchNorm shifts of trained MLPs next to the formula.

    The formula uses each hidden unit's measured pre-dropout mean and variance on the
    training inputs; the measurement compares the BatchNorm output in test mode
    (running averages, dropout off) with the output in training mode (batch
    statistics, dropout on) on the same inputs. Both are averaged over live units.
    The test error of each evaluation rule is measured on held-out inputs.
    """
    b = cfg.batchnorm
    key_data, key_train, key_eval, key_pop = jax.random.split(key, 4)
    data = _mlp_data(cfg, key_data)
    x_train, x_test, y_test = data[0], data[2], data[3]
    rows: list[dict] = []
    extras: dict[str, dict] = {
        "test_mse": {},
        "running_average_stats" if b.recalibrate else "population_stats": {},
    }

    def bn_input(params, x, mode, case, key):
        h = jax.nn.relu(x @ params["w1"] + params["b1"])
        z_train = dropout(key, h, cfg.rate, mode=mode)
        if case == "classic_unscaled":
            return h, z_train, h
        return h, z_train, dropout(key, h, cfg.rate, mode=mode, deterministic=True)

    def measure(params, stats, mode, case):
        # Shift on the training inputs, whose statistics BatchNorm accumulated.
        h, z_train, z_test = bn_input(params, x_train, mode, case, key_eval)
        mu, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
        out_train = _bn_apply(
            params, z_train, jnp.mean(z_train, axis=0), jnp.var(z_train, axis=0), b.eps
        )
        out_test = _bn_apply(params, z_test, stats["mean"], stats["var"], b.eps)
        formula = theory.bn_test_shift(
            mu, var, cfg.rate, case=case, gamma=params["gamma"], eps=b.eps
        )
        shift = jnp.mean(out_test, axis=0) - jnp.mean(out_train, axis=0)
        ratio = jnp.var(out_test, axis=0) / jnp.var(out_train, axis=0)
        # Test error of this evaluation rule, and of one dropout pass, on test inputs.
        _, z_drop, z_eval = bn_input(params, x_test, mode, case, key_eval)

        def head(z):
            out = _bn_apply(params, z, stats["mean"], stats["var"], b.eps)
            return out @ params["w2"] + params["b2"]

        mse = jnp.mean(jnp.square(head(z_eval) - y_test))
        mse_train_mode = jnp.mean(jnp.square(head(z_drop) - y_test))
        return var > 1e-4, formula, shift, ratio, mse, mse_train_mode

    @functools.partial(jax.jit, static_argnames=("mode", "cases"))
    def measure_all(params, ema, mode, cases):
        # One compilation per mode: population statistics, every case, both statistics.
        population = population_statistics(cfg, params, mode, x_train, key_pop)
        used, other = (population, ema) if b.recalibrate else (ema, population)
        return {
            case: (measure(params, used, mode, case), measure(params, other, mode, case))
            for case in cases
        }

    for mode, cases in (("classic", ("classic_unscaled", "classic")), ("inverted", ("inverted",))):
        params, ema = train_bn_mlp(cfg, mode, data, key_train)
        results = jax.tree.map(np.asarray, measure_all(params, ema, mode, cases))
        for case in cases:
            (live, formula, shift, ratio, mse, mse_train_mode), other = results[case]
            # The same measurement with the running averages (if the rows use the
            # population statistics) or the population statistics (otherwise).
            extras["running_average_stats" if b.recalibrate else "population_stats"][case] = {
                "mean_abs_shift": float(np.mean(np.abs(other[2])[live])),
                "mean_variance_ratio": float(np.mean(other[3][live])),
                "test_mse": float(other[4]),
            }
            extras["test_mse"][case] = float(mse)
            note = f"MLP, {int(live.sum())}/{b.hidden} live units"
            if case == "classic_unscaled":
                rows.append(
                    _row("trained MLP (a): mean |shift| over units", "bn_test_shift",
                         np.mean(np.abs(formula.mean_shift)[live]),
                         np.mean(np.abs(shift)[live]), None, "relative", b.tolerance, note)
                )  # fmt: skip
            rows.append(
                _row(f"trained MLP ({'abc'[BN_ORDER[case]]}): mean variance ratio",
                     "bn_test_shift", np.mean(formula.variance_ratio[live]),
                     np.mean(ratio[live]), None, "relative", b.tolerance, note)
            )  # fmt: skip
        extras["test_mse"][f"{mode}_one_dropout_mask"] = float(mse_train_mode)
    return rows, extras


# --- Plot data ------------------------------------------------------------------------


def jensen_curves(cfg: TheoryChecksConfig, key: jax.Array) -> dict[str, Any]:
    """Jensen gaps over ``rates``: closed forms (and exact enumeration) with MC points."""
    rates = jnp.asarray(cfg.rates)
    fine = jnp.linspace(0.02, max(cfg.rates) + 0.05, 60)
    x, w = _jensen_unit(cfg)
    relu = jax.nn.relu
    closed = jax.jit(
        jax.vmap(
            lambda r: (
                theory.jensen_gap_square(1.0, r),
                theory.jensen_gap_relu(1.5, r, -0.5),
                _relu_gap_exact(x, w, r),
            )
        )
    )(fine)
    names = ("z^2, x=1", "ReLU, x=1.5, b=-0.5", f"ReLU of {cfg.num_inputs} inputs (exact)")
    curves = {
        "rates": np.asarray(rates).tolist(),
        "fine": np.asarray(fine).tolist(),
        "closed": dict(zip(names, closed, strict=True)),
        "mc": {},
    }
    specs = {
        names[0]: (jnp.square, jnp.ones(1), None, 0.0),
        names[1]: (relu, jnp.array([1.5]), None, -0.5),
        names[2]: (relu, x, w, 0.0),
    }
    for i, (name, (phi, inputs, weights, bias)) in enumerate(specs.items()):
        gap = functools.partial(
            theory.jensen_gap_mc, jax.random.fold_in(key, 10 + i), phi, inputs,
            num_samples=cfg.plot_samples, w=weights, bias=bias,
        )  # fmt: skip
        estimate, se = jax.jit(jax.vmap(gap))(rates)
        curves["mc"][name] = (np.asarray(estimate).tolist(), np.asarray(se).tolist())
    curves["closed"] = {k: np.asarray(v).tolist() for k, v in curves["closed"].items()}
    return curves


def bn_curves(cfg: TheoryChecksConfig, key: jax.Array) -> dict[str, Any]:
    """BatchNorm test-time shifts over ``rates``: formula curves and MC points."""
    mean, var = cfg.bn_mean, cfg.bn_std**2
    fine = jnp.linspace(0.02, max(cfg.rates) + 0.05, 60)
    cases = ("classic_unscaled", "classic", "inverted")
    shifts = jax.jit(
        jax.vmap(lambda r: [theory.bn_test_shift(mean, var, r, case=case) for case in cases])
    )(fine)
    closed = {
        case: {
            "mean_shift": np.asarray(shift.mean_shift).tolist(),
            "variance_ratio": np.asarray(shift.variance_ratio).tolist(),
        }
        for case, shift in zip(cases, shifts, strict=True)
    }
    mc: dict[str, dict[str, list[tuple[float, float]]]] = {
        case: {"mean_shift": [], "variance_ratio": []} for case in closed
    }
    for i, rate in enumerate(cfg.rates):
        classic, inverted, test_a, test_b, test_c = _bn_samples(
            jax.random.fold_in(key, i), rate, cfg.bn_mean, cfg.bn_std, cfg.plot_samples
        )
        for case, train, test in (
            ("classic_unscaled", classic, test_a),
            ("classic", classic, test_b),
            ("inverted", inverted, test_c),
        ):
            mc[case]["mean_shift"].append(_group_stat(_shift, (train, test), cfg.num_groups))
            mc[case]["variance_ratio"].append(_group_stat(_ratio, (train, test), cfg.num_groups))
    return {"rates": list(cfg.rates), "fine": np.asarray(fine).tolist(), "closed": closed, "mc": mc}


# --- Run and write ------------------------------------------------------------------


def run_theory_checks(cfg: TheoryChecksConfig) -> dict[str, Any]:
    """Runs every check; returns ``{"rows", "extras", "jensen_curves", "bn_curves"}``."""
    keys = jax.random.split(jax.random.key(cfg.seed), 8)
    rows = linear_unit_rows(cfg, keys[0])
    regression, regression_extras = regression_rows(cfg, keys[1])
    rows += regression
    rows += jensen_rows(cfg, keys[2])
    rows += active_paths_rows(cfg, keys[3])
    rows += batchnorm_rows(cfg, keys[4])
    mlp, mlp_extras = bn_mlp_rows(cfg, keys[5])
    rows += mlp
    result: dict[str, Any] = {
        "rows": rows,
        "extras": {"regression": regression_extras, "batchnorm_mlp": mlp_extras},
    }
    if cfg.plots:
        result["jensen_curves"] = jensen_curves(cfg, keys[6])
        result["bn_curves"] = bn_curves(cfg, keys[7])
    return result


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return f"{value:.5g}"


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| claim | function | closed form | estimate | std. err. | z | criterion | pass |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        claim = r["claim"] + (f" ({r['note']})" if r["note"] else "")
        cells = (
            claim,
            f"`theory.{r['function']}`",
            _fmt(r["closed_form"]),
            _fmt(r["estimate"]),
            _fmt(r["std_err"]),
            _fmt(r["z"]),
            r["criterion"],
            "pass" if r["passed"] else "**FAIL**",
        )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_jensen(curves: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, values) in enumerate(curves["closed"].items()):
        color = f"C{i}"
        ax.plot(curves["fine"], values, color=color, label=f"{name}: closed form")
        estimate, se = curves["mc"][name]
        ax.errorbar(curves["rates"], estimate, yerr=2 * np.asarray(se), fmt="o", color=color,
                    ms=4, capsize=2, label=f"{name}: MC (+-2 s.e.)")  # fmt: skip
    ax.set_xlabel("drop rate p")
    ax.set_ylabel("E[phi(z_drop)] - phi(E z_drop)")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_title("Jensen gap of inverted dropout")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_bn(curves: dict, mlp_rows: list[dict], rate: float, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "classic_unscaled": "(a) classic, unscaled at test",
        "classic": "(b) classic, x q at test",
        "inverted": "(c) inverted",
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, (case, label) in enumerate(labels.items()):
        for ax, stat in zip(axes, ("mean_shift", "variance_ratio"), strict=True):
            style, z = ("--", 3) if case == "classic" else ("-", 2)
            ax.plot(curves["fine"], curves["closed"][case][stat], style, color=f"C{i}",
                    label=f"{label}: formula", zorder=z)  # fmt: skip
            est, se = np.asarray(curves["mc"][case][stat]).T
            ax.errorbar(curves["rates"], est, yerr=2 * se, fmt="o", color=f"C{i}", ms=4,
                        capsize=2, label=f"{label}: MC")  # fmt: skip
    for r in mlp_rows:
        ax = axes[0] if "shift" in r["claim"] else axes[1]
        ax.plot([rate], [r["estimate"]], "*", color="k", ms=10, zorder=5)
        ax.plot([rate], [r["closed_form"]], "x", color="r", ms=8, zorder=6)
    axes[0].plot([], [], "*", color="k", label="trained MLP: measured (mean over units)")
    axes[0].plot([], [], "x", color="r", label="trained MLP: formula from its units' moments")
    axes[0].set_ylabel("BN output mean shift (test - train), gamma = 1")
    axes[1].set_ylabel("BN output variance ratio (test / train)")
    for ax in axes:
        ax.set_xlabel("drop rate p")
        ax.legend(fontsize=7)
    fig.suptitle("BatchNorm after dropout: test-time shift (Li et al. 2019)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_theory_outputs(
    result: dict[str, Any], cfg: TheoryChecksConfig, output_dir: str | pathlib.Path, meta: dict
) -> dict[str, pathlib.Path]:
    """Writes ``table.md``, ``results.json`` and (if computed) the two PNG plots.

    Both files record their provenance (:mod:`lab.provenance`; no data set: every draw
    comes from the config's seeds).

    Returns:
      The written paths by name.
    """
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "table.md", "json": out / "results.json"}
    record = provenance.of_run(cfg, None)
    table = markdown_table(result["rows"]).rstrip("\n") + "\n"
    paths["table"].write_text(table + "\n" + provenance.footer(record))
    from omegaconf import OmegaConf

    payload = {"meta": meta, "config": OmegaConf.to_container(OmegaConf.structured(cfg))}
    payload["provenance"] = record
    payload.update(result)
    paths["json"].write_text(json.dumps(payload, indent=1, default=float))
    if "jensen_curves" in result:
        paths["jensen_plot"] = out / "jensen_gap.png"
        _plot_jensen(result["jensen_curves"], paths["jensen_plot"])
        paths["bn_plot"] = out / "bn_shift.png"
        mlp_rows = [r for r in result["rows"] if r["claim"].startswith("trained MLP")]
        _plot_bn(result["bn_curves"], mlp_rows, cfg.rate, paths["bn_plot"])
    return paths
