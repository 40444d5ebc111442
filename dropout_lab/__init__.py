"""dropout_lab: stochastic regularization for JAX.

Every variant is a pure function ``op(key, x, rate, *, ...)`` that works under
``jit``, ``vmap`` and ``grad`` with a traced rate. Flax wrappers live in
``dropout_lab.linen`` and ``dropout_lab.nnx`` (imported on demand).
"""

from dropout_lab.ops import (
    EdgeDrop,
    NodeDrop,
    alpha_dropout,
    channel_dropout,
    concrete_dropout,
    concrete_dropout_regularizer,
    drop_edge,
    drop_edge_dense,
    drop_node,
    drop_path,
    drop_path_rates,
    dropblock,
    dropconnect,
    dropconnect_dense,
    dropout,
    embedding_dropout,
    gaussian_dropout,
    gcn_normalize_edges,
    locked_dropout,
    variational_dense,
    variational_kl,
    variational_log_alpha,
    variational_prune_mask,
    weight_drop,
    zoneout,
)

__version__ = "0.1.0"

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

_SUBMODULES = frozenset(
    {
        "linen",
        "nnx",
        "ops",
        "mc",
        "uncertainty",
        "losses",
        "metrics",
        "theory",
        "acquisition",
        "calibration",
        "schedules",
        "attention",
    }
)


def __getattr__(name: str):
    """Imports submodules on first use, so ``dl.nnx.Dropout`` works without importing Flax early."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"dropout_lab.{name}")
    raise AttributeError(f"module 'dropout_lab' has no attribute {name!r}")
