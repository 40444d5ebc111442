r"""Scoring, calibration and out-of-distribution metrics, jit-compatible.

Classification metrics take probabilities ``probs [..., num_classes]`` (e.g. the MC
predictive mean ``dl.uncertainty.classification(probs_t).mean``) and integer
``labels [...]``; every leading position counts as one example. Concrete ``probs``
must be distributions over the last axis: values in [0, 1] and sums equal to 1
within ``(num_classes + 16) * eps`` of their dtype (which float32 softmax outputs and
their MC means always pass), else ``ValueError`` (logits: apply ``jax.nn.softmax``).
Under ``jit``, ``vmap`` or ``grad`` the values are traced and cannot be checked.
``accuracy`` alone also takes logits. ``nll_from_log_probs`` takes
log-probabilities (``jax.nn.log_softmax(logits)``, or the MC log-mean
``dl.uncertainty.predictive_log_probs(log_probs_t)``) and is exact: the NLL to report
whenever logits are at hand. ``rmse`` scores regression predictions. The ranking metrics
take a score (higher means "more likely positive", e.g. predictive entropy for
out-of-distribution inputs) and a boolean ``is_positive``, and handle tied scores
exactly as scikit-learn's ``roc_auc_score`` and ``average_precision_score``.

Selective prediction (``risk_coverage``, ``aurc``, ``augrc``) takes a ``confidence``
and a boolean ``correct``; exact, one point per coverage, ties taken together. The
out-of-distribution scores ``max_softmax``, ``negative_entropy``,
``negative_mutual_information`` and ``negative_energy`` share one sign convention:
**higher = more confident, more in-distribution**. Use them as ``confidence`` directly,
and for detection as ``auroc(score, is_in_distribution)`` (equivalently
``auroc(-score, is_ood)``).

References:
  Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
  ICML 2017.
  Naeini, Cooper & Hauskrecht, "Obtaining Well Calibrated Probabilities Using
  Bayesian Binning", AAAI 2015.
  Kull, Perello-Nieto, Kängsepp, Silva Filho, Song & Flach, "Beyond temperature
  scaling: Obtaining well-calibrated multiclass probabilities with Dirichlet
  calibration", NeurIPS 2019.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks, uncertainty

__all__ = [
    "ReliabilityDiagram",
    "RiskCoverage",
    "accuracy",
    "augrc",
    "aupr",
    "aurc",
    "auroc",
    "brier",
    "classwise_ece",
    "ece",
    "max_softmax",
    "negative_energy",
    "negative_entropy",
    "negative_mutual_information",
    "nll",
    "nll_from_log_probs",
    "reliability_diagram",
    "risk_coverage",
    "rmse",
]


class ReliabilityDiagram(NamedTuple):
    """Per-bin data of a reliability diagram (equal-width confidence bins).

    Attributes:
      confidence: mean confidence of the examples in each bin ``[num_bins]`` (NaN for
        an empty bin, which matplotlib skips).
      accuracy: fraction of correct predictions in each bin ``[num_bins]`` (NaN when
        empty).
      count: number of examples in each bin ``[num_bins]`` (int32).
      edges: bin edges ``[num_bins + 1]``; bin ``m`` is ``(edges[m], edges[m + 1]]``
        (the first bin includes 0).
    """

    confidence: jax.Array
    accuracy: jax.Array
    count: jax.Array  # type: ignore[assignment]  # public field name; shadows tuple.count
    edges: jax.Array


def _flatten(
    probs: ArrayLike, labels: ArrayLike, *, logits_ok: bool = False
) -> tuple[jax.Array, jax.Array]:
    """``probs [N, C]`` and integer ``labels [N]`` from ``[..., C]`` and ``[...]``.

    Concrete ``probs`` are checked to be distributions unless ``logits_ok``.
    """
    if logits_ok:
        probs = _checks.check_float_array(probs, "probs")
    else:
        probs = _checks.check_probs(probs, "probs")
    labels = jnp.asarray(labels)
    if probs.ndim < 1 or labels.shape != probs.shape[:-1]:
        raise ValueError(
            f"labels must have shape probs.shape[:-1]; got probs {probs.shape} and "
            f"labels {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}.")
    return probs.reshape((-1, probs.shape[-1])), labels.reshape(-1)


def _check_num_bins(num_bins: int) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive Python int, got {num_bins!r}.")
    return num_bins


def _bin_index(confidence: jax.Array, num_bins: int) -> tuple[jax.Array, jax.Array]:
    """Bin of each confidence for the right-closed bins ``(m/M, (m+1)/M]``, and the edges."""
    edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=confidence.dtype)
    return jnp.searchsorted(edges[1:-1], confidence, side="left"), edges


def accuracy(probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Fraction of examples whose most probable class is the label.

    Only the argmax counts, so logits work too: ``probs`` is not checked to be a
    distribution.

    Args:
      probs: probabilities (or logits) ``[..., num_classes]``.
      labels: integer labels ``[...]``.

    Returns:
      Scalar float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.accuracy(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0, 0]))
      Array(0.5, dtype=float32)
    """
    probs, labels = _flatten(probs, labels, logits_ok=True)
    return jnp.mean(jnp.argmax(probs, axis=-1) == labels, dtype=jnp.float32)


