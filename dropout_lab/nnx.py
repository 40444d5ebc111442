"""Flax NNX modules: drop-in replacements for ``flax.nnx.Dropout`` and friends.

They keep NNX's conventions: the constructor stores a forked ``RngStream`` (or none),
``__call__`` takes ``deterministic`` and ``rngs`` overrides, and ``set_view`` makes
``model.train()`` / ``model.eval()`` / ``nnx.view`` switch them. As ``flax.nnx.Dropout``,
evaluation mode and a concrete rate 0 (and, where every unit is then dropped, rate 1)
need no ``rngs`` and leave the RNG count alone; the error messages contain Flax's. A
traced rate always draws a key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import rnglib
from flax.nnx.module import first_from
from jax.typing import ArrayLike

from dropout_lab import _wrappers, ops
from dropout_lab._nnx_attention import MultiHeadAttention as MultiHeadAttention

RngsLike = rnglib.Rngs | rnglib.RngStream | jax.Array | None


class _Stochastic(nnx.Module):
    """Shared RNG and ``deterministic`` handling (private)."""

    def _init_rngs(self, deterministic: bool | None, rng_collection: str, rngs: RngsLike) -> None:
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        if isinstance(rngs, rnglib.Rngs):
            self.rngs = rngs[rng_collection].fork()
        elif isinstance(rngs, rnglib.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(f"rngs must be a Rngs, RngStream or None, but got {type(rngs)}.")

    def _apply(
        self,
        op: Callable[..., Any],
        deterministic: bool | None,
        rngs: RngsLike,
        *args: Any,
        **options: Any,
    ) -> Any:
        """``op(key, *args, deterministic=..., **options)`` as ``flax.nnx.Dropout`` decides.

        ``deterministic`` first (Flax's error if given nowhere), then the keyless cases of
        :func:`dropout_lab._wrappers.call_op`, then a key from ``rngs`` or the stream.
        """
        deterministic = first_from(
            deterministic, self.deterministic, error_msg=_wrappers.no_deterministic_message(self)
        )
        return _wrappers.call_op(op, deterministic, lambda: self._draw_key(rngs), args, options)

    def _draw_key(self, rngs: RngsLike) -> jax.Array:
        rngs = first_from(rngs, self.rngs, error_msg=_wrappers.no_rngs_message(self))
        if isinstance(rngs, rnglib.Rngs):
            return rngs[self.rng_collection]()
        if isinstance(rngs, rnglib.RngStream):
            return rngs()
        if isinstance(rngs, jax.Array):
            return rngs
        raise TypeError(f"rngs must be a Rngs, RngStream or jax.Array, but got {type(rngs)}.")

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view`` (and so ``train()`` / ``eval()``)."""
        if deterministic is not None:
            self.deterministic = deterministic


class Dropout(_Stochastic):
    """Bernoulli dropout with the signature of ``flax.nnx.Dropout``.

    See :func:`dropout_lab.dropout` for the semantics; ``rate`` may be a traced array.

    Args:
      rate: drop probability in [0, 1].
      broadcast_dims: axes that share one mask.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      mode: ``"inverted"`` (Flax's behaviour) or ``"classic"``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"`` (Flax's masks).
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        mode: str = "inverted",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.mode = mode
        self.broadcast_dims = _wrappers.static_axes(broadcast_dims)
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies dropout; call-time ``deterministic``/``rngs`` take precedence."""
        return self._apply(
            ops.dropout,
            deterministic,
            rngs,
            inputs,
            self.rate,
            mode=self.mode,
            broadcast_dims=self.broadcast_dims,
            impl=self.impl,
        )


class GaussianDropout(_Stochastic):
    """Gaussian multiplicative dropout; see :func:`dropout_lab.gaussian_dropout`."""

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies Gaussian dropout."""
        return self._apply(ops.gaussian_dropout, deterministic, rngs, inputs, self.rate)


class AlphaDropout(_Stochastic):
    """Alpha dropout for SELU networks; see :func:`dropout_lab.alpha_dropout`.

    Args:
      rate: drop probability in [0, 1].
      broadcast_dims: axes that share one mask; the spatial axes ``(1, 2)`` of
        ``[N, H, W, C]`` give feature alpha dropout (PyTorch's ``FeatureAlphaDropout``).
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.broadcast_dims = _wrappers.static_axes(broadcast_dims)
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies alpha dropout."""
        return self._apply(
            ops.alpha_dropout,
            deterministic,
            rngs,
            inputs,
            self.rate,
            broadcast_dims=self.broadcast_dims,
            impl=self.impl,
        )


class DropConnectLinear(_Stochastic):
    """``nnx.Linear`` whose kernel is masked by DropConnect in training.

    Parameters are ``kernel [in_features, out_features]`` and ``bias [out_features]``
    as in ``nnx.Linear``; see :func:`dropout_lab.dropconnect_dense`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rate: float | jax.Array,
        *,
        use_bias: bool = True,
        per_example: bool = False,
        mode: str = "inverted",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        kernel_init: nnx.Initializer = nnx.initializers.lecun_normal(),
        bias_init: nnx.Initializer = nnx.initializers.zeros_init(),
        param_dtype: jnp.dtype = jnp.float32,
        rngs: rnglib.Rngs,
    ):
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features), param_dtype)
        )
        self.bias = (
            nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
            if use_bias
            else nnx.data(None)
        )
        self.rate = rate
        self.per_example = per_example
        self.mode = mode
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies the masked linear layer to ``inputs [..., in_features]``."""
        bias = None if self.bias is None else self.bias[...]
        return self._apply(
            ops.dropconnect_dense,
            deterministic,
            rngs,
            inputs,
            self.kernel[...],
            bias,
            self.rate,
            per_example=self.per_example,
            mode=self.mode,
            impl=self.impl,
        )


class ChannelDropout(_Stochastic):
    """Drops whole channels (feature maps); see :func:`dropout_lab.channel_dropout`.

    Args:
      rate: probability of dropping a channel.
      channel_axis: the channel axis (default last, NHWC).
      batch_axis: the batch axis, or ``None`` for unbatched inputs.
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        channel_axis: int = -1,
        batch_axis: int | None = 0,
        mode: str = "inverted",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.channel_axis = channel_axis
        self.batch_axis = batch_axis
        self.mode = mode
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies channel dropout."""
        return self._apply(
            ops.channel_dropout,
            deterministic,
            rngs,
            inputs,
            self.rate,
            channel_axis=self.channel_axis,
            batch_axis=self.batch_axis,
            mode=self.mode,
            impl=self.impl,
        )


class DropBlock(_Stochastic):
    """DropBlock for 1-D, 2-D and 3-D feature maps; see :func:`dropout_lab.dropblock`.

    Args:
      rate: expected fraction of dropped units.
      block_size: side of the dropped blocks (int or one per spatial axis).
      channel_axis: the channel axis (default last, NHWC).
      batch_axis: the batch axis, or ``None``.
      broadcast_dims: batch or channel axes sharing one block pattern.
      seed_rate: ``"exact"`` or ``"paper"``.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        block_size: int | Sequence[int] = 7,
        channel_axis: int = -1,
        batch_axis: int | None = 0,
        broadcast_dims: Sequence[int] = (),
        seed_rate: str = "exact",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.block_size = block_size if isinstance(block_size, int) else tuple(block_size)
        self.channel_axis = channel_axis
        self.batch_axis = batch_axis
        self.broadcast_dims = _wrappers.static_axes(broadcast_dims)
        self.seed_rate = seed_rate
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies DropBlock."""
        return self._apply(
            ops.dropblock,
            deterministic,
            rngs,
            inputs,
            self.rate,
            block_size=self.block_size,
            channel_axis=self.channel_axis,
            batch_axis=self.batch_axis,
            broadcast_dims=self.broadcast_dims,
            seed_rate=self.seed_rate,
        )


class DropPath(_Stochastic):
    """Drop path / stochastic depth for a residual branch; see :func:`dropout_lab.drop_path`.

    Args:
      rate: probability of dropping the branch.
      mode: ``"row"`` (per example) or ``"batch"``.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        mode: str = "row",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.mode = mode
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies drop path to the branch output ``inputs [batch, ...]``."""
        return self._apply(
            ops.drop_path, deterministic, rngs, inputs, self.rate, mode=self.mode, impl=self.impl
        )


class LockedDropout(_Stochastic):
    """One dropout mask for all time steps; see :func:`dropout_lab.locked_dropout`.

    Args:
      rate: drop probability.
      time_axis: the axis sharing the mask (default 1, ``[batch, time, features]``).
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        time_axis: int = 1,
        mode: str = "inverted",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.time_axis = time_axis
        self.mode = mode
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies locked dropout."""
        return self._apply(
            ops.locked_dropout,
            deterministic,
            rngs,
            inputs,
            self.rate,
            time_axis=self.time_axis,
            mode=self.mode,
            impl=self.impl,
        )


class EmbeddingDropout(_Stochastic):
    """Drops whole word vectors; see :func:`dropout_lab.embedding_dropout`.

    Args:
      rate: probability of dropping a vector.
      feature_axis: the axis of the vector components.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        feature_axis: int = -1,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.feature_axis = feature_axis
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies embedding dropout (to a table or to looked-up vectors)."""
        return self._apply(
            ops.embedding_dropout,
            deterministic,
            rngs,
            inputs,
            self.rate,
            feature_axis=self.feature_axis,
            impl=self.impl,
        )


class Zoneout(_Stochastic):
    """Zoneout of a recurrent state; see :func:`dropout_lab.zoneout`.

    Args:
      rate: probability of keeping the previous value of a unit.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self,
        h_prev: ArrayLike,
        h_new: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike = None,
    ) -> jax.Array:
        """Returns the zoned-out state from ``h_prev`` and the candidate ``h_new``."""
        return self._apply(
            ops.zoneout, deterministic, rngs, h_prev, h_new, self.rate, impl=self.impl
        )


