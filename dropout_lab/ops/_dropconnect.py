"""DropConnect: Bernoulli masks on weights instead of activations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops._bernoulli import dropout


def dropconnect(
    key: ArrayLike | None,
    w: ArrayLike,
    rate: ArrayLike,
    *,
    mode: str = "inverted",
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""DropConnect (Wan et al. 2013): drop individual weights.

    .. math:: \tilde W = M \odot W / q \ \text{(inverted)}, \quad M_{ij} \sim \text{Bernoulli}(q)

    The semantics (modes, rate handling, dtypes, zero-residual backward) are those of
    :func:`dropout_lab.dropout` applied to the weight array.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      w: floating weight array of any shape, e.g. a kernel ``[in, out]``.
      rate: drop probability in [0, 1], possibly traced.
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode (``w``, or ``q w`` for classic).
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      The masked weights, shape and dtype of ``w``.

    References:
      Wan, Zeiler, Zhang, LeCun & Fergus, "Regularization of Neural Networks using
      DropConnect", ICML 2013.
    """
    _checks.check_key(key, deterministic=deterministic)
    w = _checks.check_float_array(w, "w")
    return dropout(key, w, rate, mode=mode, deterministic=deterministic, impl=impl)


def dropconnect_dense(
    key: ArrayLike | None,
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None,
    rate: ArrayLike,
    *,
    per_example: bool = False,
    mode: str = "inverted",
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""A dense layer :math:`y = x (M \odot W) + b` with DropConnect on the kernel.

    By default one kernel mask is drawn for the whole batch (as every PyTorch and Keras
    implementation does). With ``per_example=True`` each row of ``x`` gets its own
    mask, drawn from ``jax.random.split(key, batch)``, which is the estimator of the
    paper (and costs a ``[batch, in, out]`` masked kernel). The bias is not masked.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: inputs ``[batch, in_features]`` (``[in_features]`` for one example).
      kernel: weights ``[in_features, out_features]``.
      bias: ``[out_features]`` or ``None``.
      rate: drop probability of each weight, possibly traced.
      per_example: draw an independent kernel mask for every row of ``x``.
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      ``[batch, out_features]`` (or ``[out_features]``).

    References:
      Wan, Zeiler, Zhang, LeCun & Fergus, "Regularization of Neural Networks using
      DropConnect", ICML 2013.
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    kernel = _checks.check_float_array(kernel, "kernel")
    if kernel.ndim != 2 or x.shape[-1:] != kernel.shape[:1]:
        raise ValueError(
            f"x of shape {x.shape} and kernel of shape {kernel.shape} do not fit: "
            "expected x [..., in_features] and kernel [in_features, out_features]."
        )

    def masked_kernel(k: ArrayLike | None) -> jax.Array:
        return dropconnect(k, kernel, rate, mode=mode, deterministic=deterministic, impl=impl)

    if per_example and not deterministic and x.ndim == 2:
        keys = jax.random.split(_checks.as_key(key), x.shape[0])
        y = jax.vmap(lambda k, row: row @ masked_kernel(k))(keys, x)
    else:
        y = x @ masked_kernel(key)
    if bias is not None:
        y = y + jnp.asarray(bias)
    return y
