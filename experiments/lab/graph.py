r"""Node classification with a two-layer GCN on a k-nearest-neighbour graph.

Every example of a classification set is a node, linked to its ``num_neighbors``
nearest neighbours (symmetrized); the experiment's train/test split gives the
labelled and the held-out nodes (transductive, as in Kipf & Welling 2017). The GCN

.. math:: Z = \hat A\,\mathrm{relu}(\hat A X W_0 + b_0)\,W_1 + b_1,\qquad
    \hat A = \hat D^{-1/2}(A + I)\hat D^{-1/2}

is trained full-graph: one pure jitted program scans ``steps`` AdamW steps; the method
is static and the rate traced, so one compile serves every seed and rate. Methods:
``none``; ``inverted`` (dropout on the input features and the hidden layer, as in the
GCN paper); ``drop_edge`` (:func:`dropout_lab.drop_edge`, both directions of an edge
together, :math:`\hat A` re-normalized at every step; Rong et al. 2020); ``drop_node``
(:func:`dropout_lab.drop_node`: whole input rows, rescaled; GRAND's DropNode, Feng et
al. 2020). Evaluation uses the full graph and no dropout.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from dropout_lab import ops
from lab import provenance, report, scores
from lab.config import DataConfig
from lab.data import load_dataset
from lab.graph_config import GRAPH_DROPS, GraphConfig, GraphDrop, enabled_graph_methods
from lab.run import write_atomic


class Graph(NamedTuple):
    """A node-classification graph (arrays only, so it can be a jit argument).

    Attributes:
      x: ``[num_nodes, features]`` node features.
      labels: ``[num_nodes]`` integer classes.
      edge_index: ``[2, num_edges]`` (source, target); both directions of every edge.
      train_mask: ``[num_nodes]`` bool, True for labelled (training) nodes.
    """

    x: jax.Array
    labels: jax.Array
    edge_index: jax.Array
    train_mask: jax.Array


def knn_edges(x: np.ndarray, num_neighbors: int) -> np.ndarray:
    """Symmetrized k-NN graph as ``[2, num_edges]`` int32, both directions, no self-loops.

    ``sklearn.neighbors.kneighbors_graph`` (Euclidean), then ``A = max(A, A^T)``.
    """
    from sklearn.neighbors import kneighbors_graph

    a = kneighbors_graph(x, num_neighbors, include_self=False)
    a = a.maximum(a.T).tocoo()
    return np.stack([a.row, a.col]).astype(np.int32)


def load_graph(cfg: GraphConfig) -> tuple[Graph, int]:
    """Nodes (train then test), their k-NN edges, labels and the train mask.

    Returns:
      ``(graph, num_classes)``.
    """
    d = cfg.data
    data = load_dataset(
        DataConfig(
            name=d.name,
            test_fraction=d.test_fraction,
            split_seed=d.split_seed,
            max_examples=d.max_examples,
        )
    )
    x = np.concatenate([data.x_train, data.x_test])
    labels = np.concatenate([data.y_train, data.y_test])
    train_mask = np.arange(len(x)) < len(data.x_train)
    graph = Graph(
        jnp.asarray(x),
        jnp.asarray(labels),
        jnp.asarray(knn_edges(x, d.num_neighbors)),
        jnp.asarray(train_mask),
    )
    return graph, data.num_classes


def init_params(key: jax.Array, num_features: int, hidden: int, num_classes: int) -> dict:
    """Glorot-uniform weights and zero biases of the two GCN layers (as Kipf & Welling)."""
    k0, k1 = jax.random.split(key)
    glorot = jax.nn.initializers.glorot_uniform()
    return {
        "w0": glorot(k0, (num_features, hidden)),
        "b0": jnp.zeros(hidden),
        "w1": glorot(k1, (hidden, num_classes)),
        "b1": jnp.zeros(num_classes),
    }


def propagate(h: jax.Array, edge_index: jax.Array, edge_weight, self_loop_weight) -> jax.Array:
    r""":math:`\hat A h`: each node sums its weighted in-edges' messages and its self-loop."""
    src, dst = edge_index[0], edge_index[1]
    messages = edge_weight[:, None] * h[src]
    return jax.ops.segment_sum(messages, dst, h.shape[0]) + self_loop_weight[:, None] * h


def forward(
    params: dict,
    graph: Graph,
    key: jax.Array,
    rate: ArrayLike,
    *,
    method: GraphDrop,
    deterministic: bool,
) -> jax.Array:
    """Logits ``[num_nodes, num_classes]`` of the GCN with ``method``'s dropout sites."""
    x, edge_index = graph.x, graph.edge_index
    num_nodes, num_edges = x.shape[0], edge_index.shape[1]
    k_edge, k_in, k_hidden = jax.random.split(key, 3)
    if method.edges and not deterministic:
        dropped = ops.drop_edge(
            k_edge, edge_index, rate, num_nodes=num_nodes, undirected=True, normalize=True
        )
        weight, loop = dropped.edge_weight, dropped.self_loop_weight
    else:
        weight, loop = ops.gcn_normalize_edges(edge_index, jnp.ones(num_edges), num_nodes)
    off = deterministic or not method.features
    if method.nodes:
        x = ops.drop_node(k_in, x, rate, deterministic=deterministic).x
    else:
        x = ops.dropout(k_in, x, rate, deterministic=off)
    h = jax.nn.relu(propagate(x @ params["w0"], edge_index, weight, loop) + params["b0"])
    h = ops.dropout(k_hidden, h, rate, deterministic=off)
    return propagate(h @ params["w1"], edge_index, weight, loop) + params["b1"]