def nll(probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Mean negative log-likelihood :math:`-\frac1N \sum_i \log p_{i, y_i}`.

    The probability of the label is clipped below at the machine epsilon of its dtype,
    as scikit-learn's ``log_loss`` does, so a zero probability gives a large finite
    value instead of ``inf``. The clip changes every example whose label probability is
    below ``eps`` (about 1.2e-7 in float32), which a confident float32 softmax reaches
    easily: when logits are at hand, :func:`nll_from_log_probs` of
    ``jax.nn.log_softmax(logits)`` is exact and needs no clip.

    Args:
      probs: probabilities ``[..., num_classes]``.
      labels: integer labels ``[...]``.

    Returns:
      Scalar, in nats.

    Raises:
      ValueError: ``probs`` is concrete and not a distribution over its last axis
        (e.g. logits: apply ``jax.nn.softmax`` first; traced values, under ``jit``
        or ``vmap``, cannot be checked), or
        ``labels`` does not have shape ``probs.shape[:-1]``.
      TypeError: ``probs`` is not floating point or ``labels`` not integer.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.nll(jnp.array([[0.5, 0.5]]), jnp.array([0])).shape
      ()
    """
    probs, labels = _flatten(probs, labels)
    p_label = jnp.take_along_axis(probs, labels[:, None], axis=-1)[:, 0]
    eps = jnp.finfo(probs.dtype).eps
    return -jnp.mean(jnp.log(jnp.clip(p_label, eps, 1.0)))


def nll_from_log_probs(log_probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Mean negative log-likelihood from log-probabilities, exact and never clipped.

    .. math::
        \mathrm{NLL} = -\frac1N \sum_i \log p_{i, y_i}

    with :math:`\log p` given directly, so nothing is lost to rounding or underflow of
    a probability: from logits :math:`z`, :math:`\log p = z - \operatorname{logsumexp}(z)`
    (``jax.nn.log_softmax``); for the MC predictive distribution
    :math:`\bar p = \frac1T \sum_t p_t`, :math:`\log \bar p = \operatorname{logsumexp}_t
    \log p_t - \log T` (:func:`dropout_lab.uncertainty.predictive_log_probs`). A zero
    probability (``-inf``) gives ``inf``, the true value. Unlike :func:`nll`, no clip:
    a label probability below ``eps`` counts at its value, the same way for one
    deterministic pass and for MC passes.

    Args:
      log_probs: log-probabilities ``[..., num_classes]``.
      labels: integer labels ``[...]``.

    Returns:
      Scalar, in nats.

    Raises:
      ValueError: ``log_probs`` is concrete and not normalized over its last axis
        (e.g. logits: apply ``jax.nn.log_softmax`` first; traced values cannot be
        checked), or ``labels`` does not have shape ``log_probs.shape[:-1]``.
      TypeError: ``log_probs`` is not floating point or ``labels`` not integer.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> log_probs = jax.nn.log_softmax(jnp.array([[0.0, 40.0]]))
      >>> dl.metrics.nll_from_log_probs(log_probs, jnp.array([0]))
      Array(40., dtype=float32)
    """
    log_probs = _checks.check_log_probs(log_probs, "log_probs")
    log_probs, labels = _flatten(log_probs, labels, logits_ok=True)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def rmse(predictions: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Root mean squared error :math:`\sqrt{\frac1N \sum_i (\hat y_i - y_i)^2}`.

    Every element is one prediction. For MC dropout pass the predictive mean
    (``dl.uncertainty.regression(means_t, tau=...).mean``).

    Args:
      predictions: predicted values ``[...]``.
      targets: observed values, the same shape.

    Returns:
      Scalar, in the units of ``targets``.

    Raises:
      ValueError: the shapes differ.
      TypeError: ``predictions`` is not floating point.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.rmse(jnp.array([1.0, 3.0]), jnp.array([1.0, 1.0]))
      Array(1.4142135, dtype=float32)
    """
    predictions = _checks.check_float_array(predictions, "predictions")
    targets = jnp.asarray(targets, predictions.dtype)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions {predictions.shape} and targets {targets.shape} must have the same shape."
        )
    return jnp.sqrt(jnp.mean(jnp.square(predictions - targets)))


def brier(probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Multiclass Brier score :math:`\frac1N \sum_i \sum_c (p_{ic} - [y_i = c])^2`.

    Brier's original definition, summed over classes: in [0, 2]. For two classes it
    is twice the binary score ``mean((p_1 - y)**2)`` (scikit-learn's
    ``brier_score_loss`` with ``scale_by_half=False`` gives this definition).

    Args:
      probs: probabilities ``[..., num_classes]``.
      labels: integer labels ``[...]``.

    Returns:
      Scalar.

    Raises:
      ValueError: ``probs`` is concrete and not a distribution over its last axis
        (e.g. logits: apply ``jax.nn.softmax`` first; traced values, under ``jit``
        or ``vmap``, cannot be checked), or
        ``labels`` does not have shape ``probs.shape[:-1]``.
      TypeError: ``probs`` is not floating point or ``labels`` not integer.

    References:
      Brier, "Verification of forecasts expressed in terms of probability", Monthly
      Weather Review, 1950.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.brier(jnp.array([[1.0, 0.0]]), jnp.array([1]))
      Array(2., dtype=float32)
    """
    probs, labels = _flatten(probs, labels)
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    return jnp.mean(jnp.sum(jnp.square(probs - one_hot), axis=-1))


def reliability_diagram(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> ReliabilityDiagram:
    """Per-bin confidence, accuracy and count of the top-class predictions.

    The confidence of an example is its largest probability; examples are put in
    ``num_bins`` equal-width bins ``(m/M, (m+1)/M]`` of confidence (Guo et al. 2017).

    Args:
      probs: probabilities ``[..., num_classes]``.
      labels: integer labels ``[...]``.
      num_bins: number of bins ``M`` (a Python int).

    Returns:
      :class:`ReliabilityDiagram` with ``[num_bins]`` arrays and the edges.

    Raises:
      ValueError: ``probs`` is concrete and not a distribution over its last axis
        (e.g. logits: apply ``jax.nn.softmax`` first; traced values, under ``jit``
        or ``vmap``, cannot be checked), or
        ``labels`` does not have shape ``probs.shape[:-1]``, or ``num_bins``
        is not a positive int.
      TypeError: ``probs`` is not floating point or ``labels`` not integer.

    References:
      Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
      ICML 2017.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> r = dl.metrics.reliability_diagram(jnp.array([[0.9, 0.1]]), jnp.array([0]), 10)
      >>> r.count.shape, r.edges.shape
      ((10,), (11,))
    """
    num_bins = _check_num_bins(num_bins)
    probs, labels = _flatten(probs, labels)
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    index, edges = _bin_index(confidence, num_bins)
    count = jax.ops.segment_sum(jnp.ones_like(index), index, num_bins)
    safe = jnp.where(count > 0, count, 1).astype(probs.dtype)
    empty = jnp.asarray(jnp.nan, probs.dtype)
    return ReliabilityDiagram(
        confidence=jnp.where(
            count > 0, jax.ops.segment_sum(confidence, index, num_bins) / safe, empty
        ),
        accuracy=jnp.where(count > 0, jax.ops.segment_sum(correct, index, num_bins) / safe, empty),
        count=count.astype(jnp.int32),
        edges=edges,
    )


def ece(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> jax.Array:
    r"""Expected calibration error with equal-width bins (Guo et al. 2017).

    .. math::
        \mathrm{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{N}
        \big|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\big|

    where :math:`B_m` holds the examples whose top-class probability lies in
    :math:`((m-1)/M, m/M]`.

    Args:
      probs: probabilities ``[..., num_classes]``.
      labels: integer labels ``[...]``.
      num_bins: number of bins ``M`` (a Python int; 15 as in Guo et al.).

    Returns:
      Scalar in [0, 1].

    Raises:
      ValueError: ``probs`` is concrete and not a distribution over its last axis
        (e.g. logits: apply ``jax.nn.softmax`` first; traced values, under ``jit``
        or ``vmap``, cannot be checked), or
        ``labels`` does not have shape ``probs.shape[:-1]``, or ``num_bins``
        is not a positive int.
      TypeError: ``probs`` is not floating point or ``labels`` not integer.

    References:
      Naeini, Cooper & Hauskrecht, "Obtaining Well Calibrated Probabilities Using
      Bayesian Binning", AAAI 2015.
      Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
      ICML 2017.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> e = dl.metrics.ece(jnp.array([[0.9, 0.1], [0.6, 0.4]]), jnp.array([0, 1]), 10)
      >>> round(float(e), 4)
      0.35
    """
    num_bins = _check_num_bins(num_bins)
    probs, labels = _flatten(probs, labels)
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    index, _ = _bin_index(confidence, num_bins)
    gap = jax.ops.segment_sum(correct - confidence, index, num_bins)
    return jnp.sum(jnp.abs(gap)) / probs.shape[0]


def classwise_ece(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> jax.Array:
    r"""Classwise ECE: the one-vs-rest ECE of every class, averaged over classes.

    .. math::
        \mathrm{cwECE} = \frac1C \sum_{c=1}^{C} \sum_{m=1}^{M} \frac{|B_{m,c}|}{N}
        \Big|\frac{1}{|B_{m,c}|}\sum_{i \in B_{m,c}} \big([y_i = c] - p_{ic}\big)\Big|

    where :math:`B_{m,c}` holds the examples whose probability of class :math:`c`
    lies in bin :math:`m` (equal width; the first bin includes 0).

    Args:
      probs: probabilities ``[..., num_classes]``.
      labels: integer labels ``[...]``.
      num_bins: number of bins ``M`` (a Python int).

    Returns:
      Scalar in [0, 1].

    Raises:
      ValueError: ``probs`` is concrete and not a distribution over its last axis
        (e.g. logits: apply ``jax.nn.softmax`` first; traced values, under ``jit``
        or ``vmap``, cannot be checked), or
        ``labels`` does not have shape ``probs.shape[:-1]``, or ``num_bins``
        is not a positive int.
      TypeError: ``probs`` is not floating point or ``labels`` not integer.

    References:
      Kull, Perello-Nieto, Kängsepp, Silva Filho, Song & Flach, "Beyond temperature
      scaling: Obtaining well-calibrated multiclass probabilities with Dirichlet
      calibration", NeurIPS 2019.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.classwise_ece(jnp.array([[0.9, 0.1]]), jnp.array([0]), 10).shape
      ()
    """
    num_bins = _check_num_bins(num_bins)
    probs, labels = _flatten(probs, labels)
    num_examples, num_classes = probs.shape
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=probs.dtype)
    index, _ = _bin_index(probs, num_bins)
    segment = index + num_bins * jnp.arange(num_classes)
    gap = jax.ops.segment_sum((one_hot - probs).ravel(), segment.ravel(), num_classes * num_bins)
    return jnp.sum(jnp.abs(gap)) / (num_examples * num_classes)


def _scores(scores: ArrayLike, is_positive: ArrayLike) -> tuple[jax.Array, jax.Array]:
    scores = jnp.asarray(scores)
    is_positive = jnp.asarray(is_positive)
    if scores.shape != is_positive.shape:
        raise ValueError(f"scores {scores.shape} and is_positive {is_positive.shape} must match.")
    scores = scores.ravel()
    return scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), is_positive.ravel() != 0


def auroc(scores: ArrayLike, is_positive: ArrayLike) -> jax.Array:
    r"""Area under the ROC curve: the probability that a positive outscores a negative.

    .. math::
        \mathrm{AUROC} = \frac{1}{PN} \sum_{i \in +} \sum_{j \in -}
        \big([s_i > s_j] + \tfrac12 [s_i = s_j]\big)

    Ties count one half, which equals the trapezoidal area of scikit-learn's
    ``roc_auc_score``. Computed with sorting and ``searchsorted`` in
    :math:`O(n \log n)`. NaN when there are no positives or no negatives (where
    scikit-learn raises).

    Args:
      scores: ``[...]``, higher for the positive class (e.g. predictive entropy or
        mutual information for out-of-distribution detection).
      is_positive: booleans ``[...]`` (e.g. "input is out of distribution").

    Returns:
      Scalar in [0, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.auroc(jnp.array([0.1, 0.4, 0.4, 0.8]), jnp.array([0, 0, 1, 1]))
      Array(0.875, dtype=float32)
    """
    scores, positive = _scores(scores, is_positive)
    num_pos = jnp.sum(positive)
    num_neg = scores.shape[0] - num_pos
    # Negatives sorted, positives replaced by +inf: never below any score; equal only
    # to a score of +inf, where they are subtracted.
    negatives = jnp.sort(jnp.where(positive, jnp.inf, scores))
    neg_below = jnp.searchsorted(negatives, scores, side="left")
    neg_at_or_below = jnp.searchsorted(negatives, scores, side="right") - jnp.where(
        scores == jnp.inf, num_pos, 0
    )
    wins = (neg_below + neg_at_or_below).astype(scores.dtype) / 2
    return jnp.sum(jnp.where(positive, wins / num_neg, 0)) / num_pos


def aupr(scores: ArrayLike, is_positive: ArrayLike) -> jax.Array:
    r"""Area under the precision-recall curve as average precision.

    .. math::
        \mathrm{AP} = \sum_k (R_k - R_{k-1})\, P_k = \frac1P \sum_{i \in +}
        \frac{\#\{j \in + : s_j \ge s_i\}}{\#\{j : s_j \ge s_i\}}

    with one threshold per distinct score, so tied scores form one step: the
    definition of scikit-learn's ``average_precision_score`` (no interpolation).
    NaN when there are no positives.

    Args:
      scores: ``[...]``, higher for the positive class.
      is_positive: booleans ``[...]``.

    Returns:
      Scalar in [0, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.aupr(jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1]))
      Array(0.8333334, dtype=float32)
    """
    scores, positive = _scores(scores, is_positive)
    num = scores.shape[0]
    num_pos = jnp.sum(positive)
    at_or_above = num - jnp.searchsorted(jnp.sort(scores), scores, side="left")
    pos_below = jnp.searchsorted(
        jnp.sort(jnp.where(positive, scores, jnp.inf)), scores, side="left"
    )
    precision = (num_pos - pos_below).astype(scores.dtype) / at_or_above
    return jnp.sum(jnp.where(positive, precision, 0)) / num_pos


class RiskCoverage(NamedTuple):
    r"""Risk-coverage curve, one point per coverage :math:`k/N`, :math:`k = 1, \dots, N`.

    Attributes:
      coverage: :math:`k/N` ``[N]``.
      risk: selective risk :math:`E_k / k` (errors among the :math:`k` most confident).
      generalized_risk: :math:`E_k / N` (Traub et al. 2024) ``[N]``.
    """

    coverage: jax.Array
    risk: jax.Array
    generalized_risk: jax.Array


def _accepted_errors(confidence: ArrayLike, correct: ArrayLike) -> jax.Array:
    r"""Errors among the ``k`` most confident examples, ``k = 1..N``, ties averaged.

    Sorted by decreasing confidence, the examples tied with the ``k``-th form a group
    ``[s, e)`` accepted or rejected together; inside it the count is interpolated,
    :math:`E_k = E_s + (k - s)(E_e - E_s)/(e - s)`, which is the expected count when
    the tied examples are taken in a uniformly random order.
    """
    confidence = _checks.check_float_array(confidence, "confidence")
    correct = jnp.asarray(correct)
    if confidence.shape != correct.shape or confidence.size == 0:
        raise ValueError(
            f"confidence {confidence.shape} and correct {correct.shape} must have the same "
            "non-empty shape."
        )
    confidence = confidence.ravel().astype(jnp.promote_types(confidence.dtype, jnp.float32))
    errors = (correct.ravel() == 0).astype(confidence.dtype)
    order = jnp.argsort(confidence, descending=True)
    ascending = jnp.sort(confidence)
    num = confidence.shape[0]
    cum = jnp.concatenate([jnp.zeros((1,), confidence.dtype), jnp.cumsum(errors[order])])
    value = confidence[order]
    start = num - jnp.searchsorted(ascending, value, side="right")  # more confident
    end = num - jnp.searchsorted(ascending, value, side="left")  # at least as confident
    k = jnp.arange(1, num + 1)
    share = (k - start).astype(confidence.dtype) / (end - start).astype(confidence.dtype)
    return cum[start] + share * (cum[end] - cum[start])


def risk_coverage(confidence: ArrayLike, correct: ArrayLike) -> RiskCoverage:
    r"""Exact risk-coverage curve: the error rate of the ``k`` most confident examples.

    Accepting the :math:`k` most confident examples (coverage :math:`k/N`), the
    selective risk is :math:`E_k / k` and the generalized risk :math:`E_k / N`, with
    :math:`E_k` the errors accepted; one point per :math:`k`, no binning. Ties in
    confidence are accepted or rejected together: at a coverage that splits them,
    :math:`E_k` is the expected count over their orders (a linear interpolation), so
    the curve does not depend on how tied inputs are ordered.

    Args:
      confidence: ``[...]``, higher = more trusted (e.g. :func:`max_softmax`,
        :func:`negative_entropy`).
      correct: ``[...]``, booleans (or 0/1): is the prediction right.

    Returns:
      :class:`RiskCoverage` with ``[N]`` arrays, ``N`` the number of examples.

    Raises:
      ValueError: the shapes differ or are empty.
      TypeError: ``confidence`` is not floating point.

    References:
      Geifman & El-Yaniv, "Selective Classification for Deep Neural Networks",
      NeurIPS 2017.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> rc = dl.metrics.risk_coverage(jnp.array([0.9, 0.8, 0.7]), jnp.array([1, 0, 1]))
      >>> rc.risk
      Array([0.        , 0.5       , 0.33333334], dtype=float32)
    """
    errors = _accepted_errors(confidence, correct)
    num = errors.shape[0]
    coverage = jnp.arange(1, num + 1, dtype=errors.dtype) / num
    return RiskCoverage(coverage, errors / jnp.arange(1, num + 1, dtype=errors.dtype), errors / num)


def aurc(confidence: ArrayLike, correct: ArrayLike) -> jax.Array:
    r"""Area under the risk-coverage curve, exact and independent of tie order.

    .. math::
        \mathrm{AURC} = \frac1N \sum_{k=1}^{N} \frac{E_k}{k}

    the mean selective risk over the coverages :math:`k/N` of :func:`risk_coverage`
    (Geifman et al.; lower is better); with ties, the mean over their orders.
    (torch-uncertainty's trapezoid rescaled by :math:`1/(1 - 1/N)` differs by
    :math:`O(1/N)`.)

    Args:
      confidence: ``[...]``, higher = more trusted.
      correct: ``[...]``, booleans (or 0/1).

    Returns:
      Scalar in [0, 1].

    Raises:
      ValueError: the shapes differ or are empty.
      TypeError: ``confidence`` is not floating point.

    References:
      Geifman, Uziel & El-Yaniv, "Bias-Reduced Uncertainty Estimation for Deep Neural
      Classifiers", ICLR 2019.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.aurc(jnp.array([0.5, 0.5]), jnp.array([1, 0]))
      Array(0.5, dtype=float32)
    """
    return jnp.mean(risk_coverage(confidence, correct).risk)


def augrc(confidence: ArrayLike, correct: ArrayLike) -> jax.Array:
    r"""Area under the generalized risk-coverage curve (Traub et al. 2024).

    .. math::
        \mathrm{AUGRC} = \int_0^1 \frac{E(c)}{N}\,\mathrm{d}c
        = \frac1N \sum_{k=1}^{N} \frac{E_{k-1} + E_k}{2N}

    the exact area under the piecewise-linear curve through :math:`(0, 0)` and the
    points :math:`(k/N, E_k/N)` of :func:`risk_coverage` (ties interpolated, so the
    value does not depend on their order). It equals the average risk of an
    undetected failure, :math:`(1 - \mathrm{AUROC}_f)\,a(1 - a) + \frac12 (1 - a)^2`
    with :math:`a` the accuracy and :math:`\mathrm{AUROC}_f` the AUROC of the
    confidence separating right from wrong (ties count one half). Lower is better.

    Args:
      confidence: ``[...]``, higher = more trusted.
      correct: ``[...]``, booleans (or 0/1).

    Returns:
      Scalar in [0, 0.5].

    Raises:
      ValueError: the shapes differ or are empty.
      TypeError: ``confidence`` is not floating point.

    References:
      Traub, Bungert, Lüth, Baumgartner, Maier-Hein, Maier-Hein & Jaeger,
      "Overcoming Common Flaws in the Evaluation of Selective Classification
      Systems", NeurIPS 2024.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.augrc(jnp.array([0.9, 0.8, 0.7]), jnp.array([1, 0, 1])).shape
      ()
    """
    errors = _accepted_errors(confidence, correct)
    num = errors.shape[0]
    return (2 * jnp.sum(errors) - errors[-1]) / (2 * num * num)


def max_softmax(probs: ArrayLike) -> jax.Array:
    r"""Maximum softmax probability :math:`\max_c p_c` (Hendrycks & Gimpel 2017).

    Higher = more in-distribution. Pass ``jax.nn.softmax(logits)`` or the MC mean.

    Args:
      probs: probabilities ``[..., num_classes]``.

    Returns:
      ``[...]`` in :math:`[1/C, 1]`.

    Raises:
      ValueError: ``probs`` is concrete and not a distribution.
      TypeError: ``probs`` is not floating point.

    References:
      Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
      Out-of-Distribution Examples in Neural Networks", ICLR 2017.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.max_softmax(jnp.array([[0.7, 0.3]]))
      Array([0.7], dtype=float32)
    """
    return jnp.max(_checks.check_probs(probs, "probs"), axis=-1)


def negative_entropy(probs: ArrayLike) -> jax.Array:
    r"""Negative predictive entropy :math:`-H[p]` (:func:`dropout_lab.uncertainty.entropy`).

    Higher = more in-distribution. For MC dropout pass the predictive mean.

    Args:
      probs: probabilities ``[..., num_classes]``.

    Returns:
      ``[...]`` in :math:`[-\log C, 0]`, in nats.

    Raises:
      ValueError: ``probs`` is concrete and not a distribution.
      TypeError: ``probs`` is not floating point.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.negative_entropy(jnp.array([[0.5, 0.5], [1.0, 0.0]])).shape
      (2,)
    """
    return -uncertainty.entropy(probs)


def negative_mutual_information(probs_t: ArrayLike) -> jax.Array:
    r"""Negative mutual information :math:`-(H[\bar p] - \frac1T \sum_t H[p_t])` of MC samples.

    The ``mutual_information`` of :func:`dropout_lab.uncertainty.classification`
    (BALD), negated: higher = the passes agree = more in-distribution.

    Args:
      probs_t: sampled probabilities ``[num_samples, ..., num_classes]``.

    Returns:
      ``[...]``, non-positive, in nats.

    Raises:
      ValueError: ``probs_t`` has no sample axis or, concrete, is not a distribution.
      TypeError: ``probs_t`` is not floating point.

    References:
      Smith & Gal, "Understanding Measures of Uncertainty for Adversarial Example
      Detection", UAI 2018.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> probs_t = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 4, 3)))
      >>> dl.metrics.negative_mutual_information(probs_t).shape
      (4,)
    """
    return -uncertainty.classification(probs_t).mutual_information


def negative_energy(logits: ArrayLike, temperature: ArrayLike = 1.0) -> jax.Array:
    r"""Negative free energy :math:`-E(x) = T \log \sum_c e^{z_c / T}` (Liu et al. 2020).

    Higher = more in-distribution. It needs raw logits (their scale matters); for MC
    dropout average it over passes: ``jnp.mean(negative_energy(logits_t), axis=0)``.

    Args:
      logits: logits ``[..., num_classes]``.
      temperature: positive scalar :math:`T`.

    Returns:
      ``[...]``.

    Raises:
      TypeError: ``logits`` is not floating point.

    References:
      Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection",
      NeurIPS 2020.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.metrics.negative_energy(jnp.zeros((2, 4))).shape
      (2,)
    """
    logits = _checks.check_float_array(logits, "logits")
    temperature = jnp.asarray(temperature, logits.dtype)
    return temperature * jax.nn.logsumexp(logits / temperature, axis=-1)
