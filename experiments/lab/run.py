"""Runs a whole comparison: every enabled method x every seed, resumable, with outputs.

Run folder layout (``cfg.output_dir``, default ``runs/<name>``)::

    config.yaml          the resolved config (load it again to repeat the run)
    metrics.json         per-seed metrics, mean/se summaries, learning curves
    results.md           the table (mean ± standard error over seeds), figure captions
    *.png                learning curves, reliability, OOD histograms, risk-coverage,
                         toy band (all seeds)
    checkpoints/<method>-<fingerprint>/seed_<s>/   orbax checkpoints
    checkpoints/<method>-<fingerprint>/seed_<s>.provenance.json   what they came from
    results/<method>-<fingerprint>/seed_<s>.json   finished (method, seed) metrics

Every file is written whole or not at all (a temporary file, then ``os.replace``),
by process 0 only when there are several. A finished (method, seed) is reused and an
unfinished one resumes from its last checkpoint only when its files can be read back
(a truncated or corrupt results file or checkpoint is said in one line and
recomputed) and its provenance (:mod:`lab.provenance`: the method's resolved
settings, a hash of the loaded data arrays, the code version) matches this run's;
otherwise one line says what changed and it is recomputed. ``fresh=true`` reuses
nothing. The fingerprint hashes the settings that change a method's numbers, so runs
with different overrides in the same folder keep apart.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pathlib
import shutil
import socket
import zipfile
from collections.abc import Callable
from contextlib import suppress

import numpy as np
from omegaconf import OmegaConf

from lab import calibrate, decision_figures, distributed, evaluate, figures, provenance, report
from lab import checkpoints as ckpt
from lab.checks import ConfigError
from lab.config import ExperimentConfig, enabled_methods, to_yaml
from lab.data import TOY_PLOT_RANGE, Dataset, load_dataset, toy_function
from lab.fit import RunKeys, Setup, fit, make_setup
from lab.model import describe
from lab.predict import Predictor


def run_dir(cfg: ExperimentConfig) -> pathlib.Path:
    """The run folder: ``cfg.output_dir`` or ``runs/<cfg.name>``."""
    return pathlib.Path(cfg.output_dir or os.path.join("runs", cfg.name))


def method_settings(cfg: ExperimentConfig, method: str) -> dict:
    """The resolved settings that determine ``method``'s results (not seeds or flags)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)  # a structured config converts to a dict
    relevant = {k: container[k] for k in ("data", "model", "train", "eval")}
    relevant["method"] = container["methods"][method]
    return relevant


def fingerprint(cfg: ExperimentConfig, method: str) -> str:
    """Hash of the settings that determine ``method``'s results (not seeds or flags)."""
    return provenance.config_hash(method_settings(cfg, method))[:10]


PROBE_BYTES = 1 << 20  # the output folder must take this much (a full disk fails here)


def check_output_dir(folder: pathlib.Path) -> None:
    """Creates ``folder`` and a probe file in it, and removes the probe, before any work.

    Every process checks (each writes its checkpoint shards there).

    Raises:
      ConfigError: naming ``folder`` and why (not writable, read-only, disk full).
    """
    probe = folder / f".write-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(bytes(PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise ConfigError(
            f"output folder {folder} cannot be written ({err.strerror or err}): choose "
            "another output_dir, or free space there."
        ) from err
    finally:
        with suppress(OSError):
            probe.unlink()


def write_atomic(path: pathlib.Path, content: str | bytes) -> None:
    """Writes ``path`` whole or not at all: a synced temporary file, then ``os.replace``."""
    if not distributed.is_primary():  # several hosts: process 0 writes the outputs
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_npz(path: pathlib.Path, arrays: dict) -> None:
    """``np.savez`` through :func:`write_atomic`."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def _read_json(path: pathlib.Path) -> tuple[dict | None, str | None]:
    """``(content, None)``, or ``(None, why)`` when ``path`` is not a whole JSON object."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # a truncated file: JSONDecodeError
        return None, f"unreadable, truncated or corrupt ({type(err).__name__})"
    return (saved, None) if isinstance(saved, dict) else (None, "unreadable (not an object)")


