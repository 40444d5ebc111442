"""dropout_lab: stochastic regularization for JAX.

Every variant is a pure function ``op(key, x, rate, *, ...)`` that works under
``jit``, ``vmap`` and ``grad`` with a traced rate. Flax wrappers live in
``dropout_lab.linen`` and ``dropout_lab.nnx`` (imported on demand).
"""

from dropout_lab.ops import (
    alpha_dropout,
    dropconnect,
    dropconnect_dense,
    dropout,
    gaussian_dropout,
)

__version__ = "0.1.0"

__all__ = [
    "alpha_dropout",
    "dropconnect",
    "dropconnect_dense",
    "dropout",
    "gaussian_dropout",
]

_SUBMODULES = frozenset(
    {"linen", "nnx", "ops", "mc", "uncertainty", "losses", "metrics", "theory", "experiment"}
)


def __getattr__(name: str):
    """Imports submodules on first use, so ``dl.nnx.Dropout`` works without importing Flax early."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"dropout_lab.{name}")
    raise AttributeError(f"module 'dropout_lab' has no attribute {name!r}")
