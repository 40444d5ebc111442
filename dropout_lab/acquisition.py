r"""Active learning on MC dropout: acquisition scores and batch selection.

Scores take sampled class probabilities ``probs_t [T, N, C]`` of the pool (``T`` MC
passes, ``N`` pool points, ``C`` classes), e.g. from ``dl.mc.sample(...,
transform=jax.nn.softmax)`` or chunk by chunk with :func:`score_pool`, and return one
value per point ``[N]``: **higher means acquire first**. With :math:`p_t = p(y \mid x,
\omega_t)` the probabilities of pass :math:`t` and :math:`\bar p = \frac1T \sum_t p_t`:

========================  =================================================
``bald``                  :math:`H[\bar p] - \frac1T \sum_t H[p_t]`
``max_entropy``           :math:`H[\bar p]`
``variation_ratio``       :math:`1 - \frac1T \max_c \#\{t : \arg\max p_t = c\}`
``mean_std``              :math:`\frac1C \sum_c \sqrt{\operatorname{Var}_t p_{t,c}}`
``margin``                :math:`1 - (\bar p_{(1)} - \bar p_{(2)})`
``least_confidence``      :math:`1 - \bar p_{(1)}`
========================  =================================================

Selection returns pool indices ``[batch_size]``: :func:`top_batch` (the top-k of a
score), :func:`stochastic_batch` (Gumbel top-k sampling of a score, Kirsch et al. 2023)
and :func:`batch_bald` (greedy joint mutual information, Kirsch et al. 2019). Each takes
an optional boolean ``pool_mask [N]`` (True where a point may be acquired), so an
active-learning round keeps static shapes: the pool stays ``[N]`` and acquired points
are masked out, which lets one compiled round be vmapped over seeds and heuristics.
Random acquisition is ``stochastic_batch(key, jnp.zeros(N), k, mode="softmax")``.

BatchBALD needs the same :math:`T` sub-networks for every pool point ("consistent" MC
dropout): see :func:`dropout_lab.mc.sample_pool`.

References:
  Houlsby, Huszár, Ghahramani & Lengyel, "Bayesian Active Learning for
  Classification and Preference Learning", arXiv 1112.5745, 2011.
  Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data", ICML 2017.
  Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch Acquisition
  for Deep Bayesian Active Learning", NeurIPS 2019.
  Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, "Stochastic Batch
  Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks, mc, uncertainty

__all__ = [
    "bald",
    "batch_bald",
    "least_confidence",
    "margin",
    "max_entropy",
    "mean_std",
    "score_pool",
    "stochastic_batch",
    "top_batch",
    "variation_ratio",
]

_MODES = ("power", "softmax", "softrank")


def _check_probs_t(probs_t: ArrayLike) -> jax.Array:
    """``probs_t`` as a float array ``[T, N, ..., C]`` of distributions (when concrete)."""
    probs_t = _checks.check_float_array(probs_t, "probs_t")
    if probs_t.ndim < 3:
        raise ValueError(
            f"probs_t must be [num_samples, pool, ..., num_classes], got shape {probs_t.shape}; "
            "stack the MC passes first, e.g. dl.mc.sample(fn, key, T, transform=jax.nn.softmax)."
        )
    return _checks.check_probs(probs_t, "probs_t")


def bald(probs_t: ArrayLike) -> jax.Array:
    r"""BALD: mutual information between a point's label and the model parameters.

    .. math::
        \mathrm{BALD}(x) = H\big[\bar p(y \mid x)\big] - \frac1T \sum_{t=1}^T
        H\big[p(y \mid x, \omega_t)\big]

    the epistemic part of :func:`dropout_lab.uncertainty.classification` (one
    definition, reused): high where the passes disagree while each is confident.

    Args:
      probs_t: sampled probabilities ``[num_samples, pool, ..., num_classes]``.

    Returns:
      ``[pool, ...]``, in nats, non-negative.

    Raises:
      ValueError: ``probs_t`` has no sample axis or, concrete, is not a distribution.
      TypeError: ``probs_t`` is not floating point.

    References:
      Houlsby, Huszár, Ghahramani & Lengyel, "Bayesian Active Learning for
      Classification and Preference Learning", arXiv 1112.5745, 2011.
      Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data",
      ICML 2017.

    Examples:
      >>> import jax
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 5, 3)))
      >>> dl.acquisition.bald(probs_t).shape
      (5,)
    """
    return uncertainty.classification(probs_t).mutual_information


def max_entropy(probs_t: ArrayLike) -> jax.Array:
    r"""Max entropy: the entropy of the predictive distribution, :math:`H[\bar p]`.

    Total uncertainty, aleatoric and epistemic together (Shannon 1948; the "Max
    Entropy" acquisition of Gal et al. 2017).

    Args:
      probs_t: sampled probabilities ``[num_samples, pool, ..., num_classes]``.

    Returns:
      ``[pool, ...]``, in nats.

    Raises:
      ValueError: ``probs_t`` has no sample axis or, concrete, is not a distribution.
      TypeError: ``probs_t`` is not floating point.

    References:
      Shannon, "A Mathematical Theory of Communication", Bell System Technical
      Journal, 1948.
      Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data",
      ICML 2017.

    Examples:
      >>> import jax
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 5, 3)))
      >>> dl.acquisition.max_entropy(probs_t).shape
      (5,)
    """
    return uncertainty.classification(probs_t).predictive_entropy


def variation_ratio(probs_t: ArrayLike) -> jax.Array:
    r"""Variation ratio: the fraction of passes whose label is not the modal label.

    .. math::
        \mathrm{VR}(x) = 1 - \frac{f_m}{T},\qquad
        f_m = \max_c \#\{t : \arg\max_{c'} p_{t,c'} = c\}

    Freeman's (1965) variation ratio of the sampled labels, as computed in Gal et
    al.'s (2017) experiments; 0 when every pass predicts the same class, at most
    :math:`1 - 1/C`. Its values lie on the grid :math:`\{0, 1/T, \dots\}`, so ties
    are common: :func:`stochastic_batch` breaks them at random. (The variant on
    :math:`\bar p`, :math:`1 - \max_c \bar p_c`, is :func:`least_confidence`.)

    Args:
      probs_t: sampled probabilities ``[num_samples, pool, ..., num_classes]``.

    Returns:
      ``[pool, ...]`` in :math:`[0, 1 - 1/C]`.

    Raises:
      ValueError: ``probs_t`` has no sample axis or, concrete, is not a distribution.
      TypeError: ``probs_t`` is not floating point.

    References:
      Freeman, "Elementary Applied Statistics", Wiley, 1965.
      Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data",
      ICML 2017.

    Examples:
      >>> import jax
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 5, 3)))
      >>> dl.acquisition.variation_ratio(probs_t).shape
      (5,)
    """
    probs_t = _check_probs_t(probs_t)
    num_samples, num_classes = probs_t.shape[0], probs_t.shape[-1]
    votes = jax.nn.one_hot(jnp.argmax(probs_t, axis=-1), num_classes, dtype=jnp.int32)
    mode_count = jnp.max(jnp.sum(votes, axis=0), axis=-1)
    return (num_samples - mode_count).astype(_float_dtype(probs_t)) / num_samples


def mean_std(probs_t: ArrayLike) -> jax.Array:
    r"""Mean standard deviation of the class probabilities over the passes.

    .. math::
        \sigma(x) = \frac1C \sum_{c=1}^C \sqrt{\frac1T \sum_t p_{t,c}^2 - \bar p_c^2}

    (Kampffmeyer et al. 2016; Kendall et al. 2017), with the variance of
    :func:`dropout_lab.uncertainty.classification`.

    Args:
      probs_t: sampled probabilities ``[num_samples, pool, ..., num_classes]``.

    Returns:
      ``[pool, ...]``, non-negative.

    Raises:
      ValueError: ``probs_t`` has no sample axis or, concrete, is not a distribution.
      TypeError: ``probs_t`` is not floating point.

    References:
      Kampffmeyer, Salberg & Jenssen, "Semantic Segmentation of Small Objects and
      Modeling of Uncertainty in Urban Remote Sensing Images Using Deep Convolutional
      Neural Networks", CVPR Workshops 2016.
      Kendall, Badrinarayanan & Cipolla, "Bayesian SegNet: Model Uncertainty in Deep
      Convolutional Encoder-Decoder Architectures for Scene Understanding", BMVC 2017.

    Examples:
      >>> import jax
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 5, 3)))
      >>> dl.acquisition.mean_std(probs_t).shape
      (5,)
    """
    variance = uncertainty.classification(probs_t).variance
    return jnp.mean(jnp.sqrt(variance), axis=-1)


def margin(probs_t: ArrayLike) -> jax.Array:
    r"""Smallest margin: one minus the gap between the two most probable classes.

    .. math::
        \mathrm{margin}(x) = 1 - \big(\bar p_{(1)} - \bar p_{(2)}\big)

    where :math:`\bar p_{(1)} \ge \bar p_{(2)}` are the two largest entries of the
    predictive distribution; in [0, 1], 1 for a tie between the top two classes.

    Args:
      probs_t: sampled probabilities ``[num_samples, pool, ..., num_classes]``, at
        least two classes.

    Returns:
      ``[pool, ...]`` in [0, 1].

    Raises:
      ValueError: fewer than two classes, no sample axis, or (concrete) not a
        distribution.
      TypeError: ``probs_t`` is not floating point.

    References:
      Scheffer, Decomain & Wrobel, "Active Hidden Markov Models for Information
      Extraction", IDA 2001.

    Examples:
      >>> import jax
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 5, 3)))
      >>> dl.acquisition.margin(probs_t).shape
      (5,)
    """
    probs_t = _check_probs_t(probs_t)
    if probs_t.shape[-1] < 2:
        raise ValueError(f"margin needs at least two classes, got {probs_t.shape[-1]}.")
    top2, _ = jax.lax.top_k(jnp.mean(probs_t, axis=0), 2)
    return 1 - (top2[..., 0] - top2[..., 1])


def least_confidence(probs_t: ArrayLike) -> jax.Array:
    r"""Least confidence: one minus the largest predictive probability.

    .. math::
        \mathrm{LC}(x) = 1 - \max_c \bar p_c

    Args:
      probs_t: sampled probabilities ``[num_samples, pool, ..., num_classes]``.

    Returns:
      ``[pool, ...]`` in :math:`[0, 1 - 1/C]`.

    Raises:
      ValueError: ``probs_t`` has no sample axis or, concrete, is not a distribution.
      TypeError: ``probs_t`` is not floating point.

    References:
      Culotta & McCallum, "Reducing Labeling Effort for Structured Prediction Tasks",
      AAAI 2005.
      Settles, "Active Learning Literature Survey", University of Wisconsin-Madison
      Computer Sciences Technical Report 1648, 2009.

    Examples:
      >>> import jax
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 5, 3)))
      >>> dl.acquisition.least_confidence(probs_t).shape
      (5,)
    """
    return 1 - jnp.max(jnp.mean(_check_probs_t(probs_t), axis=0), axis=-1)


def score_pool(
    score_fn: Callable[[jax.Array], jax.Array],
    fn: Callable[[jax.Array, Any], Any],
    key: ArrayLike,
    x_pool: Any,
    num_samples: int,
    *,
    pool_chunk_size: int | None = None,
    chunk_size: int | None = None,
    transform: Callable[[Any], Any] | None = jax.nn.softmax,
) -> jax.Array:
    r"""Scores a pool chunk by chunk: memory set by the chunk size, not the pool size.

    For every chunk of ``pool_chunk_size`` points, ``num_samples`` passes
    ``transform(fn(k_t, x_chunk))`` are stacked to ``probs_t [T, n, C]`` and reduced
    by ``score_fn`` to ``[n]``; only the scores ``[N]`` are kept. This is
    :func:`dropout_lab.mc.sample_pool` with ``reduce=score_fn``: every chunk gets the
    same keys :math:`k_1, \dots, k_T`, so with masks shared over the batch axis
    (``broadcast_dims=(0,)``) each pass is one sub-network for the whole pool.

    Args:
      score_fn: ``[T, n, C] -> [n]``, e.g. :func:`bald`.
      fn: ``fn(key, x_chunk)``, e.g. ``lambda k, x: model.apply(params, x,
        deterministic=False, rngs={"dropout": k})`` (logits ``[n, C]``).
      key: a PRNG key, typed or legacy.
      x_pool: the pool ``[N, ...]`` (array or pytree with a common leading axis).
      num_samples: number of MC passes ``T``.
      pool_chunk_size: pool points per chunk; ``None`` scores the pool at once.
      chunk_size: passes evaluated together within a chunk.
      transform: applied to each pass, ``jax.nn.softmax`` by default (for logits).

    Returns:
      Scores ``[N]``.

    Raises:
      ValueError: bad counts or pool shapes (see :func:`dropout_lab.mc.sample_pool`).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> w = jax.random.normal(jax.random.key(1), (4, 3))
      >>> fn = lambda k, x: dl.dropout(k, x, 0.5, broadcast_dims=(0,)) @ w
      >>> x_pool = jax.random.normal(jax.random.key(2), (100, 4))
      >>> scores = dl.acquisition.score_pool(
      ...     dl.acquisition.bald, fn, jax.random.key(0), x_pool, 16, pool_chunk_size=32)
      >>> scores.shape, scores.dtype
      ((100,), dtype('float32'))
    """
    return mc.sample_pool(
        fn,
        key,
        x_pool,
        num_samples,
        pool_chunk_size=pool_chunk_size,
        chunk_size=chunk_size,
        transform=transform,
        reduce=score_fn,
    )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive Python int, got {value!r}.")
    return value


def _float_dtype(x: jax.Array) -> Any:
    return jnp.promote_types(x.dtype, jnp.float32)


def _check_selection(num_points: int, batch_size: int, pool_mask: ArrayLike | None) -> jax.Array:
    """Validates ``batch_size`` and returns the mask of points that may be acquired."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValueError(f"batch_size must be a Python int, got {batch_size!r}.")
    if not 1 <= batch_size <= num_points:
        raise ValueError(f"batch_size={batch_size} must be in [1, {num_points}] (pool size).")
    if pool_mask is None:
        return jnp.ones((num_points,), bool)
    pool_mask = jnp.asarray(pool_mask)
    if pool_mask.shape != (num_points,):
        raise ValueError(f"pool_mask must have shape ({num_points},), got {pool_mask.shape}.")
    return pool_mask.astype(bool)


