"""Faults: a process killed, processes that never all connect, files cut short, a
folder that cannot be written. Each leaves either the previous state loadable or a
clear one-line error, never a hang or a half-read result."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import time

import launch  # experiments/launch.py
import numpy as np
import pytest

from lab import ConfigError, load_config, run_experiment
from lab.distributed import NOT_CONNECTED_EXIT
from lab.sweep_config import load_sweep_config
from tests.multiprocess import _worker as W

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = [
    "data.max_examples=240",
    "model.hidden=[16]",
    "train.epochs=2",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.checkpoint_every=1",
    *(f"methods.{m}.enabled=false" for m in ("none", "classic", "rdrop", "mc")),
    "seeds=[0]",
    "progress=false",
    "plots=false",
]


def test_sigkilled_process_then_restart_resumes_from_last_checkpoint(two_processes):
    run = two_processes
    assert run["killed_after_step"] == 6, run["logs"]  # 2 curve points of 3 steps
    assert run["exit_killed"] == 128 + 9  # process 1's SIGKILL; process 0 stopped with it
    assert run["after_kill"] == {"steps": ["6"], "metrics": False}  # only the complete one
    assert run["exit_resumed"] == 0, run["logs"]
    metrics = run["metrics"]
    assert metrics["timing"]["mc"]["resumed_from"] == 6  # seed 0
    # The same learning curve as the uninterrupted 2-process run, bit for bit; its last
    # point is the table's test NLL and accuracy.
    uninterrupted = run["report"]["training"]["history_2"]
    assert metrics["learning_curves"]["mc"] == uninterrupted
    final = metrics["per_seed"]["mc"]["0"]
    assert [final["test_nll"], final["test_acc"]] == [
        uninterrupted[-1]["test_nll"],
        uninterrupted[-1]["test_acc"],
    ]


def test_cut_files_are_said_and_recomputed_never_read(two_processes):
    """What conftest.damage left before the restart: seed 0's results file cut short
    (recomputed from its last checkpoint), a checkpoint save cut short (ignored, then
    deleted), a stray ``.tmp`` (replaced), and seed 1's checkpoint with an array file
    cut in half (said, deleted, seed 1 trained from the start)."""
    run = two_processes
    assert run["exit_resumed"] == 0, run["logs"]
    said = run["metrics"]["provenance"]["recomputed"]
    assert len(said) == 2, said
    assert re.fullmatch(
        r"results/mc-\w+/seed_0\.json: unreadable, truncated or corrupt "
        r"\(JSONDecodeError\); recomputing",
        said[0],
    )
    assert re.fullmatch(
        r"checkpoints/mc-\w+/seed_1/: checkpoint of step 6 unreadable \(.+\); recomputing",
        said[1],
    )
    assert run["left"] == []  # no temporary file or folder is left behind
    assert set(run["metrics"]["per_seed"]["mc"]) == {"0", "1"}


def test_coordinator_unreachable_or_process_missing_fails_within_timeout(tmp_path):
    """Only 1 of 2 processes is started: as process 0 (the other never comes) and as
    process 1 (no coordinator listens). Each exits with a line naming the address and
    the time-out once the time-out has passed, not JAX's abort (SIGABRT) later."""
    timeout = 2
    command = [
        str(ROOT / "experiments" / "compare.py"), str(W.CONFIG), *TINY,
        f"distributed.initialization_timeout={timeout}", f"output_dir={tmp_path}",
    ]  # fmt: skip
    procs, addresses = [], []
    for process_id in (0, 1):
        addresses.append(f"127.0.0.1:{launch.free_port()}")
        env = launch.process_env(process_id, 2, addresses[-1])
        procs.append(
            subprocess.Popen(
                launch.command_line(command), env=env, stderr=subprocess.PIPE, text=True
            )
        )
    start = time.monotonic()
    try:
        errors = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert time.monotonic() - start < 120
    for p, address, stderr in zip(procs, addresses, errors, strict=True):
        assert p.returncode == NOT_CONNECTED_EXIT, stderr[-2000:]
        line = stderr.strip().splitlines()[-1]
        assert line.startswith("error: jax.distributed:"), line
        assert address in line and f"within {timeout} s" in line
        assert "initialization_timeout" in line


