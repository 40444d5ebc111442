"""dropout_lab.theory: closed forms against exact enumeration over all masks (float64),
Monte Carlo with the library's dropout, autodiff, and a smoke run of the experiment."""

import itertools
import json
import math
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl
from dropout_lab import theory
from lab.config import ConfigError
from lab.theory_config import load_theory_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
RATES = (0.1, 0.5, 0.7)
TIGHT = {"rtol": 1e-11, "atol": 1e-12}  # float64 arithmetic, no sampling error


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def all_masks(d):
    """Every keep-mask in {0, 1}^d, float64 [2**d, d]."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=d)))


def expectation(values, masks, rate):
    """Exact E over independent Bernoulli(1 - rate) mask elements."""
    kept = masks.sum(axis=1)
    probs = (1 - rate) ** kept * rate ** (masks.shape[1] - kept)
    assert math.isclose(probs.sum(), 1.0)
    return np.tensordot(probs, values, axes=1)


def normal(seed, shape):
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("mode", ["inverted", "classic"])
@pytest.mark.parametrize("rate", RATES)
def test_preactivation_moments_exact(x64, mode, rate):
    d = 10
    x, w = normal(0, d), normal(1, d)
    masks = all_masks(d)
    scale = 1 / (1 - rate) if mode == "inverted" else 1.0
    z = (masks * x * scale) @ w
    mean = expectation(z, masks, rate)
    var = expectation(z**2, masks, rate) - mean**2
    np.testing.assert_allclose(theory.preactivation_mean(w, x, rate, mode=mode), mean, **TIGHT)
    np.testing.assert_allclose(theory.preactivation_variance(w, x, rate, mode=mode), var, **TIGHT)
    if mode == "inverted":
        np.testing.assert_allclose(mean, x @ w, **TIGHT)


@pytest.mark.parametrize("rate", RATES)
def test_mc_dropout_variance_and_expected_ambiguity_exact(x64, rate):
    # T = 2 passes of a 5-input unit: 2**10 joint masks.
    d, num_t = 5, 2
    x, w = normal(2, d), normal(3, d)
    masks = all_masks(d * num_t)
    z = (masks.reshape(-1, num_t, d) * x / (1 - rate)) @ w  # [2**10, T]
    average = z.mean(axis=1)
    var = expectation(average**2, masks, rate) - expectation(average, masks, rate) ** 2
    ambiguity = np.mean((z - average[:, None]) ** 2, axis=1)  # E_ind - E_ens, any label
    np.testing.assert_allclose(theory.mc_dropout_variance(w, x, rate, num_t), var, **TIGHT)
    np.testing.assert_allclose(
        theory.expected_ambiguity(w, x, rate, num_t), expectation(ambiguity, masks, rate), **TIGHT
    )
    with pytest.raises(ValueError, match="num_samples"):
        theory.mc_dropout_variance(w, x, rate, 0)


def _regression_case():
    # n = 2 examples, d = 5 features: 2**10 masks over the design matrix.
    return normal(4, (2, 5)), normal(5, 2), normal(6, 5)


def enumerated_loss(w, x, y, rate):
    """E[L_drop(w)] by summing over all 2**(n d) masks (a jax function of w and rate)."""
    n, d = x.shape
    masks = all_masks(n * d).reshape(-1, n, d)
    kept = masks.reshape(len(masks), -1).sum(axis=1)
    probs = (1 - rate) ** kept * rate ** (n * d - kept)
    x_drop = masks * x[None] / (1 - rate)
    losses = jnp.sum(jnp.square(y[None] - x_drop @ w), axis=1) / (2 * n)
    return jnp.dot(probs, losses)


# Compiled once for all rates (the rate is traced); eager autodiff would compile
# every primitive separately.
enumerated_hessian = jax.jit(jax.hessian(enumerated_loss))
enumerated_grad = jax.jit(jax.grad(enumerated_loss))
closed_hessian = jax.jit(jax.hessian(theory.dropout_regression_loss))


@pytest.mark.parametrize("rate", RATES)
def test_regression_loss_exact(x64, rate):
    x, y, w = _regression_case()
    np.testing.assert_allclose(
        theory.dropout_regression_loss(w, x, y, rate), enumerated_loss(w, x, y, rate), **TIGHT
    )


@pytest.mark.parametrize("rate", RATES)
def test_regression_hessian_against_autodiff_of_enumeration(x64, rate):
    x, y, w = _regression_case()
    hessian = theory.dropout_regression_hessian(x, rate)
    chex.assert_shape(hessian, (5, 5))
    np.testing.assert_allclose(hessian, enumerated_hessian(w, x, y, rate), **TIGHT)
    np.testing.assert_allclose(hessian, closed_hessian(w, x, y, rate), **TIGHT)
    # Plain Hessian plus a PSD diagonal: off-diagonal entries unchanged.
    plain = x.T @ x / x.shape[0]
    off = ~np.eye(5, dtype=bool)
    np.testing.assert_allclose(hessian[off], plain[off], **TIGHT)
    assert np.all(np.diag(hessian) >= np.diag(plain))


@pytest.mark.parametrize("rate", RATES)
def test_regression_minimizer_is_the_enumerated_argmin(x64, rate):
    x, y = normal(7, (12, 4)), normal(8, 12)  # n > d so X'X is invertible
    small_x, small_y, _ = _regression_case()
    w_star = theory.dropout_regression_minimizer(small_x, small_y, rate)
    # Stationary point of the exactly enumerated expected loss (which is convex).
    grad = enumerated_grad(w_star, small_x, small_y, rate)
    np.testing.assert_allclose(grad, np.zeros(5), atol=1e-11)
    # Generalized ridge: larger rate shrinks more; rate 0 is least squares.
    w_ols = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(theory.dropout_regression_minimizer(x, y, 0.0), w_ols, **TIGHT)
    norm = np.linalg.norm(theory.dropout_regression_minimizer(x, y, rate))
    assert norm < np.linalg.norm(w_ols)


@pytest.mark.parametrize("rate", RATES)
def test_jensen_gaps_exact(x64, rate):
    keep = 1 - rate
    for x in (-1.3, 0.0, 0.4, 2.0):
        # One input: the mask is 0 (prob p) or 1 (prob q).
        z_kept, z_dropped = x / keep, 0.0
        square = keep * z_kept**2 + rate * z_dropped**2 - x**2
        np.testing.assert_allclose(theory.jensen_gap_square(x, rate), square, **TIGHT)
        np.testing.assert_allclose(theory.jensen_gap_relu(x, rate), 0.0, **TIGHT)
        for bias in (-0.7, 0.3):
            relu = keep * max(z_kept + bias, 0) + rate * max(bias, 0) - max(x + bias, 0)
            np.testing.assert_allclose(theory.jensen_gap_relu(x, rate, bias), relu, **TIGHT)


@pytest.mark.parametrize("mode", ["inverted", "classic"])
def test_exact_mask_expectation_matches_enumeration(x64, mode):
    d, rate, bias = 8, 0.3, 0.2
    x, w = normal(9, d), normal(10, d)
    masks = all_masks(d)
    scale = 1 / (1 - rate) if mode == "inverted" else 1.0
    values = np.maximum((masks * x * scale) @ w + bias, 0)
    got = theory.exact_mask_expectation(
        lambda xd: jax.nn.relu(jnp.dot(w, xd) + bias), x, rate, mode=mode
    )
    np.testing.assert_allclose(got, expectation(values, masks, rate), **TIGHT)
    # A ReLU of several inputs has a Jensen gap: inverted dropout does not match
    # train and test outputs after it.
    # Centred at the kink (w.x + b = 0) the gap is E[relu(noise)], a sizeable
    # fraction (> 0.3) of the pre-activation's standard deviation.
    if mode == "inverted":
        centred = theory.exact_mask_expectation(
            lambda xd: jax.nn.relu(jnp.dot(w, xd) - x @ w), x, rate
        )
        assert centred > 0.3 * np.sqrt(theory.preactivation_variance(w, x, rate))
    with pytest.raises(ValueError, match="at most 20"):
        theory.exact_mask_expectation(jnp.sum, jnp.ones(21), rate)


@pytest.mark.parametrize("rate", RATES)
def test_expected_active_paths_exact(x64, rate):
    widths = (2, 3, 2, 3, 2)  # 8 hidden units: 2**8 masks
    masks = all_masks(8)
    kept = [masks[:, :3].sum(1), masks[:, 3:5].sum(1), masks[:, 5:].sum(1)]
    paths = widths[0] * kept[0] * kept[1] * kept[2] * widths[-1]
    np.testing.assert_allclose(
        theory.expected_active_paths(widths, rate), expectation(paths, masks, rate), **TIGHT
    )
    with pytest.raises(ValueError, match="widths"):
        theory.expected_active_paths((3,), rate)


def test_ambiguity_identity_and_disagreement(x64):
    preds, labels = normal(11, (6, 7, 2)), normal(12, (7, 2))
    out = theory.ambiguity_decomposition(preds, labels)
    num = preds.shape[0]
    pairs = [np.mean((preds[t] - preds[s]) ** 2) for t in range(num) for s in range(num) if t != s]
    np.testing.assert_allclose(out.diversity, np.mean(pairs), **TIGHT)
    np.testing.assert_allclose(out.individual_error, np.mean((preds - labels) ** 2), **TIGHT)
    np.testing.assert_allclose(out.ensemble_error, np.mean((preds.mean(0) - labels) ** 2), **TIGHT)
    np.testing.assert_allclose(out.individual_error - out.ensemble_error, out.ambiguity, **TIGHT)
    np.testing.assert_allclose(out.ambiguity, (num - 1) / (2 * num) * out.diversity, **TIGHT)
    votes = (normal(13, (5, 40)) > 0).astype(np.float64)
    disagreement = np.mean(
        [np.mean(votes[t] != votes[s]) for t in range(5) for s in range(5) if t != s]
    )
    out01 = theory.ambiguity_decomposition(votes, np.ones(40))
    np.testing.assert_allclose(out01.diversity, disagreement, **TIGHT)
    with pytest.raises(ValueError, match="two predictions"):
        theory.ambiguity_decomposition(preds[:1], labels)


@pytest.mark.parametrize("rate", RATES)
def test_batchnorm_statistics_and_shifts_exact(x64, rate):
    # Any input distribution with mean mu and variance s2 (here 4 atoms) x mask.
    values, probs = np.array([-0.5, 0.3, 1.2, 2.5]), np.array([0.1, 0.2, 0.3, 0.4])
    mu = probs @ values
    s2 = probs @ values**2 - mu**2
    keep, gamma, eps = 1 - rate, 1.7, 1e-3
    stats = {}
    for mode, scale in (("classic", 1.0), ("inverted", 1 / keep)):
        mean = keep * scale * mu  # E[m x s]
        var = keep * scale**2 * (probs @ values**2) - mean**2
        got = theory.bn_train_statistics(mu, s2, rate, mode=mode)
        np.testing.assert_allclose(got, (mean, var), **TIGHT)
        stats[mode] = (mean, var)
    tests = {
        "classic_unscaled": (mu, s2),
        "classic": (keep * mu, keep**2 * s2),
        "inverted": (mu, s2),
    }
    for case, (test_mean, test_var) in tests.items():
        train_mean, train_var = stats["inverted" if case == "inverted" else "classic"]
        shift = theory.bn_test_shift(mu, s2, rate, case=case, gamma=gamma, eps=eps)
        np.testing.assert_allclose(
            shift.mean_shift, gamma * (test_mean - train_mean) / np.sqrt(train_var + eps), **TIGHT
        )
        np.testing.assert_allclose(shift.variance_ratio, test_var / train_var, **TIGHT)
    # The closed forms, literally.
    a = theory.bn_test_shift(mu, s2, rate, case="classic_unscaled", gamma=gamma, eps=eps)
    expected = gamma * mu * (1 - keep) / np.sqrt(keep * s2 + keep * (1 - keep) * mu**2 + eps)
    np.testing.assert_allclose(a.mean_shift, expected, **TIGHT)
    for case in ("classic", "inverted"):
        shift = theory.bn_test_shift(mu, s2, rate, case=case)
        np.testing.assert_allclose(shift.mean_shift, 0.0, atol=1e-12)
        np.testing.assert_allclose(
            shift.variance_ratio, keep * s2 / (s2 + (1 - keep) * mu**2), **TIGHT
        )
    with pytest.raises(ValueError, match="case"):
        theory.bn_test_shift(mu, s2, rate, case="a")


def test_monte_carlo_with_library_dropout_agrees():
    # 20000 independent masks; each estimate is within 5 standard errors of the
    # closed form unless a 5-sigma event happens (two-sided probability 6e-7).
    num, rate = 20_000, 0.3
    x, w = jnp.asarray(normal(14, 8), jnp.float32), jnp.asarray(normal(15, 8), jnp.float32)
    keys = jax.random.split(jax.random.key(0), num)
    z = jax.jit(jax.vmap(lambda k: jnp.dot(w, dl.dropout(k, x, rate))))(keys)
    z = np.asarray(z, np.float64)
    assert abs(z.mean() - float(theory.preactivation_mean(w, x, rate))) < 5 * z.std() / math.sqrt(
        num
    )
    # Variance estimate: standard error sqrt((m4 - s^4) / n) of the sample variance.
    var = float(theory.preactivation_variance(w, x, rate))
    m4 = np.mean((z - z.mean()) ** 4)
    assert abs(z.var(ddof=1) - var) < 5 * math.sqrt((m4 - z.var() ** 2) / num)
    for phi, bias, closed in (
        (jnp.square, 0.0, theory.jensen_gap_square(1.5, rate)),
        (jax.nn.relu, -0.5, theory.jensen_gap_relu(1.5, rate, -0.5)),
    ):
        gap, se = jax.jit(
            theory.jensen_gap_mc, static_argnums=(1,), static_argnames=("num_samples",)
        )(jax.random.key(1), phi, jnp.array([1.5]), rate, num_samples=num, bias=bias)
        chex.assert_shape((gap, se), ())
        assert se > 0 and abs(float(gap - closed)) < 5 * float(se)


def test_traced_rate_no_retrace_and_validation():
    x, w = jnp.arange(1.0, 4.0), jnp.ones(3)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def variance(rate):
        return theory.preactivation_variance(w, x, rate)

    chex.clear_trace_counter()
    for rate in (0.2, 0.5):
        np.testing.assert_allclose(
            variance(jnp.float32(rate)), theory.preactivation_variance(w, x, rate), rtol=1e-6
        )
    rates = jnp.array([0.1, 0.4])
    shifts = jax.vmap(lambda r: theory.bn_test_shift(1.0, 0.25, r, case="inverted"))(rates)
    chex.assert_shape(shifts.variance_ratio, (2,))
    assert bool(jnp.isnan(variance(jnp.float32(1.5))))
    with pytest.raises(ValueError, match="outside"):
        theory.jensen_gap_square(1.0, 1.5)


def test_config_loads_and_rejects_unknown_keys():
    cfg = load_theory_config(ROOT / "configs" / "theory_checks.yaml")
    assert cfg.rate == 0.25 and cfg.batchnorm.recalibrate
    cfg = load_theory_config(ROOT / "configs" / "theory_checks.yaml", ["rate=0.5"])
    assert cfg.rate == 0.5
    with pytest.raises(ConfigError, match="no_such_key"):
        load_theory_config(None, ["no_such_key=1"])
    with pytest.raises(ConfigError, match="rate"):
        load_theory_config(None, ["rate=1.5"])
    with pytest.raises(ConfigError, match="multiple"):
        load_theory_config(None, ["num_samples=1001"])


# A tiny run of every check through the command line: num_samples <= 2048 keys is one
# sampling batch, and plot_samples = num_samples shares the BatchNorm draws' compilation.
SMOKE_OVERRIDES = [
    "num_samples=2000", "num_groups=20", "ensemble_size=4", "num_inputs=4",
    "widths=[3,4,4,2]", "rates=[0.2,0.5]", "plot_samples=2000", "regression.num_steps=1000",
    "batchnorm.num_train=512", "batchnorm.num_test=512", "batchnorm.hidden=8",
    "batchnorm.batch_size=128", "batchnorm.num_steps=200", "batchnorm.recalibration_passes=4",
]  # fmt: skip


def test_theory_checks_script_smoke(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "theory_checks.py"),
         str(ROOT / "configs" / "theory_checks.yaml"), *SMOKE_OVERRIDES, f"output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-3000:]
    for name in ("table.md", "results.json", "jensen_gap.png", "bn_shift.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    result = json.loads((tmp_path / "results.json").read_text())
    rows = result["rows"]
    assert len(rows) == 32  # every check, whatever the sizes
    assert len((tmp_path / "table.md").read_text().splitlines()) == 2 + 32 + 2  # + provenance
    assert all(math.isfinite(r["estimate"]) and math.isfinite(r["closed_form"]) for r in rows)
    z_rows = [r for r in rows if r["criterion"].startswith("|z|")]
    assert len(z_rows) == 24 and all(r["std_err"] > 0 for r in z_rows)
    # Identities hold to float precision whatever the sample sizes: they must pass.
    tolerance = f"< {result['config']['exact_tolerance']:g}"
    exact = [r for r in rows if r["criterion"].endswith(tolerance)]
    assert [r["function"] for r in exact] == [
        "dropout_regression_hessian", "ambiguity_decomposition", "ambiguity_decomposition"
    ]  # fmt: skip
    assert all(r["passed"] for r in exact), exact
    assert done.returncode == (0 if all(r["passed"] for r in rows) else 1)
    assert set(result["bn_curves"]["mc"]) == {"classic_unscaled", "classic", "inverted"}
    assert len(result["jensen_curves"]["mc"]) == 3
