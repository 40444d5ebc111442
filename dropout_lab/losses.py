r"""R-Drop: consistency between two dropout passes (Liang et al. 2021).

Two forward passes of the same input under independent dropout masks give logits
``logits_a`` and ``logits_b``; R-Drop adds the symmetric KL divergence between their
predictive distributions to the cross-entropy of both. :func:`rdrop_forward` runs the
two passes as one forward of the batch concatenated with itself.

References:
  Liang, Wu, Li, Wang, Meng, Qin, Chen, Zhang & Liu, "R-Drop: Regularized Dropout for
  Neural Networks", NeurIPS 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from dropout_lab import _checks

__all__ = ["rdrop", "rdrop_forward", "rdrop_regression", "symmetric_kl"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: jax.Array, mask: ArrayLike | None, reduction: str) -> jax.Array:
    """Masked mean / sum over all positions; ``"none"`` zeroes the masked positions."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {_REDUCTIONS}.")
    if mask is None:
        weights = jnp.ones_like(loss)
    else:
        mask = jnp.asarray(mask)
        weights = jnp.broadcast_to(mask, loss.shape).astype(loss.dtype)
    # Select, not multiply: a NaN or inf at a padded position must not leak.
    loss = jnp.where(weights != 0, loss * weights, jnp.zeros((), loss.dtype))
    if reduction == "none":
        return loss
    total = jnp.sum(loss)
    if reduction == "sum":
        return total
    count = jnp.sum(weights)
    return jnp.where(count > 0, total / jnp.where(count > 0, count, 1), 0)


def _as_float_logits(logits: ArrayLike, name: str) -> jax.Array:
    logits = _checks.check_float_array(logits, name)
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _targets(labels: ArrayLike, logits: jax.Array, label_smoothing: ArrayLike) -> jax.Array:
    """One-hot (or given soft) targets ``[..., num_classes]``, smoothed with optax."""
    labels = jnp.asarray(labels)
    num_classes = logits.shape[-1]
    if jnp.issubdtype(labels.dtype, jnp.integer) and labels.shape == logits.shape[:-1]:
        targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    elif labels.shape == logits.shape:
        targets = labels.astype(logits.dtype)
    else:
        raise ValueError(
            f"labels of shape {labels.shape} and dtype {labels.dtype} fit neither integer "
            f"labels {logits.shape[:-1]} nor one-hot labels {logits.shape} for logits of "
            f"shape {logits.shape}."
        )
    if isinstance(label_smoothing, int | float) and label_smoothing == 0:
        return targets
    return optax.smooth_labels(targets, label_smoothing)


def symmetric_kl(logits_a: ArrayLike, logits_b: ArrayLike) -> jax.Array:
    r"""The R-Drop consistency term :math:`\frac12(KL(p_a\|p_b) + KL(p_b\|p_a))` per position.

    With :math:`p = \mathrm{softmax}(\text{logits})` over the last axis; computed from
    log-softmax with ``optax.losses.kl_divergence_with_log_targets``. Logits must be
    finite (a class with :math:`-\infty` logit in both passes gives NaN).

    Args:
      logits_a: logits of the first pass ``[..., num_classes]``.
      logits_b: logits of the second pass, same shape.

    Returns:
      ``[...]`` in nats; zero where the two passes agree.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.losses.symmetric_kl(jnp.zeros((4, 3)), jnp.ones((4, 3))).shape
      (4,)
    """
    logits_a = _as_float_logits(logits_a, "logits_a")
    logits_b = _as_float_logits(logits_b, "logits_b")
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits shapes differ: {logits_a.shape} and {logits_b.shape}.")
    log_p_a = jax.nn.log_softmax(logits_a, axis=-1)
    log_p_b = jax.nn.log_softmax(logits_b, axis=-1)
    kl_ab = optax.losses.kl_divergence_with_log_targets(log_p_b, log_p_a)  # KL(p_a || p_b)
    kl_ba = optax.losses.kl_divergence_with_log_targets(log_p_a, log_p_b)  # KL(p_b || p_a)
    return 0.5 * (kl_ab + kl_ba)


