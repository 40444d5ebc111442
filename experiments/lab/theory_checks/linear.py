r"""One linear unit :math:`z = w \cdot \mathrm{dropout}(x)`, and paths through a network.

With keep probability :math:`q = 1 - p`:

.. math::
    E[z] = w \cdot x, \quad \mathrm{Var}[z] = \frac{p}{q} \sum_i (w_i x_i)^2, \quad
    \mathrm{Var}[\bar z_T] = \frac{1}{T} \mathrm{Var}[z], \quad
    E[E_\text{ind} - E_\text{ens}] = \frac{T - 1}{T} \mathrm{Var}[z],

classic dropout (no scaling) has :math:`E[z] = q\, w \cdot x`, and a network of widths
:math:`(d_0, h_1, \dots, h_L, d_{L+1})` keeps :math:`N_\text{total}\, q^L` of its
input-output paths on average.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dropout_lab import theory
from dropout_lab.ops import dropout
from lab.theory_checks.estimate import mean_row, sample, sample_var, stat_row
from lab.theory_config import TheoryChecksConfig


def _closed_forms(w: jax.Array, x: jax.Array, rate: float, num_t: int) -> tuple:
    """The unit's closed forms, in the order of the rows."""
    return (
        theory.preactivation_mean(w, x, rate),
        theory.preactivation_mean(w, x, rate, mode="classic"),
        theory.preactivation_variance(w, x, rate),
        theory.mc_dropout_variance(w, x, rate, num_t),
        theory.expected_ambiguity(w, x, rate, num_t),
    )


def _ambiguity(passes: jax.Array) -> jax.Array:
    """:math:`E_\\text{ind} - E_\\text{ens}` of T passes ``[T]`` (the target is 0)."""
    a = theory.ambiguity_decomposition(passes[:, None], jnp.zeros(1))
    return a.individual_error - a.ensemble_error


def linear_unit_rows(cfg: TheoryChecksConfig, key: jax.Array) -> list[dict]:
    """Expected pre-activation, single-pass and T-pass variance, expected ambiguity."""
    key_x, key_w, key_inv, key_cl = jax.random.split(key, 4)
    x = jax.random.normal(key_x, (cfg.num_inputs,))
    w = jax.random.normal(key_w, (cfg.num_inputs,))
    rate, num_t, num = cfg.rate, cfg.ensemble_size, cfg.num_samples
    z = sample(lambda k: jnp.dot(w, dropout(k, x, rate)), key_inv, num)
    z_classic = sample(lambda k: jnp.dot(w, dropout(k, x, rate, mode="classic")), key_cl, num)
    closed, ambiguity, averages = jax.jit(
        lambda w, x, passes: (
            _closed_forms(w, x, rate, num_t),
            jax.vmap(_ambiguity)(passes),
            passes.mean(axis=1),
        )
    )(w, x, z.reshape(-1, num_t))
    return [
        mean_row(cfg, "inverted: E[w.dropout(x)] = w.x", "preactivation_mean", closed[0], z),
        mean_row(cfg, "classic: E[w.(m*x)] = q w.x", "preactivation_mean(mode='classic')",
                 closed[1], z_classic),
        stat_row(cfg, "one pass: Var = (p/q) sum (w_i x_i)^2", "preactivation_variance",
                 closed[2], sample_var, (z,)),
        stat_row(cfg, f"MC dropout, T={num_t} passes: Var = (1/T)(p/q) sum (w_i x_i)^2",
                 "mc_dropout_variance", closed[3], sample_var, (averages,)),
        mean_row(cfg, f"T={num_t} passes: E[E_ind - E_ens] = ((T-1)/T) Var",
                 "expected_ambiguity", closed[4], ambiguity),
    ]  # fmt: skip


def _active_paths(key: jax.Array, widths: tuple[int, ...], rate: float) -> jax.Array:
    r"""Active paths of one draw of masks: :math:`d_0\, d_{L+1} \prod_l (\text{kept in } l)`."""
    hidden = widths[1:-1]
    layer_keys = jax.random.split(key, len(hidden))
    kept = [
        jnp.sum(dropout(layer_keys[i], jnp.ones(h), rate, mode="classic") != 0)
        for i, h in enumerate(hidden)
    ]
    return widths[0] * widths[-1] * jnp.asarray(math.prod(kept)).astype(jnp.float32)


def active_paths_rows(cfg: TheoryChecksConfig, key: jax.Array) -> list[dict]:
    """Expected active input-output paths: N_total q^L."""
    widths = tuple(int(width) for width in cfg.widths)
    paths = sample(lambda k: _active_paths(k, widths, cfg.rate), key, cfg.num_samples)
    return [
        mean_row(
            cfg,
            f"active paths, widths {list(widths)}: N_total q^L",
            "expected_active_paths",
            theory.expected_active_paths(widths, cfg.rate),
            paths,
        )
    ]
