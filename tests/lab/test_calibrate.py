"""Temperature scaling and risk-coverage in the comparison's final evaluation."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropout_lab import metrics
from dropout_lab import uncertainty as U
from lab import calibrate, decision_figures, load_config, load_dataset, run_experiment

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"
TINY = [
    "data.max_examples=240",
    "data.val_fraction=0.2",
    "model.hidden=[16]",
    "train.epochs=1",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "methods.classic.enabled=false",
    "methods.inverted.enabled=false",
    "methods.rdrop.enabled=false",
    "methods.mc.enabled=false",
    "seeds=[0,1]",
    "plots=false",  # the run's other figures cost ~9 s; risk_coverage.png is drawn below
    "progress=false",
]


@pytest.mark.parametrize("passes", [1, 5])
def test_fitted_temperature_lowers_the_nll_where_it_was_fitted(passes):
    k_logits, k_labels, k_flip = jax.random.split(jax.random.key(0), 3)
    logits = 6.0 * jax.random.normal(k_logits, (passes, 300, 5))  # overconfident
    truth = jnp.argmax(logits.mean(0), -1)
    noise = jax.random.randint(k_labels, (300,), 0, 5)
    labels = jnp.where(jax.random.uniform(k_flip, (300,)) < 0.3, noise, truth)
    log_probs_t = jax.nn.log_softmax(logits)
    t = calibrate.temperature(log_probs_t, labels)
    before = metrics.nll_from_log_probs(U.predictive_log_probs(log_probs_t), labels)
    after = metrics.nll_from_log_probs(calibrate.scaled(log_probs_t, t)[0], labels)
    assert float(after) <= float(before) + 1e-6
    assert float(t) > 1.0  # overconfident: softened


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrate")
    cfg = load_config(CONFIGS / "compare_digits.yaml", [*TINY, f"output_dir={folder}"])
    return folder, run_experiment(cfg)


def test_table_aurc_equals_the_metric_of_the_saved_arrays(compare_run):
    folder, out = compare_run
    saved = json.loads((folder / "metrics.json").read_text())
    for method in ("none",):
        tag = next(p for p in (folder / "results").iterdir() if p.name.startswith(method + "-"))
        for seed, m in saved["per_seed"][method].items():
            with np.load(tag / f"seed_{seed}.npz") as z:
                probs, labels = z["test_probs"], z["test_labels"]
            correct = probs.argmax(-1) == labels
            confidence = metrics.max_softmax(probs)
            assert m["aurc"] == pytest.approx(float(metrics.aurc(confidence, correct)), abs=1e-7)
            assert m["augrc"] == pytest.approx(float(metrics.augrc(confidence, correct)), abs=1e-7)
            assert m["temperature"] > 0 and np.isfinite([m["test_nll_ts"], m["ece_ts"]]).all()
    assert "| AURC |" in out["table"] and "| T (fitted) |" in out["table"]


def test_risk_coverage_figure_and_where_t_was_fitted(compare_run, tmp_path):
    folder, out = compare_run
    tag = next(p for p in (folder / "results").iterdir() if p.is_dir())
    arrays = {}
    for seed in out["per_seed"]["none"]:
        with np.load(tag / f"seed_{seed}.npz") as z:
            arrays[seed] = dict(z)
    plot = decision_figures.plot_risk_coverage({"none": arrays}, tmp_path / "rc.png")
    assert plot.path.is_file() and "one line per seed" in plot.caption
    curves = decision_figures.risk_coverage_curves(arrays)
    assert [c.seed for c in curves] == ["0", "1"]
    for c in curves:
        assert c.aurc == pytest.approx(out["per_seed"]["none"][c.seed]["aurc"], abs=1e-7)
        assert c.risk.shape == c.coverage.shape and c.coverage[-1] == 1.0
    text = (folder / "results.md").read_text()
    assert "temperature scaling fitted on the validation split (" in text


def test_no_validation_split_no_temperature():
    # Fitted on the training split, which the net fits, T would sharpen an overconfident
    # prediction: without held-out data only the selective-prediction areas are given.
    data = load_dataset(
        load_config(CONFIGS / "compare_digits.yaml", [*TINY, "data.val_fraction=0"]).data
    )
    assert not calibrate.has_validation(data)
    assert calibrate.description(data).startswith("no temperature scaling")
    n, classes = len(data.y_test), data.num_classes
    log_probs = jax.nn.log_softmax(jax.random.normal(jax.random.key(0), (1, n, classes)))
    out = calibrate.metrics(None, None, None, {}, data, {"test": np.asarray(log_probs)}, 15)
    assert set(out) == {"aurc", "augrc"}
