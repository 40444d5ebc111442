"""The models every method shares; the dropout variant is static, the rates are traced.

:class:`MLP`, :class:`CNN`, :class:`RecurrentNet` (GRU or LSTM) and
:class:`~lab.transformer.Transformer` all take rows
``x [batch, features]`` and are called as ``model(x, rate, input_rate,
deterministic=...)``, so the trainer, MC prediction and R-Drop treat them alike;
:func:`build_model` picks one from ``cfg.model.architecture``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from dropout_lab import linen as dln
from lab.checks import ConfigError
from lab.convnet import CNN
from lab.layers import ACTIVATIONS, drop_layer
from lab.methods import METHODS
from lab.recurrent import RecurrentNet
from lab.transformer import Transformer, check_patches

__all__ = [
    "CNN",
    "MLP",
    "RecurrentNet",
    "Transformer",
    "build_model",
    "describe",
    "input_shape",
    "token_edges",
]


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
        return drop_layer(self.variant, x, rate, deterministic, name)

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


def input_shape(m: Any, num_features: int) -> tuple[int, ...]:
    """Per-example shape of ``cfg.model.architecture``'s inputs (channels last).

    ``model.input_shape`` when set; else a square one-channel image for ``cnn``
    (64 features: ``(8, 8, 1)``), a one-feature sequence for ``gru``/``lstm``
    (40 features: ``(40, 1)``), and for ``transformer`` the image when the features
    make a square, else the sequence.

    Args:
      m: the ``model`` section of a config.
      num_features: values per example.

    Raises:
      ConfigError: the shape does not hold ``num_features`` values.
    """
    if m.input_shape:
        shape = tuple(m.input_shape)
        if math.prod(shape) != num_features:
            raise ConfigError(
                f"config key 'model.input_shape' = {list(shape)!r}: holds "
                f"{math.prod(shape)} values, the data has {num_features} features."
            )
        return shape
    side = math.isqrt(num_features)
    if m.architecture == "transformer":
        return (side, side, 1) if side * side == num_features else (num_features, 1)
    if m.architecture == "cnn":
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
    cfg: Any,
    method: str,
    num_features: int,
    out_features: int,
    num_train: int,
    *,
    token_edges: Sequence[float] = (),
) -> nn.Module:
    r"""The model of ``cfg.model.architecture`` with ``method``'s dropout layers.

    The method's record (:data:`lab.methods.METHODS`) gives the variant and the
    model options beyond it (``model_options(settings, num_train)``: e.g. the concrete
    regularizers scaled by :math:`1 / (N\tau)`, sparse VD's KL by :math:`1 / N`).

    Args:
      cfg: a checked experiment config.
      method: a key of :data:`lab.methods.METHODS`.
      num_features: input width.
      out_features: number of classes or 1.
      num_train: training-set size :math:`N`.
      token_edges: ``cfg.model.token_bins - 1`` bin edges (:func:`token_edges` of the
        training inputs) when ``cfg.model.token_bins > 0``.

    Returns:
      An :class:`MLP`, :class:`CNN`, :class:`RecurrentNet` or :class:`Transformer`
      (its per-block ``profile`` from the method's ``schedule.profile``).

    Raises:
      ValueError: ``token_edges`` does not hold ``cfg.model.token_bins - 1`` edges.
    """
    m, record = cfg.model, METHODS[method]
    options = record.model_options(getattr(cfg.methods, method), num_train)
    if m.architecture == "mlp":
        return MLP(tuple(m.hidden), out_features, m.activation, record.variant, **options)
    shape = input_shape(m, num_features)
    if m.architecture == "cnn":
        return CNN(
            shape, tuple(m.channels), tuple(m.hidden), out_features,
            kernel_size=m.kernel_size, activation=m.activation, variant=record.variant,
            residual=m.residual, **options,
        )  # fmt: skip
    if m.architecture == "transformer":
        check_patches(shape, m.patch)
        schedule = getattr(getattr(cfg.methods, method), "schedule", None)
        return Transformer(
            shape, out_features, m.patch, m.depth, m.heads, m.width, m.mlp_ratio,
            tuple(m.hidden), m.activation, record.variant,
            profile=schedule.profile if schedule is not None else "auto", **options,
        )  # fmt: skip
    if len(token_edges) != max(m.token_bins - 1, 0):
        raise ValueError(
            f"model.token_bins={m.token_bins} needs {m.token_bins - 1} token_edges, "
            f"got {len(token_edges)}."
        )
    return RecurrentNet(
        shape, tuple(m.rnn_hidden), tuple(m.hidden), out_features,
        cell=m.architecture, activation=m.activation, variant=record.variant,
        token_edges=tuple(token_edges), embed_dim=m.embed_dim, **options,
    )  # fmt: skip


def describe(m) -> str:
    """One line naming ``cfg.model``'s architecture and sizes, e.g. ``MLP [512, 512]``."""
    if m.architecture == "mlp":
        return f"MLP {list(m.hidden)}"
    if m.architecture == "cnn":
        kind = "residual CNN" if m.residual else "CNN"
        return f"{kind} channels {list(m.channels)}, head {list(m.hidden)}"
    if m.architecture == "transformer":
        return f"Transformer depth {m.depth}, width {m.width}, {m.heads} heads, patch {m.patch}"
    tokens = f", {m.token_bins} tokens embedded in {m.embed_dim}" if m.token_bins else ""
    return f"{m.architecture.upper()} {list(m.rnn_hidden)}, head {list(m.hidden)}{tokens}"
