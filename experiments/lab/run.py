"""Runs a whole comparison: every enabled method x every seed, resumable, with outputs.

Run folder layout (``cfg.output_dir``, default ``runs/<name>``)::

    config.yaml          the resolved config (load it again to repeat the run)
    metrics.json         per-seed metrics, mean/se summaries, learning curves
    results.md           the table (mean ± standard error over seeds)
    *.png                learning curves, reliability, OOD histograms, toy band
    checkpoints/<method>-<fingerprint>/seed_<s>/   orbax checkpoints
    results/<method>-<fingerprint>/seed_<s>.json   finished (method, seed) metrics

A finished (method, seed) is never recomputed; an unfinished one resumes from its last
checkpoint. The fingerprint hashes everything that changes a method's numbers, so a
run with different overrides in the same folder does not reuse stale results.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable

import numpy as np
from omegaconf import OmegaConf

from lab import distributed, evaluate, report
from lab.config import ExperimentConfig, enabled_methods, to_yaml
from lab.data import TOY_PLOT_RANGE, Dataset, load_dataset, toy_function
from lab.model import describe
from lab.train import RunKeys, Trainer


def run_dir(cfg: ExperimentConfig) -> pathlib.Path:
    """The run folder: ``cfg.output_dir`` or ``runs/<cfg.name>``."""
    return pathlib.Path(cfg.output_dir or os.path.join("runs", cfg.name))


def fingerprint(cfg: ExperimentConfig, method: str) -> str:
    """Hash of the settings that determine ``method``'s results (not seeds or flags)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)  # a structured config converts to a dict
    relevant = {k: container[k] for k in ("data", "model", "train", "eval")}
    relevant["method"] = container["methods"][method]
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _write_atomic(path: pathlib.Path, text: str) -> None:
    if not distributed.is_primary():  # several hosts: process 0 writes the outputs
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_one(
    trainer: Trainer,
    seed: int,
    folder: pathlib.Path,
    tag: str,
    *,
    on_eval: Callable[[int, dict], None] | None = None,
) -> dict:
    """Trains (or resumes) and evaluates one (method, seed); cached in ``results/``.

    Returns:
      ``{"metrics", "history", "timing"}`` (arrays for plots are saved next to it as
      ``seed_<s>.npz``).
    """
    result_path = folder / "results" / tag / f"seed_{seed}.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    state, history, timing = trainer.fit(
        seed, folder / "checkpoints" / tag / f"seed_{seed}", on_eval=on_eval
    )
    keys = RunKeys.from_seed(seed)
    if trainer.task == "classification":
        metrics, arrays = evaluate.classification(trainer, state["params"], keys)
    else:
        grid = None
        if trainer.cfg.data.name == "toy":
            grid = np.linspace(*TOY_PLOT_RANGE, 241)
        metrics, arrays = evaluate.regression(trainer, state["params"], keys, grid)
    metrics.update(trainer.param_metrics(state["params"]))
    metrics.update(trainer.unpruned_metrics(state["params"]))
    metrics["seconds_per_epoch"] = timing["seconds_per_epoch"]
    result = {"metrics": metrics, "history": history, "timing": timing}
    if distributed.is_primary():
        result_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(result_path.with_suffix(".npz"), **arrays)
    _write_atomic(result_path, json.dumps(result, indent=1))
    return result


def run_experiment(
    cfg: ExperimentConfig,
    *,
    on_eval: Callable[[str, int, int, dict], None] | None = None,
    on_start: Callable[[str, int, int], None] | None = None,
    data: Dataset | None = None,
) -> dict:
    """Runs every enabled method over every seed and writes the run folder.

    Args:
      cfg: a checked config (:func:`~lab.config.load_config`).
      on_eval: ``on_eval(method, seed, step, point)`` after each evaluation.
      on_start: ``on_start(method, seed, total_steps)`` before each (method, seed).
      data: an already loaded data set (default: loaded from ``cfg.data``).

    Returns:
      The content of ``metrics.json``: ``task``, ``per_seed``, ``summary``,
      ``timing`` and ``table``.
    """
    distributed.initialize(cfg.distributed)  # before anything touches a device
    data = data if data is not None else load_dataset(cfg.data)
    methods = enabled_methods(cfg)
    folder = run_dir(cfg)
    _write_atomic(folder / "config.yaml", to_yaml(cfg))
    per_seed: dict[str, dict] = {}
    histories: dict[str, list] = {}
    timing: dict[str, dict] = {}
    arrays: dict[str, dict] = {}
    for method in methods:
        trainer = Trainer(cfg, method, data)
        tag = f"{method}-{fingerprint(cfg, method)}"
        per_seed[method] = {}
        for seed in cfg.seeds:
            if on_start is not None:
                on_start(method, seed, trainer.total_steps)
            hook = None
            if on_eval is not None:

                def hook(step, point, method=method, seed=seed):
                    on_eval(method, seed, step, point)

            result = run_one(trainer, seed, folder, tag, on_eval=hook)
            per_seed[method][str(seed)] = result["metrics"]
            if seed == cfg.seeds[0]:
                histories[method] = result["history"]
                timing[method] = result["timing"]
                if distributed.is_primary():
                    with np.load(folder / "results" / tag / f"seed_{seed}.npz") as z:
                        arrays[method] = dict(z)
    summary = {m: report.summarize(s) for m, s in per_seed.items()}
    text = report.table(summary, data.task)
    out = {
        "name": cfg.name,
        "task": data.task,
        "seeds": list(cfg.seeds),
        "per_seed": per_seed,
        "summary": summary,
        "timing": timing,
        "learning_curves": histories,
        "table": text,
    }
    _write_atomic(folder / "metrics.json", json.dumps(out, indent=1))
    header = (
        f"# {cfg.name}\n\nmean ± standard error over seeds {list(cfg.seeds)}; "
        f"data `{cfg.data.name}` ({len(data.x_train)} train / {len(data.x_test)} test), "
        f"{describe(cfg.model)}, {cfg.train.epochs} epochs.\n\n"
    )
    _write_atomic(folder / "results.md", header + text)
    if cfg.plots and distributed.is_primary():
        _plots(cfg, data, folder, histories, arrays)
    return out


def _plots(cfg, data: Dataset, folder: pathlib.Path, histories, arrays) -> None:
    report.plot_learning_curves(histories, data.task, folder / "learning_curves.png")
    if data.task == "classification":
        report.plot_reliability(arrays, cfg.eval.ece_bins, folder / "reliability.png")
        report.plot_ood_histograms(arrays, folder / "ood_histograms.png")
    elif cfg.data.name == "toy":
        x = data.x_train[:, 0] * data.x_std[0] + data.x_mean[0]
        y = data.y_train * data.y_std + data.y_mean
        report.plot_toy(arrays, (x, y), toy_function, folder / "toy_predictive.png")
