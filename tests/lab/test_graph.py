"""GCN node classification with feature dropout, DropEdge and DropNode: tiny runs, configs."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lab import ConfigError
from lab.graph import knn_edges, load_graph, run_graph, train
from lab.graph_config import GRAPH_DROPS, load_graph_config

CONFIG = pathlib.Path(__file__).parents[2] / "configs" / "graph_digits.yaml"
TINY = ["data.max_examples=80", "data.num_neighbors=3", "hidden=8", "steps=4", "seeds=[0,1]"]


def test_config_loads_with_every_method():
    from lab.graph_config import enabled_graph_methods

    cfg = load_graph_config(CONFIG)
    assert cfg.name == "graph_digits" and len(cfg.seeds) >= 3
    assert enabled_graph_methods(cfg) == ["none", "inverted", "drop_edge", "drop_node"]


def test_tiny_run_is_finite_and_written(tmp_path):
    # none and drop_edge are trained by the bit-for-bit test below (one compile each).
    only = [f"methods.{m}.enabled=false" for m in ("none", "drop_edge")]
    cfg = load_graph_config(CONFIG, [*TINY, *only, f"output_dir={tmp_path}"])
    out = run_graph(cfg)
    assert out["graph"]["num_nodes"] == 80 and out["graph"]["num_test"] == 24
    assert set(out["per_seed"]) == {"inverted", "drop_node"}
    for method in ("inverted", "drop_node"):
        for seed in ("0", "1"):
            m = out["per_seed"][method][seed]
            for key in ("test_acc", "train_acc", "test_nll", "ece", "brier"):
                assert math.isfinite(m[key]), (method, key)
            assert 0 <= m["test_acc"] <= 1 and 0 <= m["ece"] <= 1
        assert f"| {method} |" in out["table"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["summary"]["drop_node"]["test_acc"]["n"] == 2
    assert "80 nodes" in (tmp_path / "results.md").read_text()


def test_knn_edges_are_symmetric_without_self_loops():
    x = np.random.default_rng(0).standard_normal((30, 4))
    src, dst = knn_edges(x, 3)
    pairs = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert all((j, i) in pairs for i, j in pairs)
    assert all(i != j for i, j in pairs)
    assert np.all(np.bincount(dst, minlength=30) >= 3)  # each node's 3 neighbours at least


@pytest.fixture(scope="module")
def tiny_graph():
    cfg = load_graph_config(CONFIG, TINY)
    return load_graph(cfg)


def _train(graph, num_classes, method, rate):
    # The graph is an argument, as in run_graph (a closed-over graph would be a
    # constant, and XLA would fold the no-dropout normalization at compile time).
    fit = jax.jit(
        lambda graph, rate: train(
            graph,
            jax.random.key(3),
            rate,
            method=GRAPH_DROPS[method],
            num_classes=num_classes,
            hidden=8,
            steps=4,
            tx=optax.adam(0.01),
        )
    )
    return fit(graph, jnp.float32(rate))


def test_drop_edge_at_rate_zero_is_no_dropout(tiny_graph):
    # Two different programs doing the same arithmetic: bit for bit with XLA's optimized
    # back end; the test session's unoptimized one (tests/conftest.py) may round a
    # reduction differently, so the bound is a few float32 ulps (2**-23 = 1.2e-7).
    graph, num_classes = tiny_graph
    params_none, losses_none = _train(graph, num_classes, "none", 0.0)
    params_edge, losses_edge = _train(graph, num_classes, "drop_edge", 0.0)
    assert np.all(np.isfinite(losses_none))
    np.testing.assert_allclose(losses_edge, losses_none, rtol=1e-6, atol=0)
    for name in params_none:
        scale = float(np.max(np.abs(params_none[name])))
        np.testing.assert_allclose(params_edge[name], params_none[name], rtol=0, atol=1e-6 * scale)
    # ... and a real rate changes the training.
    _, losses_half = _train(graph, num_classes, "drop_edge", 0.5)
    assert not np.array_equal(losses_half, losses_none)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.num_neighbors=0", "data.num_neighbors"),
        ("data.name=toy", "data.name"),
        ("methods.drop_edge.rate=1.0", "methods.drop_edge.rate"),
        ("methods.drop_node.rate=-0.1", "methods.drop_node.rate"),
        ("steps=0", "steps"),
        ("hidden=0", "hidden"),
        ("seeds=[1,1]", "seeds"),
        ("methods.drop_edges.rate=0.1", "methods.drop_edges"),
        ("steps=many", "steps"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_graph_config(CONFIG, [override])
