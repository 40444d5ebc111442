"""Local multi-process runs: N copies of one command, the N processes of one JAX job.

    python experiments/launch.py --processes 2 -- experiments/compare.py CONFIG key=value ...

Each copy runs with the environment ``lab.distributed.initialize`` reads
(:data:`ENV`): ``JAX_COORDINATOR_ADDRESS`` (``127.0.0.1:<a free port>``, process 0
serves it), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. Every copy runs in its own
process group; the launcher forwards Ctrl-C and SIGTERM to all of them, stops the
others as soon as one fails (a JAX job cannot go on without one of its processes),
stops all of them when ``timeout`` passes, and returns the first non-zero exit code
(``128 + n`` for a process ended by signal ``n``, 124 on time-out), else 0.

Standard library only (it imports neither JAX nor the lab, so it starts at once);
tests and benchmarks import it as ``launch`` (``experiments/`` on the path).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
TIMED_OUT = 124  # as coreutils' timeout
POLL_S = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def process_env(
    process_id: int, num_processes: int, address: str, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default ``os.environ``) with :data:`ENV` set for process ``process_id``."""
    env = dict(os.environ if base is None else base)
    env.update(
        JAX_COORDINATOR_ADDRESS=address,
        JAX_NUM_PROCESSES=str(num_processes),
        JAX_PROCESS_ID=str(process_id),
    )
    return env


def command_line(command: Sequence[str]) -> list[str]:
    """``command``, run with this Python when it starts with a ``.py`` file."""
    command = list(command)
    if command and command[0].endswith(".py"):
        return [sys.executable, *command]
    return command


def start(
    command: Sequence[str],
    num_processes: int,
    *,
    address: str | None = None,
    env: Mapping[str, str] | None = None,
    logs: str | os.PathLike | None = None,
) -> list[subprocess.Popen]:
    """Starts ``num_processes`` copies of ``command``, each in its own process group.

    Args:
      command: the program and its arguments (a ``.py`` file runs with this Python).
      num_processes: how many processes.
      address: ``host:port`` of the coordinator (default: ``127.0.0.1`` and a free port).
      env: base environment (default ``os.environ``).
      logs: a folder: process ``i`` writes its stdout and stderr to ``process_<i>.log``
        there (default: this terminal).
    """
    address = address or f"127.0.0.1:{free_port()}"
    procs = []
    for i in range(num_processes):
        out = None
        if logs is not None:
            os.makedirs(logs, exist_ok=True)
            out = open(os.path.join(logs, f"process_{i}.log"), "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                command_line(command),
                env=process_env(i, num_processes, address, env),
                stdout=out,
                stderr=None if out is None else subprocess.STDOUT,
                start_new_session=True,
            )
        )
        if out is not None:
            out.close()  # the child holds its own copy
    return procs


def exit_code(returncode: int) -> int:
    """A shell's exit status: ``128 + n`` for a process ended by signal ``n``."""
    return 128 - returncode if returncode < 0 else returncode


def signal_all(procs: Sequence[subprocess.Popen], signum: int) -> None:
    """Sends ``signum`` to the process group of every process still running."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signum)
            except ProcessLookupError:
                pass


def stop(procs: Sequence[subprocess.Popen], grace_s: float = 5.0) -> None:
    """SIGTERM to every running process's group, SIGKILL to those left after ``grace_s``."""
    signal_all(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    signal_all(procs, signal.SIGKILL)
    for p in procs:
        p.wait()


def wait(
    procs: Sequence[subprocess.Popen], timeout_s: float | None = None, grace_s: float = 5.0
) -> int:
    """Waits for every process; the first failure (or ``timeout_s``) stops the rest.

    Returns:
      The first non-zero exit code (:func:`exit_code`), :data:`TIMED_OUT` when
      ``timeout_s`` passed first, else 0.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        failed = [exit_code(p.returncode) for p in procs if p.poll() not in (None, 0)]
        if failed or all(p.returncode == 0 for p in procs):
            if failed:
                stop(procs, grace_s)
            return failed[0] if failed else 0
        if deadline is not None and time.monotonic() > deadline:
            stop(procs, grace_s)
            return TIMED_OUT
        time.sleep(POLL_S)


def launch(
    command: Sequence[str],
    num_processes: int,
    *,
    timeout_s: float | None = None,
    address: str | None = None,
    env: Mapping[str, str] | None = None,
    logs: str | os.PathLike | None = None,
) -> int:
    """:func:`start`, then :func:`wait`; Ctrl-C and SIGTERM are passed to every process.

    Returns:
      :func:`wait`'s exit code.
    """
    procs = start(command, num_processes, address=address, env=env, logs=logs)
    if threading.current_thread() is not threading.main_thread():
        return wait(procs, timeout_s)
    forwarded = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in forwarded:
        signal.signal(signum, lambda signum, frame: signal_all(procs, signum))
    try:
        return wait(procs, timeout_s)
    finally:
        for signum, handler in forwarded.items():
            signal.signal(signum, handler)
        stop(procs)  # only does something if wait() itself was interrupted


def main(argv: Sequence[str]) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="launch.py", description="Runs a command as the N processes of one local JAX job."
    )
    parser.add_argument("--processes", type=int, required=True, help="number of processes")
    parser.add_argument("--address", help="coordinator host:port (default 127.0.0.1:<free>)")
    parser.add_argument("--timeout", type=float, help="seconds before every process is stopped")
    parser.add_argument("--logs", help="folder for process_<i>.log (default: this terminal)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- program [args ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.processes < 1:
        parser.error("needs --processes N >= 1 and a command after --")
    return launch(
        command, args.processes, timeout_s=args.timeout, address=args.address, logs=args.logs
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
