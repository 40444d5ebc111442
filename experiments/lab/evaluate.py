"""Final metrics of one trained (method, seed): accuracy, calibration, uncertainty, OOD.

Deterministic methods predict with one forward pass; ``mc`` with the mean of
``num_samples`` stochastic passes. Every method's OOD score is the predictive entropy;
MC dropout also reports the mutual information (epistemic part) and its AUROC.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lab.data import TOY_DATA_RANGES
from lab.train import RunKeys, Trainer

Z90, Z95 = 1.6448536269514722, 1.959963984540054


@functools.cache
def _jitted(name: str):
    """One jitted program per metric (eager calls would compile every primitive)."""
    from dropout_lab import metrics as M
    from dropout_lab import uncertainty as U

    if name == "summary":
        return jax.jit(U.classification)
    if name == "scores":
        return jax.jit(
            lambda probs, labels, num_bins: (
                M.accuracy(probs, labels),
                M.nll(probs, labels),
                M.ece(probs, labels, num_bins),
                M.brier(probs, labels),
            ),
            static_argnums=2,
        )
    if name == "auroc":
        return jax.jit(M.auroc)
    return jax.jit(U.mc_log_likelihood)


def _probs_t(trainer: Trainer, params, x: np.ndarray, key) -> np.ndarray:
    """Per-pass class probabilities ``[T, n, classes]`` (T = 1 when deterministic)."""
    if trainer.method == "mc":
        return trainer.predict_mc(params, x, key)
    return np.asarray(jax.nn.softmax(jnp.asarray(trainer.predict(params, x))))[None]


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
    k_train, k_test, k_ood = jax.random.split(keys.eval, 3)
    out: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    summaries = {}
    for split, x, key in (
        ("train", data.x_train, k_train),
        ("test", data.x_test, k_test),
        ("ood", data.x_ood, k_ood),
    ):
        if x is None:
            continue
        summaries[split] = _jitted("summary")(jnp.asarray(_probs_t(trainer, params, x, key)))
    for split, y in (("train", data.y_train), ("test", data.y_test)):
        acc, nll, ece, brier = _jitted("scores")(summaries[split].mean, y, bins)
        out[f"{split}_acc"], out[f"{split}_nll"] = float(acc), float(nll)
        if split == "test":
            out["ece"], out["brier"] = float(ece), float(brier)
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
        out["ood_auroc"] = _auroc(test.predictive_entropy, ood.predictive_entropy)
        arrays["score_out"] = np.asarray(ood.predictive_entropy)
        if trainer.method == "mc":
            out["mi_out"] = float(jnp.mean(ood.mutual_information))
            out["ood_auroc_mi"] = _auroc(test.mutual_information, ood.mutual_information)
            arrays["mi_out"] = np.asarray(ood.mutual_information)
    return out, arrays


def _auroc(score_in, score_out) -> float:
    """AUROC of telling OOD (positive, higher score) from in-distribution inputs."""
    scores = jnp.concatenate([jnp.asarray(score_in), jnp.asarray(score_out)])
    is_ood = jnp.concatenate([jnp.zeros(len(score_in), bool), jnp.ones(len(score_out), bool)])
    return float(_jitted("auroc")(scores, is_ood))


def _means_t(trainer: Trainer, params, x: np.ndarray, key) -> np.ndarray:
    """Per-pass regression means ``[T, n]`` in standardized units."""
    if trainer.method == "mc":
        return trainer.predict_mc(params, x, key)[..., 0]
    return trainer.predict(params, x)[None, :, 0]


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
    mc_log_likelihood = _jitted("mc_log_likelihood")
    data = trainer.data
    k_train, k_val, k_test, k_grid = jax.random.split(keys.eval, 4)
    s = data.y_std
    train_t = _means_t(trainer, params, data.x_train, k_train)
    test_t = _means_t(trainer, params, data.x_test, k_test)
    if len(data.x_val):
        sel_t, sel_y = _means_t(trainer, params, data.x_val, k_val), data.y_val
    else:
        sel_t, sel_y = train_t, data.y_train
    lls = [
        float(mc_log_likelihood(jnp.asarray(sel_t), jnp.asarray(sel_y), tau))
        for tau in trainer.cfg.eval.tau_grid
    ]
    tau = float(trainer.cfg.eval.tau_grid[int(np.argmax(lls))])
    out: dict[str, float] = {"tau": tau}
    for split, means_t, y in (("train", train_t, data.y_train), ("test", test_t, data.y_test)):
        out[f"{split}_rmse"] = float(np.sqrt(np.mean((means_t.mean(0) - y) ** 2)) * s)
    out["gap"] = out["test_rmse"] - out["train_rmse"]
    # Standardized -> original units: log p(y) = log p(y_std) - log(s).
    ll = mc_log_likelihood(jnp.asarray(test_t), jnp.asarray(data.y_test), tau)
    out["test_ll"] = float(ll) - float(np.log(s))
    std = np.sqrt(1.0 / tau + test_t.var(0))
    err = np.abs(test_t.mean(0) - data.y_test)
    out["coverage_90"] = float(np.mean(err <= Z90 * std))
    out["coverage_95"] = float(np.mean(err <= Z95 * std))
    out["std_in"] = float(std.mean() * s)
    arrays: dict[str, np.ndarray] = {}
    if grid is not None:
        xg = ((grid[:, None] - data.x_mean) / data.x_std).astype(np.float32)
        grid_t = _means_t(trainer, params, xg, k_grid)
        arrays["grid_x"] = grid
        arrays["grid_mean"] = grid_t.mean(0) * s + data.y_mean
        arrays["grid_std"] = np.sqrt(1.0 / tau + grid_t.var(0)) * s
        if trainer.cfg.data.name == "toy":
            # Epistemic part only: how much wider the band is where there is no data.
            mc_std = np.sqrt(grid_t.var(0)) * s
            gap = np.abs(grid) < TOY_DATA_RANGES[1][0]
            seen = np.zeros_like(gap)
            for low, high in TOY_DATA_RANGES:
                seen |= (grid >= low) & (grid <= high)
            out["mc_std_gap"] = float(mc_std[gap].mean())
            out["mc_std_data"] = float(mc_std[seen].mean())
    return out, arrays
