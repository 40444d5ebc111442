"""What the linen and NNX wrappers share (private): Flax's keyless shortcuts and messages.

``flax.linen.Dropout`` and ``flax.nnx.Dropout`` return their input in evaluation mode
or at rate 0, and zeros at rate 1, before asking for a key; :func:`call_op` does the
same for every op, with the op's own output. Where NNX users meet an error that
``flax.nnx.Dropout`` raises for the same mistake, the message contains Flax's.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dropout_lab import _checks, ops

# Ops whose training output at rate 1 needs no key: all zeros (every unit dropped, as
# Flax's Dropout returns), or for zoneout its evaluation output (every unit keeps its
# previous value). The others (DropConnect, the graph ops) draw a key at rate 1.
AT_RATE_ONE: dict[Callable[..., Any], str] = {
    ops.dropout: "zeros",
    ops.gaussian_dropout: "zeros",
    ops.alpha_dropout: "zeros",
    ops.channel_dropout: "zeros",
    ops.dropblock: "zeros",
    ops.drop_path: "zeros",
    ops.locked_dropout: "zeros",
    ops.embedding_dropout: "zeros",
    ops.weight_drop: "zeros",
    ops.zoneout: "eval",
}


def static_rate(rate: Any) -> float | None:
    """``rate`` as a Python float when it is a concrete scalar, else ``None`` (traced)."""
    if rate is None or not _checks.is_concrete(rate) or np.ndim(rate) != 0:
        return None
    return float(rate)


@functools.cache
def _signature(op: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(op)


def call_op(
    op: Callable[..., Any],
    deterministic: bool,
    draw_key: Callable[[], jax.Array],
    args: tuple[Any, ...],
    options: dict[str, Any],
) -> Any:
    """``op(key, *args, deterministic=..., **options)``, drawing a key only if needed.

    In evaluation mode, at a concrete ``rate`` (the op's argument of that name) of 0,
    and at rate 1 for the ops of :data:`AT_RATE_ONE`, the output does not depend on the
    key: the op runs in evaluation mode (its output there equals its training output;
    zeros at rate 1) and ``draw_key`` is not called, so no RNG stream advances. A
    traced rate cannot be compared: it always draws a key.
    """
    bound = _signature(op).bind_partial(None, *args, **options).arguments
    rate = static_rate(bound.get("rate"))
    if deterministic or rate == 0.0:
        keyless: str | None = "eval"
    elif rate == 1.0:
        keyless = AT_RATE_ONE.get(op)
    else:
        keyless = None
    if keyless is None:
        return op(draw_key(), *args, deterministic=False, **options)
    out = op(None, *args, deterministic=True, **options)
    return jax.tree.map(jnp.zeros_like, out) if keyless == "zeros" else out


def check_init_rate(init_rate: float) -> None:
    """A concrete ``init_rate`` must lie in (0, 1), where its logit is finite."""
    if _checks.is_concrete(init_rate) and not 0 < float(init_rate) < 1:
        raise ValueError(
            f"init_rate={init_rate!r} must be in (0, 1): the rate is sigmoid(rate_logit), "
            "and the logit of 0 or 1 is infinite."
        )


def no_deterministic_message(module: Any) -> str:
    """``flax.nnx.Dropout``'s message (verbatim for ``Dropout``), then our advice."""
    name = type(module).__name__
    return (
        f"No `deterministic` argument was provided to {name}."
        " Consider one of the following options:\n\n"
        f"1. Pass `deterministic` to the {name} constructor:\n\n"
        f"  self.dropout = nnx.{name}(..., deterministic=True/False)\n\n"
        f"2. Pass `deterministic` to the {name} __call__:\n\n"
        "  self.dropout(x, deterministic=True/False)\n\n"
        "3. Use `nnx.view` to create a view of the model with a"
        " specific `deterministic` value:\n\n"
        "  model_view = nnx.view(model, deterministic=True/False)\n"
        "\nmodel.train() and model.eval() set it for every dropout layer of a model."
    )


def no_rngs_message(module: Any) -> str:
    """``flax.nnx.Dropout``'s message (verbatim for ``Dropout``), then our advice."""
    return (
        f"`deterministic` is False, but no `rngs` argument was provided to "
        f"{type(module).__name__}\n"
        "          as either a __call__ argument or class attribute."
        f" Pass rngs=nnx.Rngs({module.rng_collection}=0) to the constructor, or rngs= (a key,"
        " an RngStream or an nnx.Rngs) to the call; evaluation mode and rate 0 need none."
    )


def static_axes(broadcast_dims: Sequence[int]) -> Sequence[int]:
    """A list becomes a tuple (static in NNX); anything else reaches the op, which checks it."""
    return tuple(broadcast_dims) if isinstance(broadcast_dims, list) else broadcast_dims
