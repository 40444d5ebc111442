"""The models every method shares; the dropout variant is static, the rates are traced.

:class:`MLP`, :class:`CNN` and :class:`RecurrentNet` (GRU or LSTM) all take rows
``x [batch, features]`` and are called as ``model(x, rate, input_rate,
deterministic=...)``, so the trainer, MC prediction and R-Drop treat them alike;
:func:`build_model` picks one from ``cfg.model.architecture``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dropout_lab import linen as dln
from dropout_lab import ops
from lab.config import ConfigError, ExperimentConfig

VARIANTS = (
    "none", "inverted", "classic", "dropconnect", "gaussian",
    "channel", "dropblock", "locked", "zoneout", "concrete",
    "droppath", "weightdrop", "sparse_vd", "embedding",
)  # fmt: skip
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
    "channel": "channel",
    "dropblock": "dropblock",
    "locked": "locked",
    "zoneout": "zoneout",
    "concrete": "concrete",
    "droppath": "droppath",
    "weightdrop": "weightdrop",
    "sparse_vd": "sparse_vd",
    "embedding": "embedding",
}
# Variants whose layers sow regularizers into the "losses" collection.
SOWN_LOSSES = ("concrete", "sparse_vd")


def _drop(variant: str, x, rate, deterministic: bool, name: str, *, block_size: int = 3):
    """The variant's dropout layer named ``name`` (created in the calling module)."""
    if variant in (
        "none", "zoneout", "concrete", "droppath", "weightdrop", "sparse_vd", "embedding",
    ):  # fmt: skip
        return x
    if variant == "gaussian":
        return dln.GaussianDropout(rate=rate, name=name)(x, deterministic)
    if variant == "channel":
        return dln.ChannelDropout(rate=rate, name=name)(x, deterministic)
    if variant == "dropblock":
        return dln.DropBlock(rate=rate, block_size=block_size, name=name)(x, deterministic)
    if variant == "locked":
        return dln.LockedDropout(rate=rate, time_axis=1, name=name)(x, deterministic)
    mode = "classic" if variant == "classic" else "inverted"
    return dln.Dropout(rate=rate, mode=mode, name=name)(x, deterministic)


