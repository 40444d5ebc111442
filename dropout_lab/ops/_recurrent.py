"""Dropout for recurrent networks: locked (variational), embedding, zoneout, weight drop."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops._bernoulli import check_impl, compute_dtype, dropout, keep_mask
from dropout_lab.ops._dropconnect import dropconnect


def locked_dropout(
    key: ArrayLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    time_axis: int = 1,
    mode: str = "inverted",
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""Locked (variational) dropout: one mask for every time step of a sequence.

    .. math:: y_{n,t,f} = m_{n,f}\, x_{n,t,f} / q,\qquad m_{n,f} \sim \text{Bernoulli}(q)

    Gal & Ghahramani's variational RNN dropout and AWD-LSTM's ``LockedDropout``: the
    same units are dropped at every step, which is :func:`dropout_lab.dropout` with
    ``broadcast_dims=(time_axis,)`` (and its semantics).

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: floating array ``[batch, time, features]`` (or any layout, see
        ``time_axis``).
      rate: drop probability in [0, 1], possibly traced.
      time_axis: the axis that shares the mask.
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      Array with the shape and dtype of ``x``.

    Raises:
      ValueError: a concrete rate outside [0, 1] or a bad axis.
      TypeError: ``x`` is not floating point.

    References:
      Gal & Ghahramani, "A Theoretically Grounded Application of Dropout in Recurrent
      Neural Networks", NeurIPS 2016.
      Merity, Keskar & Socher, "Regularizing and Optimizing LSTM Language Models",
      ICLR 2018.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> y = dl.locked_dropout(jax.random.key(0), jnp.ones((2, 5, 3)), 0.5)
      >>> y.shape, y.dtype
      ((2, 5, 3), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    time_axis = _checks.check_axis(time_axis, x.ndim, "time_axis")
    return dropout(
        key,
        x,
        rate,
        mode=mode,
        broadcast_dims=(time_axis,),
        deterministic=deterministic,
        impl=impl,
    )


def embedding_dropout(
    key: ArrayLike | None,
    embedding: ArrayLike,
    rate: ArrayLike,
    *,
    feature_axis: int = -1,
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""Embedding dropout: drops whole word vectors.

    .. math:: \tilde E_{v,:} = m_v\, E_{v,:} / q,\qquad m_v \sim \text{Bernoulli}(q)

    Applied to the embedding table ``[vocab, features]`` before the lookup it drops
    word *types* (every occurrence of a dropped word is zero in the batch), as in Gal &
    Ghahramani and AWD-LSTM's ``embedded_dropout``; applied to looked-up vectors
    ``[batch, time, features]`` it drops tokens. Either way it is
    :func:`dropout_lab.dropout` with ``broadcast_dims=(feature_axis,)``.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      embedding: floating array whose ``feature_axis`` holds the vectors, e.g. a table
        ``[vocab, features]``.
      rate: probability of dropping a vector, in [0, 1], possibly traced.
      feature_axis: the axis of the vector components (shares one draw).
      deterministic: evaluation mode: returns ``embedding``.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      Array with the shape and dtype of ``embedding``.

    Raises:
      ValueError: a concrete rate outside [0, 1] or a bad axis.
      TypeError: ``embedding`` is not floating point.

    References:
      Gal & Ghahramani, "A Theoretically Grounded Application of Dropout in Recurrent
      Neural Networks", NeurIPS 2016.
      Merity, Keskar & Socher, "Regularizing and Optimizing LSTM Language Models",
      ICLR 2018.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> table = dl.embedding_dropout(jax.random.key(0), jnp.ones((10, 4)), 0.1)
      >>> table.shape, table.dtype
      ((10, 4), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    embedding = _checks.check_float_array(embedding, "embedding")
    feature_axis = _checks.check_axis(feature_axis, embedding.ndim, "feature_axis")
    return dropout(
        key,
        embedding,
        rate,
        broadcast_dims=(feature_axis,),
        deterministic=deterministic,
        impl=impl,
    )


def zoneout(
    key: ArrayLike | None,
    h_prev: ArrayLike,
    h_new: ArrayLike,
    rate: ArrayLike,
    *,
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""Zoneout (Krueger et al. 2017): units keep their previous value at random.

    .. math:: h_t = d \odot h_{t-1} + (1 - d) \odot \tilde h_t,\quad d \sim
        \text{Bernoulli}(\text{rate})\ \text{(train)},\qquad
        h_t = \text{rate}\, h_{t-1} + (1 - \text{rate})\, \tilde h_t\ \text{(eval)}

    The choice is a select, so a NaN in the state not chosen does not leak. Here
    "dropping" a unit means freezing it: rate 0 returns ``h_new`` and rate 1 returns
    ``h_prev`` (not zeros). For an LSTM call it once for the cell and once for the
    hidden state, each with its own rate and key, at every step.

    Args:
      key: a PRNG key (use a new one per time step), or ``None`` when ``deterministic``.
      h_prev: floating array ``[batch, hidden]``, the previous state.
      h_new: the candidate state, same shape and dtype as ``h_prev``.
      rate: probability of keeping the previous value, in [0, 1], possibly traced.
      deterministic: evaluation mode: the expected state (see above).
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      Array with the shape and dtype of ``h_new``.

    Raises:
      ValueError: a concrete rate outside [0, 1], or the states differ in shape.
      TypeError: a state is not floating point or the dtypes differ.

    References:
      Krueger, Maharaj, Kramár, Pezeshki, Ballas, Ke, Goyal, Bengio, Courville & Pal,
      "Zoneout: Regularizing RNNs by Randomly Preserving Hidden Activations",
      ICLR 2017.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> h = dl.zoneout(jax.random.key(0), jnp.zeros((2, 3)), jnp.ones((2, 3)), 0.1)
      >>> h.shape, h.dtype
      ((2, 3), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    h_prev = _checks.check_float_array(h_prev, "h_prev")
    h_new = _checks.check_float_array(h_new, "h_new")
    if h_prev.shape != h_new.shape:
        raise ValueError(f"h_prev {h_prev.shape} and h_new {h_new.shape} differ in shape.")
    if h_prev.dtype != h_new.dtype:
        raise TypeError(f"h_prev ({h_prev.dtype}) and h_new ({h_new.dtype}) differ in dtype.")
    rate_array = _checks.check_rate(rate)
    check_impl(impl)
    if deterministic:
        dtype = compute_dtype(h_new.dtype)
        r = rate_array.astype(dtype)
        y = (r * h_prev.astype(dtype) + (1 - r) * h_new.astype(dtype)).astype(h_new.dtype)
        # Exact endpoints, even for inf/NaN in the state that is not used.
        y = jnp.where(rate_array <= 0, h_new, jnp.where(rate_array >= 1, h_prev, y))
    else:
        keep = _checks.keep_probability(rate, rate_array)
        update, _ = keep_mask(_checks.as_key(key), h_new.shape, keep, impl)
        y = jnp.where(update, h_new, h_prev)
    return _checks.nan_if_invalid(y, rate, rate_array)


def weight_drop(
    key: ArrayLike | None,
    weights: Any,
    rate: ArrayLike,
    *,
    mode: str = "inverted",
    deterministic: bool = False,
    impl: str = "exact",
) -> Any:
    r"""Weight drop (Merity et al. 2017): DropConnect on recurrent weights, once per sequence.

    .. math:: \tilde W_{hh} = M \odot W_{hh} / q,\qquad M \sim \text{Bernoulli}(q)

    Call it once *before* the time loop and run every step with the masked weights,
    so all steps of the sequence share one mask (AWD-LSTM's ``WeightDrop``).
    ``weights`` may be one array or a pytree (e.g. ``{"hh": W_hh, "hc": W_hc}``); every
    leaf gets its own key from ``jax.random.split``. Each leaf follows
    :func:`dropout_lab.dropconnect`.

    Args:
      key: a PRNG key (one per sequence or per batch of sequences),
        or ``None`` when ``deterministic``.
      weights: a floating array or a pytree of them, e.g. ``[hidden, 4 * hidden]``.
      rate: drop probability of each weight, in [0, 1], possibly traced.
      mode: ``"inverted"`` or ``"classic"``.
      deterministic: evaluation mode.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      The masked weights, with the structure, shapes and dtypes of ``weights``.

    References:
      Merity, Keskar & Socher, "Regularizing and Optimizing LSTM Language Models",
      ICLR 2018.
      Wan, Zeiler, Zhang, LeCun & Fergus, "Regularization of Neural Networks using
      DropConnect", ICML 2013.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> w_hh = dl.weight_drop(jax.random.key(0), jnp.ones((3, 12)), 0.5)
      >>> w_hh.shape, w_hh.dtype
      ((3, 12), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    leaves, treedef = jax.tree.flatten(weights)
    if not leaves:
        raise TypeError(
            f"weights is {weights!r}, with no array in it; pass a floating array or a "
            "pytree of them."
        )
    leaves = [_checks.check_float_array(w, "weights") for w in leaves]
    if deterministic:
        keys = [None] * len(leaves)
    else:
        keys = list(jax.random.split(_checks.as_key(key), len(leaves)))
    masked = [
        dropconnect(k, w, rate, mode=mode, deterministic=deterministic, impl=impl)
        for k, w in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, masked)
