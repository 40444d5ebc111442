r"""Linear regression with inverted dropout on its inputs, :math:`X \in \mathbb{R}^{n \times d}`.

The expected loss is a generalized ridge problem,

.. math::
    E[L_\text{drop}(w)] = L(w) + \frac{p}{2nq} \sum_{ij} w_j^2 x_{ij}^2, \quad
    H = \frac{X^\top X}{n} + \frac{p}{q} \operatorname{diag}\Big(\frac{X^\top X}{n}\Big),

whose minimizer :math:`w^*` is where the expected gradient vanishes and where SGD with
a fresh mask per step converges. The ambiguity decomposition of T dropout sub-networks,
:math:`E_\text{ind} - E_\text{ens} = \frac{T - 1}{2T} D`, is checked on the fitted model.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dropout_lab import theory
from dropout_lab.ops import dropout
from lab.theory_checks.estimate import (
    distance_row,
    identity_row,
    mean_and_std_err,
    mean_row,
    sample,
    z_row,
)
from lab.theory_config import TheoryChecksConfig

PATH_POINTS = 100  # about this many points of the SGD distance path go to the JSON extras


def regression_data(cfg: TheoryChecksConfig, key: jax.Array) -> tuple[jax.Array, ...]:
    """Gaussian inputs with unequal feature scales, linear targets with noise.

    Returns:
      ``(x, y, w_true)``: ``[n, d]``, ``[n]``, ``[d]``.
    """
    r = cfg.regression
    key_x, key_w, key_n = jax.random.split(key, 3)
    x = jax.random.normal(key_x, (r.num_examples, r.num_features))
    x = x * jnp.linspace(0.5, 2.0, r.num_features)  # unequal feature scales
    w_true = jax.random.normal(key_w, (r.num_features,))
    y = x @ w_true + r.noise * jax.random.normal(key_n, (r.num_examples,))
    return x, y, w_true


def dropout_loss(w: jax.Array, key: jax.Array, x: jax.Array, y: jax.Array, rate: float):
    r""":math:`L_\text{drop}(w) = \frac{1}{2n} \lVert y - \mathrm{dropout}(X) w \rVert^2`."""
    return 0.5 * jnp.mean(jnp.square(y - dropout(key, x, rate) @ w))


def _dropped_gram(key: jax.Array, x: jax.Array, rate: float) -> tuple[jax.Array, jax.Array]:
    r"""Trace and off-diagonal sum of :math:`\tilde X^\top \tilde X / n`, the loss's Hessian."""
    x_drop = dropout(key, x, rate)
    gram = x_drop.T @ x_drop / x.shape[0]
    return jnp.trace(gram), jnp.sum(gram) - jnp.trace(gram)


def _dropped_gradient(key, x, y, w, rate: float) -> jax.Array:
    r""":math:`\nabla L_\text{drop}(w) = -\tilde X^\top (y - \tilde X w) / n`."""
    x_drop = dropout(key, x, rate)
    return -x_drop.T @ (y - x_drop @ w) / x.shape[0]


def train_dropout_regression(cfg: TheoryChecksConfig, x, y, key) -> tuple[jax.Array, jax.Array]:
    """SGD with a fresh inverted-dropout mask on the inputs at every step.

    Returns:
      ``(w_avg, w_path)``: the Polyak-Ruppert average of the iterates after
      ``average_from`` of the run, and every iterate ``[num_steps, d]``.
    """
    r = cfg.regression
    schedule = optax.cosine_decay_schedule(r.learning_rate, r.num_steps, alpha=0.01)
    optimizer = optax.sgd(schedule)

    def step(carry, k):
        w, state = carry
        updates, state = optimizer.update(jax.grad(dropout_loss)(w, k, x, y, cfg.rate), state)
        w = optax.apply_updates(w, updates)
        return (w, state), w

    w0 = jnp.zeros(x.shape[1])
    keys = jax.random.split(key, r.num_steps)
    _, path = jax.jit(lambda ks: lax.scan(step, (w0, optimizer.init(w0)), ks))(keys)
    start = int(r.average_from * r.num_steps)
    return path[start:].mean(axis=0), path


def _closed_forms(cfg: TheoryChecksConfig, key_data, key_w, key_ens) -> dict[str, Any]:
    """Data, minimizer, loss and Hessian at a point, and T sub-networks' ambiguity.

    Returns:
      The closed forms and what the Monte Carlo rows need, by name (the ``fit`` of
      the row functions below).
    """
    rate = cfg.rate
    x, y, w_true = regression_data(cfg, key_data)
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


