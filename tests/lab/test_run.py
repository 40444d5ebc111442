"""End-to-end runs on a tiny net: outputs, finiteness, determinism, resume."""

import json
import math
import pathlib

import pytest

from lab import load_config, run_experiment
from lab.methods import ARCHITECTURES, ELEMENTWISE, METHODS

# The MLP methods (structured and concrete: tests/lab/test_structured.py).
MLP_METHODS = [
    n
    for n, m in METHODS.items()
    if m.architectures in (ARCHITECTURES, ELEMENTWISE) or n == "dropconnect"
]

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"
TINY = [
    "data.max_examples=240",
    "data.val_fraction=0",  # the step counts below assume every non-test row trains
    "model.hidden=[16]",
    "train.epochs=2",
    "train.batch_size=32",
    "train.eval_every=0",  # a curve point per epoch
    "train.eval_batch_size=64",
    "methods.mc.num_samples=4",
    "methods.mc.chunk_size=2",
    "seeds=[0,1]",
    "plots=true",
    "progress=false",
]
ALL_ON = [f"methods.{m}.enabled=true" for m in MLP_METHODS]


def _cfg(tmp_path, *extra, config=CONFIGS / "compare_digits.yaml"):
    return load_config(config, [*TINY, f"output_dir={tmp_path}", *extra])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    return folder, run_experiment(_cfg(folder, *ALL_ON))


def test_every_method_runs_and_writes_outputs(digits_run):
    folder, out = digits_run
    for name in (
        "config.yaml",
        "metrics.json",
        "results.md",
        "learning_curves.png",
        "reliability.png",
        "ood_histograms.png",
    ):
        assert (folder / name).is_file(), name
    saved = json.loads((folder / "metrics.json").read_text())
    assert set(saved["summary"]) == set(MLP_METHODS)
    for method, per_seed in saved["per_seed"].items():
        assert set(per_seed) == {"0", "1"}
        for metrics in per_seed.values():
            for key in ("test_acc", "test_nll", "ece", "brier", "gap", "ood_auroc"):
                assert math.isfinite(metrics[key]), (method, key)
            assert 0 <= metrics["test_acc"] <= 1
    assert "ood_auroc_mi" in saved["per_seed"]["mc"]["0"]
    assert saved["summary"]["none"]["test_acc"]["n"] == 2
    table = (folder / "results.md").read_text()
    assert "| rdrop |" in table and "±" in table
    assert list(saved["learning_curves"]["inverted"][-1]) == [
        "step",
        "epoch",
        "train_loss",
        "train_nll",
        "train_acc",
        "test_nll",
        "test_acc",
    ]


def test_same_seed_same_metrics(digits_run, tmp_path):
    _, first = digits_run
    again = run_experiment(
        _cfg(
            tmp_path,
            "methods.classic.enabled=false",
            "methods.rdrop.enabled=false",
            "seeds=[1]",
            "plots=false",
        )
    )
    for method in ("none", "inverted", "mc"):
        a, b = dict(first["per_seed"][method]["1"]), dict(again["per_seed"][method]["1"])
        a.pop("seconds_per_epoch"), b.pop("seconds_per_epoch")
        assert a == b, method


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches(digits_run, tmp_path):
    _, full = digits_run
    only = [f"methods.{m}.enabled={m in ('inverted', 'mc')}" for m in METHODS]
    # A checkpoint at every evaluation (every 3 steps); crash at mc seed 1's second one.
    cfg = _cfg(tmp_path, *only, "train.eval_every=3", "train.checkpoint_every=1", "plots=false")
    calls = []

    def crash(method, seed, step, point):
        calls.append((method, seed, step))
        if sum(c[:2] == ("mc", 1) for c in calls) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(cfg, on_eval=crash)
    steps = [c[2] for c in calls if c[:2] == ("mc", 0)]
    assert steps[:2] == [3, 6] and len(steps) >= 3
    seen = []
    resumed = run_experiment(cfg, on_eval=lambda m, s, step, p: seen.append((m, s, step)))
    # Finished (method, seed) pairs are not redone; mc seed 1 resumes after its 2nd eval.
    assert seen == [("mc", 1, step) for step in steps[2:]]
    for method in ("inverted", "mc"):
        for seed in ("0", "1"):
            a, b = dict(full["per_seed"][method][seed]), dict(resumed["per_seed"][method][seed])
            a.pop("seconds_per_epoch"), b.pop("seconds_per_epoch")
            assert a == b, (method, seed)


def test_regression_toy_end_to_end(tmp_path):
    cfg = load_config(
        CONFIGS / "regression_toy.yaml",
        [
            "model.hidden=[16]",
            "train.epochs=2",
            "methods.mc.num_samples=4",
            "seeds=[0]",
            "progress=false",
            f"output_dir={tmp_path}",
        ],
    )
    out = run_experiment(cfg)
    assert (tmp_path / "toy_predictive.png").is_file()
    assert set(out["per_seed"]) == {"none", "inverted", "mc", "gaussian"}
    for metrics in (m["0"] for m in out["per_seed"].values()):
        for key in ("test_rmse", "test_ll", "coverage_90", "coverage_95"):
            assert math.isfinite(metrics[key]), key
        assert metrics["coverage_90"] <= metrics["coverage_95"]
    # Deterministic predictors have no spread over passes; MC dropout has.
    assert out["per_seed"]["none"]["0"]["mc_std_gap"] == 0
    assert out["per_seed"]["mc"]["0"]["mc_std_gap"] > 0


@pytest.mark.parametrize(
    "config",
    ["compare_breast_cancer", "regression_diabetes"],  # mnist1d: see test_data
)
def test_other_configs_smoke(config, tmp_path):
    only_mc = [f"methods.{m}.enabled={m == 'mc'}" for m in METHODS]
    cfg = load_config(
        CONFIGS / f"{config}.yaml",
        [*only_mc, "data.max_examples=300", "model.hidden=[8]", "train.epochs=1",
         "methods.mc.num_samples=2", "seeds=[0]", "plots=false", "progress=false",
         f"output_dir={tmp_path}"],
    )  # fmt: skip
    out = run_experiment(cfg)
    key = "test_acc" if out["task"] == "classification" else "test_rmse"
    assert math.isfinite(out["per_seed"]["mc"]["0"][key])
    if cfg.data.ood != "none":
        assert math.isfinite(out["per_seed"]["mc"]["0"]["ood_auroc_mi"])