def test_checkpoint_cut_or_not_matching_its_checksum_is_unreadable(tmp_path):
    import jax.numpy as jnp

    from lab.checkpoints import Saved, Unreadable

    state = {"params": {"w": jnp.arange(2000.0).reshape(40, 50)}, "step": jnp.int32(7)}
    template = {"params": {"w": jnp.zeros((40, 50))}, "step": jnp.int32(0)}
    saved = Saved(tmp_path / "good", 1)
    saved.maybe_save(7, True, state, [{"step": 7}], [[0.1, 7]])
    saved.close()
    restored, history, _ = Saved(tmp_path / "good", 1).restore(template)
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    assert history == [{"step": 7}]
    cut, other = tmp_path / "cut", tmp_path / "other"
    shutil.copytree(tmp_path / "good", cut)
    # Cut before any array is read (a cut array file: conftest.damage, on 2 processes).
    tree = cut / "7" / "state" / "_METADATA"
    tree.write_bytes(tree.read_bytes()[: tree.stat().st_size // 2])
    with pytest.raises(Unreadable, match=r"^checkpoint of step 7 unreadable \(JSONDecodeError"):
        Saved(cut, 1).restore(template)
    # What TensorStore would read as zeros without an error: the checksum tells.
    shutil.copytree(tmp_path / "good", other)
    meta = other / "7" / "meta" / "metadata"
    content = json.loads(meta.read_text())
    content["checksum"][0] += 1
    meta.write_text(json.dumps(content))
    with pytest.raises(Unreadable, match="does not match its checksum"):
        Saved(other, 1).restore(template)


def test_results_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from lab import run as R

    path = tmp_path / "results" / "seed_0.json"
    R.write_atomic(path, '{"metrics": {}}')

    def killed(*args):
        raise KeyboardInterrupt  # a kill before the rename

    with monkeypatch.context() as patched:
        patched.setattr(R.os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            R.write_atomic(path, '{"metrics": {"new": 1}}')
    assert json.loads(path.read_text()) == {"metrics": {}}  # the previous file, whole
    R._save_npz(path.with_suffix(".npz"), {"a": np.arange(1000.0)})
    npz = path.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:300])
    said: list[str] = []
    assert R._reusable(path, tmp_path, {}, False, said.append) is None
    assert said == [
        "results/seed_0.json: seed_0.npz unreadable, truncated or corrupt (BadZipFile); recomputing"
    ]


def _refused(folder: pathlib.Path, capsys) -> str:
    """``run_experiment``, the sweeps and compare.py refuse ``folder`` before training;
    returns the message."""
    import compare  # experiments/compare.py

    from lab.mc_sweep import run_mc_sweep
    from lab.sweep import run_sweep

    started = []
    cfg = load_config(None, [*TINY, f"output_dir={folder}"])
    message = f"output folder {re.escape(str(folder))} cannot be written"
    with pytest.raises(ConfigError, match=message) as refused:
        run_experiment(cfg, on_start=lambda *a: started.append(a))
    assert started == []
    with pytest.raises(ConfigError, match=message):
        run_sweep(load_sweep_config(None, [f"output_dir={folder}"]))
    with pytest.raises(ConfigError, match=message):
        run_mc_sweep(load_sweep_config(None, [f"output_dir={folder}"]))
    capsys.readouterr()
    assert compare.main([str(W.CONFIG), *TINY, f"output_dir={folder}"]) == 2
    assert re.search(f"error: {message}", capsys.readouterr().err)
    return str(refused.value)


def test_output_folder_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    _refused(tmp_path / "file" / "run", capsys)


@pytest.fixture
def tmpfs(tmp_path):
    """Mounts a tmpfs at ``tmp_path / "mnt"`` with the given options (root only)."""
    mounted = []

    def mount(options: str) -> pathlib.Path:
        target = tmp_path / "mnt"
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], check=True)


def test_read_only_output_folder_is_refused(tmp_path, tmpfs, capsys):
    if os.geteuid() == 0:  # chmod does not stop root: a read-only file system does
        folder = tmpfs("ro,size=64k")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    assert re.search(
        r"\((Read-only file system|Permission denied)\)", _refused(folder / "run", capsys)
    )


def test_full_disk_is_refused(tmpfs, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small file system")
    folder = tmpfs("size=256k")
    with pytest.raises(OSError), open(folder / "filler", "wb") as f:
        while True:
            f.write(bytes(4096))
            f.flush()
    assert "(No space left on device)" in _refused(folder, capsys)
