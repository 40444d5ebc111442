"""Flax linen modules: drop-in replacements for ``flax.linen.Dropout`` and friends.

Each module is a thin wrapper that decides in the order of ``flax.linen.Dropout``: it
resolves ``deterministic`` with ``nn.merge_param``; in evaluation mode, or at a concrete
rate 0 (and, where every unit is then dropped, rate 1) it returns the op's output with
no key and draws nothing; otherwise it takes its key from ``rng`` or
``self.make_rng(rng_collection)`` and calls the op. A traced rate always draws a key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import errors
from jax.typing import ArrayLike

from dropout_lab import _wrappers, ops
from dropout_lab._linen_attention import (
    MultiHeadDotProductAttention as MultiHeadDotProductAttention,
)


class _Stochastic(nn.Module):
    """Shared key and mode resolution (private)."""

    def _apply(
        self,
        op: Callable[..., Any],
        deterministic: bool | None,
        rng: jax.Array | None,
        *args: Any,
        **options: Any,
    ) -> Any:
        """``op(key, *args, deterministic=..., **options)`` as ``flax.linen.Dropout`` decides.

        ``deterministic`` first (Flax's error if given nowhere), then the keyless cases of
        :func:`dropout_lab._wrappers.call_op`, then a key from ``rng`` or the stream.
        """
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        return _wrappers.call_op(op, deterministic, lambda: self._key(rng), args, options)

    def _key(self, rng: jax.Array | None) -> jax.Array:
        if rng is not None:
            return rng
        try:
            return self.make_rng(self.rng_collection)
        except errors.InvalidRngError as err:
            err.add_note(
                f"dropout_lab: pass rngs={{{self.rng_collection!r}: key}} to apply (or "
                "rng=key to the call), or deterministic=True to evaluate without a key."
            )
            raise


class Dropout(_Stochastic):
    """Bernoulli dropout with the fields and call convention of ``flax.linen.Dropout``.

    See :func:`dropout_lab.dropout` for the semantics. ``rate`` may be a traced array.

    Attributes:
      rate: drop probability in [0, 1].
      broadcast_dims: axes that share one mask.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      mode: ``"inverted"`` (Flax's behaviour) or ``"classic"``.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"`` (Flax's masks).
    """

    rate: float | jax.Array
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: str = "inverted"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies dropout; ``rng`` overrides the module's RNG stream."""
        return self._apply(
            ops.dropout,
            deterministic,
            rng,
            inputs,
            self.rate,
            mode=self.mode,
            broadcast_dims=self.broadcast_dims,
            impl=self.impl,
        )


class GaussianDropout(_Stochastic):
    """Gaussian multiplicative dropout; see :func:`dropout_lab.gaussian_dropout`."""

    rate: float | jax.Array
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies Gaussian dropout."""
        return self._apply(ops.gaussian_dropout, deterministic, rng, inputs, self.rate)


class AlphaDropout(_Stochastic):
    """Alpha dropout for SELU networks; see :func:`dropout_lab.alpha_dropout`.

    Attributes:
      rate: drop probability in [0, 1].
      broadcast_dims: axes that share one mask; the spatial axes ``(1, 2)`` of
        ``[N, H, W, C]`` give feature alpha dropout (PyTorch's ``FeatureAlphaDropout``).
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies alpha dropout."""
        return self._apply(
            ops.alpha_dropout,
            deterministic,
            rng,
            inputs,
            self.rate,
            broadcast_dims=self.broadcast_dims,
            impl=self.impl,
        )


class DropConnectDense(_Stochastic):
    """``nn.Dense`` whose kernel is masked by DropConnect in training.

    See :func:`dropout_lab.dropconnect_dense`. Parameters are named ``kernel`` and
    ``bias`` as in ``nn.Dense``.
    """

    features: int
    rate: float | jax.Array
    use_bias: bool = True
    per_example: bool = False
    mode: str = "inverted"
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies the masked dense layer to ``inputs [..., in_features]``."""
        inputs = jnp.asarray(inputs)
        kernel = self.param(
            "kernel", self.kernel_init, (inputs.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return self._apply(
            ops.dropconnect_dense,
            deterministic,
            rng,
            inputs,
            kernel,
            bias,
            self.rate,
            per_example=self.per_example,
            mode=self.mode,
            impl=self.impl,
        )


class ChannelDropout(_Stochastic):
    """Drops whole channels (feature maps); see :func:`dropout_lab.channel_dropout`.

    Attributes:
      rate: probability of dropping a channel.
      channel_axis: the channel axis (default last, NHWC).
      batch_axis: the batch axis, or ``None`` for unbatched inputs.
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    channel_axis: int = -1
    batch_axis: int | None = 0
    mode: str = "inverted"
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies channel dropout."""
        return self._apply(
            ops.channel_dropout,
            deterministic,
            rng,
            inputs,
            self.rate,
            channel_axis=self.channel_axis,
            batch_axis=self.batch_axis,
            mode=self.mode,
            impl=self.impl,
        )


class DropBlock(_Stochastic):
    """DropBlock for 1-D, 2-D and 3-D feature maps; see :func:`dropout_lab.dropblock`.

    Attributes:
      rate: expected fraction of dropped units.
      block_size: side of the dropped blocks (int or one per spatial axis).
      channel_axis: the channel axis (default last, NHWC).
      batch_axis: the batch axis, or ``None``.
      broadcast_dims: batch or channel axes sharing one block pattern.
      seed_rate: ``"exact"`` or ``"paper"``.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
    """

    rate: float | jax.Array
    block_size: int | Sequence[int] = 7
    channel_axis: int = -1
    batch_axis: int | None = 0
    broadcast_dims: Sequence[int] = ()
    seed_rate: str = "exact"
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies DropBlock."""
        return self._apply(
            ops.dropblock,
            deterministic,
            rng,
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

    Attributes:
      rate: probability of dropping the branch.
      mode: ``"row"`` (per example) or ``"batch"``.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    mode: str = "row"
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies drop path to the branch output ``inputs [batch, ...]``."""
        return self._apply(
            ops.drop_path, deterministic, rng, inputs, self.rate, mode=self.mode, impl=self.impl
        )


class LockedDropout(_Stochastic):
    """One dropout mask for all time steps; see :func:`dropout_lab.locked_dropout`.

    Attributes:
      rate: drop probability.
      time_axis: the axis sharing the mask (default 1, ``[batch, time, features]``).
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    time_axis: int = 1
    mode: str = "inverted"
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies locked dropout."""
        return self._apply(
            ops.locked_dropout,
            deterministic,
            rng,
            inputs,
            self.rate,
            time_axis=self.time_axis,
            mode=self.mode,
            impl=self.impl,
        )


class EmbeddingDropout(_Stochastic):
    """Drops whole word vectors; see :func:`dropout_lab.embedding_dropout`.

    Apply it to the embedding table (drops word types) or to looked-up vectors
    (drops tokens).

    Attributes:
      rate: probability of dropping a vector.
      feature_axis: the axis of the vector components.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    feature_axis: int = -1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies embedding dropout."""
        return self._apply(
            ops.embedding_dropout,
            deterministic,
            rng,
            inputs,
            self.rate,
            feature_axis=self.feature_axis,
            impl=self.impl,
        )


class Zoneout(_Stochastic):
    """Zoneout of a recurrent state; see :func:`dropout_lab.zoneout`.

    Attributes:
      rate: probability of keeping the previous value of a unit.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self,
        h_prev: ArrayLike,
        h_new: ArrayLike,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Returns the zoned-out state from ``h_prev`` and the candidate ``h_new``."""
        return self._apply(
            ops.zoneout, deterministic, rng, h_prev, h_new, self.rate, impl=self.impl
        )


class WeightDrop(_Stochastic):
    """DropConnect on recurrent weights, once per sequence; see :func:`dropout_lab.weight_drop`.

    Call it on the recurrent weights (an array or a pytree) before the time loop and
    run every step with the result.

    Attributes:
      rate: drop probability of each weight.
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    mode: str = "inverted"
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self, weights: Any, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> Any:
        """Returns the masked weights."""
        return self._apply(
            ops.weight_drop, deterministic, rng, weights, self.rate, mode=self.mode, impl=self.impl
        )


class DropEdge(_Stochastic):
    """DropEdge on an edge list with static shapes; see :func:`dropout_lab.drop_edge`.

    Attributes:
      rate: drop probability of an edge.
      num_nodes: number of nodes (needed with ``normalize``).
      undirected: drop both directions of an edge together.
      normalize: return GCN-normalized weights and self-loop weights.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    num_nodes: int | None = None
    undirected: bool = False
    normalize: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self,
        edge_index: ArrayLike,
        edge_weight: ArrayLike | None = None,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> ops.EdgeDrop:
        """Returns the :class:`dropout_lab.EdgeDrop` of ``edge_index [2, num_edges]``."""
        return self._apply(
            ops.drop_edge,
            deterministic,
            rng,
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

    Attributes:
      rate: drop probability of a node.
      rescale: scale kept rows by ``1 / (1 - rate)``.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      impl: ``"exact"`` (default), ``"fast"`` or ``"bernoulli"``.
    """

    rate: float | jax.Array
    rescale: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "exact"

    @nn.compact
    def __call__(
        self,
        inputs: ArrayLike,
        edge_index: ArrayLike | None = None,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> ops.NodeDrop:
        """Returns the :class:`dropout_lab.NodeDrop` of ``inputs [num_nodes, ...]``."""
        return self._apply(
            ops.drop_node,
            deterministic,
            rng,
            inputs,
            self.rate,
            edge_index=edge_index,
            rescale=self.rescale,
            impl=self.impl,
        )


class ConcreteDropout(_Stochastic):
    """Concrete dropout with a learned rate; see :func:`dropout_lab.concrete_dropout`.

    The rate is ``sigmoid(rate_logit)`` with ``rate_logit`` a parameter initialized at
    ``logit(init_rate)``. Add :meth:`regularizer` (with the weights of the layer that
    follows) to the loss, as in the paper; the property :attr:`rate` reads the current
    rate of a bound module.

    Attributes:
      init_rate: initial drop rate in (0, 1) (the paper uses 0.1); checked at
        construction, as in :class:`dropout_lab.nnx.ConcreteDropout`.
      temperature: relaxation temperature (the paper uses 0.1).
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      param_dtype: dtype of ``rate_logit``.
    """

    init_rate: float = 0.1
    temperature: float = 0.1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _wrappers.check_init_rate(self.init_rate)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies concrete dropout at the learned rate."""
        rate_logit = self.param(
            "rate_logit",
            lambda _: jnp.asarray(jax.scipy.special.logit(self.init_rate), self.param_dtype),
        )
        return self._apply(
            ops.concrete_dropout,
            deterministic,
            rng,
            inputs,
            jax.nn.sigmoid(rate_logit),
            temperature=self.temperature,
        )

    @property
    def rate(self) -> jax.Array:
        """The current drop rate ``sigmoid(rate_logit)``.

        A property, in linen as in NNX: ``layer.rate`` reads the rate of any module here.
        """
        return jax.nn.sigmoid(self.variables["params"]["rate_logit"])

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


class VariationalDense(_Stochastic):
    """Dense layer with learned per-weight Gaussian dropout (sparse variational dropout).

    Parameters ``kernel``, ``bias`` (as ``nn.Dense``) and ``log_sigma2``; training uses
    the local reparameterization trick, evaluation the means with weights of
    ``log_alpha >= threshold`` pruned. Add :meth:`kl` (scaled by 1 / data-set size if
    the data loss is a mean) to the loss. See :func:`dropout_lab.variational_dense`.

    Attributes:
      features: output features.
      use_bias: add a bias.
      threshold: pruning threshold on ``log_alpha`` at evaluation, or ``None``.
      log_sigma2_init: initial ``log_sigma2`` (Molchanov et al. use -10).
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the noise key comes from.
      kernel_init: initializer of ``kernel``.
      bias_init: initializer of ``bias``.
      param_dtype: dtype of the parameters.
    """

    features: int
    use_bias: bool = True
    threshold: float | None = 3.0
    log_sigma2_init: float = -10.0
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies the layer to ``inputs [..., in_features]``."""
        inputs = jnp.asarray(inputs)
        shape = (inputs.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        log_sigma2 = self.param(
            "log_sigma2", nn.initializers.constant(self.log_sigma2_init), shape, self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return self._apply(
            ops.variational_dense,
            deterministic,
            rng,
            inputs,
            kernel,
            log_sigma2,
            bias,
            threshold=self.threshold,
        )

    def log_alpha(self) -> jax.Array:
        """Per-weight ``log_alpha [in_features, features]``."""
        params = self.variables["params"]
        return ops.variational_log_alpha(params["kernel"], params["log_sigma2"])

    def kl(self) -> jax.Array:
        """The approximate KL of all weights (:func:`dropout_lab.variational_kl`)."""
        return ops.variational_kl(self.log_alpha())

    def pruning_mask(self) -> jax.Array:
        """Boolean ``[in_features, features]``: the weights kept at evaluation."""
        threshold = 3.0 if self.threshold is None else self.threshold
        return ops.variational_prune_mask(self.log_alpha(), threshold)
