"""What the lab's scripts show while they run: progress, notes, tables, interruptions.

On a terminal, progress is a rich bar per task. Anywhere else (CI, ``| tee``, a file,
``nohup``) it is one plain line per update, complete and without bar characters, so a
log reads like a log. Tables are printed as they are, never wrapped to a width. Work
reused from an earlier run is labelled ``cached``. Ctrl-C and SIGTERM print how to go on
and exit with the conventional codes (130 and 143)::

    with Display(enabled=cfg.progress) as display:
        out = run_experiment(cfg, **experiment_hooks(display))
    display.table(out["table"])
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

RESUME = "run the same command again to resume from the checkpoints."
START_OVER = "nothing is checkpointed: run the same command again to start over."
EXIT_CODES = {"Ctrl-C": 130, "SIGTERM": 143}  # 128 + the signal's number


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class Display:
    """Named tasks with a total each (``start``, ``update``, ``finish``), notes, tables.

    Args:
      enabled: show progress (notes, tables and interruption messages always show).
      resume: what to do after an interruption (:data:`RESUME` or :data:`START_OVER`).
      file: where everything goes (default ``sys.stdout``).
      terminal: bars (``True``) or plain lines (``False``); default: bars only when
        ``file`` is a terminal.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        resume: str = RESUME,
        file: TextIO | None = None,
        terminal: bool | None = None,
    ) -> None:
        from rich.console import Console

        self.file = file if file is not None else sys.stdout
        self.console = Console(file=self.file, soft_wrap=True, highlight=False)
        if terminal is None:  # not rich's is_terminal: FORCE_COLOR in CI is no terminal
            isatty = getattr(self.file, "isatty", None)
            terminal = bool(isatty and isatty())
        self.terminal = terminal
        self.enabled, self.resume = enabled, resume
        self._tasks: dict[str, tuple[Any, int, float]] = {}  # name -> (task id, total, t0)
        self._progress: Any = None
        self._previous_handler: Any = None
        if enabled and self.terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
            )

    def __enter__(self) -> Display:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
            self._previous_handler = signal.SIG_DFL if previous is None else previous
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
        cause = None
        if isinstance(error, KeyboardInterrupt):
            cause = "Ctrl-C"
        elif isinstance(error, Terminated):
            cause = "SIGTERM"
        if cause is not None:
            self.note(f"interrupted ({cause}): {self.resume}")
            raise SystemExit(EXIT_CODES[cause]) from None

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    def note(self, text: str) -> None:
        """One line of text (above the bars on a terminal)."""
        self._write(text)

    def table(self, text: str) -> None:
        """A table (markdown), each row on one line however wide."""
        self._write(text.rstrip("\n"))

    def start(self, name: str, total: int, *, since: float | None = None) -> None:
        """A new task of ``total`` units (steps, grid steps, points).

        Args:
          name: the task's label.
          total: units of work.
          since: when it began (``time.perf_counter()``; default: now).
        """
        task = None
        if self._progress is not None:
            task = self._progress.add_task(name, total=total, info="")
        self._tasks[name] = (task, total, time.perf_counter() if since is None else since)

    def update(self, name: str, done: int, info: str = "") -> None:
        """``done`` of the task's units are done; ``info``: the latest metrics."""
        task, total, t0 = self._tasks[name]
        if self._progress is not None:
            self._progress.update(task, completed=done, info=info)
        elif self.enabled:
            seconds = time.perf_counter() - t0
            self._write(_join(name, f"{done}/{total}", info, f"{seconds:.1f} s"))

    def finish(self, name: str, info: str = "", *, cached: bool = False) -> None:
        """The task is complete; ``cached``: its result was reused from an earlier run."""
        task, total, t0 = self._tasks[name]
        if self._progress is not None:
            label = f"cached {info}" if cached else info
            self._progress.update(task, completed=total, info=label)
        elif self.enabled:
            status = "cached (finished in an earlier run)" if cached else f"done {total}/{total}"
            seconds = "" if cached else f"{time.perf_counter() - t0:.1f} s"
            self._write(_join(name, status, info, seconds))

    def _write(self, text: str) -> None:
        if self._progress is not None:
            self.console.print(text, markup=False)
        else:
            print(text, file=self.file, flush=True)


def _join(*parts: str) -> str:
    return "  ".join(p for p in parts if p)


def _metrics_text(values: dict, prefixes: tuple[str, ...]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in values.items() if k.startswith(prefixes))


def experiment_hooks(display: Display) -> dict[str, Callable[..., None]]:
    """``on_start``, ``on_eval``, ``on_done`` and ``on_note`` for :func:`lab.run.run_experiment`."""

    def on_start(method: str, seed: int, total_steps: int) -> None:
        display.start(f"{method} seed {seed}", total_steps)

    def on_eval(method: str, seed: int, step: int, point: dict) -> None:
        info = f"epoch {point['epoch']:.0f} " + _metrics_text(point, ("train_loss", "test_"))
        display.update(f"{method} seed {seed}", step, info)

    def on_done(method: str, seed: int, result: dict) -> None:
        info = _metrics_text(result["metrics"], ("test_",))
        resumed = result.get("timing", {}).get("resumed_from", 0)
        if resumed and not result["reused"]:
            info = f"(resumed from step {resumed}) {info}"
        display.finish(f"{method} seed {seed}", info, cached=result["reused"])

    return {"on_start": on_start, "on_eval": on_eval, "on_done": on_done, "on_note": display.note}


def stage_hook(display: Display, label: str = "{}") -> Callable[[str, int, int], None]:
    """``on_progress(stage, done, total)`` for the sweeps; ``label`` formats the stage."""
    last_report = [time.perf_counter()]  # a stage is first reported after its first chunk

    def on_progress(stage: str, done: int, total: int) -> None:
        name = label.format(stage)
        if name not in display:
            display.start(name, total, since=last_report[0])
        display.update(name, done, f"{100 * done / max(total, 1):.0f}%")
        last_report[0] = time.perf_counter()

    return on_progress
