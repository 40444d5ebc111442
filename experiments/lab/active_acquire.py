"""How a round of :mod:`lab.active` acquires: consistent MC passes, scores, selection.

- :func:`consistent_fn`: one MC dropout pass whose masks every pool point shares.
- :func:`reduction`: the scores of one chunk of passes, one column per score.
- :func:`selector`: a score heuristic's rule (uniform, top-k with random ties, or
  PowerBALD's stochastic batch), all from ``dropout_lab.acquisition``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dropout_lab import acquisition
from lab.active_config import HEURISTICS, ActiveSection
from lab.fit import Setup

SCORES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "bald": acquisition.bald,
    "variation_ratio": acquisition.variation_ratio,
    "max_entropy": acquisition.max_entropy,
    "mean_std": acquisition.mean_std,
}


def consistent_fn(setup: Setup, params: Any, hp: dict) -> Callable:
    """``fn(key, x_chunk) -> logits``: one pass whose masks every pool point shares.

    Each point is a batch of one, vmapped with the key unbatched: its ``[1, features]``
    masks come from the key alone, so pass ``t`` is one sub-network for the whole pool
    (consistent MC dropout, Kirsch et al. 2019) without a layer of its own.
    """

    def fn(key: jax.Array, x_chunk: jax.Array) -> jax.Array:
        def one(x):
            return setup.model.apply(
                {"params": params}, x[None], hp["rate"], hp["input_rate"],
                deterministic=False, rngs={"dropout": key},
            )[0]  # fmt: skip

        return jax.vmap(one)(x_chunk)

    return fn


def top_random_ties(key: jax.Array, s: jax.Array, k: int, available: jax.Array) -> jax.Array:
    """The top-``k`` available scores, ties broken uniformly (not by index).

    ``dl.acquisition.top_batch`` on a random permutation of the pool: variation ratios
    take values on a grid of ``1/T``, so ties are common.
    """
    order = jnp.argsort(jax.random.bits(key, s.shape))
    return order[acquisition.top_batch(s[order], k, pool_mask=available[order])]


def selector(name: str, score_names: tuple[str, ...], a: ActiveSection) -> Callable:
    """``select(key, scores [N, K], available [N]) -> [acquire]`` of a score heuristic.

    ``scores`` holds the pool's ``score_names`` (:func:`reduction`), one per column.
    """
    score, rule = HEURISTICS[name]
    column = score_names.index(score) if score is not None else 0
    k = a.acquire

    def select(key: jax.Array, pool_scores: jax.Array, available: jax.Array) -> jax.Array:
        s = pool_scores[:, column]
        if rule == "random":
            zeros = jnp.zeros_like(s)
            return acquisition.stochastic_batch(key, zeros, k, mode="softmax", pool_mask=available)
        if rule == "power":
            return acquisition.stochastic_batch(
                key, s, k, mode="power", beta=a.power_beta, pool_mask=available
            )
        return top_random_ties(key, s, k, available)

    return select


def reduction(score_names: tuple[str, ...]) -> Callable[[jax.Array], jax.Array]:
    """``reduce(probs_t [T, n, C]) -> [n, K]``: the ``score_names`` of every point.

    With no score (Random alone) one column of zeros.
    """

    def reduce(probs_t: jax.Array) -> jax.Array:
        if not score_names:
            return jnp.zeros((probs_t.shape[1], 1), probs_t.dtype)
        return jnp.stack([SCORES[n](probs_t) for n in score_names], axis=-1)

    return reduce
