"""Pure-function dropout variants: ``op(key, x, rate, *, ...)``."""

from dropout_lab.ops._alpha import alpha_dropout
from dropout_lab.ops._bernoulli import dropout
from dropout_lab.ops._concrete import (
    concrete_dropout,
    concrete_dropout_regularizer,
)
from dropout_lab.ops._dropconnect import dropconnect, dropconnect_dense
from dropout_lab.ops._gaussian import gaussian_dropout
from dropout_lab.ops._graph import (
    EdgeDrop,
    NodeDrop,
    drop_edge,
    drop_edge_dense,
    drop_node,
    gcn_normalize_edges,
)
from dropout_lab.ops._recurrent import (
    embedding_dropout,
    locked_dropout,
    weight_drop,
    zoneout,
)
from dropout_lab.ops._structured import (
    channel_dropout,
    drop_path,
    drop_path_rates,
    dropblock,
)
from dropout_lab.ops._variational import (
    variational_dense,
    variational_kl,
    variational_log_alpha,
    variational_prune_mask,
)

__all__ = [
    "EdgeDrop",
    "NodeDrop",
    "alpha_dropout",
    "channel_dropout",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "drop_edge",
    "drop_edge_dense",
    "drop_node",
    "drop_path",
    "drop_path_rates",
    "dropblock",
    "dropconnect",
    "dropconnect_dense",
    "dropout",
    "embedding_dropout",
    "gaussian_dropout",
    "gcn_normalize_edges",
    "locked_dropout",
    "variational_dense",
    "variational_kl",
    "variational_log_alpha",
    "variational_prune_mask",
    "weight_drop",
    "zoneout",
]
