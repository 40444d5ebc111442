"""The 2-process job the multi-process tests read: run once per test session.

``two_processes`` starts ``_worker.py`` as 2 JAX processes on 127.0.0.1 (a free port
picked here), reads the report process 0 writes, SIGKILLs process 1 in the middle of
the worker's last run (seed 0, after its checkpoint of step 6), leaves what kills at
other moments leave (:func:`damage`), then restarts both processes with the
documented command (``experiments/launch.py --processes 2 --
experiments/compare.py ...``), which resumes. Every launch is bounded
(:data:`BOUND_S`); a process still running then is killed with its process group and
the test fails. Under pytest-xdist the workers share one run through a lock file.
"""

import fcntl
import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import time

import launch  # experiments/launch.py
import pytest

from tests.multiprocess import _worker as W

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(W.__file__)
BOUND_S = 600  # per launch: far above its time on 2 busy cores, far below a hang


def _logs(folder: pathlib.Path) -> str:
    """The end of every process log, for a failure message."""
    return "\n".join(
        f"--- {p.relative_to(folder)}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted(folder.glob("logs_*/*.log"))
    )


def _checkpoint_steps(run: pathlib.Path) -> list[str]:
    return sorted(p.name for p in run.glob("checkpoints/*/seed_*/*"))


def damage(run: pathlib.Path) -> None:
    """What a kill (or a disk) leaves where writes are not atomic, in the killed run.

    Seed 0: a results file cut in the middle, a checkpoint save cut short (orbax's
    temporary folder of step 9, half its files) and a half-written ``metrics.json.tmp``.
    Seed 1 (not started yet): a complete-looking checkpoint (seed 0's step 6, with its
    provenance record) whose largest array file is cut in half.
    """
    (seed0,) = run.glob("checkpoints/mc-*/seed_0")
    tag = seed0.parent.name
    result = run / "results" / tag / "seed_0.json"
    result.parent.mkdir(parents=True)
    result.write_text('{"metrics": {"test_acc": 0.5, "test_n')
    cut = seed0 / "9.orbax-checkpoint-tmp-1234567"
    shutil.copytree(seed0 / "6", cut)
    for path in sorted(cut.rglob("*"))[::2]:
        if path.is_file():
            path.unlink()
    (run / "metrics.json.tmp").write_text("{")
    seed1 = seed0.with_name("seed_1")
    shutil.copytree(seed0 / "6", seed1 / "6")
    shutil.copy(
        seed0.with_name("seed_0.provenance.json"), seed0.with_name("seed_1.provenance.json")
    )
    largest = max(
        (p for p in (seed1 / "6" / "state").rglob("*") if p.is_file()), key=os.path.getsize
    )
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


def _children_cpu() -> float:
    """CPU seconds of every finished child (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(folder: pathlib.Path) -> dict:
    env, report, run = dict(os.environ), folder / "report.json", folder / "run"
    start, cpu = time.monotonic(), _children_cpu()
    procs = launch.start(
        [str(WORKER), str(report), str(folder)], 2, env=env, logs=folder / "logs_a"
    )
    killable = folder / "killable"
    while not killable.exists() and all(p.poll() is None for p in procs):
        if time.monotonic() - start > BOUND_S:
            break
        time.sleep(0.05)
    if killable.exists():
        os.kill(procs[1].pid, signal.SIGKILL)  # mid-run: process 0 is training on
    code_a = launch.wait(procs, timeout_s=BOUND_S, grace_s=2.0)
    seconds_a, cpu_a = time.monotonic() - start, _children_cpu() - cpu
    after_kill = {"steps": _checkpoint_steps(run), "metrics": (run / "metrics.json").exists()}
    if after_kill["steps"] == ["6"]:
        damage(run)
    command = [
        sys.executable, str(ROOT / "experiments" / "launch.py"), "--processes", "2",
        "--timeout", str(BOUND_S), "--logs", str(folder / "logs_b"), "--",
        str(ROOT / "experiments" / "compare.py"), str(W.CONFIG), *W.BASE, *W.MESH,
        f"output_dir={run}",
    ]  # fmt: skip
    start, cpu = time.monotonic(), _children_cpu()
    code_b = subprocess.run(command, env=env, timeout=BOUND_S + 30).returncode
    return {
        "report": json.loads(report.read_text()) if report.is_file() else None,
        "killed_after_step": int(killable.read_text()) if killable.exists() else None,
        "exit_killed": code_a,
        "after_kill": after_kill,
        "exit_resumed": code_b,
        "metrics": json.loads((run / "metrics.json").read_text()) if code_b == 0 else None,
        "left": sorted(str(p.relative_to(run)) for p in run.rglob("*tmp*")),
        "seconds": [seconds_a, time.monotonic() - start],  # wall: the 2 launches
        "cpu_seconds": [cpu_a, _children_cpu() - cpu],  # all their processes' CPU
        "logs": _logs(folder),
    }


@pytest.fixture(scope="session")
def two_processes(tmp_path_factory) -> dict:
    """The job's results (see the module docstring), computed once per session."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _run(tmp_path_factory.mktemp("two_processes"))
    shared = tmp_path_factory.getbasetemp().parent  # one folder for all xdist workers
    with open(shared / "two_processes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = shared / "two_processes.json"
        if not saved.is_file():
            folder = shared / "two_processes"
            folder.mkdir()
            saved.write_text(json.dumps(_run(folder)))
        return json.loads(saved.read_text())


@pytest.fixture
def report(two_processes) -> dict:
    """The worker's report; fails with the processes' logs if there is none."""
    if two_processes["report"] is None:
        pytest.fail("the 2-process worker wrote no report:\n" + two_processes["logs"])
    return two_processes["report"]
