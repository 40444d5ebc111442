"""Flax linen modules: drop-in replacements for ``flax.linen.Dropout`` and friends.

Each module is a thin wrapper: it resolves ``deterministic`` with ``nn.merge_param``,
takes its key from ``rng`` or ``self.make_rng(rng_collection)`` and calls the op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import ops


class _Stochastic(nn.Module):
    """Shared key and mode resolution (private)."""

    def _resolve(self, deterministic: bool | None, rng: jax.Array | None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic:
            return True, None
        return False, rng if rng is not None else self.make_rng(self.rng_collection)


class Dropout(_Stochastic):
    """Bernoulli dropout with the fields and call convention of ``flax.linen.Dropout``.

    See :func:`dropout_lab.dropout` for the semantics. ``rate`` may be a traced array.

    Attributes:
      rate: drop probability in [0, 1].
      broadcast_dims: axes that share one mask.
      deterministic: evaluation mode (may instead be passed to ``__call__``).
      rng_collection: RNG stream the mask key comes from.
      mode: ``"inverted"`` (Flax's behaviour) or ``"classic"``.
      impl: ``"fast"`` or ``"bernoulli"`` (Flax's exact masks).
    """

    rate: float | jax.Array
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: str = "inverted"
    impl: str = "fast"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies dropout; ``rng`` overrides the module's RNG stream."""
        deterministic, key = self._resolve(deterministic, rng)
        return ops.dropout(
            key,
            inputs,
            self.rate,
            mode=self.mode,
            broadcast_dims=self.broadcast_dims,
            deterministic=deterministic,
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
        deterministic, key = self._resolve(deterministic, rng)
        return ops.gaussian_dropout(key, inputs, self.rate, deterministic=deterministic)


class AlphaDropout(_Stochastic):
    """Alpha dropout for SELU networks; see :func:`dropout_lab.alpha_dropout`."""

    rate: float | jax.Array
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    impl: str = "fast"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies alpha dropout."""
        deterministic, key = self._resolve(deterministic, rng)
        return ops.alpha_dropout(
            key, inputs, self.rate, deterministic=deterministic, impl=self.impl
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
    impl: str = "fast"
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
        deterministic, key = self._resolve(deterministic, rng)
        return ops.dropconnect_dense(
            key,
            inputs,
            kernel,
            bias,
            self.rate,
            per_example=self.per_example,
            mode=self.mode,
            deterministic=deterministic,
            impl=self.impl,
        )
