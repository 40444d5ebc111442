"""The run folder's figures, every seed shown, each with a one-line caption.

Each ``plot_*`` function writes one PNG and returns a :class:`~lab.report.Plot` (its
path, the closed figure for inspection, and the caption that
:func:`~lab.report.captions` puts in ``results.md``). What a figure draws is computed
first by a plain function (:func:`seed_band`, :func:`coinciding`, :func:`reliability`,
:func:`ood_panels`), with the metrics of ``dropout_lab.metrics``.

Arguments named ``curves`` and ``arrays`` are keyed ``[method][seed]``: a learning
curve (list of evaluation points) and the evaluation arrays of that seed.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dropout_lab import metrics
from lab import report

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes

FEW_EXAMPLES = 10  # reliability bins with fewer examples are drawn faded
GAP_STYLE: dict[str, Any] = {"fill": False, "hatch": "////", "edgecolor": "C3", "linewidth": 0}
# Panels of the learning curves: (history key suffix, axis label, log scale).
CURVE_PANELS = {
    "classification": (("nll", "NLL", True), ("acc", "accuracy", False)),
    "regression": (("rmse", "RMSE", False),),
}


class Reliability(NamedTuple):
    """Reliability data of one method, pooled over seeds (what the diagram draws).

    ``confidence``, ``accuracy``, ``count`` and ``edges`` are the fields of
    ``dl.metrics.reliability_diagram`` (``[num_bins]``, edges ``[num_bins + 1]``).
    """

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray  # type: ignore[assignment]  # the metrics' name; shadows tuple.count
    edges: np.ndarray
    ece: float
    num_examples: int


class OodPanel(NamedTuple):
    """One OOD histogram: a method's score on in- and out-of-distribution inputs."""

    method: str
    score: str
    score_in: np.ndarray
    score_out: np.ndarray
    auroc: float


def _seeds_text(seeds: list[str]) -> str:
    return (
        f"seed {seeds[0]} only" if len(seeds) == 1 else f"{len(seeds)} seeds ({', '.join(seeds)})"
    )


def seed_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over seeds of ``values [seeds, points]``.

    The standard error is std (ddof 1) / sqrt(seeds), as in the tables; zero for
    one seed (no band).
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return values.mean(0), np.zeros(values.shape[1:])
    return values.mean(0), values.std(0, ddof=1) / math.sqrt(len(values))


