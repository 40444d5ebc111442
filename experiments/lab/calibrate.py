"""Temperature scaling and selective prediction in a classifier's final evaluation.

A method's prediction (one deterministic pass, or the mean of its MC passes) is
scaled by one temperature ``T`` fitted with ``dl.calibration.fit_temperature`` on the
log of the predictive mean, ``dl.uncertainty.predictive_log_probs`` (for one pass:
the log-softmax of the logits, the same thing). ``T`` is fitted on the validation
split (Guo et al. 2017), so only when the data has one (``data.val_fraction > 0``):
fitted on the training split, which the net fits, ``T`` would fall below 1 and
sharpen an already overconfident test prediction (on the digits: T = 0.2 and a test
NLL five times the unscaled one). The scaled test prediction is scored with the lab's
one definition of NLL and ECE (:func:`lab.scores.classification`); the unscaled
``test_nll`` and ``ece`` of :func:`lab.evaluate.classification` are the "before".

Selective prediction: the risk-coverage curve of the test prediction with its top
probability as the confidence (``dl.metrics.max_softmax`` of the predictive mean) and
its areas, ``dl.metrics.aurc`` and ``dl.metrics.augrc`` (exact, tie-order free).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropout_lab import calibration
from dropout_lab import metrics as M
from dropout_lab import uncertainty as U
from lab import scores
from lab.data import Dataset
from lab.methods import Hparams
from lab.predict import Predictor


def has_validation(data: Dataset) -> bool:
    """Whether temperature scaling can be fitted: the data has a validation split."""
    return len(data.x_val) > 0


def description(data: Dataset) -> str:
    """One sentence for the results: what the temperature was fitted on."""
    if has_validation(data):
        return f"temperature scaling fitted on the validation split ({len(data.x_val)} examples)"
    return (
        "no temperature scaling (it is fitted on held-out data: set data.val_fraction > 0; "
        "fitted on the training split, which the net fits, it would sharpen, not soften)"
    )


@jax.jit
def temperature(log_probs_t: ArrayLike, labels: ArrayLike) -> jax.Array:
    """The temperature of ``log_probs_t [T, n, classes]``'s predictive mean on ``labels``."""
    return calibration.fit_temperature(U.predictive_log_probs(log_probs_t), labels)


@jax.jit
def scaled(log_probs_t: ArrayLike, t: ArrayLike) -> jax.Array:
    """``[1, n, classes]``: the log-softmax of the predictive mean's log over ``t``."""
    logits = calibration.apply_temperature(U.predictive_log_probs(log_probs_t), t)
    return jax.nn.log_softmax(logits)[None]


def selective(probs: ArrayLike, labels: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(confidence, correct)`` of predictive probabilities ``[n, classes]``.

    The confidence is the top probability (``dl.metrics.max_softmax``); ``correct``
    whether the argmax is the label.
    """
    probs = jnp.asarray(probs)
    return M.max_softmax(probs), jnp.argmax(probs, axis=-1) == jnp.asarray(labels)


@jax.jit
def areas(probs: ArrayLike, labels: ArrayLike) -> dict[str, jax.Array]:
    """``aurc`` and ``augrc`` of predictive probabilities ``[n, classes]`` (:func:`selective`)."""
    confidence, correct = selective(probs, labels)
    return {"aurc": M.aurc(confidence, correct), "augrc": M.augrc(confidence, correct)}


def metrics(
    predictor: Predictor,
    params: Any,
    hp: Hparams,
    pred_keys: dict[str, jax.Array],
    data: Dataset,
    log_probs: dict[str, np.ndarray],
    num_bins: int,
) -> dict[str, float]:
    """Temperature scaling and selective-prediction metrics of one fitted classifier.

    Args:
      predictor: the method's predictor.
      params: the parameters.
      hp: the method's hyperparameters.
      pred_keys: :meth:`lab.fit.RunKeys.prediction_keys` (``val`` predicts the
        validation split with its own key).
      data: the data set.
      log_probs: the evaluation's log-probabilities per pass of ``train`` and
        ``test`` (``[T, n, classes]``).
      num_bins: ECE bins.

    Returns:
      ``aurc`` and ``augrc``; with a validation split also ``temperature`` (fitted
      there), ``test_nll_ts`` and ``ece_ts`` (the test prediction scaled by it).
    """
    selective_areas = {
        k: float(v)
        for k, v in areas(scores.uncertainty(log_probs["test"]).mean, data.y_test).items()
    }
    if not has_validation(data):
        return selective_areas
    fit_t = predictor.log_probs(params, data.x_val, pred_keys["val"], hp)
    t = temperature(fit_t, data.y_val)
    after = scores.classification(scaled(log_probs["test"], t), data.y_test, num_bins)
    return {
        "temperature": float(t),
        "test_nll_ts": float(after["nll"]),
        "ece_ts": float(after["ece"]),
        **selective_areas,
    }
