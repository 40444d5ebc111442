"""Flax NNX modules: drop-in replacements for ``flax.nnx.Dropout`` and friends.

They keep NNX's conventions: the constructor stores a forked ``RngStream`` (or none),
``__call__`` takes ``deterministic`` and ``rngs`` overrides, and ``set_view`` makes
``model.train()`` / ``model.eval()`` / ``nnx.view`` switch them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import rnglib
from flax.nnx.module import first_from
from jax.typing import ArrayLike

from dropout_lab import ops

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
            raise TypeError(f"rngs must be an nnx.Rngs, an RngStream or None, got {type(rngs)}.")

    def _resolve(self, deterministic: bool | None, rngs: RngsLike) -> tuple[bool, jax.Array | None]:
        name = type(self).__name__
        deterministic = first_from(
            deterministic,
            self.deterministic,
            error_msg=(
                f"No `deterministic` was given to {name}: pass it to the constructor or the "
                "call, or use model.train() / model.eval() / nnx.view(model, deterministic=...)."
            ),
        )
        if deterministic:
            return True, None
        rngs = first_from(
            rngs,
            self.rngs,
            error_msg=(
                f"{name} is not deterministic but has no rngs: pass rngs=nnx.Rngs(dropout=0) "
                "to the constructor, or rngs=... (a key or Rngs) to the call."
            ),
        )
        if isinstance(rngs, rnglib.Rngs):
            return False, rngs[self.rng_collection]()
        if isinstance(rngs, rnglib.RngStream):
            return False, rngs()
        if isinstance(rngs, jax.Array):
            return False, rngs
        raise TypeError(f"rngs must be an nnx.Rngs, an RngStream or a key, got {type(rngs)}.")

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view`` (and so ``train()`` / ``eval()``)."""
        if deterministic is not None:
            self.deterministic = deterministic


class Dropout(_Stochastic):
    """Bernoulli dropout with the signature of ``flax.nnx.Dropout``.

    See :func:`dropout_lab.dropout` for the semantics; ``rate`` may be a traced array.

    Args:
      rate: drop probability in [0, 1].
      mode: ``"inverted"`` (Flax's behaviour) or ``"classic"``.
      broadcast_dims: axes that share one mask.
      deterministic: evaluation mode; ``train()`` / ``eval()`` switch it.
      rng_collection: name of the RNG stream taken from ``rngs``.
      impl: ``"fast"`` or ``"bernoulli"`` (Flax's exact masks).
      rngs: ``nnx.Rngs`` or ``RngStream`` to draw mask keys from.
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        mode: str = "inverted",
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "fast",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.mode = mode
        self.broadcast_dims = tuple(broadcast_dims)
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies dropout; call-time ``deterministic``/``rngs`` take precedence."""
        deterministic, key = self._resolve(deterministic, rngs)
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
        deterministic, key = self._resolve(deterministic, rngs)
        return ops.gaussian_dropout(key, inputs, self.rate, deterministic=deterministic)


class AlphaDropout(_Stochastic):
    """Alpha dropout for SELU networks; see :func:`dropout_lab.alpha_dropout`."""

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        impl: str = "fast",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ):
        self.rate = rate
        self.impl = impl
        self._init_rngs(deterministic, rng_collection, rngs)

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> jax.Array:
        """Applies alpha dropout."""
        deterministic, key = self._resolve(deterministic, rngs)
        return ops.alpha_dropout(
            key, inputs, self.rate, deterministic=deterministic, impl=self.impl
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
        impl: str = "fast",
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
        deterministic, key = self._resolve(deterministic, rngs)
        bias = None if self.bias is None else self.bias[...]
        return ops.dropconnect_dense(
            key,
            inputs,
            self.kernel[...],
            bias,
            self.rate,
            per_example=self.per_example,
            mode=self.mode,
            deterministic=deterministic,
            impl=self.impl,
        )