class WeightDrop(_Stochastic):
    """DropConnect on recurrent weights, once per sequence; see :func:`dropout_lab.weight_drop`.

    Args:
      rate: drop probability of each weight.
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        mode: str = "inverted",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.mode = mode
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, weights: Any, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> Any:
        """Returns the masked weights (call once per sequence, before the time loop)."""
        return self._apply(
            ops.weight_drop, deterministic, rngs, weights, self.rate, mode=self.mode, impl=self.impl
        )


class DropEdge(_Stochastic):
    """DropEdge on an edge list with static shapes; see :func:`dropout_lab.drop_edge`.

    Args:
      rate: drop probability of an edge.
      num_nodes: number of nodes (needed with ``normalize``).
      undirected: drop both directions of an edge together.
      normalize: return GCN-normalized weights and self-loop weights.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        num_nodes: int | None = None,
        undirected: bool = False,
        normalize: bool = False,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.num_nodes = num_nodes
        self.undirected = undirected
        self.normalize = normalize
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self,
        edge_index: ArrayLike,
        edge_weight: ArrayLike | None = None,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike = None,
    ) -> ops.EdgeDrop:
        """Returns the :class:`dropout_lab.EdgeDrop` of ``edge_index [2, num_edges]``."""
        return self._apply(
            ops.drop_edge,
            deterministic,
            rngs,
            edge_index,
            self.rate,
            edge_weight=edge_weight,
            num_nodes=self.num_nodes,
            undirected=self.undirected,
            normalize=self.normalize,
            impl=self.impl,
        )


