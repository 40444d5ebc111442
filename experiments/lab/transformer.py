r"""Transformer model of the lab: a small pre-LN encoder classifier over patches.

Rows ``[batch, prod(input_shape)]`` are cut into tokens: an image ``[H, W, C]``
(digits ``[8, 8, 1]``) into ``patch x patch`` patches, a sequence ``[T, C]``
(MNIST-1D ``[40, 1]``) into segments of ``patch`` steps. Each token is embedded by a
dense layer plus a learned position embedding, goes through ``depth`` pre-LN blocks

.. math::
    x \leftarrow x + \mathrm{site}\bigl(\mathrm{MHA}(\mathrm{LN}(x))\bigr),\qquad
    x \leftarrow x + \mathrm{site}\bigl(W_2\,\mathrm{drop}(\mathrm{act}(W_1\,\mathrm{LN}(x)))\bigr)

and is read out by a final LayerNorm, the mean over tokens and the dense head. The
attention is :class:`dropout_lab.linen.MultiHeadDotProductAttention` with
:func:`dropout_lab.attention.dot_product_attention`: exact keyed dropout in O(length)
memory, one mask per example and head (``broadcast_dropout=False``, so R-Drop's two
halves of a doubled batch get independent masks).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from dropout_lab import attention, schedules
from dropout_lab import linen as dln
from lab.checks import ConfigError
from lab.layers import ACTIVATIONS, dense_head

# variant -> its dropout sites in every block: "hidden" (the MLP's hidden units and both
# residual branches, element-wise), "weights" (attention probabilities after the
# softmax), "keys" (DropKey: logits before it), "paths" (whole residual branches).
SITES: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "inverted": frozenset({"hidden", "weights"}),
    "attention": frozenset({"weights"}),
    "dropkey": frozenset({"keys"}),
    "droppath": frozenset({"paths"}),
}
# The per-block profile ``profile="auto"`` gives each variant (others: uniform).
AUTO_PROFILE = {"droppath": "linear_depth", "dropkey": "decreasing_depth"}


def check_patches(input_shape: Sequence[int], patch: int) -> None:
    """Raises :class:`ConfigError` unless ``patch`` tiles every spatial axis (1 or 2 of them)."""
    spatial = tuple(input_shape[:-1])
    if len(spatial) not in (1, 2) or any(s % patch for s in spatial):
        raise ConfigError(
            f"config key 'model.patch' = {patch!r}: the transformer cuts a sequence [T, C] "
            f"or an image [H, W, C] into patches; {patch} does not tile "
            f"model.input_shape = {list(input_shape)}."
        )


def patches(x: jax.Array, input_shape: Sequence[int], patch: int) -> jax.Array:
    """Rows ``[batch, prod(input_shape)]`` to tokens ``[batch, tokens, patch^n * C]``.

    Tokens in row-major order of the patch grid; each token's values in row-major order
    of its patch (channels last).
    """
    *spatial, channels = input_shape
    grid = [s // patch for s in spatial]
    n = len(spatial)
    x = x.reshape(x.shape[0], *[v for g in grid for v in (g, patch)], channels)
    order = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1]
    return x.transpose(order).reshape(x.shape[0], math.prod(grid), patch**n * channels)


def layer_rates(profile: str, variant: str, rate: jax.Array | float, depth: int) -> jax.Array:
    """``[depth]`` rates of the blocks: ``rate`` spread by the profile (``auto``: the variant's).

    ``uniform``: ``rate`` everywhere; ``linear_depth`` / ``decreasing_depth``:
    :func:`dropout_lab.schedules.linear_depth` / ``decreasing_depth`` (block ``l`` of
    ``L`` gets ``l / L`` / ``(L + 1 - l) / L`` of ``rate``).
    """
    if profile == "auto":
        profile = AUTO_PROFILE.get(variant, "uniform")
    if profile == "uniform":
        return jnp.broadcast_to(jnp.asarray(rate, jnp.float32), (depth,))
    return getattr(schedules, profile)(rate, depth)


class Block(nn.Module):
    """One pre-LN block with the dropout ``sites`` of a variant at ``rate``.

    Attributes:
      heads: attention heads.
      width: token width (``heads`` divides it).
      mlp_dim: hidden width of the MLP.
      activation: a key of ``ACTIVATIONS``.
      sites: a value of :data:`SITES`.
    """

    heads: int
    width: int
    mlp_dim: int
    activation: str
    sites: frozenset[str]

    def _branch(self, h: jax.Array, rate, deterministic: bool, name: str) -> jax.Array:
        """A residual branch's output through its sites (element-wise, then whole)."""
        if "hidden" in self.sites:
            h = dln.Dropout(rate=rate, name=f"drop_{name}")(h, deterministic)
        if "paths" in self.sites:
            h = dln.DropPath(rate=rate, name=f"path_{name}")(h, deterministic)
        return h

    @nn.compact
    def __call__(self, x: jax.Array, rate: jax.Array, deterministic: bool) -> jax.Array:
        """Maps tokens ``x [batch, tokens, width]`` to the same shape."""
        dropped = self.sites & {"weights", "keys"}
        attend = functools.partial(attention.dot_product_attention, dropkey="keys" in self.sites)
        h = nn.LayerNorm(name="norm_attention")(x)
        h = dln.MultiHeadDotProductAttention(
            num_heads=self.heads,
            qkv_features=self.width,
            dropout_rate=cast(float, rate) if dropped else 0.0,  # traced: dl's module takes it
            broadcast_dropout=False,
            attention_fn=attend,
            name="attention",
        )(h, deterministic=deterministic)
        x = x + self._branch(h, rate, deterministic, "attention")
        h = nn.LayerNorm(name="norm_mlp")(x)
        h = ACTIVATIONS[self.activation](nn.Dense(self.mlp_dim, name="mlp_in")(h))
        if "hidden" in self.sites:
            h = dln.Dropout(rate=rate, name="drop_hidden")(h, deterministic)
        h = nn.Dense(self.width, name="mlp_out")(h)
        return x + self._branch(h, rate, deterministic, "mlp")


class Transformer(nn.Module):
    r"""A pre-LN Transformer encoder classifier (a ViT on images, or on sequences).

    ``rate`` and ``input_rate`` are call arguments, so they may be traced. The
    dropout sites of each variant (:data:`SITES`), all at block ``l``'s rate
    (``rate`` spread over the blocks by ``profile``; :func:`layer_rates`):

    * ``none``: no dropout.
    * ``inverted``: standard Transformer dropout (Vaswani et al. 2017; BERT's hidden and
      attention-probability dropout): inverted dropout on the MLP's hidden units and on
      both residual branches, and on the attention probabilities.
    * ``attention``: the attention probabilities only.
    * ``dropkey``: DropKey (Li et al. 2023): attention logits dropped before the
      softmax (masked out, no rescaling), falling over the blocks by default.
    * ``droppath``: drop path (Huang et al. 2016): each residual branch kept or dropped
      whole per example, rising over the blocks by default (``rate`` at the last).

    Every variant but ``none`` drops the embedded tokens at ``input_rate``.

    Attributes:
      input_shape: per-example shape, channels last: ``[T, C]`` or ``[H, W, C]``.
      out_features: number of classes (logits) or 1 (regression).
      patch: patch side (images) or length (sequences); tiles the input.
      depth: number of blocks.
      heads: attention heads.
      width: token width (``heads`` divides it).
      mlp_ratio: the MLP's hidden width is ``mlp_ratio * width``.
      hidden: widths of the dense head after pooling (no dropout there).
      activation: a key of ``ACTIVATIONS`` (the MLP's and the head's).
      variant: a key of :data:`SITES`.
      profile: ``auto``, ``uniform``, ``linear_depth`` or ``decreasing_depth``.
    """

    input_shape: Sequence[int]
    out_features: int
    patch: int = 2
    depth: int = 2
    heads: int = 4
    width: int = 64
    mlp_ratio: int = 2
    hidden: Sequence[int] = ()
    activation: str = "gelu"
    variant: str = "none"
    profile: str = "auto"

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
        if self.variant not in SITES:
            raise ValueError(f"variant={self.variant!r} is not one of {tuple(SITES)}.")
        h = nn.Dense(self.width, name="embed")(patches(x, self.input_shape, self.patch))
        h = h + self.param("position", nn.initializers.normal(0.02), h.shape[1:])
        if self.variant != "none":
            h = dln.Dropout(rate=input_rate, name="drop_embed")(h, deterministic)
        rates = layer_rates(self.profile, self.variant, rate, self.depth)
        shape = (self.heads, self.width, self.mlp_ratio * self.width, self.activation)
        for i in range(self.depth):
            block = Block(*shape, SITES[self.variant], name=f"block_{i}")
            h = block(h, rates[i], deterministic)
        h = nn.LayerNorm(name="norm")(h).mean(axis=1)
        return dense_head(h, self.hidden, self.out_features, self.activation)
