"""experiments/launch.py: N processes with the job's environment, first failure,
time-out, Ctrl-C and SIGTERM passed on (children here are plain Python, no JAX)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import launch  # experiments/launch.py
import pytest

LAUNCH = pathlib.Path(launch.__file__)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_environment_and_first_failure_code(tmp_path):
    write_env = (
        "import json, os; pid = int(os.environ['JAX_PROCESS_ID']); "
        f"open(r'{tmp_path}/env_%d.json' % pid, 'w').write(json.dumps(dict(os.environ)))"
    )
    assert launch.launch(_python(write_env), 3, timeout_s=60) == 0
    envs = [json.loads((tmp_path / f"env_{i}.json").read_text()) for i in range(3)]
    assert [e["JAX_PROCESS_ID"] for e in envs] == ["0", "1", "2"]
    assert {e["JAX_NUM_PROCESSES"] for e in envs} == {"3"}
    (address,) = {e["JAX_COORDINATOR_ADDRESS"] for e in envs}
    assert address.startswith("127.0.0.1:")
    fail = (
        "import os, sys, time; pid = int(os.environ['JAX_PROCESS_ID']); "
        "time.sleep(60 if pid == 2 else 0); sys.exit(3 * pid)"
    )
    start = time.monotonic()
    assert launch.launch(_python(fail), 3, timeout_s=120) == 3  # process 1's; 2 is stopped
    assert time.monotonic() - start < 60


def test_a_failure_stops_the_others_and_a_time_out_stops_all():
    sleeper = "import os, sys, time; time.sleep(60) if os.environ['JAX_PROCESS_ID'] == '0' else 0"
    start = time.monotonic()
    assert launch.launch(_python(sleeper + " or sys.exit(5)"), 2, timeout_s=60) == 5
    procs = launch.start(_python("import time; time.sleep(60)"), 2)
    assert launch.wait(procs, timeout_s=0.5, grace_s=1.0) == launch.TIMED_OUT
    assert all(p.returncode is not None for p in procs)
    assert time.monotonic() - start < 30
    assert launch.exit_code(-signal.SIGKILL) == 137


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_reach_every_process(tmp_path, signum):
    child = (
        "import os, pathlib, signal, sys, time; i = os.environ['JAX_PROCESS_ID']; "
        f"d = pathlib.Path(r'{tmp_path}'); "
        "signal.signal(signal.SIGINT, lambda s, f: ((d / f'got_{i}').write_text(str(s)), "
        "sys.exit(128 + s))); signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT)); "
        "(d / f'ready_{i}').write_text(''); time.sleep(60)"
    )
    cmd = [
        sys.executable,
        str(LAUNCH),
        "--processes",
        "2",
        "--timeout",
        "60",
        "--",
        *_python(child),
    ]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready_*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signum)
    assert proc.wait(timeout=30) == 128 + signum
    assert [(tmp_path / f"got_{i}").read_text() for i in range(2)] == [str(int(signum))] * 2


def test_command_line_needs_processes_and_a_command(capsys):
    with pytest.raises(SystemExit):
        launch.main(["--processes", "2"])
    assert launch.command_line(["run.py", "a"]) == [sys.executable, "run.py", "a"]