class DropNode(_Stochastic):
    """DropNode on node features; see :func:`dropout_lab.drop_node`.

    Args:
      rate: drop probability of a node.
      rescale: scale kept rows by ``1 / (1 - rate)``.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        rescale: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "exact",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.rescale = rescale
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self,
        inputs: ArrayLike,
        edge_index: ArrayLike | None = None,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike = None,
    ) -> ops.NodeDrop:
        """Returns the :class:`dropout_lab.NodeDrop` of ``inputs [num_nodes, ...]``."""
        return self._apply(
            ops.drop_node,
            deterministic,
            rngs,
            inputs,
            self.rate,
            edge_index=edge_index,
            rescale=self.rescale,
            impl=self.impl,
        )


class ConcreteDropout(_Stochastic):
    """Concrete dropout with a learned rate; see :func:`dropout_lab.concrete_dropout`.

    The rate is ``sigmoid(rate_logit)``, ``rate_logit`` an ``nnx.Param`` initialized at
    ``logit(init_rate)``. Add :meth:`regularizer` (with the weights of the layer that
    follows) to the loss, as in the paper; the property :attr:`rate` reads the current
    rate.

    Args:
      init_rate: initial drop rate in (0, 1) (the paper uses 0.1).
      temperature: relaxation temperature (the paper uses 0.1).
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      param_dtype: dtype of ``rate_logit``.
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        init_rate: float = 0.1,
        *,
        temperature: float = 0.1,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        param_dtype: jnp.dtype = jnp.float32,
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        _wrappers.check_init_rate(init_rate)
        self.rate_logit = nnx.Param(jnp.asarray(jax.scipy.special.logit(init_rate), param_dtype))
        self.temperature = temperature
        self._init_rngs(deterministic, rng_collection, rngs)

    @property
    def rate(self) -> jax.Array:
        """The current drop rate ``sigmoid(rate_logit)``.

        A property, in NNX as in linen: ``layer.rate`` reads the rate of any module here.
        """
        return jax.nn.sigmoid(self.rate_logit[...])

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies concrete dropout at the learned rate."""
        return self._apply(
            ops.concrete_dropout,
            deterministic,
            rngs,
            inputs,
            self.rate,
            temperature=self.temperature,
        )

    def regularizer(
        self,
        weights: Any,
        *,
        input_dim: int,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
    ) -> jax.Array:
        """:func:`dropout_lab.concrete_dropout_regularizer` at the current rate."""
        return ops.concrete_dropout_regularizer(
            weights,
            self.rate,
            input_dim=input_dim,
            weight_regularizer=weight_regularizer,
            dropout_regularizer=dropout_regularizer,
        )


class VariationalLinear(_Stochastic):
    """Linear layer with learned per-weight Gaussian dropout (sparse variational dropout).

    Parameters ``kernel [in, out]``, ``bias [out]`` (as ``nnx.Linear``) and
    ``log_sigma2 [in, out]``; training uses the local reparameterization trick,
    evaluation the means with weights of ``log_alpha >= threshold`` pruned. Add
    :meth:`kl` to the loss. See :func:`dropout_lab.variational_dense`.

    Args:
      in_features: input features.
      out_features: output features.
      use_bias: add a bias.
      threshold: pruning threshold on ``log_alpha`` at evaluation, or ``None``.
      log_sigma2_init: initial ``log_sigma2`` (Molchanov et al. use -10).
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      kernel_init: initializer of ``kernel``.
      bias_init: initializer of ``bias``.
      param_dtype: dtype of the parameters.
      rngs: ``nnx.Rngs`` with a ``params`` stream (and the noise stream).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        threshold: float | None = 3.0,
        log_sigma2_init: float = -10.0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        kernel_init: nnx.Initializer = nnx.initializers.lecun_normal(),
        bias_init: nnx.Initializer = nnx.initializers.zeros_init(),
        param_dtype: jnp.dtype = jnp.float32,
        rngs: rnglib.Rngs,
    ):
        shape = (in_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.log_sigma2 = nnx.Param(jnp.full(shape, log_sigma2_init, param_dtype))
        self.bias = (
            nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
            if use_bias
            else nnx.data(None)
        )
        self.threshold = threshold
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies the layer to ``inputs [..., in_features]``."""
        bias = None if self.bias is None else self.bias[...]
        return self._apply(
            ops.variational_dense,
            deterministic,
            rngs,
            inputs,
            self.kernel[...],
            self.log_sigma2[...],
            bias,
            threshold=self.threshold,
        )

    def log_alpha(self) -> jax.Array:
        """Per-weight ``log_alpha [in_features, out_features]``."""
        return ops.variational_log_alpha(self.kernel[...], self.log_sigma2[...])

    def kl(self) -> jax.Array:
        """The approximate KL of all weights (:func:`dropout_lab.variational_kl`)."""
        return ops.variational_kl(self.log_alpha())

    def pruning_mask(self) -> jax.Array:
        """Boolean ``[in_features, out_features]``: the weights kept at evaluation."""
        threshold = 3.0 if self.threshold is None else self.threshold
        return ops.variational_prune_mask(self.log_alpha(), threshold)