def _npz_problem(path: pathlib.Path) -> str | None:
    """Why the arrays at ``path`` cannot be read back whole, or ``None``."""
    try:
        with open(path, "rb") as f, np.load(f) as z:  # our file: closed on any error
            for name in z.files:
                z[name]  # reads and CRC-checks every member
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        return f"{path.name} unreadable, truncated or corrupt ({type(err).__name__})"
    return None


def _reusable(
    path: pathlib.Path, folder: pathlib.Path, current: dict, fresh: bool, say: Callable
) -> dict | None:
    """The finished result at ``path`` if it reads back whole and its provenance matches
    ``current``; else says why."""
    if not path.is_file():
        return None
    saved, reason = _read_json(path)
    reason = reason or _npz_problem(path.with_suffix(".npz"))
    if reason is None and saved is not None:
        reason = provenance.stale_reason(saved.get("provenance"), current, fresh=fresh)
        if reason is None:
            return saved
    say(provenance.note(path.relative_to(folder).as_posix(), reason or "unreadable"))
    return None


def _prepare_checkpoints(
    directory: pathlib.Path, folder: pathlib.Path, current: dict, fresh: bool, say: Callable
) -> None:
    """Keeps ``directory``'s checkpoints only if their provenance matches ``current``.

    The record lives next to them (``seed_<s>.provenance.json``); stale checkpoints are
    deleted (by process 0, every process waiting) and the new record written.
    """
    marker = directory.with_name(directory.name + ".provenance.json")
    found = directory.is_dir() and any(directory.iterdir())
    reason = None
    if found:
        saved, reason = _read_json(marker) if marker.is_file() else (None, None)
        reason = reason or provenance.stale_reason(saved, current, fresh=fresh)
    if reason is not None:
        say(provenance.note(directory.relative_to(folder).as_posix() + "/", reason))
    distributed.sync(f"{directory}: provenance read")  # every process read, then write
    if reason is not None and distributed.is_primary():
        shutil.rmtree(directory)
    if reason is not None or not found:
        write_atomic(marker, json.dumps(current, indent=1))
    distributed.sync(f"{directory}: provenance written")


def _delete_checkpoints(directory: pathlib.Path) -> None:
    """Deletes ``directory`` (process 0, every process waiting); its provenance stays."""
    distributed.sync(f"{directory}: unreadable")
    if distributed.is_primary():
        shutil.rmtree(directory, ignore_errors=True)
    distributed.sync(f"{directory}: deleted")


def evaluate_fit(cfg: ExperimentConfig, setup: Setup, data: Dataset, params, seed: int):
    """Final metrics and plot arrays of one fitted (method, seed)."""
    predictor = Predictor(setup, cfg.train.eval_batch_size)
    keys, hp = RunKeys.from_seed(seed), setup.hparams()
    if setup.task == "classification":
        metrics, arrays = evaluate.classification(
            predictor, params, hp, keys, data, cfg.eval.ece_bins
        )
    else:
        grid = np.linspace(*TOY_PLOT_RANGE, 241) if cfg.data.name == "toy" else None
        metrics, arrays = evaluate.regression(
            predictor, params, hp, keys, data, list(cfg.eval.tau_grid), grid
        )
    metrics.update(setup.method.param_metrics(setup.settings, params))
    metrics.update(
        setup.method.final_metrics(setup.model, params, data.x_test, data.y_test, setup.task)
    )
    return metrics, arrays


