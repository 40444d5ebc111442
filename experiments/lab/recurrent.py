"""Recurrent model of the lab: stacked GRU/LSTM layers with a dropout variant, dense head."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dropout_lab import linen as dln
from lab.layers import dense_head, drop_layer


class _ScanCell(nn.Module):
    """One GRU or LSTM step, with zoneout of the state when ``zoneout`` is set."""

    cell: str
    features: int
    zoneout: bool
    deterministic: bool

    @nn.compact
    def __call__(self, carry, x_t: jax.Array, rate: jax.Array):
        if self.cell == "gru":
            new_carry, h = nn.GRUCell(self.features, name="cell")(carry, x_t)
        else:
            new_carry, h = nn.OptimizedLSTMCell(self.features, name="cell")(carry, x_t)
        if self.zoneout:
            zone = dln.Zoneout(rate=rate, name="zoneout")
            new_carry = jax.tree.map(
                lambda old, new: zone(old, new, self.deterministic), carry, new_carry
            )
            h = new_carry if self.cell == "gru" else new_carry[1]
        return new_carry, h


class RecurrentNet(nn.Module):
    """Stacked GRU or LSTM layers over a sequence, read out from the last step.

    Rows ``[batch, time * features]`` are reshaped to ``[batch, time, features]``
    (``input_shape``; ``[40, 1]`` for MNIST-1D). ``input_rate`` drops the inputs and
    ``rate`` every layer's output sequence; the head reads the last step.

    * ``inverted`` / ``classic`` / ``gaussian``: a fresh mask at every time step.
    * ``locked``: :class:`dropout_lab.linen.LockedDropout`: one mask per sequence,
      shared by all time steps (Gal & Ghahramani 2016).
    * ``zoneout``: no dropout on inputs or outputs; instead every unit of the
      recurrent state (``h``; ``c`` and ``h`` for the LSTM) keeps its previous value
      with probability ``rate`` at each step (:class:`dropout_lab.linen.Zoneout`,
      inside the scan; its expectation at evaluation). ``input_rate`` is inverted
      dropout on the inputs.
    * ``weightdrop``: no dropout on inputs or outputs; instead DropConnect on every
      layer's hidden-to-hidden kernels (:class:`dropout_lab.linen.WeightDrop`; Merity
      et al. 2017): the masked kernels are drawn once per forward pass, before the
      time loop, so every step of every sequence in the batch uses the same mask.
      ``input_rate`` is inverted dropout on the inputs.
    * ``embedding`` (tokens only): no dropout on the layers' outputs; instead
      :class:`dropout_lab.linen.EmbeddingDropout` drops whole rows of the embedding
      table at ``rate``, with one copy of the table per sequence, so every occurrence
      of a dropped token in that sequence reads a zero vector (AWD-LSTM's embedding
      dropout, drawn per sequence instead of per batch). ``input_rate`` is inverted
      dropout on the embedded inputs.

    With ``token_edges``, every input value becomes a token, its bin
    ``searchsorted(token_edges, x, side="right")`` among ``len(token_edges) + 1``,
    read through an ``nn.Embed`` of ``embed_dim``: ``[batch, time, features]`` becomes
    ``[batch, time, features * embed_dim]`` before the first layer.

    Attributes:
      input_shape: ``[time, features]``.
      rnn_hidden: state size of each recurrent layer.
      hidden: widths of the dense head (no dropout).
      out_features: number of classes (logits) or 1 (regression).
      cell: ``"gru"`` or ``"lstm"``.
      activation: activation of the dense head.
      variant: one of ``none``, ``inverted``, ``classic``, ``gaussian``, ``locked``,
        ``zoneout``, ``weightdrop``, ``embedding`` (needs ``token_edges``).
      token_edges: increasing bin edges of the tokens (empty: float inputs).
      embed_dim: width of the token embedding.
    """

    input_shape: Sequence[int]
    rnn_hidden: Sequence[int]
    hidden: Sequence[int]
    out_features: int
    cell: str = "gru"
    activation: str = "relu"
    variant: str = "none"
    token_edges: Sequence[float] = ()
    embed_dim: int = 16

    def _embed(self, x: jax.Array, rate: jax.Array, deterministic: bool) -> jax.Array:
        """Values ``[batch, time, features]`` to ``[batch, time, features * embed_dim]``."""
        tokens = jnp.searchsorted(jnp.asarray(self.token_edges, x.dtype), x, side="right")
        embed = nn.Embed(len(self.token_edges) + 1, self.embed_dim, name="embed")
        if self.variant == "embedding" and not deterministic:
            # One copy of the table per sequence: whole rows (token types) dropped.
            table = jnp.broadcast_to(embed.embedding, (x.shape[0], *embed.embedding.shape))
            table = dln.EmbeddingDropout(rate=rate, name="drop_embed")(table, False)
            vectors = jax.vmap(lambda t, i: t[i])(table, tokens)
        else:
            vectors = embed(tokens)
        return vectors.reshape(*x.shape[:2], -1)

    def _weight_dropped(self, layer_cls, layer: str, rate: jax.Array, name: str):
        """``layer_cls`` whose cell's hidden-to-hidden kernels ``h*`` are masked once."""
        cell = self.variables["params"][layer]["cell"]
        hidden = {k: v["kernel"] for k, v in cell.items() if k.startswith("h")}
        masked = dln.WeightDrop(rate=rate, name=name)(hidden, False)

        def mask(variables):
            params = variables["params"]
            new = {
                k: {**v, "kernel": masked.get(k, v["kernel"])} for k, v in params["cell"].items()
            }
            return {**variables, "params": {**params, "cell": new}}

        return nn.map_variables(layer_cls, "params", trans_in_fn=mask)

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
        x = x.reshape(x.shape[0], *self.input_shape)
        rate = jnp.asarray(rate, jnp.float32)
        if self.variant == "embedding" and not self.token_edges:
            raise ValueError("variant='embedding' drops token vectors: set token_edges.")
        if self.token_edges:
            x = self._embed(x, rate, deterministic)
        own = ("zoneout", "weightdrop", "embedding")
        in_variant = "inverted" if self.variant in own else self.variant
        x = drop_layer(in_variant, x, input_rate, deterministic, "drop_in")
        zoneout = self.variant == "zoneout"
        scan = nn.scan(
            _ScanCell,
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            in_axes=(1, nn.broadcast),
            out_axes=1,
        )
        for i, features in enumerate(self.rnn_hidden):
            h0 = jnp.zeros((x.shape[0], features), x.dtype)
            carry = h0 if self.cell == "gru" else (h0, h0)
            layer_cls = scan
            if self.variant == "weightdrop" and not (deterministic or self.is_initializing()):
                layer_cls = self._weight_dropped(scan, f"rnn_{i}", rate, f"weight_drop_{i}")
            layer = layer_cls(self.cell, features, zoneout, deterministic, name=f"rnn_{i}")
            _, x = layer(carry, x, rate)
            x = drop_layer(self.variant, x, rate, deterministic, f"drop_{i}")
        return dense_head(x[:, -1], self.hidden, self.out_features, self.activation)
