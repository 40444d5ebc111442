"""Logs outside a terminal: plain progress lines, unwrapped tables, cached work, signals."""

import io
import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from lab.console import RESUME, Display

ROOT = pathlib.Path(__file__).parents[2]
TINY = [
    "configs/compare_digits.yaml",
    "data.max_examples=240",
    "data.val_fraction=0",  # the step counts below assume every non-test row trains
    "model.hidden=[16]",
    "train.batch_size=32",
    "train.eval_every=0",  # a curve point per epoch
    "train.eval_batch_size=64",
    "seeds=[0]",
    "plots=false",
    "progress=true",
    *[f"methods.{m}.enabled=false" for m in ("classic", "inverted", "rdrop", "mc")],
]
BAR_CHARACTERS = ("━", "…", "█", "\r", "\x1b")
# One evaluation: name, steps done of total, epoch, metrics to 4 places, seconds.
EVAL_LINE = re.compile(
    r"^none seed 0  \d+/\d+  epoch \d+ train_loss=\d+\.\d{4} test_nll=\d+\.\d{4} "
    r"test_acc=\d+\.\d{4}  \d+\.\d s$"
)


def _compare(*overrides: str) -> list[str]:
    """Runs experiments/compare.py with stdout a pipe; returns its stdout lines."""
    done = subprocess.run(
        [sys.executable, "experiments/compare.py", *TINY, *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_plain_log_lines_unwrapped_table_and_cached_rows(tmp_path):
    lines = _compare("train.epochs=2", f"output_dir={tmp_path}")
    text = "\n".join(lines)
    assert not any(c in text for c in BAR_CHARACTERS), text
    evals = [line for line in lines if line.startswith("none seed 0  ") and "epoch" in line]
    assert len(evals) == 2 and all(EVAL_LINE.match(line) for line in evals), evals
    assert any(re.match(r"^none seed 0  done 8/8  test_acc=\S+ test_nll=\S+ ", x) for x in lines)
    header = next(line for line in lines if line.startswith("| method |"))
    row = next(line for line in lines if line.startswith("| none |"))
    assert len(header) > 80 and header.endswith("|")  # wider than 80 columns, one line
    assert row.endswith("|") and row.count("|") == header.count("|")

    again = _compare("train.epochs=2", f"output_dir={tmp_path}")
    seed_lines = [line for line in again if line.startswith("none seed 0")]
    assert len(seed_lines) == 1, again  # no progress for work not done
    assert seed_lines[0].startswith("none seed 0  cached (finished in an earlier run)  test_acc=")
    assert "0/8" not in "\n".join(again)
    assert next(x for x in again if x.startswith("| none |")) == row


def _lines(stream) -> queue.Queue:
    """The lines of ``stream`` as a thread reads them, then ``None`` (a get can time out)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in iter(stream.readline, ""):
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_sigterm_says_how_to_resume_and_exits_143(tmp_path):
    args = ["train.epochs=400", "train.checkpoint_every=1", f"output_dir={tmp_path / 'run'}"]
    stderr = tmp_path / "stderr.txt"
    with (
        stderr.open("w") as err_file,
        subprocess.Popen(
            [sys.executable, "experiments/compare.py", *TINY, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        ) as proc,
    ):
        try:
            lines = _lines(proc.stdout)
            line = ""
            while not EVAL_LINE.match(line):  # training started: the first progress line
                line = lines.get(timeout=180)
                assert line is not None, stderr.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            rest = list(iter(lambda: lines.get(timeout=10), None))
        finally:
            proc.kill()
    err = stderr.read_text()
    assert proc.returncode == 143, err[-3000:]
    assert rest[-1] == f"interrupted (SIGTERM): {RESUME}", rest[-3:]
    assert "Traceback" not in err


def test_display_plain_lines(tmp_path):
    buf = io.StringIO()
    with Display(file=buf) as display:  # a StringIO is no terminal
        display.note("run folder: x")
        display.start("a", 10)
        display.update("a", 5, "loss=1.0000")
        display.finish("a", "acc=0.5000")
        display.start("b", 10)
        display.finish("b", "acc=0.2500", cached=True)
    display.table("| " + " | ".join(["column"] * 30) + " |\n")
    lines = buf.getvalue().splitlines()
    assert lines[0] == "run folder: x"
    assert re.match(r"^a  5/10  loss=1\.0000  \d+\.\d s$", lines[1])
    assert re.match(r"^a  done 10/10  acc=0\.5000  \d+\.\d s$", lines[2])
    assert lines[3] == "b  cached (finished in an earlier run)  acc=0.2500"
    assert len(lines) == 5 and len(lines[4]) > 200


def test_disabled_display_shows_no_progress():
    buf = io.StringIO()
    with Display(enabled=False, file=buf) as display:
        display.start("a", 10)
        display.update("a", 5)
        display.finish("a", cached=True)
    assert buf.getvalue() == ""


def test_terminal_table_is_not_wrapped():
    buf = io.StringIO()
    with Display(file=buf, terminal=True) as display:
        display.start("a", 10)
    row = "| " + " | ".join(["column"] * 30) + " |"
    display.table(row)
    assert row in buf.getvalue().splitlines()


@pytest.mark.parametrize(
    ("interrupt", "code", "cause"),
    [(KeyboardInterrupt, 130, "Ctrl-C"), ("sigterm", 143, "SIGTERM")],
)
def test_interruptions_say_how_to_resume(interrupt, code, cause):
    before = signal.getsignal(signal.SIGTERM)
    buf = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, Display(file=buf, resume="go on."):
        if interrupt == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        else:
            raise interrupt
    assert exit_info.value.code == code
    assert buf.getvalue() == f"interrupted ({cause}): go on.\n"
    assert signal.getsignal(signal.SIGTERM) is before