def _check_scores(scores: ArrayLike) -> jax.Array:
    scores = _checks.check_float_array(scores, "scores")
    if scores.ndim != 1:
        raise ValueError(f"scores must be one value per pool point [N], got {scores.shape}.")
    return scores


def top_batch(
    scores: ArrayLike, batch_size: int, *, pool_mask: ArrayLike | None = None
) -> jax.Array:
    r"""The ``batch_size`` available points of highest score (top-k acquisition).

    .. math::
        \mathcal{A} = \operatorname{arg\,top}_k \{s_i : i \text{ available}\}

    The usual batch acquisition with BALD & co.: each point scored alone. Ties go to
    the lower index. Among redundant points (near duplicates) it picks them all, the
    failure that :func:`batch_bald` and :func:`stochastic_batch` avoid.

    Args:
      scores: ``[N]``, higher = acquire first.
      batch_size: number of points ``k`` (a Python int, at most ``N``).
      pool_mask: booleans ``[N]``, True where a point may be acquired; ``None``: all.
        At least ``batch_size`` points must be available (else masked points fill
        the batch).

    Returns:
      Indices ``[batch_size]`` (int32), highest score first.

    Raises:
      ValueError: ``scores`` is not 1-D, or bad ``batch_size`` / ``pool_mask`` shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> s = jnp.array([0.1, 0.9, 0.5, 0.7])
      >>> dl.acquisition.top_batch(s, 2, pool_mask=jnp.array([1, 0, 1, 1], bool))
      Array([3, 2], dtype=int32)
    """
    scores = _check_scores(scores)
    mask = _check_selection(scores.shape[0], batch_size, pool_mask)
    return jax.lax.top_k(jnp.where(mask, scores, -jnp.inf), batch_size)[1].astype(jnp.int32)


