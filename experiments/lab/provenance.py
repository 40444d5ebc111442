"""Provenance: what a result was computed from, and whether it may be reused.

A result (a finished (method, seed), an orbax checkpoint) is reused only when its
record matches the run about to make it again on three things:

- the **config**: a hash of the resolved settings that determine the numbers;
- the **data**: a hash of the loaded arrays themselves (not of a file path, so a CSV
  rewritten in place is seen);
- the **code**: ``dropout_lab.__version__``, the JAX version, a hash of the Python
  sources of ``dropout_lab`` and of the lab, and the git commit with a dirty flag.

The git commit and dirty flag come from one ``git status`` call per run (with a
timeout); without git, or outside a repository, they are ``"unknown"`` and only
compared when both sides know them. The source hash is what catches an edit to an
already dirty working tree, the case a dirty flag cannot tell apart; it covers only
the code that computes numbers (not docs, configs, tests, or the lab modules that only
draw and print results, :data:`DISPLAY_ONLY`: tables and figures are redrawn from the
saved results on every run), so editing those reuses results.

Every mismatch is said in one line (:func:`note`), e.g.
``results/none-1a2b/seed_0.json: data changed since it was written (hash 1a2b3c4d ->
5e6f7a8b); recomputing``, and the result is recomputed.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import subprocess
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from omegaconf import OmegaConf

import dropout_lab

UNKNOWN = "unknown"
GIT_TIMEOUT_S = 5.0
_LAB_DIR = pathlib.Path(__file__).resolve().parent
_LIBRARY_DIR = pathlib.Path(dropout_lab.__file__).resolve().parent
# Lab modules that only show results (redrawn every run): not in the source hash.
DISPLAY_ONLY = frozenset({"lab/console.py", "lab/figures.py", "lab/report.py"})
# Config keys that change no number: where outputs go, how they are shown, reuse.
NOT_SETTINGS = ("name", "output_dir", "plots", "progress", "fresh")


def config_hash(settings: Mapping[str, Any]) -> str:
    """Hash of resolved settings (plain JSON-able data), 16 hex digits.

    Args:
      settings: the resolved config, or the part of it that determines a result.

    Returns:
      The first 16 hex digits of the SHA-256 of its sorted JSON.
    """
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings(cfg: Any) -> dict[str, Any]:
    """A config's resolved settings, without the keys that change no number (``NOT_SETTINGS``).

    Args:
      cfg: a config (an OmegaConf node or a structured dataclass instance).
    """
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(container, dict)  # a structured config converts to a dict
    return {str(k): v for k, v in container.items() if k not in NOT_SETTINGS}


def _feed(digest: Any, value: Any) -> None:
    """Adds ``value`` (array, dataclass, named tuple, mapping, sequence, scalar) to ``digest``."""
    if isinstance(value, np.ndarray | jax.Array):
        array = np.ascontiguousarray(np.asarray(value))
        digest.update(f"array {array.dtype.str} {array.shape}".encode())
        digest.update(array.tobytes())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            digest.update(f"field {item.name}".encode())
            _feed(digest, getattr(value, item.name))
    elif isinstance(value, tuple) and hasattr(value, "_asdict"):
        _feed(digest, value._asdict())
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            digest.update(f"key {key}".encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"sequence {len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"scalar {type(value).__name__} {value!r}".encode())


def data_hash(data: Any) -> str:
    """Content hash of a loaded data set: every array's dtype, shape and bytes.

    Args:
      data: a :class:`~lab.data.Dataset` (every field, in order), or any nesting of
        dataclasses, named tuples, mappings, sequences, arrays and scalars.

    Returns:
      16 hex digits of a SHA-256.
    """
    digest = hashlib.sha256()
    _feed(digest, data)
    return digest.hexdigest()[:16]


def source_hash(
    folders: tuple[pathlib.Path, ...] = (_LIBRARY_DIR, _LAB_DIR),
    skip: frozenset[str] = DISPLAY_ONLY,
) -> str:
    """Hash of the ``*.py`` files under ``folders`` (relative path and bytes), 16 hex digits.

    Args:
      folders: package folders (default: ``dropout_lab`` and the lab).
      skip: files left out, as ``<folder name>/<relative path>``.
    """
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            name = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            if name not in skip:
                digest.update(name.encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_state(folder: pathlib.Path = _LAB_DIR) -> tuple[str, bool | str]:
    """The commit checked out at ``folder`` and whether tracked files differ from it.

    One ``git status`` call (untracked files not listed, no index lock taken).

    Returns:
      ``(commit, dirty)``: the full commit hash and a bool, or ``("unknown",
      "unknown")`` when git is missing, slow, or ``folder`` is not in a repository.
    """
    command = ["git", "-C", str(folder), "status", "--porcelain=v2", "--branch"]
    try:
        done = subprocess.run(
            [*command, "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN, UNKNOWN
    lines = done.stdout.splitlines()
    oids = [line.split()[2] for line in lines if line.startswith("# branch.oid ")]
    if done.returncode != 0 or not oids or oids[0] == "(initial)":
        return UNKNOWN, UNKNOWN
    return oids[0], any(not line.startswith("#") for line in lines)


def code_version() -> dict[str, Any]:
    """The version of the code that computes the numbers (one git call).

    Returns:
      ``{"package", "jax", "source", "commit", "dirty"}``: ``dropout_lab.__version__``,
      ``jax.__version__``, :func:`source_hash`, and :func:`git_state`'s pair.
    """
    commit, dirty = git_state()
    return {
        "package": dropout_lab.__version__,
        "jax": jax.__version__,
        "source": source_hash(),
        "commit": commit,
        "dirty": dirty,
    }


def record(config: str, data: str | None, code: Mapping[str, Any]) -> dict[str, Any]:
    """A provenance record, as written into every results file.

    Args:
      config: :func:`config_hash` of the settings the result depends on.
      data: :func:`data_hash` of the arrays it was trained and evaluated on (``None``:
        no data set, e.g. checks on synthetic draws the config's seeds determine).
      code: :func:`code_version`.

    Returns:
      ``{"config_hash", "data_hash", "code", "written_at"}`` (UTC, ISO 8601).
    """
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"config_hash": config, "data_hash": data, "code": dict(code), "written_at": now}


def of_run(cfg: Any, data: str | None, code: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The :func:`record` of a whole run's outputs: all its :func:`settings`.

    Args:
      cfg: the run's config.
      data: :func:`data_hash` of its data set (``None``: it reads none).
      code: :func:`code_version` when already known (default: asked now).
    """
    code = code_version() if code is None else code
    return record(config_hash(settings(cfg)), data, code)


def _commit_label(code: Mapping[str, Any]) -> str:
    commit, dirty = code.get("commit", UNKNOWN), code.get("dirty", UNKNOWN)
    if commit == UNKNOWN:
        return UNKNOWN
    return commit[:7] + ("+dirty" if dirty is True else "")


def _code_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`code_version` results, e.g. ``source 1a2b -> 3c4d``."""
    changes = []
    for key, label in (("package", "dropout_lab"), ("jax", "jax"), ("source", "source")):
        before, after = saved.get(key, UNKNOWN), current.get(key, UNKNOWN)
        if before != after:
            short = 8 if key == "source" else None
            changes.append(f"{label} {str(before)[:short]} -> {str(after)[:short]}")
    before, after = _commit_label(saved), _commit_label(current)
    if UNKNOWN not in (before, after) and before != after:  # compared where git answered
        changes.append(f"commit {before} -> {after}")
    return changes


def mismatch(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """Why a saved result may not be reused, or ``None`` when its record matches.

    Args:
      saved: the record stored with the result (``None``: none was stored).
      current: the :func:`record` of the run about to reuse it.

    Returns:
      ``None``, or the reason, e.g. ``data changed since it was written (hash 1a2b3c4d
      -> 5e6f7a8b)``; several changes are named together.
    """
    if not saved:
        return "written before provenance was recorded"
    changed: list[tuple[str, str]] = []
    for what in ("config", "data"):
        before, after = saved.get(f"{what}_hash"), current[f"{what}_hash"]
        if before != after:
            changed.append((what, f"hash {str(before)[:8]} -> {str(after)[:8]}"))
    code = _code_changes(saved.get("code") or {}, current["code"])
    if code:
        changed.append(("code", ", ".join(code)))
    if not changed:
        return None
    if len(changed) == 1:
        return f"{changed[0][0]} changed since it was written ({changed[0][1]})"
    names = " and ".join(what for what, _ in changed)
    return f"{names} changed since it was written ({'; '.join(f'{w} {d}' for w, d in changed)})"


def stale_reason(
    saved: Mapping[str, Any] | None, current: Mapping[str, Any], *, fresh: bool
) -> str | None:
    """:func:`mismatch`, or ``"not reused (fresh=true)"`` when ``fresh`` ignores all reuse."""
    return "not reused (fresh=true)" if fresh else mismatch(saved, current)


def note(where: str, reason: str) -> str:
    """The one line that says a result is recomputed: ``<where>: <reason>; recomputing``."""
    return f"{where}: {reason}; recomputing"


def footer(rec: Mapping[str, Any]) -> str:
    """A markdown line for the end of a results file, naming the record."""
    code = rec["code"]
    return (
        f"provenance: config `{rec['config_hash']}`, data `{rec['data_hash'] or 'none'}`, "
        f"dropout_lab {code['package']}, jax {code['jax']}, commit {_commit_label(code)}, "
        f"source `{code['source']}`, written {rec['written_at']}\n"
    )
