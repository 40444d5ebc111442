"""Provenance: results are reused only for the same config, data and code; else said."""

import json
import pathlib
import re

import numpy as np
import pytest

from lab import load_config, provenance, run_experiment

TINY = [
    "data.name=csv",
    "data.target=label",
    "model.hidden=[8]",
    "train.epochs=2",
    "train.batch_size=16",
    "train.eval_batch_size=64",
    "seeds=[0]",
    "plots=false",
    "progress=false",
]
ONLY_NONE = [f"methods.{m}.enabled=false" for m in ("classic", "inverted", "rdrop", "mc")]


@pytest.fixture(autouse=True)
def fixed_code(monkeypatch):
    """One code version for the whole test: the tree may be edited while tests run."""
    code = provenance.code_version()
    monkeypatch.setattr(provenance, "code_version", lambda: code)
    return code


def _write_csv(path: pathlib.Path, flip: bool = False) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    labels = (x[:, 0] > 0).astype(int)
    labels = 1 - labels if flip else labels
    rows = [f"{a:.6f},{b:.6f},{c:.6f},{y}" for (a, b, c), y in zip(x, labels, strict=True)]
    path.write_text("a,b,c,label\n" + "\n".join(rows) + "\n")


@pytest.fixture
def csv_run(tmp_path):
    """A finished one-method run on a CSV; returns ``(path, run)`` to run it again."""
    data = tmp_path / "data.csv"
    _write_csv(data)

    def run(*extra):
        cfg = load_config(
            None, [*TINY, *ONLY_NONE, f"data.path={data}", f"output_dir={tmp_path / 'run'}", *extra]
        )
        notes, steps = [], []
        out = run_experiment(
            cfg, on_note=notes.append, on_eval=lambda m, s, step, p: steps.append(step)
        )
        return out, notes, steps

    first, notes, steps = run()
    assert notes == [] and steps  # nothing to reuse yet: trained, nothing said
    return data, run, first


NOTE = re.compile(r"^results/none-[0-9a-f]{10}/seed_0\.json: (.+); recomputing$")


def test_csv_rewritten_at_same_path_is_recomputed_and_said(csv_run):
    data, run, first = csv_run
    _write_csv(data, flip=True)  # the same file, every label changed
    out, notes, steps = run()
    assert steps, "nothing was retrained"
    assert len(notes) == 1 and NOTE.match(notes[0]), notes
    assert re.search(
        r"data changed since it was written \(hash [0-9a-f]{8} -> [0-9a-f]{8}\)", notes[0]
    )
    assert out["per_seed"]["none"]["0"] != first["per_seed"]["none"]["0"]
    assert out["provenance"]["data_hash"] != first["provenance"]["data_hash"]
    assert out["provenance"]["recomputed"] == notes


def test_code_version_change_is_recomputed(csv_run, fixed_code, monkeypatch):
    _, run, _ = csv_run
    real = fixed_code
    monkeypatch.setattr(provenance, "code_version", lambda: {**real, "source": "0123456789abcdef"})
    _, notes, steps = run()
    assert steps and len(notes) == 1
    assert (
        f"code changed since it was written (source {real['source'][:8]} -> 01234567)" in notes[0]
    )


def test_commit_change_is_recomputed_unknown_commit_is_not_compared(
    csv_run, fixed_code, monkeypatch
):
    _, run, _ = csv_run
    real = fixed_code
    if real["commit"] == provenance.UNKNOWN:
        pytest.skip("not in a git repository")
    monkeypatch.setattr(provenance, "code_version", lambda: {**real, "commit": "f" * 40})
    _, notes, steps = run()
    assert steps and "commit " in notes[0] and "-> fffffff" in notes[0]
    # Without git (same sources), a commit cannot be compared: the result is reused.
    monkeypatch.setattr(
        provenance, "code_version", lambda: {**real, "commit": "unknown", "dirty": "unknown"}
    )
    _, notes, steps = run()
    assert (notes, steps) == ([], [])


def test_unchanged_is_reused_without_training(csv_run):
    _, run, first = csv_run
    out, notes, steps = run()
    assert (notes, steps) == ([], [])
    assert out["per_seed"] == first["per_seed"]


def test_fresh_true_recomputes(csv_run):
    _, run, first = csv_run
    out, notes, steps = run("fresh=true")
    assert steps and len(notes) == 1
    assert notes[0].endswith(": not reused (fresh=true); recomputing")
    a, b = dict(first["per_seed"]["none"]["0"]), dict(out["per_seed"]["none"]["0"])
    a.pop("seconds_per_epoch"), b.pop("seconds_per_epoch")
    assert a == b  # same inputs, same numbers


