"""Tests of drop_edge, drop_edge_dense, drop_node and gcn_normalize_edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl
from tests.ops._semantics import KEY, check_semantics


def five_sigma(rate, n):
    # Fraction of n independent Bernoulli(rate) draws: sigma = sqrt(rate (1 - rate) / n).
    return 5 * np.sqrt(rate * (1 - rate) / n)


def random_graph(num_nodes=50, num_edges=2000, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, num_nodes, num_edges)
    dst = rng.integers(0, num_nodes, num_edges)
    return jnp.asarray(np.stack([src, dst]), jnp.int32)


def test_node_semantics():
    check_semantics(lambda k, x, r: dl.drop_node(k, x, r).x, jnp.ones((16, 3)) * 2.0)


def test_dense_edge_semantics():
    a = jax.random.uniform(jax.random.key(1), (6, 6))
    check_semantics(lambda k, x, r: dl.drop_edge_dense(k, x, r), a)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_drop_edge_fraction_and_weights(rate):
    edges = random_graph(num_edges=20000)
    w = jax.random.uniform(jax.random.key(1), (20000,), minval=0.5, maxval=1.5)
    out = dl.drop_edge(KEY, edges, rate, edge_weight=w)
    mask = np.asarray(out.mask)
    assert abs((~mask).mean() - rate) < five_sigma(rate, mask.size)
    np.testing.assert_array_equal(out.edge_weight, np.where(mask, w, 0))  # no rescaling
    assert out.self_loop_weight is None
    out0 = dl.drop_edge(KEY, edges, 0.0, edge_weight=w)
    assert out0.mask.all()
    np.testing.assert_array_equal(out0.edge_weight, w)
    assert not dl.drop_edge(KEY, edges, 1.0).mask.any()
    assert dl.drop_edge(KEY, edges, 0.7, deterministic=True).mask.all()


def test_drop_edge_undirected_pairs_share_a_draw():
    edges = random_graph(num_nodes=30, num_edges=300)
    both = jnp.concatenate([edges, edges[::-1]], axis=1)  # every edge in both directions
    mask = np.asarray(dl.drop_edge(KEY, both, 0.5, undirected=True).mask)
    np.testing.assert_array_equal(mask[:300], mask[300:])
    assert 0 < mask.mean() < 1


def dense_gcn(edges, weight, num_nodes):
    a = np.zeros((num_nodes, num_nodes))
    np.add.at(a, (np.asarray(edges[1]), np.asarray(edges[0])), np.asarray(weight))
    a += np.eye(num_nodes)
    d = a.sum(axis=1)
    return a / np.sqrt(np.outer(d, d))


def test_drop_edge_gcn_normalization_matches_dense():
    n = 12
    edges = random_graph(num_nodes=n, num_edges=40, seed=3)
    edges = edges[:, edges[0] != edges[1]]
    out = jax.jit(lambda k: dl.drop_edge(k, edges, 0.4, num_nodes=n, normalize=True))(KEY)
    assert 0 < np.asarray(out.mask).mean() < 1  # some edges dropped, some kept
    masked = np.where(np.asarray(out.mask), 1.0, 0.0)
    expected = dense_gcn(edges, masked, n)
    # Rebuild the normalized dense matrix from the returned edge and self-loop weights.
    got = np.zeros((n, n))
    np.add.at(got, (np.asarray(edges[1]), np.asarray(edges[0])), np.asarray(out.edge_weight))
    got += np.diag(np.asarray(out.self_loop_weight))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        dl.drop_edge(KEY, edges, 0.4, normalize=True)
    with pytest.raises(ValueError):
        dl.drop_edge(KEY, edges.T, 0.4)
    with pytest.raises(TypeError):
        dl.drop_edge(KEY, edges.astype(jnp.float32), 0.4)


def test_drop_edge_dense_symmetric_normalized():
    n = 64
    a = (jax.random.uniform(jax.random.key(1), (n, n)) < 0.3).astype(jnp.float32)
    a = jnp.maximum(a, a.T) * (1 - jnp.eye(n))
    dropped = np.asarray(dl.drop_edge_dense(KEY, a, 0.5, symmetric=True))
    np.testing.assert_array_equal(dropped, dropped.T)
    kept = dropped[np.triu(np.asarray(a), 1) > 0]
    assert abs((kept == 0).mean() - 0.5) < five_sigma(0.5, kept.size)
    normalized = dl.drop_edge_dense(KEY, a, 0.5, symmetric=True, normalize=True)
    d = dropped.sum(axis=1) + 1
    expected = (dropped + np.eye(n)) / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_drop_node_masks(rate):
    x = jax.random.normal(jax.random.key(1), (4096, 3)) + 10.0
    edges = random_graph(num_nodes=4096, num_edges=5000)
    out = dl.drop_node(KEY, x, rate, edge_index=edges)
    node_mask = np.asarray(out.node_mask)
    assert abs((~node_mask).mean() - rate) < five_sigma(rate, node_mask.size)
    y = np.asarray(out.x)
    np.testing.assert_array_equal((y != 0).all(axis=1), node_mask)
    # Kept rows are x / (1 - rate) as float32 computes it (1e-6 of the float64 quotient).
    np.testing.assert_allclose(y[node_mask], np.asarray(x)[node_mask] / (1 - rate), rtol=1e-6)
    src, dst = np.asarray(edges)
    np.testing.assert_array_equal(out.edge_mask, node_mask[src] & node_mask[dst])
    unscaled = dl.drop_node(KEY, x, rate, rescale=False)
    np.testing.assert_array_equal(unscaled.node_mask, node_mask)
    np.testing.assert_array_equal(np.asarray(unscaled.x)[node_mask], np.asarray(x)[node_mask])
    evaluated = dl.drop_node(KEY, x, rate, rescale=False, deterministic=True)
    np.testing.assert_array_equal(evaluated.x, x)
    assert evaluated.node_mask.all() and evaluated.edge_mask is None


@pytest.mark.parametrize("impl", ["exact", "fast", "bernoulli"])
def test_rate_one_on_large_masks(impl):
    # Every variant at rate 1 with 2**20 mask draws (a traced rate): a generator that
    # keeps an element with probability 2**-16 at rate 1 (the fast grid with `<=` for
    # `<`) lets about 16 through.
    n = 1 << 20

    @jax.jit
    def run(key, rate):
        ids = jnp.arange(n, dtype=jnp.int32)
        edges = jnp.stack([ids % 1021, (7 * ids + 3) % 1024])
        directed = dl.drop_edge(key, edges, rate, impl=impl).mask
        undirected = dl.drop_edge(key, edges, rate, undirected=True, impl=impl).mask
        dense = dl.drop_edge_dense(key, jnp.ones((1024, 1024)), rate, impl=impl)
        nodes = dl.drop_node(key, jnp.ones((n, 2)), rate, impl=impl)
        return [
            jnp.count_nonzero(a) for a in (directed, undirected, dense, nodes.x, nodes.node_mask)
        ]

    assert [int(c) for c in run(KEY, 1.0)] == [0, 0, 0, 0, 0]