def _stack(runs: dict[str, list[dict]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs ``[points]`` and values ``[seeds, points]`` of one curve over seeds."""
    n = min(len(h) for h in runs.values())
    first = next(iter(runs.values()))
    epochs = np.array([p["epoch"] for p in first[:n]], dtype=np.float64)
    return epochs, np.array([[p[key] for p in h[:n]] for h in runs.values()], dtype=np.float64)


def coinciding(curves: dict[str, dict[str, list[dict]]], keys: list[str]) -> dict[str, str]:
    """``{method: earlier method}`` for methods whose curves equal an earlier one's.

    Equal means the same seeds and, for every key in ``keys``, values equal to
    within a relative 1e-6 at every point: the two lines would be drawn one on
    top of the other (e.g. two methods that train identically and differ only at
    prediction, since the curves use the deterministic forward pass).
    """
    same: dict[str, str] = {}
    methods = list(curves)
    for i, method in enumerate(methods):
        for earlier in methods[:i]:
            if earlier in same or set(curves[earlier]) != set(curves[method]):
                continue
            stacks = [(_stack(curves[earlier], k), _stack(curves[method], k)) for k in keys]
            if all(
                a[1].shape == b[1].shape and np.allclose(a[1], b[1], rtol=1e-6, atol=0)
                for a, b in stacks
            ):
                same[method] = earlier
                break
    return same


def _draw_curves(ax: Axes, runs: dict[str, list[dict]], key: str, color: str, marked: bool):
    """Train (dashed) and test (solid) mean over seeds with a ±1 s.e. band.

    A ``marked`` method coincides with an earlier one: it is drawn as hollow
    markers only, so the earlier method's line stays visible under them.
    """
    for split, style in (("train", "--"), ("test", "-")):
        epochs, values = _stack(runs, f"{split}_{key}")
        mean, se = seed_band(values)
        if marked:
            every = max(1, len(epochs) // 10)
            ax.plot(epochs, mean, "o", color=color, mfc="none", markevery=every, zorder=3)
            continue
        ax.plot(epochs, mean, style, color=color, lw=1.6)
        ax.fill_between(epochs, mean - se, mean + se, color=color, alpha=0.2, lw=0)


def _curve_legend(
    methods: list[str], same: dict[str, dict[str, str]], names: dict[str, str], seeds: list[str]
) -> list:
    """Legend entries: each method's line (or circles where it coincides), the styles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Artist] = []
    for i, method in enumerate(methods):
        where = [key for key in same if method in same[key]]
        if len(where) < len(same):
            handles.append(Line2D([], [], color=f"C{i}", lw=1.6, label=method))
        if where:
            what = " and ".join(names[key] for key in where)
            label = f"{method} (circles): same {what} as {same[where[0]][method]}"
            handles.append(Line2D([], [], ls="none", marker="o", mfc="none", color=f"C{i}"))
            handles[-1].set_label(label)
    band = f"line: mean, band: ±1 standard error over {_seeds_text(seeds)}"
    handles += [
        Line2D([], [], color="k", ls="--", label="train"),
        Line2D([], [], color="k", ls="-", label="test"),
        Patch(color="k", alpha=0.2, label=band if len(seeds) > 1 else _seeds_text(seeds)),
    ]
    return handles


def plot_learning_curves(
    curves: dict[str, dict[str, list[dict]]], task: str, path: pathlib.Path
) -> report.Plot:
    """Train and test NLL and accuracy (or RMSE) per epoch, all seeds, every method."""
    panels = CURVE_PANELS[task]
    same = {key: coinciding(curves, [f"train_{key}", f"test_{key}"]) for key, _, _ in panels}
    names = {key: name for key, name, _ in panels}
    seeds = list(next(iter(curves.values())))
    with report.style():
        fig, axes = report.panels(len(panels), 4.6, 3.8, legend_width=4.0)
        for ((ax,), _), (key, name, log) in zip(axes, panels, strict=True):
            for i, (method, runs) in enumerate(curves.items()):
                _draw_curves(ax, runs, key, f"C{i}", method in same[key])
            ax.set(xlabel="epoch", ylabel=name, yscale="log" if log else "linear")
            ax.grid(alpha=0.3)
        handles = _curve_legend(list(curves), same, names, seeds)
        fig.legend(handles=handles, loc="outside right center", frameon=False)
    note = "".join(
        f"; {m} coincides with {e} in {names[key]} (circles)"
        for key in same
        for m, e in same[key].items()
    )
    caption = (
        f"{' and '.join(names.values())} per epoch (train dashed, test solid), each method "
        f"predicting as in the table; mean over {_seeds_text(seeds)} with a ±1 "
        f"standard-error band{note}."
    )
    return report.save(fig, path, caption)


def reliability(runs: dict[str, dict[str, np.ndarray]], num_bins: int) -> Reliability:
    """Reliability diagram and ECE of one method's test predictions, pooled over seeds.

    Args:
      runs: ``{seed: arrays}`` with ``test_probs [n, classes]`` and ``test_labels [n]``.
      num_bins: equal-width confidence bins (``eval.ece_bins``, as the table's ECE).

    Returns:
      :class:`Reliability`: ``dl.metrics.reliability_diagram`` and ``dl.metrics.ece``
      of every seed's predictions together (``seeds * n`` examples).
    """
    probs = np.concatenate([a["test_probs"] for a in runs.values()])
    labels = np.concatenate([a["test_labels"] for a in runs.values()])
    diagram = metrics.reliability_diagram(probs, labels, num_bins)
    ece = float(metrics.ece(probs, labels, num_bins))
    confidence, accuracy, count, edges = (np.asarray(field) for field in diagram)
    return Reliability(confidence, accuracy, count, edges, ece, len(labels))


def _draw_reliability(top: Axes, bottom: Axes, method: str, d: Reliability) -> None:
    """Accuracy and its gap to confidence per bin (top), examples per bin (bottom)."""
    left, width, full = d.edges[:-1], np.diff(d.edges), d.count > 0
    for mask, alpha in ((d.count >= FEW_EXAMPLES, 0.85), (full & (d.count < FEW_EXAMPLES), 0.3)):
        top.bar(left[mask], d.accuracy[mask], width[mask], align="edge", color="C0", alpha=alpha)
    gap = d.confidence[full] - d.accuracy[full]
    top.bar(left[full], gap, width[full], d.accuracy[full], align="edge", **GAP_STYLE)
    top.bar(left[full], d.accuracy[full], width[full], align="edge", fill=False, lw=0.5)
    top.plot([0, 1], [0, 1], "k--", lw=1)
    top.set(xlim=(0, 1), ylim=(0, 1.02), title=f"{method}: ECE {d.ece:.4f}")
    top.tick_params(labelbottom=False)
    bottom.bar(left, d.count, width, align="edge", color="0.55", ec="k", lw=0.5)
    bottom.set(yscale="log", ylim=(0.5, max(int(d.count.max()), 1) * 100), xlabel="confidence")
    for x, w, n in zip(left[full], width[full], d.count[full], strict=True):
        bottom.text(x + w / 2, n * 1.4, str(n), ha="center", va="bottom", fontsize=7, rotation=90)


def plot_reliability(
    arrays: dict[str, dict[str, dict[str, np.ndarray]]], num_bins: int, path: pathlib.Path
) -> report.Plot:
    """Reliability diagram per method, pooled over seeds, with bin counts and ECE."""
    from matplotlib.patches import Patch

    rels = {method: reliability(runs, num_bins) for method, runs in arrays.items()}
    seeds = list(next(iter(arrays.values())))
    with report.style():
        fig, panels = report.panels(len(rels), 3.2, 3.9, ratios=(2.0, 1.0))
        for ((top, bottom), first), (method, rel) in zip(panels, rels.items(), strict=True):
            _draw_reliability(top, bottom, method, rel)
            if first:
                top.set_ylabel("accuracy")
                bottom.set_ylabel("examples")
        n = next(iter(rels.values())).num_examples
        fig.suptitle(
            f"Test predictions of {_seeds_text(seeds)} pooled "
            f"({n // len(seeds)} test examples × {len(seeds)})"
        )
        handles = [
            Patch(color="C0", alpha=0.85, label="accuracy in bin"),
            Patch(color="C0", alpha=0.3, label=f"bin with < {FEW_EXAMPLES} examples"),
            Patch(**GAP_STYLE, label="gap to the bin's mean confidence"),
            Patch(color="0.55", label="examples in bin (log scale)"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    caption = (
        f"accuracy against confidence (top-class probability) in {num_bins} equal-width bins, "
        f"test predictions of {_seeds_text(seeds)} pooled, examples per bin below; the title's "
        "ECE is of the pooled predictions (the table's is the mean of per-seed ECEs)."
    )
    return report.save(fig, path, caption)


def ood_panels(arrays: dict[str, dict[str, dict[str, np.ndarray]]]) -> list[OodPanel]:
    """The OOD histograms to draw: every method's predictive entropy, MC's mutual
    information, each score pooled over seeds with its ``dl.metrics.auroc``.

    The AUROC is that of telling the pooled out-of-distribution scores (positive)
    from the pooled in-distribution ones.
    """
    panels = []
    for method, runs in arrays.items():
        for prefix, score in (("score", "predictive entropy"), ("mi", "mutual information")):
            if not all(f"{prefix}_out" in a for a in runs.values()):
                continue
            s_in = np.concatenate([a[f"{prefix}_in"] for a in runs.values()])
            s_out = np.concatenate([a[f"{prefix}_out"] for a in runs.values()])
            is_out = np.concatenate([np.zeros(len(s_in), bool), np.ones(len(s_out), bool)])
            auroc = float(metrics.auroc(np.concatenate([s_in, s_out]), is_out))
            panels.append(OodPanel(method, score, s_in, s_out, auroc))
    return panels


def plot_ood_histograms(
    arrays: dict[str, dict[str, dict[str, np.ndarray]]], ood: str, path: pathlib.Path
) -> report.Plot | None:
    """Histograms of each uncertainty score on in- vs out-of-distribution inputs.

    Args:
      arrays: ``[method][seed]`` evaluation arrays (``score_in``/``score_out``,
        ``mi_in``/``mi_out``).
      ood: what the OOD set is (:func:`~lab.report.ood_description`).
      path: the PNG.

    Returns:
      The plot, or ``None`` when there is no OOD set.
    """
    panels = ood_panels(arrays)
    if not panels:
        return None
    seeds = list(next(iter(arrays.values())))
    with report.style():
        fig, axes = report.panels(len(panels), 3.6, 3.0)
        for ((ax,), first), p in zip(axes, panels, strict=True):
            bins = np.linspace(0, max(p.score_in.max(), p.score_out.max(), 1e-6), 30)
            for scores, name, color in ((p.score_in, "in", "C0"), (p.score_out, "out", "C1")):
                weights = np.full(len(scores), 1 / len(scores))
                label = f"{name} (n={len(scores)})"
                ax.hist(scores, list(bins), weights=weights, alpha=0.55, color=color, label=label)
            top = 10 * max(
                np.histogram(s, bins)[0].max() / len(s) for s in (p.score_in, p.score_out)
            )
            ax.set(title=p.method, xlabel=f"{p.score} (nats)", yscale="log", ylim=(None, top))
            ax.set_ylabel("fraction of inputs" if first else "")
            ax.legend(title=f"AUROC {p.auroc:.3f}", loc="upper right")
        fig.suptitle(f"in: in-distribution test inputs; out: {ood}; {_seeds_text(seeds)} pooled")
    caption = (
        f"histograms of each uncertainty score, in: in-distribution test inputs, out: {ood}; "
        f"{_seeds_text(seeds)} pooled; the legend's AUROC (out scoring higher) is of the "
        "pooled scores (the table's is the mean of per-seed AUROCs)."
    )
    return report.save(fig, path, caption)


def plot_toy(
    arrays: dict[str, dict[str, dict[str, np.ndarray]]],
    data_xy: tuple[np.ndarray, np.ndarray],
    truth: Callable[[np.ndarray], np.ndarray],
    path: pathlib.Path,
) -> report.Plot | None:
    """1-D toy: data, true function and each seed's mean ± 2 predictive std."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    methods = [m for m, runs in arrays.items() if all("grid_x" in a for a in runs.values())]
    if not methods:
        return None
    seeds = list(arrays[methods[0]])
    with report.style():
        fig, panels = report.panels(len(methods), 4.0, 3.2, sharey=True)
        for ((ax,), first), method in zip(panels, methods, strict=True):
            for a in arrays[method].values():
                g, mean, std = a["grid_x"], a["grid_mean"], a["grid_std"]
                ax.fill_between(g, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.15, lw=0)
                ax.plot(g, mean, color="C0", lw=1)
            ax.plot(g, truth(g), "k--", lw=1)
            ax.scatter(*data_xy, s=4, c="k")
            ax.set(title=method, xlabel="x", ylabel="y" if first else "")
        handles = [
            Line2D([], [], color="C0", lw=1, label="predictive mean"),
            Patch(color="C0", alpha=0.15, label="± 2 predictive std"),
            Line2D([], [], color="k", ls="--", lw=1, label="true function"),
            Line2D([], [], color="k", ls="none", marker=".", label="training data"),
        ]
        title = f"one line and band per seed: {_seeds_text(seeds)}"
        fig.legend(handles=handles, title=title, loc="outside lower center", ncol=4, frameon=False)
    caption = (
        f"the 1-D toy: each method's predictive mean ± 2 predictive std on a grid, one line "
        f"and band per seed, {_seeds_text(seeds)}, with the training data and true function."
    )
    return report.save(fig, path, caption)
