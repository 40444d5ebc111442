"""``flax.linen.MultiHeadDotProductAttention`` with exact, O(length) attention dropout (private).

Re-exported by :mod:`dropout_lab.linen`. The module has Flax's fields and parameter
tree (``query``, ``key``, ``value``, ``out``); it resolves ``deterministic`` and the
dropout key itself, so ``dropout_rate`` may be a traced array, then runs Flax's own
module code in its scope with the rate and key bound into ``attention_fn``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from dropout_lab import _wrappers, attention

_FLAX_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(nn.MultiHeadDotProductAttention)
    if f.init and f.name not in ("parent", "name")
)


def bind_dropout(
    attention_fn: Callable[..., jax.Array],
    dropout_rng: jax.Array | None,
    dropout_rate: Any,
    deterministic: bool,
) -> Callable[..., jax.Array]:
    """``attention_fn`` with its dropout arguments fixed, for a Flax module to call.

    Flax's modules pass the arguments named in the returned function's signature
    (linen filters them by name); the dropout ones are bound here, so Flax's module code
    never compares the (possibly traced) rate with 0; the dropout arguments the module
    passes (rate 0) are ignored. Arguments ``attention_fn`` does not take are left
    out, as linen does.
    """
    accepted = inspect.signature(attention_fn).parameters
    bound_rng, bound_rate, bound_deterministic = dropout_rng, dropout_rate, deterministic

    def bound(
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        bias: jax.Array | None = None,
        mask: jax.Array | None = None,
        broadcast_dropout: bool = True,
        dropout_rng: Any = None,
        dropout_rate: Any = 0.0,
        deterministic: bool = True,
        dtype: Any = None,
        precision: Any = None,
        module: Any = None,
        is_causal: bool = False,
    ) -> jax.Array:
        del dropout_rng, dropout_rate, deterministic  # the module's (rate 0), replaced
        options = dict(
            bias=bias,
            mask=mask,
            broadcast_dropout=broadcast_dropout,
            dropout_rng=bound_rng,
            dropout_rate=bound_rate,
            deterministic=bound_deterministic,
            dtype=dtype,
            precision=precision,
        )
        if module is not None:
            options["module"] = module
        if is_causal:
            options["is_causal"] = is_causal
        options = {k: v for k, v in options.items() if k in accepted}
        return attention_fn(query, key, value, **options)

    return bound


class MultiHeadDotProductAttention(nn.MultiHeadDotProductAttention):
    """``flax.linen.MultiHeadDotProductAttention`` whose ``dropout_rate`` may be traced.

    Same fields, call signature and parameters as Flax's module; ``attention_fn``
    defaults to :func:`dropout_lab.attention.dot_product_attention` (exact keyed
    dropout without the ``[batch, heads, q, kv]`` weights). The dropout key comes from
    ``dropout_rng`` or ``self.make_rng("dropout")``, the same key Flax's module draws.
    A concrete rate 0 needs no ``deterministic`` and no key; a traced rate always
    draws one.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dropout_lab import linen as dln
      >>> layer = dln.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.1)
      >>> x = jnp.ones((2, 5, 8))
      >>> params = layer.init(jax.random.key(0), x, deterministic=True)
      >>> y = layer.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
      >>> y.shape, y.dtype
      ((2, 5, 8), dtype('float32'))
    """

    attention_fn: Callable[..., jax.Array] = attention.dot_product_attention

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        inputs_kv: jax.Array | None = None,
        mask: jax.Array | None = None,
        deterministic: bool | None = None,
        dropout_rng: jax.Array | None = None,
        sow_weights: bool = False,
    ) -> jax.Array:
        """Flax's ``__call__``; see ``flax.linen.MultiHeadDotProductAttention``."""
        if _wrappers.static_rate(self.dropout_rate) == 0.0:
            deterministic = True
        else:
            deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if not deterministic and dropout_rng is None:
            dropout_rng = self.make_rng("dropout")
        fields = {name: getattr(self, name) for name in _FLAX_FIELDS}
        fields.update(
            dropout_rate=0.0,
            deterministic=True,
            attention_fn=bind_dropout(
                self.attention_fn, dropout_rng, self.dropout_rate, deterministic
            ),
        )
        inner = nn.MultiHeadDotProductAttention(**fields)
        nn.share_scope(self, inner)
        if inputs_kv is not None:  # Flax's deprecated form, passed on as given
            return inner(inputs_q, inputs_kv=inputs_kv, mask=mask, sow_weights=sow_weights)
        return inner(inputs_q, inputs_k, inputs_v, mask=mask, sow_weights=sow_weights)
