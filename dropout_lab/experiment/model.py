"""The MLP every method shares; the dropout variant is static, the rates are traced."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dropout_lab import linen as dln

VARIANTS = ("none", "inverted", "classic", "dropconnect", "gaussian")
ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "silu": nn.silu,
}
METHOD_VARIANT = {
    "none": "none",
    "classic": "classic",
    "inverted": "inverted",
    "rdrop": "inverted",
    "mc": "inverted",
    "dropconnect": "dropconnect",
    "gaussian": "gaussian",
}


class MLP(nn.Module):
    """Dense layers with a dropout variant after each hidden activation.

    ``rate`` and ``input_rate`` are call arguments, not fields, so they may be traced:
    one compiled step serves every rate, and rates can be vmapped.

    * ``none``: no dropout.
    * ``inverted`` / ``classic``: :class:`dropout_lab.linen.Dropout` on the inputs
      (``input_rate``) and after every hidden activation (``rate``).
    * ``gaussian``: :class:`dropout_lab.linen.GaussianDropout` at the same places.
    * ``dropconnect``: hidden layers are :class:`dropout_lab.linen.DropConnectDense`
      with ``rate``; inputs get inverted dropout with ``input_rate``.

    Attributes:
      hidden: hidden widths.
      out_features: number of classes (logits) or 1 (regression).
      activation: a key of ``ACTIVATIONS``.
      variant: one of ``VARIANTS``.
    """

    hidden: Sequence[int]
    out_features: int
    activation: str = "relu"
    variant: str = "none"

    def _drop(self, x, rate, deterministic, name):
        if self.variant == "none":
            return x
        if self.variant == "gaussian":
            return dln.GaussianDropout(rate=rate, name=name)(x, deterministic)
        mode = "classic" if self.variant == "classic" else "inverted"
        return dln.Dropout(rate=rate, mode=mode, name=name)(x, deterministic)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        rate: jax.Array | float = 0.0,
        input_rate: jax.Array | float = 0.0,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Maps ``x [batch, features]`` to ``[batch, out_features]``."""
        act = ACTIVATIONS[self.activation]
        x = self._drop(x, input_rate, deterministic, "drop_in")
        for i, width in enumerate(self.hidden):
            if self.variant == "dropconnect":
                x = dln.DropConnectDense(width, rate=rate, name=f"dense_{i}")(x, deterministic)
            else:
                x = nn.Dense(width, name=f"dense_{i}")(x)
            x = act(x)
            if self.variant != "dropconnect":
                x = self._drop(x, rate, deterministic, f"drop_{i}")
        return nn.Dense(self.out_features, name="out")(x)