class Interrupt(Exception):
    pass


def test_stale_checkpoint_is_not_resumed(tmp_path):
    data = tmp_path / "data.csv"
    _write_csv(data)
    cfg = load_config(
        None,
        [*TINY, *ONLY_NONE, f"data.path={data}", f"output_dir={tmp_path / 'run'}",
         "train.eval_every=1", "train.checkpoint_every=1"],
    )  # fmt: skip

    def crash(method, seed, step, point):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(cfg, on_eval=crash)
    _write_csv(data, flip=True)
    notes, steps = [], []
    run_experiment(cfg, on_note=notes.append, on_eval=lambda m, s, step, p: steps.append(step))
    assert steps[0] == 1, "resumed from a checkpoint of other data"
    assert len(notes) == 1 and "/seed_0/: data changed since it was written" in notes[0]
    assert notes[0].startswith("checkpoints/none-")


def test_results_files_carry_provenance(csv_run):
    data, _, first = csv_run
    folder = data.parent / "run"
    (seed_file,) = folder.glob("results/none-*/seed_0.json")
    per_seed = json.loads(seed_file.read_text())["provenance"]
    saved = json.loads((folder / "metrics.json").read_text())["provenance"]
    for record in (per_seed, saved):
        assert set(record) >= {"config_hash", "data_hash", "code", "written_at"}
        assert set(record["code"]) == {"package", "jax", "source", "commit", "dirty"}
        assert record["data_hash"] == provenance.data_hash(_dataset(folder))
    assert saved == first["provenance"] and saved["recomputed"] == []
    (marker,) = folder.glob("checkpoints/none-*/seed_0.provenance.json")
    assert json.loads(marker.read_text())["data_hash"] == per_seed["data_hash"]
    footer = (folder / "results.md").read_text().splitlines()[-1]
    assert footer.startswith(f"provenance: config `{saved['config_hash']}`, data `")
    assert "written " in footer and "commit " in footer


def _dataset(folder):
    from lab import load_dataset

    return load_dataset(load_config(folder / "config.yaml").data)


def test_data_hash_sees_content_not_identity():
    a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "names": ["a", "b"]}
    same = {"names": ["a", "b"], "x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert provenance.data_hash(a) == provenance.data_hash(same)
    for other in (
        {**a, "x": a["x"].reshape(3, 2)},
        {**a, "x": a["x"].astype(np.float64)},
        {**a, "x": a["x"] + 1},
        {**a, "names": ["a", "c"]},
    ):
        assert provenance.data_hash(other) != provenance.data_hash(a)


def test_git_state_outside_a_repository_or_without_git(tmp_path, monkeypatch):
    assert provenance.git_state(tmp_path) == ("unknown", "unknown")
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the path
    assert provenance.git_state() == ("unknown", "unknown")


def test_mismatch_names_every_change():
    code = {"package": "0.1.0", "jax": "0.10.2", "source": "a" * 16, "commit": "c" * 40,
            "dirty": False}  # fmt: skip
    saved = provenance.record("1" * 16, "2" * 16, code)
    assert provenance.mismatch(saved, provenance.record("1" * 16, "2" * 16, code)) is None
    assert provenance.mismatch(None, saved) == "written before provenance was recorded"
    dirty = {**code, "dirty": True}
    assert provenance.mismatch(saved, provenance.record("1" * 16, "2" * 16, dirty)) == (
        "code changed since it was written (commit ccccccc -> ccccccc+dirty)"
    )
    both = provenance.record("1" * 16, "3" * 16, {**code, "package": "0.2.0"})
    assert provenance.mismatch(saved, both) == (
        "data and code changed since it was written "
        "(data hash 22222222 -> 33333333; code dropout_lab 0.1.0 -> 0.2.0)"
    )


def test_source_hash_covers_code_not_display_modules(tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "train.py").write_text("a = 1\n")
    (lab / "figures.py").write_text("b = 1\n")
    before = provenance.source_hash((lab,))
    (lab / "figures.py").write_text("b = 2\n")  # draws results: they need no retraining
    assert provenance.source_hash((lab,)) == before
    (lab / "train.py").write_text("a = 2\n")
    assert provenance.source_hash((lab,)) != before