def run_one(
    cfg: ExperimentConfig,
    setup: Setup,
    data: Dataset,
    seed: int,
    folder: pathlib.Path,
    tag: str,
    *,
    current: dict,
    on_eval: Callable[[int, dict], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> dict:
    """Trains (or resumes) and evaluates one (method, seed); cached in ``results/``.

    Args:
      cfg: the experiment config (``fresh``: reuse nothing).
      setup: the method's setup (:func:`lab.fit.make_setup`).
      data: the data set.
      seed: the training seed.
      folder: the run folder.
      tag: ``<method>-<fingerprint>``.
      current: this run's :func:`~lab.provenance.record` for the method; finished
        results and checkpoints are reused only when theirs matches.
      on_eval: ``on_eval(step, point)`` after each evaluation.
      on_note: receives the line that says why a result is recomputed.

    Returns:
      ``{"metrics", "history", "timing", "provenance", "reused"}`` (``reused``: read
      from an earlier run; arrays for plots are saved next to it as ``seed_<s>.npz``).
    """
    result_path = folder / "results" / tag / f"seed_{seed}.json"
    said: list[str] = []
    cached = _reusable(result_path, folder, current, cfg.fresh, said.append)
    if cached is not None:
        return {**cached, "reused": True}
    checkpoints = folder / "checkpoints" / tag / f"seed_{seed}"
    _prepare_checkpoints(checkpoints, folder, current, cfg.fresh, said.append)
    if said and on_note is not None:
        on_note(said[0])  # one line per (method, seed)
    points = evaluate.curve_points(setup, data, seed, cfg.train.eval_batch_size, cfg.eval.ece_bins)
    try:
        state, history, timing = fit(setup, data, seed, checkpoints, points, on_eval=on_eval)
    except ckpt.Unreadable as err:  # said, deleted, and trained again from the start
        if on_note is not None:
            on_note(provenance.note(checkpoints.relative_to(folder).as_posix() + "/", str(err)))
        _delete_checkpoints(checkpoints)
        state, history, timing = fit(setup, data, seed, checkpoints, points, on_eval=on_eval)
    metrics, arrays = evaluate_fit(cfg, setup, data, state["params"], seed)
    metrics["seconds_per_epoch"] = timing["seconds_per_epoch"]
    result = {"metrics": metrics, "history": history, "timing": timing}
    result["provenance"] = provenance.record(
        current["config_hash"], current["data_hash"], current["code"]
    )
    _save_npz(result_path.with_suffix(".npz"), arrays)  # first: a result has its arrays
    write_atomic(result_path, json.dumps(result, indent=1))
    return {**result, "reused": False}


def run_experiment(
    cfg: ExperimentConfig,
    *,
    on_eval: Callable[[str, int, int, dict], None] | None = None,
    on_start: Callable[[str, int, int], None] | None = None,
    on_done: Callable[[str, int, dict], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    data: Dataset | None = None,
) -> dict:
    """Runs every enabled method over every seed and writes the run folder.

    Args:
      cfg: a checked config (:func:`~lab.config.load_config`).
      on_eval: ``on_eval(method, seed, step, point)`` after each evaluation.
      on_start: ``on_start(method, seed, total_steps)`` before each (method, seed).
      on_done: ``on_done(method, seed, result)`` after each (:func:`run_one`'s result).
      on_note: ``on_note(line)`` when a saved result or checkpoint is not reused:
        ``<path>: <what changed>; recomputing`` (:mod:`lab.provenance`).
      data: an already loaded data set (default: loaded from ``cfg.data``).

    Returns:
      The content of ``metrics.json``: ``task``, ``per_seed``, ``summary``,
      ``timing``, ``table`` and ``provenance`` (its ``recomputed``: the lines said).
    """
    distributed.initialize(cfg.distributed)  # before anything touches a device
    check_output_dir(run_dir(cfg))  # before any work
    data = data if data is not None else load_dataset(cfg.data)
    code, data_hash = provenance.code_version(), provenance.data_hash(data)  # once a run
    notes, say = _collector(on_note)
    methods = enabled_methods(cfg)
    folder = run_dir(cfg)
    write_atomic(folder / "config.yaml", to_yaml(cfg))
    per_seed: dict[str, dict] = {}
    curves: dict[str, dict] = {}  # [method][seed]: learning curve
    timing: dict[str, dict] = {}
    arrays: dict[str, dict] = {}  # [method][seed]: evaluation arrays for the plots
    for method in methods:
        setup = make_setup(cfg, method, data)
        current = provenance.record(fingerprint(cfg, method), data_hash, code)
        tag = f"{method}-{current['config_hash']}"
        per_seed[method] = {}
        for seed in cfg.seeds:
            if on_start is not None:
                on_start(method, seed, setup.schedule.total_steps)
            hook = None if on_eval is None else functools.partial(on_eval, method, seed)
            result = run_one(
                cfg, setup, data, seed, folder, tag, current=current, on_eval=hook, on_note=say
            )
            if on_done is not None:
                on_done(method, seed, result)
            per_seed[method][str(seed)] = result["metrics"]
            curves.setdefault(method, {})[str(seed)] = result["history"]
            timing.setdefault(method, result["timing"])  # the first seed's
            if distributed.is_primary():
                with np.load(folder / "results" / tag / f"seed_{seed}.npz") as z:
                    arrays.setdefault(method, {})[str(seed)] = dict(z)
    summary = {m: report.summarize(s) for m, s in per_seed.items()}
    text = report.table(summary, data.task)
    out = {
        "name": cfg.name,
        "task": data.task,
        "label_names": data.label_names,  # CSV class names of labels 0..k-1, else None
        "seeds": list(cfg.seeds),
        "per_seed": per_seed,
        "summary": summary,
        "timing": timing,
        "learning_curves": {m: c[str(cfg.seeds[0])] for m, c in curves.items()},
        "table": text,
        "provenance": {**provenance.of_run(cfg, data_hash, code), "recomputed": notes},
    }
    plotted = cfg.plots and distributed.is_primary()
    captions = _plots(cfg, data, folder, curves, arrays) if plotted else ""
    _write_reports(cfg, data, folder, out, captions)
    return out


def _write_reports(
    cfg: ExperimentConfig, data: Dataset, folder: pathlib.Path, out: dict, captions: str = ""
) -> None:
    """Writes ``metrics.json`` and ``results.md`` (the table, the figures' ``captions``,
    its provenance at the end)."""
    write_atomic(folder / "metrics.json", json.dumps(out, indent=1))
    header = (
        f"# {cfg.name}\n\nmean ± standard error over seeds {list(cfg.seeds)}; "
        f"data `{cfg.data.name}` ({len(data.x_train)} train / {len(data.x_test)} test), "
        f"{describe(cfg.model)}, {cfg.train.epochs} epochs"
        + (f"; {calibrate.description(data)}" if data.task == "classification" else "")
        + ".\n\n"
    )
    footer = "\n" + provenance.footer(out["provenance"])
    table = out["table"].rstrip("\n") + "\n"
    write_atomic(folder / "results.md", header + table + (captions and "\n" + captions) + footer)


def _collector(on_note: Callable[[str], None] | None) -> tuple[list[str], Callable[[str], None]]:
    """A list of the lines said, and the function that says one (to ``on_note`` too)."""
    notes: list[str] = []

    def say(line: str) -> None:
        notes.append(line)
        if on_note is not None:
            on_note(line)

    return notes, say


def _plots(cfg, data: Dataset, folder: pathlib.Path, curves: dict, arrays: dict) -> str:
    """Writes the PNGs of every seed's ``curves`` and ``arrays``; returns their captions."""
    plots: list[report.Plot | None] = []
    plots.append(figures.plot_learning_curves(curves, data.task, folder / "learning_curves.png"))
    if data.task == "classification":
        ood = report.ood_description(cfg.data.ood, cfg.data.ood_classes)
        bins = cfg.eval.ece_bins
        plots.append(figures.plot_reliability(arrays, bins, folder / "reliability.png"))
        plots.append(figures.plot_ood_histograms(arrays, ood, folder / "ood_histograms.png"))
        plots.append(decision_figures.plot_risk_coverage(arrays, folder / "risk_coverage.png"))
    elif cfg.data.name == "toy":
        x = data.x_train[:, 0] * data.x_std[0] + data.x_mean[0]
        y = data.y_train * data.y_std + data.y_mean
        plots.append(figures.plot_toy(arrays, (x, y), toy_function, folder / "toy_predictive.png"))
    return report.captions(plots)