def rdrop(
    logits_a: ArrayLike,
    logits_b: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike,
    label_smoothing: ArrayLike = 0.0,
    mask: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""R-Drop loss for classification (Liang et al. 2021).

    Per position :math:`i` (an example, or a token in sequence models):

    .. math::
        \ell_i = \mathrm{CE}(y_i, p_a) + \mathrm{CE}(y_i, p_b)
        + \alpha\, \tfrac12\big(KL(p_a\|p_b) + KL(p_b\|p_a)\big)

    with the two cross-entropies **summed**, as in the paper, not averaged; then
    ``reduction="mean"`` averages :math:`\ell_i` over the unmasked positions and
    ``"sum"`` adds them. Both KL directions carry gradients (no stop-gradient).

    The official repository (dropreg/R-Drop, commit 9dcc8302) uses other scalings,
    which map onto this one for a batch of :math:`B` positions:

    * README / Hugging Face recipe, ``0.5 * (CE_a + CE_b)`` (batch means) ``+ α' *``
      (KL sums over the batch): ``0.5 * rdrop(..., alpha=2 * B * α')``.
    * BERT ``bert_kl``, ``CE_a + CE_b`` (means) ``+ 0.5 * (KL + rKL) / 2`` (sums):
      ``rdrop(..., alpha=0.5 * B)``.
    * fairseq ``reg_label_smoothed_cross_entropy``, everything summed over non-pad
      tokens: ``rdrop(..., alpha=α', mask=not_pad, reduction="sum")``; fairseq's
      label smoothing ``ε`` (spread over the ``V - 1`` wrong classes) equals
      ``label_smoothing = ε V / (V - 1)`` here (optax spreads it over all ``V``).

    Args:
      logits_a: logits of the first pass ``[..., num_classes]``.
      logits_b: logits of the second pass, same shape.
      labels: integer labels ``[...]`` or one-hot / soft labels ``[..., num_classes]``.
      alpha: weight of the KL term (may be traced, e.g. scheduled).
      label_smoothing: ``optax.smooth_labels`` factor applied to both CE terms.
      mask: ``[...]`` booleans or weights; zero positions (padding) are excluded, and
        ``"mean"`` divides by the sum of the mask.
      reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per position ``[...]``, zero
        where masked).

    Returns:
      Scalar, or ``[...]`` for ``reduction="none"``.

    Raises:
      ValueError: mismatched shapes or an unknown reduction.
      TypeError: the logits are not floating point.

    References:
      Liang, Wu, Li, Wang, Meng, Qin, Chen, Zhang & Liu, "R-Drop: Regularized Dropout
      for Neural Networks", NeurIPS 2021.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> logits_a, logits_b = jnp.zeros((4, 3)), jnp.ones((4, 3))
      >>> loss = dl.losses.rdrop(logits_a, logits_b, jnp.array([0, 1, 2, 0]), alpha=1.0)
      >>> loss.shape, loss.dtype
      ((), dtype('float32'))
    """
    logits_a = _as_float_logits(logits_a, "logits_a")
    logits_b = _as_float_logits(logits_b, "logits_b")
    kl = symmetric_kl(logits_a, logits_b)
    targets = _targets(labels, logits_a, label_smoothing)
    ce_a = optax.softmax_cross_entropy(logits_a, targets)
    ce_b = optax.softmax_cross_entropy(logits_b, targets)
    return _reduce(ce_a + ce_b + alpha * kl, mask, reduction)


def rdrop_regression(
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    targets: ArrayLike,
    *,
    alpha: ArrayLike,
    mask: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""R-Drop loss for regression: squared errors of both passes plus their gap.

    .. math::
        \ell = (\hat y_a - y)^2 + (\hat y_b - y)^2 + \alpha\, (\hat y_a - \hat y_b)^2

    per element (``optax.squared_error``): the squared difference of the two passes
    stands in for the KL term, as in the official code's regression (STS-B) heads.

    Args:
      pred_a: predictions of the first pass ``[...]``.
      pred_b: predictions of the second pass, same shape.
      targets: ``[...]``.
      alpha: weight of the consistency term.
      mask: booleans or weights broadcastable to ``[...]``.
      reduction: ``"mean"`` over unmasked elements, ``"sum"`` or ``"none"``.

    Returns:
      Scalar, or ``[...]`` for ``reduction="none"``.

    Raises:
      ValueError: mismatched shapes or an unknown reduction.

    References:
      Liang, Wu, Li, Wang, Meng, Qin, Chen, Zhang & Liu, "R-Drop: Regularized Dropout
      for Neural Networks", NeurIPS 2021.

    Examples:
      >>> import jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> dl.losses.rdrop_regression(jnp.zeros(3), jnp.ones(3), jnp.ones(3), alpha=1.0)
      Array(2., dtype=float32)
    """
    pred_a = _checks.check_float_array(pred_a, "pred_a")
    pred_b = _checks.check_float_array(pred_b, "pred_b")
    targets = jnp.asarray(targets, pred_a.dtype)
    if not pred_a.shape == pred_b.shape == targets.shape:
        raise ValueError(
            f"pred_a {pred_a.shape}, pred_b {pred_b.shape} and targets {targets.shape} "
            "must have the same shape."
        )
    loss = (
        optax.squared_error(pred_a, targets)
        + optax.squared_error(pred_b, targets)
        + alpha * optax.squared_error(pred_a, pred_b)
    )
    return _reduce(loss, mask, reduction)


def rdrop_forward(
    apply_fn: Callable[[Any, jax.Array], Any], x: Any, key: ArrayLike
) -> tuple[Any, Any]:
    """Both R-Drop passes as one forward of the batch concatenated with itself.

    Calls ``apply_fn(concatenate([x, x]), key)`` once and splits every output leaf
    into its first and second halves along axis 0. One dropout mask is drawn for the
    doubled batch, so the halves get independent masks and an R-Drop step costs one
    forward and one backward of a ``2 * batch`` input (the fairseq recipe of the
    official code). With Flax linen::

        def loss_fn(params, x, labels, key):
            apply = lambda xx, k: model.apply(
                params, xx, deterministic=False, rngs={"dropout": k})
            logits_a, logits_b = dl.losses.rdrop_forward(apply, x, key)
            return dl.losses.rdrop(logits_a, logits_b, labels, alpha=1.0)

        grads = jax.grad(loss_fn)(params, x, labels, jax.random.fold_in(key, step))

    For NNX use ``lambda xx, k: dl.mc.nnx_fn(model, xx)(k)`` or pass the key as the
    call's ``rngs``. Caveats: a mask shared along the batch axis (``broadcast_dims``
    containing 0) would give both halves the same mask, and layers that mix the batch
    (BatchNorm) see both copies.

    Args:
      apply_fn: ``apply_fn(x2, key) -> outputs`` with dropout on; ``x2`` is ``x``
        concatenated with itself along axis 0.
      x: input batch ``[batch, ...]`` (or a pytree of such arrays).
      key: PRNG key for the dropout masks.

    Returns:
      ``(outputs_a, outputs_b)``, each ``[batch, ...]`` per leaf.

    Raises:
      TypeError: ``key`` is not a PRNG key (it is passed to ``apply_fn`` unchanged).
      ValueError: ``x`` holds no array.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> apply = lambda xx, k: dl.dropout(k, xx, 0.5)
      >>> a, b = dl.losses.rdrop_forward(apply, jnp.ones((4, 3)), jax.random.key(0))
      >>> a.shape, b.shape
      ((4, 3), (4, 3))
    """
    _checks.check_key(key)
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError("x has no arrays.")
    batch = jnp.shape(leaves[0])[0]
    doubled = jax.tree.map(lambda v: jnp.concatenate([v, v], axis=0), x)
    outputs = apply_fn(doubled, jnp.asarray(key))
    first = jax.tree.map(lambda y: y[:batch], outputs)
    second = jax.tree.map(lambda y: y[batch:], outputs)
    return first, second