class MLP(nn.Module):
    r"""Dense layers with a dropout variant after each hidden activation.

    ``rate`` and ``input_rate`` are call arguments, not fields, so they may be traced:
    one compiled step serves every rate, and rates can be vmapped.

    * ``none``: no dropout.
    * ``inverted`` / ``classic``: :class:`dropout_lab.linen.Dropout` on the inputs
      (``input_rate``) and after every hidden activation (``rate``).
    * ``gaussian``: :class:`dropout_lab.linen.GaussianDropout` at the same places.
    * ``dropconnect``: hidden layers are :class:`dropout_lab.linen.DropConnectDense`
      with ``rate``; inputs get inverted dropout with ``input_rate``.
    * ``concrete``: :class:`dropout_lab.linen.ConcreteDropout` (learned rate) in front
      of every dense layer after the first (and of the first too with
      ``concrete_inputs``); ``rate`` and ``input_rate`` are ignored. Each layer's
      regularizer (:func:`dropout_lab.concrete_dropout_regularizer` with the weights
      of the dense layer it feeds) is sown in the ``"losses"`` collection.
    * ``sparse_vd``: every dense layer (the output too) is a
      :class:`dropout_lab.linen.VariationalDense` (learned per-weight noise, weights
      of ``log_alpha >= vd_threshold`` pruned at evaluation); each layer's KL times
      ``vd_kl_scale`` is sown in ``"losses"``. ``rate`` and ``input_rate`` are ignored.

    Attributes:
      hidden: hidden widths.
      out_features: number of classes (logits) or 1 (regression).
      activation: a key of ``ACTIVATIONS``.
      variant: one of ``VARIANTS``.
      concrete_init_rate: concrete only: initial rate of every layer.
      temperature: concrete only: relaxation temperature.
      weight_regularizer: concrete only: :math:`\lambda_w = l^2 / N`.
      dropout_regularizer: concrete only: :math:`\lambda_p = 2 / N`.
      concrete_inputs: concrete only: also drop the inputs.
      vd_kl_scale: sparse_vd only: factor of the KL (:math:`1 / N`).
      vd_threshold: sparse_vd only: pruning threshold on ``log_alpha``, or ``None``
        (evaluation keeps every weight).
      vd_log_sigma2_init: sparse_vd only: initial ``log_sigma2``.
    """

    hidden: Sequence[int]
    out_features: int
    activation: str = "relu"
    variant: str = "none"
    concrete_init_rate: float = 0.1
    temperature: float = 0.1
    weight_regularizer: float = 1e-6
    dropout_regularizer: float = 1e-5
    concrete_inputs: bool = False
    vd_kl_scale: float = 0.0
    vd_threshold: float | None = 3.0
    vd_log_sigma2_init: float = -10.0

    def _drop(self, x, rate, deterministic, name):
        return _drop(self.variant, x, rate, deterministic, name)

    def _concrete(self, x: jax.Array, deterministic: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        widths = [*self.hidden, self.out_features]
        for i, width in enumerate(widths):
            dense = nn.Dense(width, name=f"dense_{i}" if i < len(self.hidden) else "out")
            if i == 0 and not self.concrete_inputs:
                x = dense(x)
            else:
                drop = dln.ConcreteDropout(
                    init_rate=self.concrete_init_rate,
                    temperature=self.temperature,
                    name="drop_in" if i == 0 else f"drop_{i - 1}",
                )
                input_dim = x.shape[-1]
                x = dense(drop(x, deterministic))
                reg = drop.regularizer(
                    dense.variables["params"],
                    input_dim=input_dim,
                    weight_regularizer=self.weight_regularizer,
                    dropout_regularizer=self.dropout_regularizer,
                )
                self.sow("losses", "concrete", reg)
            if i < len(self.hidden):
                x = act(x)
        return x

    def _sparse_vd(self, x: jax.Array, deterministic: bool) -> jax.Array:
        widths = [*self.hidden, self.out_features]
        for i, width in enumerate(widths):
            layer = dln.VariationalDense(
                width,
                threshold=self.vd_threshold,
                log_sigma2_init=self.vd_log_sigma2_init,
                name=f"dense_{i}" if i < len(self.hidden) else "out",
            )
            x = layer(x, deterministic)
            self.sow("losses", "kl", self.vd_kl_scale * layer.kl())
            if i < len(self.hidden):
                x = ACTIVATIONS[self.activation](x)
        return x

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
        if self.variant == "concrete":
            return self._concrete(x, deterministic)
        if self.variant == "sparse_vd":
            return self._sparse_vd(x, deterministic)
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


def _head(x: jax.Array, hidden: Sequence[int], out_features: int, activation: str):
    """Dense head (no dropout) of the CNN and the RNN, created in the calling module."""
    for i, width in enumerate(hidden):
        x = ACTIVATIONS[activation](nn.Dense(width, name=f"dense_{i}")(x))
    return nn.Dense(out_features, name="out")(x)


class PatchConv(nn.Module):
    """``nn.Conv`` (stride 1, ``SAME`` padding, same parameters) as one patches matmul.

    The ``prod(kernel_size)`` shifted views of the padded input are concatenated on the
    channel axis and multiplied by the flattened kernel: the same numbers as
    ``nn.Conv``, but XLA:CPU runs it ~25x faster inside the trainer's scanned steps
    (measured: 15 steps of a two-conv digits CNN, 45 ms against 1.1 s, jax 0.10).

    Attributes:
      features: output channels.
      kernel_size: kernel side per spatial axis.
    """

    features: int
    kernel_size: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``x [batch, *spatial, in]`` to ``[batch, *spatial, features]``."""
        k = tuple(self.kernel_size)
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (*k, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        spatial = x.shape[1:-1]
        xp = jnp.pad(x, [(0, 0), *(((s - 1) // 2, s // 2) for s in k), (0, 0)])
        views = [
            xp[(slice(None), *(slice(o, o + n) for o, n in zip(offset, spatial, strict=True)))]
            for offset in itertools.product(*(range(s) for s in k))
        ]
        return jnp.concatenate(views, axis=-1) @ kernel.reshape(-1, self.features) + bias


class CNN(nn.Module):
    r"""Convolutions with a dropout variant after each activation, then a dense head.

    Rows ``[batch, prod(input_shape)]`` are reshaped to ``[batch, *input_shape]``
    (channels last: ``[8, 8, 1]`` for digits, ``[40, 1]`` for MNIST-1D). Every
    convolution (:class:`PatchConv`: ``SAME`` padding, stride 1) is followed by the
    activation and the variant's dropout at ``rate``: element-wise (``inverted``, ``classic``,
    ``gaussian``), whole feature maps (``channel``: :class:`dropout_lab.linen.
    ChannelDropout`) or contiguous blocks (``dropblock``: :class:`dropout_lab.linen.
    DropBlock`). ``input_rate`` is inverted dropout on the pixels (any variant but
    ``none``). The flattened maps go through the dense ``hidden`` layers (no
    dropout) to the output.

    With ``residual``, the first convolution is a stem and every later one a residual
    block :math:`x_{l} = x_{l-1} + \mathrm{dp}_l(\mathrm{drop}(\mathrm{act}(
    \mathrm{conv}_l(x_{l-1}))))`; ``dp`` is the identity except for ``droppath``:
    :class:`dropout_lab.linen.DropPath` (one draw per example) at the linear depth
    schedule :func:`dropout_lab.drop_path_rates` (block :math:`l` of :math:`L`:
    :math:`l\,\text{rate}/L`; Huang et al. 2016).

    Attributes:
      input_shape: per-example shape, channels last.
      channels: output channels of each convolution.
      hidden: widths of the dense head.
      out_features: number of classes (logits) or 1 (regression).
      kernel_size: side of the convolution kernels.
      activation: a key of ``ACTIVATIONS``.
      variant: one of ``none``, ``inverted``, ``classic``, ``gaussian``, ``channel``,
        ``dropblock``, ``droppath`` (needs ``residual``).
      block_size: dropblock only: side of the dropped blocks.
      residual: a stem, then residual blocks (equal channels).
    """

    input_shape: Sequence[int]
    channels: Sequence[int]
    hidden: Sequence[int]
    out_features: int
    kernel_size: int = 3
    activation: str = "relu"
    variant: str = "none"
    block_size: int = 3
    residual: bool = False

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
        if self.variant != "none":
            x = dln.Dropout(rate=input_rate, name="drop_in")(x, deterministic)
        kernel = (self.kernel_size,) * (len(self.input_shape) - 1)
        if self.variant == "droppath":
            if not self.residual:
                raise ValueError("variant='droppath' drops residual branches: set residual=True.")
            path_rates = ops.drop_path_rates(rate, len(self.channels) - 1)
        for i, features in enumerate(self.channels):
            h = PatchConv(features, kernel, name=f"conv_{i}")(x)
            h = ACTIVATIONS[self.activation](h)
            h = _drop(self.variant, h, rate, deterministic, f"drop_{i}", block_size=self.block_size)
            if not self.residual or i == 0:
                x = h
                continue
            if self.variant == "droppath":
                h = dln.DropPath(rate=path_rates[i - 1], name=f"drop_path_{i}")(h, deterministic)
            x = x + h
        x = x.reshape(x.shape[0], -1)
        return _head(x, self.hidden, self.out_features, self.activation)


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
        x = _drop(in_variant, x, input_rate, deterministic, "drop_in")
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
            x = _drop(self.variant, x, rate, deterministic, f"drop_{i}")
        return _head(x[:, -1], self.hidden, self.out_features, self.activation)


def input_shape(cfg: ExperimentConfig, num_features: int) -> tuple[int, ...]:
    """Per-example shape of ``cfg.model.architecture``'s inputs (channels last).

    ``model.input_shape`` when set; else a square one-channel image for ``cnn``
    (64 features: ``(8, 8, 1)``) and a one-feature sequence for ``gru``/``lstm``
    (40 features: ``(40, 1)``).

    Raises:
      ConfigError: the shape does not hold ``num_features`` values.
    """
    m = cfg.model
    if m.input_shape:
        shape = tuple(m.input_shape)
        if math.prod(shape) != num_features:
            raise ConfigError(
                f"config key 'model.input_shape' = {list(shape)!r}: holds "
                f"{math.prod(shape)} values, the data has {num_features} features."
            )
        return shape
    if m.architecture == "cnn":
        side = math.isqrt(num_features)
        if side * side != num_features:
            raise ConfigError(
                f"config key 'model.input_shape' = []: {num_features} features are not a "
                "square image; set model.input_shape (e.g. [time, 1] for 1-D maps)."
            )
        return (side, side, 1)
    return (num_features, 1)


def token_edges(x_train: np.ndarray, token_bins: int) -> tuple[float, ...]:
    """The ``token_bins - 1`` inner edges of equal-count bins of every training value.

    Quantiles of ``x_train`` (all features pooled) at ``i / token_bins``; a fixed
    function of the training split, so training and evaluation share the tokens.
    """
    quantiles = np.linspace(0.0, 1.0, token_bins + 1)[1:-1]
    edges = np.quantile(np.asarray(x_train, np.float64).ravel(), quantiles)
    return tuple(float(e) for e in edges.astype(np.float32))


def build_model(
    cfg: ExperimentConfig,
    method: str,
    num_features: int,
    out_features: int,
    num_train: int,
    *,
    token_edges: Sequence[float] = (),
) -> nn.Module:
    r"""The model of ``cfg.model.architecture`` with ``method``'s dropout variant.

    Args:
      cfg: a checked experiment config.
      method: a key of ``METHOD_VARIANT``.
      num_features: input width.
      out_features: number of classes or 1.
      num_train: training-set size :math:`N` (the concrete regularizer is scaled by
        :math:`1 / (N\tau)`, ``tau`` from ``cfg.methods.concrete``; sparse VD's KL by
        :math:`1 / N`).
      token_edges: ``cfg.model.token_bins - 1`` bin edges (:func:`token_edges` of the
        training inputs) when ``cfg.model.token_bins > 0``.

    Returns:
      An :class:`MLP`, :class:`CNN` or :class:`RecurrentNet`.

    Raises:
      ValueError: ``token_edges`` does not hold ``cfg.model.token_bins - 1`` edges.
    """
    m, variant = cfg.model, METHOD_VARIANT[method]
    if m.architecture == "mlp":
        if variant == "sparse_vd":
            vd = cfg.methods.sparse_vd
            return MLP(
                tuple(m.hidden),
                out_features,
                m.activation,
                variant,
                vd_kl_scale=1.0 / num_train,
                vd_threshold=vd.threshold,
                vd_log_sigma2_init=vd.log_sigma2_init,
            )
        if variant != "concrete":
            return MLP(tuple(m.hidden), out_features, m.activation, variant)
        c = cfg.methods.concrete
        return MLP(
            tuple(m.hidden),
            out_features,
            m.activation,
            variant,
            concrete_init_rate=c.init_rate,
            temperature=c.temperature,
            weight_regularizer=c.length_scale**2 / (num_train * c.tau),
            dropout_regularizer=2.0 / (num_train * c.tau),
            concrete_inputs=c.on_inputs,
        )
    shape = input_shape(cfg, num_features)
    if m.architecture == "cnn":
        return CNN(
            shape,
            tuple(m.channels),
            tuple(m.hidden),
            out_features,
            kernel_size=m.kernel_size,
            activation=m.activation,
            variant=variant,
            block_size=cfg.methods.dropblock.block_size,
            residual=m.residual,
        )
    if len(token_edges) != max(m.token_bins - 1, 0):
        raise ValueError(
            f"model.token_bins={m.token_bins} needs {m.token_bins - 1} token_edges, "
            f"got {len(token_edges)}."
        )
    return RecurrentNet(
        shape,
        tuple(m.rnn_hidden),
        tuple(m.hidden),
        out_features,
        cell=m.architecture,
        activation=m.activation,
        variant=variant,
        token_edges=tuple(token_edges),
        embed_dim=m.embed_dim,
    )


def learned_rates(params) -> dict[str, float]:
    """``learned_rate_<i>`` (and ``learned_rate_in``) of concrete layers ``drop_<i>``.

    Reads ``sigmoid(rate_logit)`` of every top-level module that has one; empty for
    models without learned rates.
    """
    out = {}
    for name, sub in params.items():
        if isinstance(sub, Mapping) and "rate_logit" in sub:
            key = "learned_rate_" + name.removeprefix("drop_")
            out[key] = float(jax.nn.sigmoid(sub["rate_logit"]))
    return dict(sorted(out.items()))


def pruned_fraction(params, threshold: float) -> dict[str, float]:
    """``pruned_fraction``: share of variational-layer weights with ``log_alpha >= threshold``.

    Counts every weight of the top-level modules that have a ``log_sigma2`` (sparse
    VD's dense layers); empty for other models.
    """
    pruned, total = 0, 0
    for sub in params.values():
        if isinstance(sub, Mapping) and "log_sigma2" in sub:
            log_alpha = ops.variational_log_alpha(sub["kernel"], sub["log_sigma2"])
            pruned += int(jnp.sum(~ops.variational_prune_mask(log_alpha, threshold)))
            total += log_alpha.size
    return {"pruned_fraction": pruned / total} if total else {}


def describe(m) -> str:
    """One line naming ``cfg.model``'s architecture and sizes, e.g. ``MLP [512, 512]``."""
    if m.architecture == "mlp":
        return f"MLP {list(m.hidden)}"
    if m.architecture == "cnn":
        kind = "residual CNN" if m.residual else "CNN"
        return f"{kind} channels {list(m.channels)}, head {list(m.hidden)}"
    tokens = f", {m.token_bins} tokens embedded in {m.embed_dim}" if m.token_bins else ""
    return f"{m.architecture.upper()} {list(m.rnn_hidden)}, head {list(m.hidden)}{tokens}"
