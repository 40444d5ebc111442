"""Figures: every seed drawn, coinciding curves marked, counts, ECE and AUROC as computed."""

import pathlib

import numpy as np
import pytest

import dropout_lab as dl
from lab import figures, load_config, report, run_experiment
from lab.config import OOD_KINDS

SEEDS = ("0", "1", "2")
CONFIGS = pathlib.Path(__file__).parents[2] / "configs"


def _history(rng: np.random.Generator, epochs: int = 6) -> list[dict]:
    return [
        {
            "epoch": float(e),
            **{f"{s}_nll": float(rng.uniform(0.05, 1)) for s in ("train", "test")},
            **{f"{s}_acc": float(rng.uniform(0.5, 1)) for s in ("train", "test")},
        }
        for e in range(1, epochs + 1)
    ]


def _classifier_arrays(rng: np.random.Generator, n: int = 50, n_ood: int = 30) -> dict:
    logits = rng.normal(size=(n, 4)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {
        "test_probs": probs.astype(np.float32),
        "test_labels": rng.integers(0, 4, n),
        "score_in": rng.gamma(1.0, 0.2, n),
        "score_out": rng.gamma(3.0, 0.3, n_ood),
    }


@pytest.fixture
def arrays() -> dict:
    rng = np.random.default_rng(0)
    out = {m: {s: _classifier_arrays(rng) for s in SEEDS} for m in ("none", "mc")}
    for a in out["mc"].values():
        a["mi_in"], a["mi_out"] = rng.gamma(1.0, 0.1, 50), rng.gamma(2.0, 0.2, 30)
    return out


def test_seed_band_is_the_tables_standard_error():
    values = np.array([[1.0, 2.0], [2.0, 2.5], [4.0, 3.0]])
    mean, se = figures.seed_band(values)
    for j in range(2):
        stats = report.summarize({str(i): {"v": values[i, j]} for i in range(3)})["v"]
        assert mean[j] == pytest.approx(stats["mean"]) and se[j] == pytest.approx(stats["se"])
    assert np.all(figures.seed_band(values[:1])[1] == 0)  # one seed: no band


def test_coinciding_curves_are_found_and_marked(tmp_path):
    rng = np.random.default_rng(1)
    curves = {m: {s: _history(rng) for s in SEEDS} for m in ("none", "inverted")}
    curves["mc"] = {s: [dict(p) for p in h] for s, h in curves["inverted"].items()}
    assert figures.coinciding(curves, ["train_nll", "test_nll"]) == {"mc": "inverted"}
    for point in curves["mc"]["1"]:
        point["test_nll"] *= 1.5  # the NLL curves differ, the accuracy curves coincide
    plot = figures.plot_learning_curves(curves, "classification", tmp_path / "curves.png")
    assert plot.path.is_file()
    texts = [t.get_text() for t in plot.figure.legends[0].get_texts()]
    assert "mc (circles): same accuracy as inverted" in texts
    assert "mc" in texts  # still drawn as a line where it differs (NLL)
    assert any("3 seeds (0, 1, 2)" in t and "standard error" in t for t in texts)
    assert "mc coincides with inverted in accuracy" in plot.caption
    nll_ax, acc_ax = plot.figure.axes
    # NLL: train and test of 3 methods; accuracy: of 2, plus mc's two marker lines.
    assert [len(ax.lines) for ax in (nll_ax, acc_ax)] == [6, 6]
    assert [ln.get_linestyle() for ln in acc_ax.lines[-2:]] == ["None", "None"]
    assert len(nll_ax.collections) == 6  # one standard-error band per drawn line


def test_reliability_counts_sum_and_ece_is_dl_metrics(arrays, tmp_path):
    plot = figures.plot_reliability(arrays, 10, tmp_path / "reliability.png")
    assert plot.path.is_file()
    titles = [ax.get_title() for ax in plot.figure.axes]
    for method, runs in arrays.items():
        probs = np.concatenate([a["test_probs"] for a in runs.values()])
        labels = np.concatenate([a["test_labels"] for a in runs.values()])
        rel = figures.reliability(runs, 10)
        assert rel.count.sum() == rel.num_examples == 3 * 50
        np.testing.assert_array_equal(
            rel.count, dl.metrics.reliability_diagram(probs, labels, 10).count
        )
        assert rel.ece == float(dl.metrics.ece(probs, labels, 10))
        assert f"{method}: ECE {rel.ece:.4f}" in titles
        bottom = plot.figure.axes[titles.index(f"{method}: ECE {rel.ece:.4f}") + 1]
        assert sum(int(t.get_text()) for t in bottom.texts) == 150  # the annotated counts
    assert "3 seeds (0, 1, 2) pooled" in plot.figure.get_suptitle()
    assert "pooled" in plot.caption and "ECE" in plot.caption


def test_ood_histograms_label_axes_and_show_dl_metrics_auroc(arrays, tmp_path):
    ood = report.ood_description("held_out_classes", [8, 9])
    plot = figures.plot_ood_histograms(arrays, ood, tmp_path / "ood.png")
    assert plot is not None and plot.path.is_file()
    panels = figures.ood_panels(arrays)
    assert [(p.method, p.score) for p in panels] == [
        ("none", "predictive entropy"),
        ("mc", "predictive entropy"),
        ("mc", "mutual information"),
    ]
    for ax, p in zip(plot.figure.axes, panels, strict=True):
        is_out = np.r_[np.zeros(len(p.score_in)), np.ones(len(p.score_out))]
        auroc = float(dl.metrics.auroc(np.r_[p.score_in, p.score_out], is_out))
        assert len(p.score_in) == 150 and p.auroc == auroc
        assert ax.get_legend().get_title().get_text() == f"AUROC {auroc:.3f}"
        assert ax.get_xlabel() == f"{p.score} (nats)"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["in (n=150)", "out (n=90)"]
    assert plot.figure.axes[0].get_ylabel() == "fraction of inputs"
    assert "out: held-out classes 8, 9" in plot.figure.get_suptitle()
    assert "in: in-distribution test inputs" in plot.caption
    no_ood = {m: {s: {"score_in": a["score_in"]} for s, a in r.items()} for m, r in arrays.items()}
    assert figures.plot_ood_histograms(no_ood, "", tmp_path / "none.png") is None


def test_every_ood_kind_is_described():
    assert set(report.OOD_SETS) == set(OOD_KINDS) - {"none"}
    assert report.ood_description("none") == ""


def test_toy_draws_every_seed(tmp_path):
    grid = np.linspace(-1, 1, 9)
    arrays = {
        m: {s: {"grid_x": grid, "grid_mean": grid * i, "grid_std": grid**2 + 0.1} for s in SEEDS}
        for i, m in enumerate(("none", "mc"))
    }
    plot = figures.plot_toy(arrays, (grid, grid), np.sin, tmp_path / "toy.png")
    assert plot is not None and plot.path.is_file()
    ax = plot.figure.axes[0]
    assert len(ax.collections) == 3 + 1  # a band per seed, the data
    assert len(ax.lines) == 3 + 1  # a mean per seed, the true function
    assert "one line and band per seed" in plot.figure.legends[0].get_title().get_text()


def test_run_writes_figures_and_their_captions(tmp_path):
    cfg = load_config(
        CONFIGS / "compare_digits.yaml",
        [
            "data.max_examples=200",
            "model.hidden=[8]",
            "train.epochs=1",
            "train.batch_size=32",
            "train.eval_every=0",  # a curve point per epoch
            "methods.classic.enabled=false",
            "methods.rdrop.enabled=false",
            "methods.inverted.enabled=false",
            "methods.mc.num_samples=2",
            "seeds=[0,1]",
            "plots=true",
            "progress=false",
            f"output_dir={tmp_path}",
        ],
    )
    run_experiment(cfg)
    text = (tmp_path / "results.md").read_text()
    assert "## Figures" in text
    for name in ("learning_curves.png", "reliability.png", "ood_histograms.png"):
        assert (tmp_path / name).is_file(), name
        assert f"**{name}**: " in text and f"![{name}]({name})" in text
    assert text.count("2 seeds (0, 1)") >= 3
    assert text.index("| method |") < text.index("## Figures")  # after the table