def loss_fn(params: dict, graph: Graph, key: jax.Array, rate: jax.Array, method: GraphDrop):
    """Mean cross-entropy over the training nodes of one stochastic forward."""
    logits = forward(params, graph, key, rate, method=method, deterministic=False)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, graph.labels)
    return jnp.sum(jnp.where(graph.train_mask, ce, 0.0)) / jnp.sum(graph.train_mask)


def train(
    graph: Graph,
    key: jax.Array,
    rate: jax.Array,
    *,
    method: GraphDrop,
    num_classes: int,
    hidden: int,
    steps: int,
    tx: optax.GradientTransformation,
) -> tuple[dict, jax.Array]:
    """Initializes from ``key`` and scans ``steps`` full-graph steps (pure; jit it).

    Step ``t`` draws its masks from ``fold_in(dropout_key, t)``.

    Returns:
      ``(params, losses [steps])``.
    """
    init_key, dropout_key = jax.random.split(key)
    params = init_params(init_key, graph.x.shape[1], hidden, num_classes)

    def step(carry, t):
        params, opt_state = carry
        k = jax.random.fold_in(dropout_key, t)
        loss, grads = jax.value_and_grad(loss_fn)(params, graph, k, rate, method)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
    return params, losses


@jax.jit
def predict(params: dict, graph: Graph) -> jax.Array:
    """Class log-probabilities ``[num_nodes, num_classes]`` of the full graph, no dropout."""
    logits = forward(
        params, graph, jax.random.key(0), 0.0, method=GRAPH_DROPS["none"], deterministic=True
    )
    return jax.nn.log_softmax(logits)


def evaluate(params: dict, graph: Graph, num_bins: int) -> dict[str, float]:
    """Accuracy, NLL (train and test nodes), ECE and Brier score (test nodes).

    The scores are :func:`lab.scores.classification`'s, as in :mod:`lab.evaluate`
    (one deterministic pass: ``T = 1``).
    """
    log_probs = np.asarray(predict(params, graph))
    labels, mask = np.asarray(graph.labels), np.asarray(graph.train_mask)
    out = {}
    for split, rows in (("train", mask), ("test", ~mask)):
        got = scores.classification(log_probs[None, rows], labels[rows], num_bins)
        out[f"{split}_acc"], out[f"{split}_nll"] = float(got["acc"]), float(got["nll"])
        if split == "test":
            out["ece"], out["brier"] = float(got["ece"]), float(got["brier"])
    out["gap"] = out["train_acc"] - out["test_acc"]
    out["nll_gap"] = out["test_nll"] - out["train_nll"]
    return out


def run_graph(cfg: GraphConfig) -> dict:
    """Trains every enabled method on every seed; writes ``results.md`` and ``metrics.json``.

    Returns:
      The content of ``metrics.json``: ``per_seed``, ``summary``, ``graph`` sizes,
      ``final_train_loss`` and ``table``.
    """
    graph, num_classes = load_graph(cfg)
    tx = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    per_seed: dict[str, dict] = {}
    final_loss: dict[str, dict] = {}
    for method in enabled_graph_methods(cfg):
        rate = jnp.float32(getattr(cfg.methods, method).rate)

        def fit(graph, key, rate, method=method):
            return train(
                graph, key, rate, method=GRAPH_DROPS[method], num_classes=num_classes,
                hidden=cfg.hidden, steps=cfg.steps, tx=tx,
            )  # fmt: skip

        compiled = jax.jit(fit).lower(graph, jax.random.key(0), rate).compile()
        per_seed[method], final_loss[method] = {}, {}
        for seed in cfg.seeds:
            start = time.perf_counter()
            params, losses = jax.block_until_ready(compiled(graph, jax.random.key(seed), rate))
            seconds = time.perf_counter() - start
            result = evaluate(params, graph, cfg.ece_bins)
            result["seconds_per_epoch"] = seconds / cfg.steps  # one step = one epoch
            per_seed[method][str(seed)] = result
            final_loss[method][str(seed)] = float(losses[-1])
    summary = {m: report.summarize(s) for m, s in per_seed.items()}
    text = report.table(summary, "classification")
    num_train = int(jnp.sum(graph.train_mask))
    sizes = {
        "num_nodes": int(graph.x.shape[0]),
        "num_edges": int(graph.edge_index.shape[1]),
        "num_train": num_train,
        "num_test": int(graph.x.shape[0]) - num_train,
    }
    record = provenance.of_run(cfg, provenance.data_hash(graph))
    out = {
        "name": cfg.name,
        "seeds": list(cfg.seeds),
        "graph": sizes,
        "per_seed": per_seed,
        "summary": summary,
        "final_train_loss": final_loss,
        "table": text,
        "provenance": record,
    }
    folder = pathlib.Path(cfg.output_dir or pathlib.Path("runs") / cfg.name)
    write_atomic(folder / "metrics.json", json.dumps(out, indent=1))
    header = (
        f"# {cfg.name}\n\nmean ± standard error over seeds {list(cfg.seeds)}; "
        f"`{cfg.data.name}` as a {cfg.data.num_neighbors}-NN graph ({sizes['num_nodes']} "
        f"nodes: {num_train} train / {sizes['num_test']} test, {sizes['num_edges']} "
        f"directed edges), GCN hidden {cfg.hidden}, {cfg.steps} full-graph steps.\n\n"
    )
    footer = "\n" + provenance.footer(record)
    write_atomic(folder / "results.md", header + text.rstrip("\n") + "\n" + footer)
    return out
