"""`benchmarks/run.py --quick` runs every comparison end to end and writes its JSON."""

import importlib.util
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUITES = {
    "forward",
    "forward_backward",
    "residuals",
    "train_step",
    "mc",
    "eval_forward",
    "attention",
}


def test_quick_benchmark_runs_everything(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest-quick.json").read_text())
    assert (tmp_path / "latest-quick.md").exists()
    assert report["quick"] and not report["failed"]
    assert set(report["suites"]) == SUITES
    for when in ("probe_start", "probe_end"):
        assert report[when]["matmul_gflops"] > 0 and report[when]["memory_gbps"] > 0
    has_torch = importlib.util.find_spec("torch") is not None
    forward = report["suites"]["forward"]["tables"][0]["results"]
    assert ("torch F.dropout (2 threads)" in forward) == has_torch
    for name, stats in forward.items():
        assert stats["median_ms"] > 0 and stats["min_ms"] <= stats["median_ms"], name
    # Zero residual bytes for ours, and the flax / default-autodiff masks for contrast.
    per_elem = report["suites"]["residuals"]["tables"][0]["bytes_per_element"]
    assert per_elem["ours dl.dropout (default, exact)"] == 0
    assert per_elem["ours impl='bernoulli'"] == 0
    assert per_elem["jax.random.bernoulli + where"] >= 1
    assert all({"target", "measured", "goal", "met"} <= set(t) for t in report["targets"])
