"""``flax.nnx.MultiHeadAttention`` with exact, O(length) attention dropout (private).

Re-exported by :mod:`dropout_lab.nnx`. The module is Flax's (same constructor, call
signature and parameters); it resolves ``deterministic`` and draws the dropout key
itself, so ``dropout_rate`` may be a traced array (set in the constructor or
assigned later, e.g. by a schedule), then runs Flax's own ``__call__`` with the rate
and key bound into ``attention_fn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from flax.nnx import rnglib
from flax.nnx.module import first_from

from dropout_lab import _wrappers, attention
from dropout_lab._linen_attention import bind_dropout

_NO_DETERMINISTIC = """No `deterministic` argument was provided to MultiHeadAttention
          as either a __call__ argument, class attribute, or nnx.flag."""
_NO_RNGS = (
    "'rngs' must be provided to __call__ method if "
    "MultiHeadAttention instance is defined with keep_rngs=False."
)


class MultiHeadAttention(nnx.MultiHeadAttention):
    """``flax.nnx.MultiHeadAttention`` whose ``dropout_rate`` may be traced.

    Same constructor, call signature and parameters as Flax's module;
    ``attention_fn`` defaults to :func:`dropout_lab.attention.dot_product_attention`
    (exact keyed dropout without the ``[batch, heads, q, kv]`` weights). The dropout
    key is drawn as Flax draws it (from the call's ``rngs`` or the stream forked at
    construction, kept whenever the rate is not a concrete 0). A concrete rate 0 needs
    no ``deterministic`` and no key; a traced rate always draws one.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropout_lab import nnx as dlnnx
      >>> layer = dlnnx.MultiHeadAttention(
      ...     num_heads=2, in_features=8, dropout_rate=0.1, decode=False, rngs=nnx.Rngs(0))
      >>> y = layer(jnp.ones((2, 5, 8)), deterministic=False)
      >>> y.shape, y.dtype
      ((2, 5, 8), dtype('float32'))
    """

    def __init__(
        self,
        *args: Any,
        dropout_rate: float | jax.Array = 0.0,
        attention_fn: Callable[..., jax.Array] = attention.dot_product_attention,
        **kwargs: Any,
    ):
        # Flax forks the dropout stream only when `dropout_rate > 0`, a comparison a
        # traced rate cannot make: it is told 0.5 when dropout may apply.
        may_drop = _wrappers.static_rate(dropout_rate) != 0.0
        super().__init__(
            *args, dropout_rate=0.5 if may_drop else 0.0, attention_fn=attention_fn, **kwargs
        )
        # An array rate (traced or not) is pytree data, so a schedule may assign another.
        is_number = isinstance(dropout_rate, int | float)
        self.dropout_rate = dropout_rate if is_number else nnx.data(dropout_rate)  # type: ignore[assignment]

    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        deterministic: bool | None = None,
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        sow_weights: bool = False,
        decode: bool | None = None,
        is_causal: bool = False,
        out_sharding: Any = None,
        qkv_sharding: Any = None,
    ) -> jax.Array:
        """Flax's ``__call__``; see ``flax.nnx.MultiHeadAttention``."""
        rate, attention_fn = self.dropout_rate, self.attention_fn
        deterministic, dropout_rng = self._dropout_inputs(deterministic, rngs)
        # Flax's code runs with the rate and key bound into attention_fn (it then sees
        # rate 0 and compares nothing traced); both attributes are restored after.
        self.dropout_rate = 0.0
        self.attention_fn = bind_dropout(attention_fn, dropout_rng, rate, deterministic)
        try:
            return super().__call__(
                inputs_q,
                inputs_k,
                inputs_v,
                mask=mask,
                deterministic=True,
                sow_weights=sow_weights,
                decode=decode,
                is_causal=is_causal,
                out_sharding=out_sharding,
                qkv_sharding=qkv_sharding,
            )
        finally:
            self.dropout_rate, self.attention_fn = rate, attention_fn

    def _dropout_inputs(
        self, deterministic: bool | None, rngs: rnglib.Rngs | rnglib.RngStream | None
    ) -> tuple[bool, jax.Array | None]:
        """``deterministic`` and the dropout key, decided as Flax's ``__call__`` does."""
        if _wrappers.static_rate(self.dropout_rate) == 0.0:
            return True, None
        deterministic = first_from(deterministic, self.deterministic, error_msg=_NO_DETERMINISTIC)
        if deterministic:
            return True, None
        stream = self.rngs if rngs is None else rngs
        if isinstance(stream, rnglib.Rngs):
            stream = stream.dropout
        if stream is None:
            raise ValueError(_NO_RNGS)
        return False, stream()