def _loss_rows(cfg: TheoryChecksConfig, fit: dict, key_loss, key_h) -> list[dict]:
    """Expected loss at ``w_eval``, the Hessian's trace and off-diagonal sum, autodiff."""
    x, y, rate, hessian = fit["x"], fit["y"], cfg.rate, fit["hessian"]
    losses = sample(lambda k: dropout_loss(fit["w_eval"], k, x, y, rate), key_loss, cfg.num_samples)
    traces, off_sums = sample(lambda k: _dropped_gram(k, x, rate), key_h, cfg.num_samples)
    return [
        mean_row(cfg, "E[L_drop(w)] = L(w) + p/(2nq) sum w_j^2 x_ij^2",
                 "dropout_regression_loss", fit["loss"], losses),
        mean_row(cfg, "Hessian trace: tr(X'X/n) (1 + p/q)", "dropout_regression_hessian",
                 np.trace(hessian), traces),
        mean_row(cfg, "Hessian off-diagonal sum: unchanged by dropout",
                 "dropout_regression_hessian", np.sum(hessian) - np.trace(hessian), off_sums),
        distance_row("Hessian = jax.hessian of the expected loss", "dropout_regression_hessian",
                     float(fit["hessian_err"]), cfg.exact_tolerance, "max |difference| / max |H|"),
    ]  # fmt: skip


def _relative_distance(w: Any, w_star: Any) -> float:
    r""":math:`\lVert w - w^* \rVert / \lVert w^* \rVert`."""
    norm_star = float(np.linalg.norm(w_star))
    return float(np.linalg.norm(np.asarray(w) - np.asarray(w_star))) / norm_star


def _minimizer_rows(cfg: TheoryChecksConfig, fit: dict, key_g, w_sgd) -> list[dict]:
    """The expected gradient at ``w*`` (worst coordinate), SGD's distance to ``w*``."""
    x, y, w_star = fit["x"], fit["y"], fit["w_star"]
    grads = sample(lambda k: _dropped_gradient(k, x, y, w_star, cfg.rate), key_g, cfg.num_samples)
    mean, std_err = mean_and_std_err(grads)
    worst = int(np.argmax(np.abs(mean) / std_err))
    ols_note = f"OLS is {_relative_distance(fit['w_ols'], w_star):.3f} away"
    return [
        z_row(f"E[grad L_drop(w*)] = 0 at the generalized ridge w* (coordinate {worst})",
              "dropout_regression_minimizer", 0.0, mean[worst], std_err[worst], cfg.z_threshold,
              f"largest |z| of {mean.shape[0]} coordinates"),
        distance_row("SGD with dropout converges to w*: |w_sgd - w*| / |w*|",
                     "dropout_regression_minimizer", _relative_distance(w_sgd, w_star),
                     cfg.regression.tolerance,
                     f"{ols_note}: dropout's fixed point is the ridge solution"),
    ]  # fmt: skip


def _disagreement(votes: np.ndarray) -> Any:
    """Mean over ordered pairs ``t != s`` of the share of examples where votes differ."""
    num_t = votes.shape[0]
    return np.mean(
        [np.mean(votes[t] != votes[s]) for t in range(num_t) for s in range(num_t) if t != s]
    )


def _ambiguity_rows(cfg: TheoryChecksConfig, fit: dict) -> list[dict]:
    """The ambiguity identity of T sub-networks; diversity of 0/1 votes = disagreement."""
    amb, votes = fit["amb"], np.asarray(fit["votes"])
    num_t = votes.shape[0]
    return [
        identity_row(
            f"ambiguity identity, T={num_t} sub-networks: E_ind - E_ens = ((T-1)/(2T)) D",
            "ambiguity_decomposition", amb.ambiguity, amb.individual_error - amb.ensemble_error,
            cfg.exact_tolerance),
        identity_row("0/1 predictions: D = pairwise disagreement rate", "ambiguity_decomposition",
                     _disagreement(votes), fit["amb01"].diversity, cfg.exact_tolerance),
    ]  # fmt: skip


def _sgd_extras(cfg: TheoryChecksConfig, fit: dict, w_sgd, w_path) -> dict[str, list]:
    """The three solutions and the SGD iterates' relative distance to ``w*`` (thinned)."""
    w_star = np.asarray(fit["w_star"])
    norm_star = float(np.linalg.norm(w_star))
    path = np.linalg.norm(np.asarray(w_path) - w_star, axis=1) / norm_star
    return {
        "w_star": w_star.tolist(),
        "w_sgd": np.asarray(w_sgd).tolist(),
        "w_ols": np.asarray(fit["w_ols"]).tolist(),
        "sgd_distance_path": path[:: max(1, cfg.regression.num_steps // PATH_POINTS)].tolist(),
    }


def regression_rows(cfg: TheoryChecksConfig, key: jax.Array) -> tuple[list[dict], dict]:
    """Expected loss, Hessian, minimizer, SGD convergence, ambiguity identities.

    Returns:
      ``(rows, extras)``: extras hold ``w*``, the SGD and OLS solutions and SGD's path.
    """
    key_data, key_w, key_loss, key_h, key_g, key_sgd, key_ens = jax.random.split(key, 7)
    fit = jax.jit(lambda *keys: _closed_forms(cfg, *keys))(key_data, key_w, key_ens)
    w_sgd, w_path = train_dropout_regression(cfg, fit["x"], fit["y"], key_sgd)
    rows = [
        *_loss_rows(cfg, fit, key_loss, key_h),
        *_minimizer_rows(cfg, fit, key_g, w_sgd),
        *_ambiguity_rows(cfg, fit),
    ]
    return rows, _sgd_extras(cfg, fit, w_sgd, w_path)
