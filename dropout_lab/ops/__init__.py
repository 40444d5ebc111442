"""Pure-function dropout variants: ``op(key, x, rate, *, ...)``."""

from dropout_lab.ops._alpha import alpha_dropout
from dropout_lab.ops._bernoulli import dropout
from dropout_lab.ops._dropconnect import dropconnect, dropconnect_dense
from dropout_lab.ops._gaussian import gaussian_dropout

__all__ = [
    "alpha_dropout",
    "dropconnect",
    "dropconnect_dense",
    "dropout",
    "gaussian_dropout",
]