def _log_weights(scores: jax.Array, mode: str, beta: jax.Array, mask: jax.Array) -> jax.Array:
    """Log of the unnormalised sampling weight of every point for ``mode``."""
    if mode == "softmax":
        return beta * scores
    if mode == "power":
        positive = scores > 0
        return jnp.where(positive, beta * jnp.log(jnp.where(positive, scores, 1)), -jnp.inf)
    # softrank: rank 1 = highest score among the available points.
    order = jnp.argsort(jnp.where(mask, scores, -jnp.inf), descending=True, stable=True)
    ranks = (
        jnp.zeros(scores.shape, scores.dtype)
        .at[order]
        .set(jnp.arange(1, scores.shape[0] + 1, dtype=scores.dtype))
    )
    return -beta * jnp.log(ranks)


def stochastic_batch(
    key: ArrayLike,
    scores: ArrayLike,
    batch_size: int,
    *,
    mode: str = "power",
    beta: ArrayLike = 1.0,
    pool_mask: ArrayLike | None = None,
) -> jax.Array:
    r"""Samples a batch without replacement with probabilities set by the scores.

    Kirsch et al. (2023) draw the batch from a distribution over points instead of
    taking the top-k, which avoids picking a cluster of redundant points at the cost
    of one sort. For point :math:`i` with score :math:`s_i` and rank :math:`r_i`
    (1 = best among the available points):

    .. math::
        \text{power: } p_i \propto s_i^\beta,\qquad
        \text{softmax: } p_i \propto e^{\beta s_i},\qquad
        \text{softrank: } p_i \propto r_i^{-\beta}

    The batch is the top-k of :math:`\log p_i + g_i` with i.i.d. Gumbel noise
    :math:`g_i` (the Gumbel-top-k trick, Kool et al. 2019): an exact sample of
    ``batch_size`` distinct points drawn one after another with probabilities
    proportional to :math:`p_i` among those left. ``beta`` sets the greediness:
    :math:`\beta \to \infty` gives the top-k, :math:`\beta = 0` uniform sampling.
    ``power`` needs non-negative scores (BALD, entropies); a point of score 0 has
    probability 0 and is taken only when fewer than ``batch_size`` points have a
    positive one. Random acquisition: ``mode="softmax"`` with all scores equal.

    Args:
      key: a PRNG key.
      scores: ``[N]``, higher = acquire first (e.g. :func:`bald`).
      batch_size: number of points ``k`` (a Python int, at most ``N``).
      mode: ``"power"`` (PowerBALD with BALD scores), ``"softmax"`` or ``"softrank"``.
      beta: inverse temperature :math:`\beta \ge 0` (may be traced, e.g. vmapped).
      pool_mask: booleans ``[N]``, True where a point may be acquired; ``None``: all.
        Masked points are never taken while ``batch_size`` points are available.

    Returns:
      Distinct indices ``[batch_size]`` (int32), in the order drawn.

    Raises:
      ValueError: an unknown ``mode``, ``scores`` not 1-D, bad ``batch_size`` or mask.
      TypeError: ``key`` is not a PRNG key.

    References:
      Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, "Stochastic
      Batch Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023.
      Kool, van Hoof & Welling, "Stochastic Beams and Where to Find Them: The
      Gumbel-Top-k Trick for Sampling Sequences Without Replacement", ICML 2019.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> s = jnp.linspace(0.0, 1.0, 10)
      >>> idx = dl.acquisition.stochastic_batch(jax.random.key(0), s, 3, mode="softrank")
      >>> idx.shape, idx.dtype
      ((3,), dtype('int32'))
    """
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not one of {_MODES}.")
    key = _checks.as_key(key)
    scores = _check_scores(scores)
    scores = scores.astype(_float_dtype(scores))
    mask = _check_selection(scores.shape[0], batch_size, pool_mask)
    log_w = _log_weights(scores, mode, jnp.asarray(beta, scores.dtype), mask)
    perturbed = log_w + jax.random.gumbel(key, scores.shape, scores.dtype)
    # Available points of zero probability rank above masked ones, below the rest.
    lowest = jnp.finfo(scores.dtype).min
    perturbed = jnp.where(mask, jnp.where(perturbed > -jnp.inf, perturbed, lowest), -jnp.inf)
    return jax.lax.top_k(perturbed, batch_size)[1].astype(jnp.int32)


