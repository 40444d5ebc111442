"""Vmapped sweeps: equal to the sequential fit, chunking, rate 0, configs, scripts.

Tolerance: the vmapped step runs the same masks, batches and element-wise math as the
sequential one; only the matmuls are batched kernels that may round differently. Over
the 6 steps trained here the measured relative difference of the parameters is
~1e-7 (a few float32 ulp); we assert 1e-5 relative (max |a - b| / max |a| per leaf),
far below the effect of any wrong mask, batch, rate or key (order 1e-2 and more).
"""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from lab import ConfigError, load_dataset
from lab import grid as G
from lab.fit import fit, make_setup
from lab.mc_sweep import loglog_slope, mc_spread
from lab.methods import METHODS
from lab.sweep_config import load_sweep_config

RTOL = 1e-5
TINY = [
    "data.max_examples=160",
    "model.hidden=[8]",
    "train.epochs=2",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "methods.mc.num_samples=4",
    "sweep.rates=[0,0.5]",
    "sweep.seeds=2",
    "sweep.alphas=[0.5,2]",
    "progress=false",
]


def _script(name):
    path = pathlib.Path(__file__).parents[2] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _cfg(*extra):
    return load_sweep_config("configs/sweep_digits.yaml", [*TINY, *extra])


@pytest.fixture(scope="module")
def data():
    return load_dataset(_cfg().data)


@pytest.fixture(scope="module")
def grid(data):
    setup = make_setup(_cfg(), "inverted", data)
    points = G.grid_points(_cfg(), "inverted")
    return setup, points, G.train_grid(setup, data, points)


def _sequential(data, method, seed, rate, *extra):
    rates = [f"methods.{method}.rate={rate}", f"methods.{method}.input_rate=0"]
    cfg = _cfg(*(rates if METHODS[method].sweeps_rate else []), *extra)
    state, _, _ = fit(make_setup(cfg, method, data), data, seed, None, lambda params: {})
    return state["params"]


