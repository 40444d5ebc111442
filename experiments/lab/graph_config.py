"""Config schema of ``experiments/graph.py`` (GCN node classification on a k-NN graph).

Loaded like :func:`lab.config.load_config`: the YAML file and dotted
``key=value`` overrides are merged onto the structured schema, so an unknown key or a
wrong type fails at once, then every value's range is checked.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from lab.checks import check_choice, check_range, fail
from lab.config import merge_config

GRAPH_DATASETS = ("digits", "breast_cancer", "mnist1d")


@dataclass(frozen=True)
class GraphDrop:
    """Where a graph method drops: edges, whole input nodes, or input and hidden features.

    Attributes:
      edges: DropEdge (Rong et al., ICLR 2020): undirected edges, graph re-normalized.
      nodes: DropNode (Feng et al., NeurIPS 2020): whole input feature rows.
      features: inverted dropout on the input features and the hidden layer.
    """

    edges: bool = False
    nodes: bool = False
    features: bool = False


# The graph experiment's table of methods: each declared once.
GRAPH_DROPS = {
    "none": GraphDrop(),
    "inverted": GraphDrop(features=True),
    "drop_edge": GraphDrop(edges=True),
    "drop_node": GraphDrop(nodes=True),
}
GRAPH_METHODS = tuple(GRAPH_DROPS)


@dataclass
class GraphDataConfig:
    """The nodes (one per example of a classification set) and their k-NN graph.

    Attributes:
      name: one of ``GRAPH_DATASETS``.
      test_fraction: share of nodes whose labels are held out (the experiment's split,
        :func:`lab.data.load_dataset`).
      split_seed: seed of the train/test split.
      max_examples: keep at most this many nodes (0: all), for quick runs.
      num_neighbors: k of the k-nearest-neighbour graph (Euclidean distance of the
        standardized features), symmetrized: ``i ~ j`` when either is among the
        other's k nearest.
    """

    name: str = "digits"
    test_fraction: float = 0.3
    split_seed: int = 0
    max_examples: int = 0
    num_neighbors: int = 10


@dataclass
class GraphMethod:
    """One method: ``rate`` is what it drops (features, edges or nodes)."""

    enabled: bool = True
    rate: float = 0.5


@dataclass
class GraphMethodsConfig:
    """The compared methods; each can be switched off with ``enabled: false``.

    Attributes:
      none: no dropout.
      inverted: inverted dropout on the input features and the hidden layer.
      drop_edge: DropEdge (every undirected edge dropped together, graph re-normalized
        at every step).
      drop_node: DropNode (whole input feature rows, rescaled by ``1 / (1 - rate)``).
    """

    none: GraphMethod = field(default_factory=lambda: GraphMethod(rate=0.0))
    inverted: GraphMethod = field(default_factory=lambda: GraphMethod(rate=0.5))
    drop_edge: GraphMethod = field(default_factory=lambda: GraphMethod(rate=0.3))
    drop_node: GraphMethod = field(default_factory=lambda: GraphMethod(rate=0.2))


@dataclass
class GraphConfig:
    """Everything ``experiments/graph.py`` needs.

    Attributes:
      name: run name (default: the YAML file's stem).
      output_dir: run folder (default ``runs/<name>``).
      seeds: training seeds (initialization and masks); reported as mean +- se.
      data: see :class:`GraphDataConfig`.
      hidden: width of the GCN's hidden layer.
      steps: full-graph Adam steps.
      learning_rate: Adam step size.
      weight_decay: decoupled weight decay (AdamW).
      ece_bins: equal-width confidence bins of the ECE.
      methods: see :class:`GraphMethodsConfig`.
    """

    name: str = ""
    output_dir: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data: GraphDataConfig = field(default_factory=GraphDataConfig)
    hidden: int = 64
    steps: int = 200
    learning_rate: float = 0.01
    weight_decay: float = 5e-4
    ece_bins: int = 15
    methods: GraphMethodsConfig = field(default_factory=GraphMethodsConfig)


def load_graph_config(
    path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()
) -> GraphConfig:
    """Loads a YAML config onto :class:`GraphConfig`, applies overrides, checks it.

    Args:
      path: YAML file (``None``: the schema's defaults).
      overrides: ``key=value`` strings, e.g. ``["steps=50", "methods.drop_edge.rate=0.5"]``.

    Returns:
      The checked config (a typed OmegaConf node with attribute access).

    Raises:
      ConfigError: missing file, unknown key, wrong type or impossible value; the
        message names the key.
    """
    cfg = merge_config(GraphConfig, path, overrides)
    if not cfg.name:
        cfg.name = pathlib.Path(path).stem if path is not None else "graph"
    validate_graph_config(cfg)
    return cfg


def enabled_graph_methods(cfg: GraphConfig) -> list[str]:
    """Names of the enabled methods, in ``GRAPH_METHODS`` order."""
    return [m for m in GRAPH_METHODS if getattr(cfg.methods, m).enabled]


def validate_graph_config(cfg: GraphConfig) -> None:
    """Checks every value's range; raises :class:`ConfigError` naming the key."""
    d = cfg.data
    check_choice("data.name", d.name, GRAPH_DATASETS)
    check_range("data.test_fraction", d.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    check_range("data.max_examples", d.max_examples, 0)
    check_range("data.num_neighbors", d.num_neighbors, 1)
    if d.max_examples and d.num_neighbors >= d.max_examples:
        fail("data.num_neighbors", d.num_neighbors, "must be < data.max_examples.")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        fail("seeds", list(cfg.seeds), "needs at least one seed, all distinct.")
    for i, seed in enumerate(cfg.seeds):
        check_range(f"seeds[{i}]", seed, 0)
    check_range("hidden", cfg.hidden, 1)
    check_range("steps", cfg.steps, 1)
    check_range("learning_rate", cfg.learning_rate, 0.0, low_open=True)
    check_range("weight_decay", cfg.weight_decay, 0.0)
    check_range("ece_bins", cfg.ece_bins, 1)
    if not enabled_graph_methods(cfg):
        fail("methods", "all disabled", "enable at least one method.")
    for name in GRAPH_METHODS:
        # A rate of 1 drops every feature, edge or node: nothing left to learn from.
        rate = getattr(cfg.methods, name).rate
        check_range(f"methods.{name}.rate", rate, 0.0, 1.0, high_open=True)
