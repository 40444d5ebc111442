"""Final metrics of one trained (method, seed): accuracy, calibration, uncertainty, OOD.

Deterministic methods predict with one forward pass; ``mc`` with the mean of
``num_samples`` stochastic passes (:meth:`Trainer.predict_log_probs`, with the keys the
learning curves use). Every number comes from :mod:`lab.scores`, the lab's one
definition of each metric. Every method's OOD score is the predictive entropy; MC
dropout also reports the mutual information (epistemic part) and its AUROC.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lab import scores
from lab.data import TOY_DATA_RANGES
from lab.train import RunKeys, Trainer

Z90, Z95 = 1.6448536269514722, 1.959963984540054


def classification(trainer: Trainer, params, keys: RunKeys) -> tuple[dict, dict]:
    """Metrics (floats) and arrays (for plots) of a classifier.

    Returns:
      ``(metrics, arrays)``: metrics ``train_acc``, ``test_acc``, ``gap`` (train minus
      test accuracy), ``train_nll``, ``test_nll``, ``nll_gap`` (test minus train),
      ``ece``, ``brier``, mean predictive entropy on test (``entropy_in``) and, with
      an OOD set, ``entropy_out`` and ``ood_auroc`` (entropy as the score); for MC
      also ``mi_in``, ``mi_out`` and ``ood_auroc_mi``. Arrays: ``test_probs``,
      ``test_labels``, ``score_in``, ``score_out`` (entropy; for MC the mutual
      information goes in ``mi_in``/``mi_out``).
    """
    data, bins = trainer.data, trainer.cfg.eval.ece_bins
    pred_keys = keys.prediction_keys()
    out: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    summaries = {}
    for split, x, y in (
        ("train", data.x_train, data.y_train),
        ("test", data.x_test, data.y_test),
        ("ood", data.x_ood, None),
    ):
        if x is None:
            continue
        log_probs_t = trainer.predict_log_probs(params, x, pred_keys[split])
        summaries[split] = scores.uncertainty(log_probs_t)
        if y is not None:
            got = {k: float(v) for k, v in scores.classification(log_probs_t, y, bins).items()}
            out[f"{split}_acc"], out[f"{split}_nll"] = got["acc"], got["nll"]
            if split == "test":
                out["ece"], out["brier"] = got["ece"], got["brier"]
    test = summaries["test"]
    out["gap"] = out["train_acc"] - out["test_acc"]
    out["nll_gap"] = out["test_nll"] - out["train_nll"]
    out["entropy_in"] = float(jnp.mean(test.predictive_entropy))
    arrays["test_probs"] = np.asarray(test.mean)
    arrays["test_labels"] = np.asarray(data.y_test)
    arrays["score_in"] = np.asarray(test.predictive_entropy)
    if trainer.method == "mc":
        out["mi_in"] = float(jnp.mean(test.mutual_information))
        arrays["mi_in"] = np.asarray(test.mutual_information)
    if "ood" in summaries:
        ood = summaries["ood"]
        out["entropy_out"] = float(jnp.mean(ood.predictive_entropy))
        out["ood_auroc"] = float(scores.ood_auroc(test.predictive_entropy, ood.predictive_entropy))
        arrays["score_out"] = np.asarray(ood.predictive_entropy)
        if trainer.method == "mc":
            out["mi_out"] = float(jnp.mean(ood.mutual_information))
            out["ood_auroc_mi"] = float(
                scores.ood_auroc(test.mutual_information, ood.mutual_information)
            )
            arrays["mi_out"] = np.asarray(ood.mutual_information)
    return out, arrays


def regression(trainer: Trainer, params, keys: RunKeys, grid: np.ndarray | None = None):
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
    data = trainer.data
    pred_keys = keys.prediction_keys()
    s = data.y_std
    train_t = trainer.predict_means(params, data.x_train, pred_keys["train"])
    test_t = trainer.predict_means(params, data.x_test, pred_keys["test"])
    if len(data.x_val):
        sel_t, sel_y = trainer.predict_means(params, data.x_val, pred_keys["val"]), data.y_val
    else:
        sel_t, sel_y = train_t, data.y_train
    lls = [float(scores.log_likelihood(sel_t, sel_y, tau)) for tau in trainer.cfg.eval.tau_grid]
    tau = float(trainer.cfg.eval.tau_grid[int(np.argmax(lls))])
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
        grid_t = trainer.predict_means(params, xg, pred_keys["grid"])
        on_grid = scores.predictive(grid_t, tau)
        arrays["grid_x"] = grid
        arrays["grid_mean"] = np.asarray(on_grid.mean) * s + data.y_mean
        arrays["grid_std"] = np.sqrt(np.asarray(on_grid.variance)) * s
        if trainer.cfg.data.name == "toy":
            # Epistemic part only: how much wider the band is where there is no data.
            mc_std = np.sqrt(np.asarray(on_grid.epistemic)) * s
            gap = np.abs(grid) < TOY_DATA_RANGES[1][0]
            seen = np.zeros_like(gap)
            for low, high in TOY_DATA_RANGES:
                seen |= (grid >= low) & (grid <= high)
            out["mc_std_gap"] = float(mc_std[gap].mean())
            out["mc_std_data"] = float(mc_std[seen].mean())
    return out, arrays
