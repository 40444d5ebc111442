"""Vmapped sweeps: a whole grid of dropout rates x seeds (x hyper-parameters) in one program.

The experiment trainer's step is pure and takes the rates as traced values, so a grid
of models is trained by ``jax.vmap`` of that same step over stacked parameters,
optimizer states, keys and hyper-parameters (rate, input rate, R-Drop's alpha, adamw's
weight decay), scanned over steps exactly like :meth:`Trainer.train_chunk
<lab.train.Trainer.train_chunk>`. Grid point ``i`` uses seed ``s``'s
:class:`~lab.train.RunKeys`, so it sees the same initialization,
batches and dropout masks as the sequential trainer with that seed and rate; only the
matmuls may round differently (batched kernels), see :func:`train_grid`.

:func:`run_sweep` trains and evaluates every method's grid and writes tables and plots;
:func:`run_mc_sweep` trains MC-dropout models per rate and evaluates them for several
sample counts T (accuracy, NLL, ECE, mutual information, OOD AUROC and the spread of
the MC estimate, which falls as :math:`T^{-1/2}`).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import pathlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lab import distributed, evaluate, provenance, report, scores
from lab.data import Dataset, load_dataset
from lab.run import _write_atomic, run_dir
from lab.sweep_config import SweepConfig
from lab.train import RunKeys, Trainer, compile_forward

_PROGRAMS: dict[tuple, Callable] = {}

# (key, label, direction) of the metrics summarized against the rate; direction +1:
# higher is better, -1: lower is better, 0: no best marked.
CLASSIFICATION_METRICS = (
    ("test_acc", "test accuracy", 1),
    ("train_acc", "train accuracy", 0),
    ("gap", "gap (train - test acc)", 0),
    ("test_nll", "test NLL", -1),
    ("nll_gap", "NLL gap (test - train)", 0),
    ("ece", "ECE", -1),
    ("brier", "Brier", -1),
    ("entropy_in", "entropy (in)", 0),
    ("entropy_out", "entropy (OOD)", 0),
    ("ood_auroc", "OOD AUROC (entropy)", 1),
    ("mi_in", "MI (in)", 0),
    ("mi_out", "MI (OOD)", 0),
    ("ood_auroc_mi", "OOD AUROC (MI)", 1),
    ("final_train_loss", "final train loss", 0),
)
REGRESSION_METRICS = (
    ("test_rmse", "test RMSE", -1),
    ("train_rmse", "train RMSE", 0),
    ("gap", "gap (test - train RMSE)", 0),
    ("test_ll", "test log-lik", 1),
    ("coverage_95", "95% coverage", 0),
    ("std_in", "pred. std", 0),
    ("final_train_loss", "final train loss", 0),
)


@dataclass(frozen=True)
class GridPoint:
    """One model of a sweep.

    Attributes:
      method: a method name (``inverted``, ``rdrop``, ...).
      rate: dropout rate after every hidden activation.
      seed: training seed (:meth:`RunKeys.from_seed`).
      alpha: R-Drop's KL weight (ignored by other methods).
      weight_decay: adamw's weight decay (``None``: ``train.weight_decay``).
    """

    method: str
    rate: float
    seed: int
    alpha: float = 0.0
    weight_decay: float | None = None

    @property
    def series(self) -> str:
        """Name of the curve this point belongs to (method and fixed hyper-parameters)."""
        name = self.method
        if self.method == "rdrop":
            name += f" alpha={self.alpha:g}"
        if self.weight_decay is not None:
            name += f" wd={self.weight_decay:g}"
        return name


def grid_points(cfg: SweepConfig, method: str) -> list[GridPoint]:
    """The grid of ``method``: alphas x weight decays x rates x seeds (seed fastest)."""
    s = cfg.sweep
    rates = [0.0] if method == "none" else [float(r) for r in s.rates]
    alphas = [float(a) for a in s.alphas] if method == "rdrop" else [0.0]
    decays: list[float | None] = [float(w) for w in s.weight_decays] or [None]
    seeds = range(s.first_seed, s.first_seed + s.seeds)
    return [
        GridPoint(method, rate, seed, alpha, wd)
        for alpha in alphas
        for wd in decays
        for rate in rates
        for seed in seeds
    ]


def with_hyperparameters(
    trainer: Trainer,
    *,
    rate=None,
    input_rate=None,
    alpha=None,
    weight_decay=None,
) -> Trainer:
    """A shallow copy of ``trainer`` with other (possibly traced) hyper-parameters.

    The copy shares the model, data and compiled prediction programs (which take the
    rates as arguments), so evaluating it compiles nothing new. ``weight_decay``
    replaces the optimizer by adamw with that decay (same state structure).
    """
    t = copy.copy(trainer)
    if rate is not None:
        t.rate = rate
    if input_rate is not None:
        t.input_rate = input_rate
    if alpha is not None:
        t.alpha = alpha
    if weight_decay is not None:
        t.tx = optax.adamw(trainer.cfg.train.learning_rate, weight_decay=weight_decay)
    return t


def _grid_program(trainer: Trainer, num_steps: int, vary_wd: bool) -> Callable:
    """``jit(scan(vmap(step)))`` over grid points: the trainer's chunk, vmapped per step.

    All points of a chunk start at the same step, so the step counter stays unbatched
    and each epoch's permutations are drawn under a real ``lax.cond`` once per epoch
    (vmapping the whole scan would batch the predicate, turning the cond into a
    select that sorts on every step).
    """
    perms_of = jax.vmap(trainer.epoch_permutation, in_axes=(0, None))
    spe = trainer.steps_per_epoch

    def one(state, x, y, key, rate, input_rate, alpha, wd):
        t = with_hyperparameters(trainer, alpha=alpha, weight_decay=wd if vary_wd else None)
        return t.step(state, x, y, key, rate, input_rate)

    def chunk(states, x_all, y_all, data_keys, dropout_keys, *hyper):
        def body(carry, _):
            states, perms, step = carry
            perms = jax.lax.cond(
                step % spe == 0, lambda: perms_of(data_keys, step // spe), lambda: perms
            )
            idx = jax.vmap(trainer.batch_rows, in_axes=(0, None))(perms, step)
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(dropout_keys, step)
            states, loss = jax.vmap(one)(states, x_all[idx], y_all[idx], keys, *hyper)
            return (states, perms, step + 1), loss

        step = states["step"][0]
        carry = (states, perms_of(data_keys, step // spe), step)
        (states, _, _), losses = jax.lax.scan(body, carry, None, length=num_steps)
        return states, losses.T

    return jax.jit(chunk)


def _stack_keys(seeds: Sequence[int]) -> RunKeys:
    keys = [RunKeys.from_seed(int(s)) for s in seeds]
    return RunKeys(*(jnp.stack([getattr(k, f) for k in keys]) for f in RunKeys.__annotations__))


def init_grid(trainer: Trainer, seeds: Sequence[int]) -> dict:
    """Stacked initial states ``[P, ...]``: :meth:`Trainer.init` vmapped over seeds."""
    keys = _stack_keys(seeds)
    name = ("init", trainer.program_key, len(seeds))
    if name not in _PROGRAMS:
        _PROGRAMS[name] = jax.jit(jax.vmap(lambda i, d, r, e: trainer.init(RunKeys(i, d, r, e))))
    return _PROGRAMS[name](keys.init, keys.data, keys.dropout, keys.eval)


@dataclass
class GridTraining:
    """Trained grid.

    Attributes:
      points: the grid points, in order.
      states: stacked final states ``{"params", "opt_state", "step"}`` (leading axis P).
      losses: ``[P, num_periods]`` mean training loss per ``eval_every`` steps.
      seconds: wall-clock seconds of the training (compilation included).
    """

    points: list[GridPoint]
    states: dict
    losses: np.ndarray
    seconds: float


def train_grid(
    trainer: Trainer,
    points: Sequence[GridPoint],
    *,
    input_rate: float = 0.0,
    chunk_size: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> GridTraining:
    """Trains every grid point with one vmapped, jitted step (per chunk of points).

    Point ``i`` follows exactly the sequential recipe of :meth:`Trainer.train_chunk`
    (initialization, batches and masks from ``RunKeys.from_seed(seed)``, the step
    ``trainer.step``) with its own rate, alpha and weight decay as traced values.
    Masks and batches are bit-identical to the sequential run; the vmapped matmuls
    are batched kernels that may round differently (a few float32 ulp per step,
    growing slowly with training: the tests bound the parameters to 1e-4 relative
    after 2 epochs).

    Args:
      trainer: the method's trainer (its config fixes model, optimizer, data).
      points: grid points of ``trainer.method``.
      input_rate: input dropout rate of every point.
      chunk_size: points per compiled program (``None``: all at once). The last
        chunk is padded with copies of its first point, so every chunk runs the same
        program; the padding is discarded. With a mesh (``trainer.mesh``, from the
        config's ``mesh`` section) each chunk's points are split over all its
        devices, every device training its own points; chunks are padded to a
        multiple of the device count. Each point's result is the same as without
        a mesh (see ``tests/sharding``).
      on_progress: ``on_progress(points_done_steps, total_point_steps)`` after each
        ``eval_every`` steps of a chunk.

    Returns:
      A :class:`GridTraining` (states stacked in ``points`` order).
    """
    points = list(points)
    num = len(points)
    size = num if chunk_size is None else min(int(chunk_size), num)
    mesh = trainer.mesh
    if mesh is not None:
        size = -(-size // mesh.size) * mesh.size
    vary_wd = any(p.weight_decay is not None for p in points)
    total, period = trainer.total_steps, trainer.eval_every
    start_time = time.perf_counter()
    states, losses = [], []
    done = 0
    for start in range(0, num, size):
        chunk = points[start : start + size]
        padded = chunk + [chunk[0]] * (size - len(chunk))
        keys = _stack_keys([p.seed for p in padded])
        state = init_grid(trainer, [p.seed for p in padded])
        hyper = [
            jnp.asarray([p.rate for p in padded], jnp.float32),
            jnp.full((size,), input_rate, jnp.float32),
            jnp.asarray([p.alpha for p in padded], jnp.float32),
            jnp.asarray([p.weight_decay or 0.0 for p in padded], jnp.float32),
        ]
        if mesh is not None:
            on_grid = distributed.grid_sharding(mesh)
            state, hyper = distributed.put((state, hyper), on_grid)
            keys = RunKeys(
                *distributed.put((keys.init, keys.data, keys.dropout, keys.eval), on_grid)
            )
        chunk_losses = []
        step = 0
        while step < total:
            n = min(period - step % period, total - step)
            name = (trainer.program_key, n, size, vary_wd)
            if name not in _PROGRAMS:
                _PROGRAMS[name] = _grid_program(trainer, n, vary_wd)
            state, loss = _PROGRAMS[name](
                state, trainer.x_train, trainer.y_train, keys.data, keys.dropout, *hyper
            )
            chunk_losses.append(distributed.fetch(loss).mean(axis=1))
            step += n
            if on_progress is not None:
                on_progress(done + len(chunk) * step, num * total)
        done += len(chunk) * total
        states.append(jax.tree.map(lambda a, k=len(chunk): a[:k], state))
        losses.append(np.stack(chunk_losses, axis=1)[: len(chunk)])
    stacked = jax.tree.map(lambda *a: jnp.concatenate(a), *states)
    return GridTraining(points, stacked, np.concatenate(losses), time.perf_counter() - start_time)


def point_params(states: dict, index: int):
    """Parameters of grid point ``index`` from stacked states."""
    return jax.tree.map(lambda a: a[index], states["params"])


def evaluate_grid(
    trainer: Trainer, training: GridTraining, *, input_rate: float = 0.0
) -> list[dict]:
    """Final metrics of every point (``evaluate.classification`` / ``regression``).

    Returns:
      One dict per point: the point's fields, ``final_train_loss`` and the metrics.
    """
    rows = []
    for i, point in enumerate(training.points):
        t = with_hyperparameters(trainer, rate=point.rate, input_rate=input_rate)
        params, keys = point_params(training.states, i), RunKeys.from_seed(point.seed)
        if trainer.task == "classification":
            metrics, _ = evaluate.classification(t, params, keys)
        else:
            metrics, _ = evaluate.regression(t, params, keys)
        row = {**asdict(point), "series": point.series}
        row["final_train_loss"] = float(training.losses[i, -1])
        row.update(metrics)
        rows.append(row)
    return rows


def summarize_rows(rows: list[dict], metric_keys: Sequence[str], by: Sequence[str]) -> list[dict]:
    """Mean and standard error over seeds of ``metric_keys`` for each ``by`` group."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[b] for b in by)
        groups.setdefault(key, {})[str(row["seed"])] = {
            k: row[k] for k in metric_keys if k in row and row[k] is not None
        }
    out = []
    for key, per_seed in groups.items():
        entry = dict(zip(by, key, strict=True))
        entry["n"] = len(per_seed)
        entry["stats"] = report.summarize(per_seed)
        out.append(entry)
    return out


def best_rates(summary: list[dict], metrics: Sequence[tuple]) -> dict[str, dict[str, float]]:
    """``{series: {metric: best rate}}`` for the metrics with a direction."""
    best: dict[str, dict[str, float]] = {}
    for series in dict.fromkeys(e["series"] for e in summary):
        entries = [e for e in summary if e["series"] == series]
        for key, _, direction in metrics:
            vals = [(e["stats"][key]["mean"], e["rate"]) for e in entries if key in e["stats"]]
            if direction and len(vals) > 1:
                pick = max(vals) if direction > 0 else min(vals)
                best.setdefault(series, {})[key] = pick[1]
    return best


def _fmt(stats: dict, key: str) -> str:
    if key not in stats:
        return "–"
    s = stats[key]
    text = f"{s['mean']:.4f}"
    if not math.isnan(s["se"]):
        text += f" ± {s['se']:.4f}"
    return text


def markdown_table(
    summary: list[dict], metrics: Sequence[tuple], best: dict, index: Sequence[str]
) -> str:
    """Markdown table, one row per summary entry; the best value per series in bold."""
    present = [m for m in metrics if any(m[0] in e["stats"] for e in summary)]
    lines = [
        "| " + " | ".join([*index, "n", *(label for _, label, _ in present)]) + " |",
        "|" + "---|" * len(index) + "---:|" * (len(present) + 1),
    ]
    for e in summary:
        cells = [str(e[i]) for i in index] + [str(e["n"])]
        for key, _, _ in present:
            cell = _fmt(e["stats"], key)
            if best.get(e.get("series"), {}).get(key) == e.get("rate") and cell != "–":
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    """Rows (flat dicts) as CSV, the union of their keys as header."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _flat_summary(summary: list[dict]) -> list[dict]:
    rows = []
    for e in summary:
        row = {k: v for k, v in e.items() if k != "stats"}
        for key, s in e["stats"].items():
            row[f"{key}_mean"], row[f"{key}_se"] = s["mean"], s["se"]
        rows.append(row)
    return rows


def plot_vs(
    summary: list[dict],
    panels: Sequence[tuple],
    path: pathlib.Path,
    *,
    x: str = "rate",
    series: str = "series",
    best: dict | None = None,
    logx: bool = False,
) -> None:
    """Mean ± standard error (band) of each panel's metrics against ``x``, per series.

    Args:
      summary: entries of :func:`summarize_rows`.
      panels: ``(title, [(metric_key, line_style, label_suffix), ...])`` per panel.
      path: PNG file.
      x: the x-axis field.
      series: the field that names a curve.
      best: ``{series: {metric: x}}`` marked with a star.
      logx: log-scaled x axis.
    """
    plt = report._plt()
    names = list(dict.fromkeys(e[series] for e in summary))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels, strict=True):
        for i, name in enumerate(names):
            entries = sorted((e for e in summary if e[series] == name), key=lambda e: e[x])
            for key, style, suffix in lines:
                pts = [(e[x], e["stats"][key]) for e in entries if key in e["stats"]]
                if not pts:
                    continue
                xs = np.array([p[0] for p in pts], dtype=np.float64)
                mean = np.array([p[1]["mean"] for p in pts])
                se = np.nan_to_num(np.array([p[1]["se"] for p in pts]))
                ax.plot(xs, mean, style, color=f"C{i}", label=f"{name}{suffix}", marker=".")
                ax.fill_between(xs, mean - se, mean + se, color=f"C{i}", alpha=0.2)
                at = (best or {}).get(name, {}).get(key)
                if at is not None:
                    j = int(np.argmin(np.abs(xs - at)))
                    ax.plot(xs[j], mean[j], "*", color=f"C{i}", markersize=14, mec="k")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(x)
        if logx:
            ax.set_xscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------- training sweep
def run_sweep(
    cfg: SweepConfig,
    *,
    data: Dataset | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Trains and evaluates every method's grid; writes tables and plots.

    Run folder (``cfg.output_dir``, default ``runs/<name>``): ``config.yaml``,
    ``sweep.json`` (per-point rows, summaries, best rates, timings), ``sweep.md``,
    ``sweep_points.csv``, ``sweep_summary.csv`` and the PNG plots ``test_vs_rate``,
    ``gap_vs_rate``, ``ece_vs_rate`` and ``ood_vs_rate`` (classification).

    Args:
      cfg: a checked sweep config (:func:`~lab.sweep_config.
        load_sweep_config`).
      data: an already loaded data set (default: loaded from ``cfg.data``).
      on_progress: ``on_progress(method, done, total)`` (steps x points).

    Returns:
      The content of ``sweep.json``.
    """
    from lab.config import to_yaml

    distributed.initialize(cfg.distributed)  # before anything touches a device
    data = data if data is not None else load_dataset(cfg.data)
    folder = run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    rows: list[dict] = []
    timing: dict[str, dict] = {}
    for method in cfg.sweep.methods:
        trainer = Trainer(cfg, method, data)
        hook = None
        if on_progress is not None:

            def hook(done, total, method=method):
                on_progress(method, done, total)

        points = grid_points(cfg, method)
        training = train_grid(
            trainer,
            points,
            input_rate=cfg.sweep.input_rate,
            chunk_size=cfg.sweep.chunk_size,
            on_progress=hook,
        )
        timing[method] = {"points": len(points), "train_seconds": training.seconds}
        rows.extend(evaluate_grid(trainer, training, input_rate=cfg.sweep.input_rate))
    metrics = CLASSIFICATION_METRICS if data.task == "classification" else REGRESSION_METRICS
    keys = [m[0] for m in metrics]
    summary = summarize_rows(rows, keys, ("series", "method", "alpha", "weight_decay", "rate"))
    best = best_rates(summary, metrics)
    table = markdown_table(summary, metrics, best, ("series", "rate"))
    best_lines = [
        f"- {series}: " + ", ".join(f"{k} at rate {r:g}" for k, r in picks.items())
        for series, picks in best.items()
    ]
    record = provenance.of_run(cfg, provenance.data_hash(data))
    out = {
        "name": cfg.name,
        "task": data.task,
        "seeds": list(range(cfg.sweep.first_seed, cfg.sweep.first_seed + cfg.sweep.seeds)),
        "rows": rows,
        "summary": summary,
        "best_rate": best,
        "timing": timing,
        "table": table,
        "provenance": record,
    }
    _write_atomic(folder / "sweep.json", json.dumps(out, indent=1))
    _write_atomic(folder / "sweep_points.csv", csv_text(rows))
    _write_atomic(folder / "sweep_summary.csv", csv_text(_flat_summary(summary)))
    header = (
        f"# {cfg.name}: sweep\n\nmean ± standard error over {cfg.sweep.seeds} seeds; "
        f"data `{cfg.data.name}` ({len(data.x_train)} train / {len(data.x_test)} test), "
        f"MLP {list(cfg.model.hidden)}, {cfg.train.epochs} epochs, input rate "
        f"{cfg.sweep.input_rate:g}. Best rate per metric in bold.\n\n"
    )
    best_text = "\n\n## Best rate per metric\n\n" + "\n".join(best_lines) + "\n"
    footer = "\n" + provenance.footer(record)
    _write_atomic(folder / "sweep.md", header + table + best_text + footer)
    if cfg.plots and distributed.is_primary():
        _sweep_plots(summary, best, data.task, folder)
    return out


def _sweep_plots(summary: list[dict], best: dict, task: str, folder: pathlib.Path) -> None:
    if task == "classification":
        plot_vs(
            summary,
            [("test accuracy", [("test_acc", "-", "")]), ("test NLL", [("test_nll", "-", "")])],
            folder / "test_vs_rate.png",
            best=best,
        )
        plot_vs(
            summary,
            [
                ("train - test accuracy", [("gap", "-", "")]),
                ("test - train NLL", [("nll_gap", "-", "")]),
            ],
            folder / "gap_vs_rate.png",
        )
        plot_vs(
            summary, [("ECE (test)", [("ece", "-", "")])], folder / "ece_vs_rate.png", best=best
        )
        if any("entropy_out" in e["stats"] for e in summary):
            panels = [
                (
                    "predictive entropy: in (solid) vs OOD (dashed)",
                    [("entropy_in", "-", " in"), ("entropy_out", "--", " OOD")],
                ),
                (
                    "OOD AUROC (entropy; MI dashed)",
                    [("ood_auroc", "-", ""), ("ood_auroc_mi", "--", " MI")],
                ),
            ]
            if any("mi_out" in e["stats"] for e in summary):
                panels.insert(
                    1,
                    (
                        "mutual information: in vs OOD",
                        [("mi_in", "-", " in"), ("mi_out", "--", " OOD")],
                    ),
                )
            plot_vs(summary, panels, folder / "ood_vs_rate.png", best=best)
    else:
        plot_vs(
            summary,
            [("test RMSE", [("test_rmse", "-", "")]), ("test log-lik", [("test_ll", "-", "")])],
            folder / "test_vs_rate.png",
            best=best,
        )
        plot_vs(summary, [("test - train RMSE", [("gap", "-", "")])], folder / "gap_vs_rate.png")


# ----------------------------------------------------------------- MC-uncertainty sweep
def _mc_program(trainer: Trainer, params, rows, num_samples: int, chunk: int | None):
    """Compiled ``[P, T, n, classes]`` MC log-softmax passes, vmapped over grid points."""
    from dropout_lab import mc

    def one(params, rate, key, rows, input_rate):
        def fn(k):
            return trainer.model.apply(
                {"params": params}, rows, rate, input_rate,
                deterministic=False, rngs={"dropout": k},
            )  # fmt: skip

        return mc.sample(fn, key, num_samples, chunk_size=chunk, transform=jax.nn.log_softmax)

    size = jax.tree.leaves(params)[0].shape[0]
    name = ("mc_log", trainer.program_key, size, rows.shape, num_samples, chunk)
    if name not in _PROGRAMS:
        keys = jax.random.split(jax.random.key(0), size)
        rates = jnp.zeros((size,), jnp.float32)
        _PROGRAMS[name] = compile_forward(
            jax.vmap(one, in_axes=(0, 0, 0, None, None)), params, rates, keys, rows, jnp.float32(0)
        )
    return _PROGRAMS[name]


@jax.jit(static_argnames="num_bins")
def _mc_metrics_jit(log_in, log_out, labels, num_bins: int) -> dict[str, jax.Array]:
    got = scores.classification(log_in, labels, num_bins)
    u_in = scores.uncertainty(log_in)
    out = {
        "test_acc": got["acc"],
        "test_nll": got["nll"],
        "ece": got["ece"],
        "brier": got["brier"],
        "entropy_in": jnp.mean(u_in.predictive_entropy),
        "mi_in": jnp.mean(u_in.mutual_information),
    }
    if log_out is not None:
        u_out = scores.uncertainty(log_out)
        out["entropy_out"] = jnp.mean(u_out.predictive_entropy)
        out["mi_out"] = jnp.mean(u_out.mutual_information)
        out["ood_auroc"] = scores.ood_auroc(u_in.predictive_entropy, u_out.predictive_entropy)
        out["ood_auroc_mi"] = scores.ood_auroc(u_in.mutual_information, u_out.mutual_information)
    return out


def _mc_metrics(log_in, log_out, labels, num_bins: int) -> dict[str, float]:
    """Metrics of T passes of log-probabilities ``[T, n, classes]`` in and out of distribution.

    All from :mod:`lab.scores`, as the comparison's table (one program per T).
    """
    out = _mc_metrics_jit(log_in, log_out, labels, num_bins=num_bins)
    return {k: float(v) for k, v in out.items()}


def mc_spread(probs_t: np.ndarray, counts: Sequence[int]) -> dict[int, float]:
    r"""Spread of the MC mean over disjoint blocks of ``T`` passes, for each ``T``.

    .. math::
        s(T) = \Big(\operatorname{mean}_{i,c}\ \operatorname{Var}_b\big[\bar p^{(b)}_{ic}
        \big]\Big)^{1/2},\qquad \bar p^{(b)} = \tfrac1T \textstyle\sum_{t\in b} p_t

    with the unbiased (ddof 1) variance over the ``M // T`` blocks, averaged before
    the square root so few blocks do not bias :math:`s` low. For independent passes
    :math:`s(T) = \sigma / \sqrt T`.

    Args:
      probs_t: ``[M, n, classes]`` passes.
      counts: sample counts ``T`` (each ``<= M / 2``).

    Returns:
      ``{T: s(T)}``.
    """
    probs_t = np.asarray(probs_t, np.float64)
    out = {}
    for t in counts:
        blocks = probs_t.shape[0] // t
        means = probs_t[: blocks * t].reshape(blocks, t, *probs_t.shape[1:]).mean(1)
        out[int(t)] = float(np.sqrt(means.var(axis=0, ddof=1).mean()))
    return out


def loglog_slope(counts: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(counts)``."""
    return float(np.polyfit(np.log(counts), np.log(values), 1)[0])


def run_mc_sweep(
    cfg: SweepConfig,
    *,
    data: Dataset | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """MC-dropout uncertainty against the rate and the number of passes T.

    Trains ``mc`` models (inverted dropout) for every rate x seed of ``cfg.sweep``
    with :func:`train_grid`, then, vmapped over the grid points (in chunks of
    ``sweep.chunk_size``), draws ``max(T)`` MC passes on the test and OOD inputs
    (``dl.mc.sample``, ``mc_sweep.chunk_size`` passes at a time) and scores the
    first T passes for every T: accuracy, NLL, ECE, Brier, entropy and mutual
    information in and out of distribution, and the OOD AUROCs. The spread of the MC
    estimate (:func:`mc_spread`) uses ``spread_blocks * max(T)`` further passes on
    ``spread_examples`` test rows; its log-log slope against T should be -1/2.

    Writes ``mc_sweep.json``, ``mc_sweep.md``, ``mc_sweep_points.csv``,
    ``mc_sweep_summary.csv`` and the plots ``mc_metrics_vs_T``, ``mc_spread_vs_T``,
    ``mc_metrics_vs_rate`` and ``mc_in_out_vs_rate`` into the run folder.

    Args:
      cfg: a checked sweep config; the data must be a classification task.
      data: an already loaded data set (default: loaded from ``cfg.data``).
      on_progress: ``on_progress(stage, done, total)``.

    Returns:
      The content of ``mc_sweep.json``.

    Raises:
      ValueError: the task is regression.
    """
    from lab.config import to_yaml

    distributed.initialize(cfg.distributed)  # before anything touches a device
    data = data if data is not None else load_dataset(cfg.data)
    if data.task != "classification":
        raise ValueError("the MC sweep scores classifiers; data.task is regression.")
    m = cfg.mc_sweep
    counts = sorted(int(t) for t in m.num_samples)
    t_max = counts[-1]
    folder = run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    trainer = Trainer(cfg, "mc", data)
    points = grid_points(cfg, "mc")
    hook = None
    if on_progress is not None:

        def hook(done, total):
            on_progress("train", done, total)

    input_rate = cfg.sweep.input_rate
    training = train_grid(
        trainer, points, input_rate=input_rate, chunk_size=cfg.sweep.chunk_size, on_progress=hook
    )
    n_test = len(data.x_test)
    rows_all = np.concatenate([data.x_test] + ([data.x_ood] if data.x_ood is not None else []))
    rows_spread = data.x_test[: m.spread_examples]
    num_spread = m.spread_blocks * t_max
    size = len(points) if cfg.sweep.chunk_size is None else min(cfg.sweep.chunk_size, len(points))
    rows: list[dict] = []
    spread_rows: list[dict] = []
    start_time = time.perf_counter()
    for start in range(0, len(points), size):
        chunk = points[start : start + size]
        pad = size - len(chunk)
        idx = np.array(list(range(start, start + len(chunk))) + [start] * pad)
        params = jax.tree.map(lambda a, idx=idx: a[idx], training.states["params"])
        rates = jnp.asarray([points[i].rate for i in idx], jnp.float32)
        eval_keys = _stack_keys([points[i].seed for i in idx]).eval
        split = jax.vmap(lambda k: jax.random.split(k, 2))(eval_keys)
        k_main, k_spread = split[:, 0], split[:, 1]
        f = _mc_program(trainer, params, jnp.asarray(rows_all), t_max, m.chunk_size)
        ir = jnp.float32(input_rate)
        log_probs = np.asarray(f(params, rates, k_main, jnp.asarray(rows_all), ir))
        g = _mc_program(trainer, params, jnp.asarray(rows_spread), num_spread, m.chunk_size)
        probs_s = np.exp(np.asarray(g(params, rates, k_spread, jnp.asarray(rows_spread), ir)))
        for j, point in enumerate(chunk):
            for t in counts:
                lp_in = log_probs[j, :t, :n_test]
                lp_out = log_probs[j, :t, n_test:] if data.x_ood is not None else None
                row = {"rate": point.rate, "seed": point.seed, "num_samples": t}
                row.update(_mc_metrics(lp_in, lp_out, data.y_test, cfg.eval.ece_bins))
                rows.append(row)
            spread = mc_spread(probs_s[j], counts)
            # sigma / sqrt(T) from the single-pass variance: the 1/sqrt(T) prediction.
            sigma = float(np.sqrt(probs_s[j].astype(np.float64).var(axis=0, ddof=1).mean()))
            for t in counts:
                spread_rows.append(
                    {
                        "rate": point.rate,
                        "seed": point.seed,
                        "num_samples": t,
                        "spread": spread[t],
                        "predicted": sigma / math.sqrt(t),
                    }
                )
        if on_progress is not None:
            on_progress("evaluate", start + len(chunk), len(points))
    eval_seconds = time.perf_counter() - start_time
    metrics = [m_ for m_ in CLASSIFICATION_METRICS if m_[0] != "final_train_loss"]
    keys = [k for k, _, _ in metrics]
    for r in rows:
        r["series"] = f"T={r['num_samples']}"
    summary_t = summarize_rows(rows, keys, ("series", "num_samples", "rate"))
    by_rate = [dict(e, series=f"rate={e['rate']:g}") for e in summary_t]
    for r in spread_rows:
        r["series"] = f"rate={r['rate']:g}"
    spread_summary = summarize_rows(
        spread_rows, ["spread", "predicted"], ("series", "rate", "num_samples")
    )
    slopes = {}
    for rate in dict.fromkeys(p.rate for p in points):
        if rate == 0.0:
            continue  # no dropout: every pass is the same, the spread is 0.
        per_seed = [
            loglog_slope(counts, [r["spread"] for r in spread_rows if r["rate"] == rate
                                  and r["seed"] == seed])
            for seed in dict.fromkeys(p.seed for p in points)
        ]  # fmt: skip
        slopes[f"{rate:g}"] = {
            "mean": float(np.mean(per_seed)),
            "se": float(np.std(per_seed, ddof=1) / math.sqrt(len(per_seed)))
            if len(per_seed) > 1
            else float("nan"),
        }
    best = best_rates([e for e in summary_t if e["num_samples"] == t_max], metrics)
    table = markdown_table(
        [e for e in summary_t if e["num_samples"] == t_max], metrics, best, ("rate",)
    )
    table_t = markdown_table(
        summary_t,
        [m_ for m_ in metrics if m_[0] in ("test_acc", "test_nll", "ece", "mi_in", "ood_auroc_mi")],
        {},
        ("num_samples", "rate"),
    )
    slope_lines = "\n".join(
        f"| {rate} | {s['mean']:.3f} ± {s['se']:.3f} |" for rate, s in slopes.items()
    )
    record = provenance.of_run(cfg, provenance.data_hash(data))
    out = {
        "name": cfg.name,
        "counts": counts,
        "rows": rows,
        "spread_rows": spread_rows,
        "summary": summary_t,
        "spread_summary": spread_summary,
        "spread_slope": slopes,
        "best_rate": best,
        "timing": {"train_seconds": training.seconds, "eval_seconds": eval_seconds},
        "table": table,
        "provenance": record,
    }
    _write_atomic(folder / "mc_sweep.json", json.dumps(out, indent=1))
    _write_atomic(folder / "mc_sweep_points.csv", csv_text(rows + spread_rows))
    _write_atomic(
        folder / "mc_sweep_summary.csv",
        csv_text(_flat_summary(summary_t) + _flat_summary(spread_summary)),
    )
    text = (
        f"# {cfg.name}: MC dropout vs rate and T\n\nmean ± standard error over "
        f"{cfg.sweep.seeds} seeds; data `{cfg.data.name}`, MLP {list(cfg.model.hidden)}, "
        f"{cfg.train.epochs} epochs.\n\n## At T = {t_max} (best rate in bold)\n\n{table}\n"
        f"## Against T\n\n{table_t}\n## Spread of the MC estimate\n\n"
        f"Log-log slope of the spread against T (1/sqrt(T) gives -0.5):\n\n"
        f"| rate | slope |\n|---|---:|\n{slope_lines}\n"
    )
    _write_atomic(folder / "mc_sweep.md", text + "\n" + provenance.footer(record))
    if cfg.plots and distributed.is_primary():
        _mc_plots(summary_t, by_rate, spread_summary, slopes, best, t_max, folder)
    return out


def _mc_plots(summary_t, by_rate, spread_summary, slopes, best, t_max, folder) -> None:
    panels = [
        ("test accuracy", [("test_acc", "-", "")]),
        ("test NLL", [("test_nll", "-", "")]),
        ("ECE", [("ece", "-", "")]),
        ("mutual information (in)", [("mi_in", "-", "")]),
    ]
    if any("ood_auroc_mi" in e["stats"] for e in summary_t):
        panels.append(("OOD AUROC (MI)", [("ood_auroc_mi", "-", "")]))
    plot_vs(by_rate, panels, folder / "mc_metrics_vs_T.png", x="num_samples", logx=True)
    at_max = [e for e in summary_t if e["num_samples"] == t_max]
    plot_vs(at_max, panels, folder / "mc_metrics_vs_rate.png", best=best)
    if any("mi_out" in e["stats"] for e in at_max):
        plot_vs(
            at_max,
            [
                (
                    "mutual information: in vs OOD",
                    [("mi_in", "-", " in"), ("mi_out", "--", " OOD")],
                ),
                (
                    "predictive entropy: in vs OOD",
                    [("entropy_in", "-", " in"), ("entropy_out", "--", " OOD")],
                ),
                ("OOD AUROC", [("ood_auroc_mi", "-", " MI"), ("ood_auroc", "--", " entropy")]),
            ],
            folder / "mc_in_out_vs_rate.png",
            best=best,
        )
    plt = report._plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    names = list(dict.fromkeys(e["series"] for e in spread_summary if e["rate"] != 0.0))
    for i, name in enumerate(names):
        entries = sorted(
            (e for e in spread_summary if e["series"] == name), key=lambda e: e["num_samples"]
        )
        ts = np.array([e["num_samples"] for e in entries], dtype=np.float64)
        s = np.array([e["stats"]["spread"]["mean"] for e in entries])
        pred = np.array([e["stats"]["predicted"]["mean"] for e in entries])
        slope = slopes[f"{entries[0]['rate']:g}"]["mean"]
        ax.loglog(ts, s, "o-", color=f"C{i}", label=f"{name}: slope {slope:.3f}")
        ax.loglog(ts, pred, ":", color=f"C{i}")
    ax.set_xlabel("T (MC passes)")
    ax.set_ylabel("spread of the MC mean probability")
    ax.set_title("measured (o) vs sigma/sqrt(T) (dotted)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "mc_spread_vs_T.png", dpi=110)
    plt.close(fig)