def _config_posterior(log_joint: jax.Array, exact: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Weights, pass posteriors and joint entropy of configurations of the chosen labels.

    ``log_joint [T, M]`` holds :math:`\log \prod_{i \in A} p_t(\hat y_{m,i})` for each
    pass :math:`t` and configuration :math:`m`. Returns the weights :math:`w_m`
    (:math:`q_m = p(\hat y_m)` when the configurations are enumerated, :math:`1/M`
    when sampled from :math:`q`), the posteriors :math:`\pi_{t,m} = P_{t,m} / \sum_t
    P_{t,m}` and :math:`H(y_A) = -\sum_m w_m \log q_m`.
    """
    num_samples, num_configs = log_joint.shape
    log_norm = jax.nn.logsumexp(log_joint, axis=0)
    finite = jnp.isfinite(log_norm)
    safe_norm = jnp.where(finite, log_norm, 0)
    posterior = jnp.where(finite, jnp.exp(log_joint - safe_norm), 0)
    log_q = safe_norm - math.log(num_samples)
    weights = (
        jnp.where(finite, jnp.exp(log_q), 0) if exact else jnp.full_like(log_q, 1 / num_configs)
    )
    return weights, posterior, -jnp.sum(jnp.where(finite, weights * log_q, 0))


def _conditional_entropy(
    probs_nt: jax.Array, weights: jax.Array, posterior: jax.Array, chunk: int | None
) -> jax.Array:
    r"""``[N]``: :math:`H(y_n \mid y_A) = \sum_m w_m H[\sum_t \pi_{t,m}\, p_t(\cdot \mid x_n)]`."""

    def one(probs_tc: jax.Array) -> jax.Array:
        mixed = posterior.T @ probs_tc  # [M, C]
        return jnp.sum(weights * uncertainty._entropy(mixed))

    if chunk is None:
        return jax.vmap(one)(probs_nt)
    return jax.lax.map(one, probs_nt, batch_size=chunk)


def _sampled_log_joint(
    key: jax.Array, log_probs_a: jax.Array, valid: jax.Array, num_per_pass: int
) -> jax.Array:
    r"""``log_joint [T, T * S]`` of configurations sampled from the mixture, ``S`` per pass.

    ``log_probs_a [B, T, C]`` are log-probabilities of the points in the batch buffer,
    of which those with ``valid [B]`` are chosen. Configuration :math:`(s, m)` draws
    every chosen label from pass :math:`s` (a stratified sample of
    :math:`q = \frac1T \sum_s \prod_i p_s`); its log-probability is then evaluated
    under every pass :math:`t`.
    """
    buffer, num_samples, _ = log_probs_a.shape
    draws = jax.random.categorical(
        key, log_probs_a[:, :, None, :], shape=(buffer, num_samples, num_per_pass)
    )  # [B, T_draw, S]
    per_point = jax.vmap(lambda lp, d: lp[:, d])(log_probs_a, draws)  # [B, T_eval, T_draw, S]
    per_point = jnp.where(valid[:, None, None, None], per_point, 0)
    return jnp.sum(per_point, axis=0).reshape((num_samples, -1))


class _Greedy(NamedTuple):
    """State of the greedy batch: available points, picks so far, their entropy term."""

    available: jax.Array  # [N] bool
    chosen: jax.Array  # [batch_size] int32, filled up to the current step
    chosen_entropy: jax.Array  # sum of E_t H[p_t(y_i)] over the picks


def _greedy_step(
    state: _Greedy,
    step: Any,
    log_joint: jax.Array,
    exact: bool,
    probs_nt: jax.Array,
    expected_entropy: jax.Array,
    chunk: int | None,
) -> _Greedy:
    """Adds the available point of highest joint mutual information with the picks."""
    weights, posterior, joint_entropy = _config_posterior(log_joint, exact)
    conditional = _conditional_entropy(probs_nt, weights, posterior, chunk)
    gain = joint_entropy + conditional - state.chosen_entropy - expected_entropy
    pick = jnp.argmax(jnp.where(state.available, gain, -jnp.inf)).astype(jnp.int32)
    return _Greedy(
        state.available.at[pick].set(False),
        state.chosen.at[step].set(pick),
        state.chosen_entropy + expected_entropy[pick],
    )


def batch_bald(
    key: ArrayLike,
    probs_t: ArrayLike,
    batch_size: int,
    *,
    num_samples: int = 1000,
    max_configurations: int | None = None,
    pool_mask: ArrayLike | None = None,
    pool_chunk_size: int | None = None,
) -> jax.Array:
    r"""BatchBALD: greedily builds the batch of highest joint mutual information.

    .. math::
        a(x_{1:k}) = H(y_1, \dots, y_k) - \sum_{i=1}^k \frac1T \sum_t H[p_t(y_i)],
        \quad
        p(\hat y_{1:k}) = \frac1T \sum_{t=1}^T \prod_{i=1}^k p_t(\hat y_i \mid x_i)

    Step :math:`k` adds the available point that maximises :math:`a(A \cup \{x\})`,
    with :math:`H(y_A, y_x) = H(y_A) + \sum_m w_m H\big[\sum_t \pi_{t,m}\, p_t(y_x)\big]`
    over configurations :math:`\hat y_m` of the labels already chosen, where
    :math:`\pi_{t,m} \propto \prod_{i \in A} p_t(\hat y_{m,i})` is the posterior of
    pass :math:`t`. While :math:`C^{|A|} \le` ``max_configurations`` the
    configurations are enumerated (:math:`w_m = p(\hat y_m)`, exact); beyond, as in
    the paper, ``num_samples`` configurations are drawn from :math:`p(\hat y_A)`,
    ``num_samples // T`` from each pass, fresh at every step (:math:`w_m = 1/M`). The
    first pick is BALD's argmax; duplicates of a chosen point add little joint
    information, so BatchBALD does not fill a batch with copies of one point.

    ``probs_t`` must come from *consistent* MC dropout: pass :math:`t` is the same
    sub-network for every pool point (see :func:`dropout_lab.mc.sample_pool`).
    Memory per step: ``pool_chunk_size`` (or ``N``) :math:`\times M \times C` floats,
    with :math:`M \le` ``max(max_configurations, num_samples)``.

    Args:
      key: a PRNG key (used only once configurations are sampled).
      probs_t: consistent MC probabilities ``[num_samples_mc, N, C]``.
      batch_size: number of points ``k`` (a Python int; the steps are unrolled).
      num_samples: configurations ``M`` sampled per step once enumeration stops.
      max_configurations: enumerate while :math:`C^{|A|}` is at most this
        (default: ``num_samples``).
      pool_mask: booleans ``[N]``, True where a point may be acquired; at least
        ``batch_size`` must be available.
      pool_chunk_size: candidates scored together (``jax.lax.map``); ``None``: all.

    Returns:
      Distinct indices ``[batch_size]`` (int32), in the order chosen.

    Raises:
      ValueError: ``probs_t`` is not ``[T, N, C]`` distributions, or bad counts.
      TypeError: ``key`` is not a PRNG key or ``probs_t`` not floating point.

    References:
      Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch
      Acquisition for Deep Bayesian Active Learning", NeurIPS 2019.

    Examples:
      >>> import jax
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 20, 3)))
      >>> idx = dl.acquisition.batch_bald(jax.random.key(1), probs_t, 4, num_samples=64)
      >>> idx.shape, idx.dtype
      ((4,), dtype('int32'))
    """
    key = _checks.as_key(key)
    probs_t = _check_probs_t(probs_t)
    if probs_t.ndim != 3:
        raise ValueError(f"probs_t must be [T, N, C], got shape {probs_t.shape}.")
    probs_t = probs_t.astype(_float_dtype(probs_t))
    num_per_pass = max(1, _positive_int(num_samples, "num_samples") // probs_t.shape[0])
    limit = num_samples if max_configurations is None else max_configurations
    _positive_int(limit, "max_configurations")
    available = _check_selection(probs_t.shape[1], batch_size, pool_mask)
    num_passes, _, num_classes = probs_t.shape
    dtype = probs_t.dtype
    probs_nt = jnp.swapaxes(probs_t, 0, 1)  # [N, T, C]
    log_probs_t = jnp.log(probs_t)
    expected_entropy = jnp.mean(uncertainty._entropy(probs_t), axis=0)  # [N]
    state = _Greedy(available, jnp.zeros((batch_size,), jnp.int32), jnp.zeros((), dtype))
    step_fn = functools.partial(
        _greedy_step, probs_nt=probs_nt, expected_entropy=expected_entropy, chunk=pool_chunk_size
    )
    # Enumerated steps, unrolled: the configurations grow by a factor C per pick.
    log_joint = jnp.zeros((num_passes, 1), dtype)
    num_exact = 0  # steps s with C**s <= limit
    while num_exact < batch_size and num_classes**num_exact <= limit:
        num_exact += 1
    for step in range(num_exact):
        if step:
            new = log_probs_t[:, state.chosen[step - 1]]  # [T, C]
            log_joint = (log_joint[:, :, None] + new[:, None, :]).reshape((num_passes, -1))
        state = step_fn(state, step, log_joint, True)

    # Sampled steps, one compiled loop body: M configurations drawn afresh each step.
    def sampled(step: jax.Array, state: _Greedy) -> _Greedy:
        log_probs_a = jnp.swapaxes(log_probs_t[:, state.chosen], 0, 1)  # [B, T, C]
        valid = jnp.arange(batch_size) < step
        key_step = jax.random.fold_in(key, step)
        log_joint = _sampled_log_joint(key_step, log_probs_a, valid, num_per_pass)
        return step_fn(state, step, log_joint, False)

    if num_exact < batch_size:
        state = jax.lax.fori_loop(num_exact, batch_size, sampled, state)
    return state.chosen
