"""Building blocks every lab model shares: activations, the variants' dropout layers, heads.

A *variant* (:attr:`lab.methods.Method.variant`) names the dropout layers a model
builds. The element-wise ones are :data:`DROP_LAYERS`; variants that act elsewhere
(inside the dense layers, the recurrence, the residual branches, the embedding or as
learned layers) leave activations alone here and are built by the model itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dropout_lab import linen as dln

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "silu": nn.silu,
}

# variant -> the layer it puts after an activation: f(rate, name, block_size) -> module.
DROP_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "inverted": lambda rate, name, **_: dln.Dropout(rate=rate, name=name),
    "classic": lambda rate, name, **_: dln.Dropout(rate=rate, mode="classic", name=name),
    "gaussian": lambda rate, name, **_: dln.GaussianDropout(rate=rate, name=name),
    "channel": lambda rate, name, **_: dln.ChannelDropout(rate=rate, name=name),
    "dropblock": lambda rate, name, block_size: dln.DropBlock(
        rate=rate, block_size=block_size, name=name
    ),
    "locked": lambda rate, name, **_: dln.LockedDropout(rate=rate, time_axis=1, name=name),
}


def drop_layer(variant: str, x, rate, deterministic: bool, name: str, *, block_size: int = 3):
    """``variant``'s element-wise dropout of ``x`` (a layer named ``name`` created in the
    calling module), or ``x`` itself for variants that drop elsewhere."""
    make = DROP_LAYERS.get(variant)
    if make is None:
        return x
    return make(rate, name, block_size=block_size)(x, deterministic)


def dense_head(x: jax.Array, hidden: Sequence[int], out_features: int, activation: str):
    """Dense head (no dropout) of the CNN and the RNN, created in the calling module."""
    for i, width in enumerate(hidden):
        x = ACTIVATIONS[activation](nn.Dense(width, name=f"dense_{i}")(x))
    return nn.Dense(out_features, name="out")(x)
