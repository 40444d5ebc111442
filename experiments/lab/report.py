"""Summaries over seeds (mean +- standard error), the Markdown table and PNG plots."""

from __future__ import annotations

import math
import pathlib

import numpy as np

# (key, header, format) in table order; missing keys are skipped.
CLASSIFICATION_COLUMNS = (
    ("test_acc", "test acc", "{:.4f}"),
    ("gap", "acc gap (train-test)", "{:.4f}"),
    ("test_nll", "test NLL", "{:.4f}"),
    ("nll_gap", "NLL gap (test-train)", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("brier", "Brier", "{:.4f}"),
    ("ood_auroc", "OOD AUROC (entropy)", "{:.3f}"),
    ("ood_auroc_mi", "OOD AUROC (MI)", "{:.3f}"),
    ("pruned_fraction", "pruned weights", "{:.3f}"),
    ("test_acc_unpruned", "test acc unpruned", "{:.4f}"),
    ("seconds_per_epoch", "s/epoch", "{:.2g}"),
)
REGRESSION_COLUMNS = (
    ("test_rmse", "test RMSE", "{:.4f}"),
    ("train_rmse", "train RMSE", "{:.4f}"),
    ("test_ll", "test log-lik", "{:.3f}"),
    ("coverage_90", "90% cover", "{:.3f}"),
    ("coverage_95", "95% cover", "{:.3f}"),
    ("std_in", "pred. std", "{:.3f}"),
    ("mc_std_data", "MC std at data", "{:.3f}"),
    ("mc_std_gap", "MC std in gap", "{:.3f}"),
    ("pruned_fraction", "pruned weights", "{:.3f}"),
    ("seconds_per_epoch", "s/epoch", "{:.2g}"),
)


def summarize(per_seed: dict[str, dict]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "se", "n"}}`` over seeds; se = std (ddof 1) / sqrt(n)."""
    keys = sorted({k for m in per_seed.values() for k in m})
    out = {}
    for key in keys:
        vals = np.array([m[key] for m in per_seed.values() if key in m], dtype=np.float64)
        se = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
        out[key] = {"mean": float(vals.mean()), "se": se, "n": len(vals)}
    return out


def table(summary: dict[str, dict], task: str) -> str:
    """Markdown table: one row per method, ``mean ± se`` per column."""
    columns = CLASSIFICATION_COLUMNS if task == "classification" else REGRESSION_COLUMNS
    present = [c for c in columns if any(c[0] in s for s in summary.values())]
    # Concrete dropout's learned rates, one column per layer.
    learned = sorted({k for s in summary.values() for k in s if k.startswith("learned_rate_")})
    present[-1:-1] = [(k, k.replace("_", " "), "{:.3f}") for k in learned]
    lines = [
        "| method | " + " | ".join(h for _, h, _ in present) + " |",
        "|---|" + "---:|" * len(present),
    ]
    for method, stats in summary.items():
        cells = []
        for key, _, fmt in present:
            if key not in stats:
                cells.append("–")
                continue
            s = stats[key]
            cell = fmt.format(s["mean"])
            if not math.isnan(s["se"]):
                cell += " ± " + fmt.format(s["se"])
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(histories: dict[str, list[dict]], task: str, path: pathlib.Path):
    """Train and test curves per method (one seed), loss and accuracy/RMSE panels."""
    plt = _plt()
    panels = (
        (("nll", "NLL"), ("acc", "accuracy")) if task == "classification" else (("rmse", "RMSE"),)
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for i, (method, hist) in enumerate(histories.items()):
            epochs = [p["epoch"] for p in hist]
            color = f"C{i}"
            ax.plot(epochs, [p[f"train_{key}"] for p in hist], "--", color=color, alpha=0.7)
            ax.plot(epochs, [p[f"test_{key}"] for p in hist], "-", color=color, label=method)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{label} (dashed: train, solid: test)")
        if key == "nll":
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(arrays: dict[str, dict], num_bins: int, path: pathlib.Path):
    """Reliability diagram per method: accuracy against confidence in equal-width bins."""
    plt = _plt()
    methods = list(arrays)
    fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods), 3.2), squeeze=False)
    from dropout_lab import metrics

    for ax, method in zip(axes[0], methods, strict=True):
        diagram = metrics.reliability_diagram(
            arrays[method]["test_probs"], arrays[method]["test_labels"], num_bins
        )
        edges, accs = np.asarray(diagram.edges), np.asarray(diagram.accuracy)
        ax.bar(edges[:-1], accs, width=1 / num_bins, align="edge", edgecolor="k", alpha=0.7)
        ax.plot([0, 1], [0, 1], "r--")
        ax.set_title(method)
        ax.set_xlabel("confidence")
    axes[0][0].set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ood_histograms(arrays: dict[str, dict], path: pathlib.Path):
    """Histograms of the uncertainty score on in- vs out-of-distribution inputs."""
    plt = _plt()
    panels = []
    for method, arr in arrays.items():
        if "score_out" in arr:
            panels.append((f"{method}: predictive entropy", arr["score_in"], arr["score_out"]))
        if "mi_out" in arr:
            panels.append((f"{method}: mutual information", arr["mi_in"], arr["mi_out"]))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    for ax, (title, s_in, s_out) in zip(axes[0], panels, strict=True):
        bins = np.linspace(0, max(s_in.max(), s_out.max(), 1e-6), 30)
        ax.hist(s_in, bins, alpha=0.6, density=True, label="in")
        ax.hist(s_out, bins, alpha=0.6, density=True, label="out")
        ax.set_title(title, fontsize=8)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_toy(arrays: dict[str, dict], data_xy: tuple[np.ndarray, np.ndarray], truth, path):
    """1-D toy: data, true function and each method's mean +- 2 predictive std."""
    plt = _plt()
    methods = [m for m in arrays if "grid_x" in arrays[m]]
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.2), squeeze=False)
    x, y = data_xy
    for ax, method in zip(axes[0], methods, strict=True):
        a = arrays[method]
        g = a["grid_x"]
        ax.fill_between(
            g,
            a["grid_mean"] - 2 * a["grid_std"],
            a["grid_mean"] + 2 * a["grid_std"],
            alpha=0.3,
            label="±2 std",
        )
        ax.plot(g, a["grid_mean"], label="mean")
        ax.plot(g, truth(g), "k--", lw=1, label="truth")
        ax.scatter(x, y, s=4, c="k")
        ax.set_title(method)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