def _assert_close(a, b, rtol=RTOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape
        assert np.max(np.abs(x - y)) <= rtol * np.max(np.abs(x)), np.max(np.abs(x - y))


def test_grid_order_and_shapes(grid):
    setup, points, result = grid
    assert [(p.rate, p.seed) for p in points] == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    assert result.losses.shape == (4, _cfg().train.epochs)
    assert np.all(np.asarray(result.states["step"]) == setup.schedule.total_steps)
    assert np.all(np.isfinite(result.losses))


@pytest.mark.parametrize("index", [1, 2])
def test_vmapped_equals_sequential(grid, data, index):
    _, points, result = grid
    p = points[index]
    _assert_close(
        _sequential(data, "inverted", p.seed, p.rate), G.point_params(result.states, index)
    )


def _relative_difference(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / np.max(np.abs(np.asarray(x))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_different_grid_points_differ(grid):
    # Guards the equality tests: another seed or rate changes the parameters by
    # >= 1000 times the tolerance.
    _, _, result = grid
    a, b, c = (G.point_params(result.states, i) for i in (0, 1, 2))
    assert _relative_difference(a, b) > 1000 * RTOL
    assert _relative_difference(a, c) > 1000 * RTOL


def test_rdrop_alpha_is_vmapped(data):
    cfg = _cfg("sweep.rates=[0.5]", "sweep.seeds=1")
    setup = make_setup(cfg, "rdrop", data)
    points = G.grid_points(cfg, "rdrop")
    assert [p.alpha for p in points] == [0.5, 2.0]
    result = G.train_grid(setup, data, points)
    p = points[1]  # alpha 2: the traced alpha is not the configured 1.0
    expected = _sequential(data, "rdrop", p.seed, p.rate, f"methods.rdrop.alpha={p.alpha}")
    _assert_close(expected, G.point_params(result.states, 1))
    assert _relative_difference(expected, G.point_params(result.states, 0)) > 1000 * RTOL


def test_chunked_equals_unchunked(grid, data):
    setup, points, result = grid
    chunked = G.train_grid(setup, data, points, chunk_size=3)  # chunks of 3 and 1 (+2 pad)
    _assert_close(result.states["params"], chunked.states["params"])
    np.testing.assert_allclose(chunked.losses, result.losses, rtol=RTOL)


def test_rate_zero_equals_no_dropout(grid, data):
    _, _, result = grid
    _assert_close(_sequential(data, "none", 0, 0.0), G.point_params(result.states, 0))


@pytest.mark.parametrize(
    "override, key",
    [
        ("sweep.rates=[0,1.0]", "sweep.rates[1]"),
        ("sweep.rates=[]", "sweep.rates"),
        ("sweep.seeds=0", "sweep.seeds"),
        ("sweep.methods=[inverted,bogus]", "sweep.methods[1]"),
        ("sweep.chunk_size=0", "sweep.chunk_size"),
        ("sweep.weight_decays=[0.1]", "sweep.weight_decays"),
        ("sweep.bogus=1", "sweep.bogus"),
        ("sweep.seeds=abc", "sweep.seeds"),
        ("mc_sweep.num_samples=[1]", "mc_sweep.num_samples[0]"),
        ("mc_sweep.spread_blocks=1", "mc_sweep.spread_blocks"),
    ],
)
def test_config_rejects_invalid_keys(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        _cfg(override)


def test_configs_load():
    for path in ("configs/sweep_digits.yaml", "configs/mc_sweep_toy.yaml"):
        cfg = load_sweep_config(path)
        assert cfg.sweep.rates and cfg.sweep.seeds >= 1
    cfg = load_sweep_config(
        "configs/sweep_digits.yaml", ["sweep.rates=[0,0.1,0.2,0.3,0.5,0.7]", "sweep.seeds=8"]
    )
    assert len(G.grid_points(cfg, "inverted")) == 48
    assert len(G.grid_points(cfg, "none")) == 8


def test_mc_spread_is_one_over_sqrt_t():
    # Independent uniform "probabilities": the spread of a block mean of T passes is
    # sigma / sqrt(T) exactly in expectation; with 8000 passes x 64 x 3 values the
    # per-T estimate averages >= 64*3*8 block variances, so its relative error is a
    # few percent and the fitted slope is within 0.05 of -1/2 (measured -0.50).
    probs = np.asarray(jax.random.uniform(jax.random.key(0), (8000, 64, 3)))
    spread = mc_spread(probs, [10, 100, 1000])
    sigma = np.sqrt(1 / 12)
    for t, s in spread.items():
        assert abs(s * np.sqrt(t) / sigma - 1) < 0.1, (t, s)
    assert abs(loglog_slope(list(spread), list(spread.values())) + 0.5) < 0.05


def test_sweep_script_smoke(tmp_path, grid, data):
    main = _script("sweep")
    rc = main(
        ["configs/sweep_digits.yaml", *TINY, "sweep.methods=[inverted]", f"output_dir={tmp_path}"]
    )
    assert rc == 0
    tables = ("sweep.md", "sweep.json", "sweep_points.csv", "sweep_summary.csv")
    plots = ("test_vs_rate.png", "gap_vs_rate.png", "ece_vs_rate.png", "ood_vs_rate.png")
    for name in tables + plots:
        assert (tmp_path / name).is_file(), name
    out = json.loads((tmp_path / "sweep.json").read_text())
    assert len(out["rows"]) == 4 and {e["rate"] for e in out["summary"]} == {0.0, 0.5}
    assert out["best_rate"]["inverted"]["test_acc"] in (0.0, 0.5)
    # The script's models are the grid fixture's models: same metrics as evaluating them.
    setup, _, result = grid
    rows = G.evaluate_grid(setup, data, result, _cfg())
    assert [r["test_acc"] for r in rows] == [r["test_acc"] for r in out["rows"]]


def test_mc_sweep_script_smoke(tmp_path, grid):
    main = _script("mc_sweep")
    rc = main(
        ["configs/mc_sweep_toy.yaml", *TINY, "sweep.methods=[mc]", "train.learning_rate=0.001",
         "mc_sweep.num_samples=[4,8]", "mc_sweep.chunk_size=4", "mc_sweep.spread_examples=16",
         f"output_dir={tmp_path}"]
    )  # fmt: skip
    assert rc == 0
    for name in ("mc_sweep.md", "mc_sweep.json", "mc_sweep_points.csv", "mc_sweep_summary.csv",
                 "mc_metrics_vs_T.png", "mc_spread_vs_T.png", "mc_in_out_vs_rate.png"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    out = json.loads((tmp_path / "mc_sweep.json").read_text())
    assert out["counts"] == [4, 8]
    zero = [r for r in out["spread_rows"] if r["rate"] == 0.0]
    assert zero and all(r["spread"] == 0.0 for r in zero)  # no dropout: identical passes
    assert all(r["mi_in"] < 1e-6 for r in out["rows"] if r["rate"] == 0.0)  # rounding only
    assert "0.5" in out["spread_slope"]
