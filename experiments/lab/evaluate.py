"""Final metrics of one trained (method, seed): accuracy, calibration, uncertainty, OOD.

A method predicts with one deterministic pass or with the mean of MC passes
(:class:`lab.predict.Predictor`, with the keys the learning curves use). Every number
comes from :mod:`lab.scores`, the lab's one definition of each metric. Every method's
OOD score is the predictive entropy; a prediction of several passes also reports the
mutual information (epistemic part) and its AUROC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from lab import calibrate, scores
from lab.data import TOY_DATA_RANGES, Dataset
from lab.fit import RunKeys, Setup
from lab.methods import Hparams
from lab.predict import Predictor

Z90, Z95 = 1.6448536269514722, 1.959963984540054


def classification(
    predictor: Predictor, params, hp: Hparams, keys: RunKeys, data: Dataset, num_bins: int
) -> tuple[dict, dict]:
    """Metrics (floats) and arrays (for plots) of a classifier.

    Returns:
      ``(metrics, arrays)``: metrics ``train_acc``, ``test_acc``, ``gap`` (train minus
      test accuracy), ``train_nll``, ``test_nll``, ``nll_gap`` (test minus train),
      ``ece``, ``brier``, mean predictive entropy on test (``entropy_in``), temperature
      scaling and selective prediction (:func:`lab.calibrate.metrics`: ``temperature``,
      ``test_nll_ts``, ``ece_ts``, ``aurc``, ``augrc``) and, with
      an OOD set, ``entropy_out`` and ``ood_auroc`` (entropy as the score); for MC
      also ``mi_in``, ``mi_out`` and ``ood_auroc_mi``. Arrays: ``test_probs``,
      ``test_labels``, ``score_in``, ``score_out`` (entropy; for MC the mutual
      information goes in ``mi_in``/``mi_out``).
    """
    pred_keys = keys.prediction_keys()
    out: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    summaries, log_probs = {}, {}
    for split, x, y in (
        ("train", data.x_train, data.y_train),
        ("test", data.x_test, data.y_test),
        ("ood", data.x_ood, None),
    ):
        if x is None:
            continue
        log_probs_t = predictor.log_probs(params, x, pred_keys[split], hp)
        summaries[split], log_probs[split] = scores.uncertainty(log_probs_t), log_probs_t
        passes = log_probs_t.shape[0]
        if y is not None:
            got = {k: float(v) for k, v in scores.classification(log_probs_t, y, num_bins).items()}
            out[f"{split}_acc"], out[f"{split}_nll"] = got["acc"], got["nll"]
            if split == "test":
                out["ece"], out["brier"] = got["ece"], got["brier"]
    test = summaries["test"]
    out["gap"] = out["train_acc"] - out["test_acc"]
    out["nll_gap"] = out["test_nll"] - out["train_nll"]
    out["entropy_in"] = float(jnp.mean(test.predictive_entropy))
    out.update(calibrate.metrics(predictor, params, hp, pred_keys, data, log_probs, num_bins))
    arrays["test_probs"] = np.asarray(test.mean)
    arrays["test_labels"] = np.asarray(data.y_test)
    arrays["score_in"] = np.asarray(test.predictive_entropy)
    if passes > 1:
        out["mi_in"] = float(jnp.mean(test.mutual_information))
        arrays["mi_in"] = np.asarray(test.mutual_information)
    if "ood" in summaries:
        ood = summaries["ood"]
        out["entropy_out"] = float(jnp.mean(ood.predictive_entropy))
        out["ood_auroc"] = float(scores.ood_auroc(test.predictive_entropy, ood.predictive_entropy))
        arrays["score_out"] = np.asarray(ood.predictive_entropy)
        if passes > 1:
            out["mi_out"] = float(jnp.mean(ood.mutual_information))
            out["ood_auroc_mi"] = float(
                scores.ood_auroc(test.mutual_information, ood.mutual_information)
            )
            arrays["mi_out"] = np.asarray(ood.mutual_information)
    return out, arrays


def regression(
    predictor: Predictor,
    params,
    hp: Hparams,
    keys: RunKeys,
    data: Dataset,
    tau_grid: list[float],
    grid: np.ndarray | None = None,
):
    r"""Metrics and arrays of a regressor (original target units).

    The noise precision :math:`\tau` (of standardized targets) is picked from
    ``eval.tau_grid`` by validation log-likelihood (train when there is no validation
    split), as in Gal & Ghahramani (2016). The predictive distribution is Gaussian with
    variance :math:`1/\tau` plus the variance of the MC means (0 for deterministic
    methods); the test log-likelihood of MC dropout is the Gal-style log-mean-exp over
    passes (``dropout_lab.uncertainty.mc_log_likelihood``).

    Returns:
      ``(metrics, arrays)``: ``train_rmse``, ``test_rmse``, ``gap`` (test minus train
      RMSE), ``test_ll``, ``tau``, ``coverage_90``, ``coverage_95``, ``std_in``
      (mean predictive std on test); arrays ``grid_x``, ``grid_mean``, ``grid_std``
      when ``grid`` (raw 1-D inputs) is given, and for the toy ``mc_std_gap`` and
      ``mc_std_data``: the mean spread of the MC means (epistemic std, 0 for
      deterministic methods) over the gap and over the data ranges of the grid.
    """
    pred_keys = keys.prediction_keys()
    s = data.y_std
    train_t = predictor.means(params, data.x_train, pred_keys["train"], hp)
    test_t = predictor.means(params, data.x_test, pred_keys["test"], hp)
    if len(data.x_val):
        sel_t, sel_y = predictor.means(params, data.x_val, pred_keys["val"], hp), data.y_val
    else:
        sel_t, sel_y = train_t, data.y_train
    lls = [float(scores.log_likelihood(sel_t, sel_y, tau)) for tau in tau_grid]
    tau = float(tau_grid[int(np.argmax(lls))])
    out: dict[str, float] = {"tau": tau}
    for split, means_t, y in (("train", train_t, data.y_train), ("test", test_t, data.y_test)):
        out[f"{split}_rmse"] = float(scores.rmse(means_t, y, s))
    out["gap"] = out["test_rmse"] - out["train_rmse"]
    # Standardized -> original units: log p(y) = log p(y_std) - log(s).
    out["test_ll"] = float(scores.log_likelihood(test_t, data.y_test, tau)) - float(np.log(s))
    test = scores.predictive(test_t, tau)
    std = np.sqrt(np.asarray(test.variance))
    err = np.abs(np.asarray(test.mean) - data.y_test)
    out["coverage_90"] = float(np.mean(err <= Z90 * std))
    out["coverage_95"] = float(np.mean(err <= Z95 * std))
    out["std_in"] = float(std.mean() * s)
    arrays: dict[str, np.ndarray] = {}
    if grid is not None:
        xg = ((grid[:, None] - data.x_mean) / data.x_std).astype(np.float32)
        grid_t = predictor.means(params, xg, pred_keys["grid"], hp)
        on_grid = scores.predictive(grid_t, tau)
        arrays["grid_x"] = grid
        arrays["grid_mean"] = np.asarray(on_grid.mean) * s + data.y_mean
        arrays["grid_std"] = np.sqrt(np.asarray(on_grid.variance)) * s
        # Epistemic part only: how much wider the band is where there is no data.
        mc_std = np.sqrt(np.asarray(on_grid.epistemic)) * s
        gap = np.abs(grid) < TOY_DATA_RANGES[1][0]
        seen = np.zeros_like(gap)
        for low, high in TOY_DATA_RANGES:
            seen |= (grid >= low) & (grid <= high)
        out["mc_std_gap"] = float(mc_std[gap].mean())
        out["mc_std_data"] = float(mc_std[seen].mean())
    return out, arrays


def curve_point(
    predictor: Predictor, params, hp: Hparams, keys: RunKeys, data: Dataset, num_bins: int
) -> dict[str, float]:
    """Train and test NLL and accuracy (or RMSE) of the method's prediction.

    The same prediction (MC passes for an MC method, with
    :meth:`RunKeys.prediction_keys`) and the same definitions (:mod:`lab.scores`) as
    the final evaluation, so the last point of a curve is the number in the table.
    """
    out: dict[str, float] = {}
    pred_keys = keys.prediction_keys()
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if data.task == "classification":
            log_probs_t = predictor.log_probs(params, x, pred_keys[split], hp)
            got = scores.classification(log_probs_t, y, num_bins)
            out[f"{split}_nll"], out[f"{split}_acc"] = float(got["nll"]), float(got["acc"])
        else:
            means_t = predictor.means(params, x, pred_keys[split], hp)
            out[f"{split}_rmse"] = float(scores.rmse(means_t, y, data.y_std))
    return out


def curve_points(
    setup: Setup, data: Dataset, seed: int, eval_batch_size: int, num_bins: int
) -> Callable[[Any], dict[str, float]]:
    """``point(params)``: one learning-curve point of a fit (:func:`lab.fit.fit`).

    :func:`curve_point` with the seed's prediction keys, plus the method's metrics
    read from the parameters (learned rates, pruned fraction).
    """
    predictor, keys, hp = (
        Predictor(setup, eval_batch_size),
        RunKeys.from_seed(seed),
        setup.hparams(),
    )

    def point(params: Any) -> dict[str, float]:
        own = setup.method.param_metrics(setup.settings, params)
        return own | curve_point(predictor, params, hp, keys, data, num_bins)

    return point
