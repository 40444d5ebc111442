r"""Jensen gaps of inverted dropout, :math:`E[\phi(z)] - \phi(E[z])`, in the table and a plot.

For one input, :math:`\phi(z) = z^2` has the gap :math:`x^2 p / q` and a ReLU with bias
:math:`b` has :math:`q\,\mathrm{relu}(x/q + b) + p\,\mathrm{relu}(b) - \mathrm{relu}(x + b)`
(0 without bias). A ReLU of several inputs has no closed form; its gap is enumerated
exactly over all :math:`2^n` masks (:func:`dropout_lab.theory.exact_mask_expectation`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dropout_lab import theory
from lab.theory_checks.estimate import fine_rates, z_row
from lab.theory_config import TheoryChecksConfig

RELU_UNIT_KEY = 7  # fold_in of the root key: the several-input ReLU unit
PLOT_KEYS = 10  # fold_in of the plot key: first of the plot's Monte Carlo keys


class Gap(NamedTuple):
    r"""A Jensen gap :math:`E[\phi(w \cdot \mathrm{dropout}(x) + b)] - \phi(w \cdot x + b)`."""

    phi: Callable[[jax.Array], jax.Array]
    inputs: jax.Array  # x
    w: jax.Array | None  # None: all ones
    bias: float


def relu_unit(cfg: TheoryChecksConfig) -> tuple[jax.Array, jax.Array]:
    """Inputs and weights of the several-input ReLU unit (the same in table and plot)."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), RELU_UNIT_KEY)
    key_x, key_w = jax.random.split(key)
    return (
        jax.random.normal(key_x, (cfg.num_inputs,)),
        jax.random.normal(key_w, (cfg.num_inputs,)),
    )


def relu_gap_exact(x: jax.Array, w: jax.Array, rate) -> jax.Array:
    """The unit's gap, enumerating every mask."""
    relu = jax.nn.relu
    exact = theory.exact_mask_expectation(lambda xd: relu(jnp.dot(w, xd)), x, rate)
    return exact - relu(jnp.dot(w, x))


def jensen_rows(cfg: TheoryChecksConfig, key: jax.Array) -> list[dict]:
    """Jensen gaps: z^2 and ReLU of one input (closed forms), ReLU of several (exact)."""
    rate, one, relu = cfg.rate, jnp.array([1.5]), jax.nn.relu
    x, w = relu_unit(cfg)
    closed = jax.jit(
        lambda x, w: (
            theory.jensen_gap_square(1.5, rate),
            theory.jensen_gap_relu(1.5, rate),
            theory.jensen_gap_relu(1.5, rate, -0.5),
            relu_gap_exact(x, w, rate),
        )
    )(x, w)
    checks = (
        ("z^2, one input x=1.5: gap = x^2 p/q", "jensen_gap_square",
         Gap(jnp.square, one, None, 0.0)),
        ("ReLU, one input x=1.5, no bias: gap = 0", "jensen_gap_relu", Gap(relu, one, None, 0.0)),
        ("ReLU, one input x=1.5, bias b=-0.5: q relu(x/q+b) + p relu(b) - relu(x+b)",
         "jensen_gap_relu", Gap(relu, one, None, -0.5)),
        (f"ReLU of {cfg.num_inputs} inputs, no bias: gap by exact enumeration (not 0)",
         "exact_mask_expectation", Gap(relu, x, w, 0.0)),
    )  # fmt: skip
    gap_mc = jax.jit(theory.jensen_gap_mc, static_argnums=(1,), static_argnames=("num_samples",))
    keys = jax.random.split(key, len(checks))
    rows = []
    for (claim, function, gap), exact, k in zip(checks, closed, keys, strict=True):
        estimate, std_err = gap_mc(
            k, gap.phi, gap.inputs, rate, num_samples=cfg.num_samples, w=gap.w, bias=gap.bias
        )
        rows.append(z_row(claim, function, exact, estimate, std_err, cfg.z_threshold))
    return rows


def jensen_curves(cfg: TheoryChecksConfig, key: jax.Array) -> dict[str, Any]:
    """Jensen gaps over ``rates``: closed forms (and exact enumeration) with MC points.

    Returns:
      ``{"rates", "fine", "closed", "mc"}``: the Monte Carlo rates, a fine grid of
      rates, the closed forms on it by curve name, and ``(estimates, std_errs)`` at
      ``rates`` by curve name.
    """
    rates = jnp.asarray(cfg.rates)
    fine = fine_rates(cfg)
    x, w = relu_unit(cfg)
    closed = jax.jit(
        jax.vmap(
            lambda r: (
                theory.jensen_gap_square(1.0, r),
                theory.jensen_gap_relu(1.5, r, -0.5),
                relu_gap_exact(x, w, r),
            )
        )
    )(fine)
    gaps = {
        "z^2, x=1": Gap(jnp.square, jnp.ones(1), None, 0.0),
        "ReLU, x=1.5, b=-0.5": Gap(jax.nn.relu, jnp.array([1.5]), None, -0.5),
        f"ReLU of {cfg.num_inputs} inputs (exact)": Gap(jax.nn.relu, x, w, 0.0),
    }
    mc = {}
    for i, (name, gap) in enumerate(gaps.items()):
        gap_at = functools.partial(
            theory.jensen_gap_mc, jax.random.fold_in(key, PLOT_KEYS + i), gap.phi, gap.inputs,
            num_samples=cfg.plot_samples, w=gap.w, bias=gap.bias,
        )  # fmt: skip
        estimate, std_err = jax.jit(jax.vmap(gap_at))(rates)
        mc[name] = (np.asarray(estimate).tolist(), np.asarray(std_err).tolist())
    return {
        "rates": np.asarray(rates).tolist(),
        "fine": np.asarray(fine).tolist(),
        "closed": {name: np.asarray(v).tolist() for name, v in zip(gaps, closed, strict=True)},
        "mc": mc,
    }
