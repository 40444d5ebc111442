"""Concrete dropout: a relaxed Bernoulli mask whose rate is learned by gradient descent."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops._bernoulli import compute_dtype


def _safe_rate(rate: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The rate where it is strictly inside (0, 1), else 0.5, and that condition."""
    inside = (rate > 0) & (rate < 1)
    return jnp.where(inside, rate, 0.5), inside


def concrete_dropout(
    key: ArrayLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    temperature: float = 0.1,
    deterministic: bool = False,
) -> jax.Array:
    r"""Concrete dropout (Gal, Hron & Kendall 2017): dropout differentiable in the rate.

    The Bernoulli drop mask is replaced by its Concrete (relaxed Bernoulli) relaxation
    with temperature :math:`t`, and kept units are rescaled as in inverted dropout:

    .. math:: z = \sigma\!\left(\frac{\log p - \log(1-p) + \log u - \log(1-u)}{t}\right),
        \quad u \sim U(0, 1),\qquad y = x \odot \frac{1 - z}{1 - p}

    with :math:`p` the rate. :math:`z > 1/2` exactly when a Bernoulli(:math:`p`) draw
    from the same noise drops the unit, and :math:`z \to` that draw as :math:`t \to 0`.
    The output is differentiable in ``rate`` (pathwise gradient through :math:`z`),
    which is what lets :func:`concrete_dropout_regularizer` plus the data loss learn it.

    The relaxed mask must multiply to carry a gradient, so unlike
    :func:`dropout_lab.dropout` a unit whose mask is small but not 0 still passes a
    scaled inf/NaN; units whose keep factor underflows to 0 are selected to exactly 0.
    Rate 0 is exactly the identity and rate 1 exactly zeros; their gradient w.r.t. the
    rate is 0 (learn the rate through a logit, as the modules do).

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: floating array ``[...]``; its dtype is kept.
      rate: drop probability :math:`p` in [0, 1], possibly traced and differentiated.
      temperature: relaxation temperature :math:`t > 0` (the paper uses 0.1).
      deterministic: evaluation mode: returns ``x``.

    Returns:
      Array with the shape and dtype of ``x``.

    Raises:
      ValueError: a concrete rate outside [0, 1] or a non-positive temperature.
      TypeError: ``x`` is not floating point.

    References:
      Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017.
      Maddison, Mnih & Teh, "The Concrete Distribution: A Continuous Relaxation of
      Discrete Random Variables", ICLR 2017.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> y = dl.concrete_dropout(jax.random.key(0), jnp.ones((2, 3)), 0.1)
      >>> y.shape, y.dtype
      ((2, 3), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    rate_array = _checks.check_rate(rate)
    if _checks.is_concrete(temperature) and not float(temperature) > 0:
        raise ValueError(f"temperature={temperature!r} must be positive.")
    if deterministic:
        return _checks.nan_if_invalid(x, rate, rate_array)
    dtype = compute_dtype(x.dtype)
    p, inside = _safe_rate(rate_array.astype(dtype))
    noise = jax.random.logistic(_checks.as_key(key), x.shape, dtype)
    # 1 - z = sigmoid(-a): the keep probability of the relaxed mask, computed stably.
    keep = jax.nn.sigmoid(-(jnp.log(p) - jnp.log1p(-p) + noise) / jnp.asarray(temperature, dtype))
    factor = keep / (1 - p)
    xc = x.astype(dtype)
    y = jnp.where(factor > 0, xc * factor, jnp.zeros((), dtype))
    y = jnp.where(inside, y, jnp.where(rate_array <= 0, xc, jnp.zeros((), dtype)))
    return _checks.nan_if_invalid(y.astype(x.dtype), rate, rate_array)


def concrete_dropout_regularizer(
    weights: Any,
    rate: ArrayLike,
    *,
    input_dim: int,
    weight_regularizer: float = 1e-6,
    dropout_regularizer: float = 1e-5,
) -> jax.Array:
    r"""The Concrete dropout regularizer of one layer: weight term and entropy term.

    .. math:: R(W, p) = \lambda_w \frac{\lVert W \rVert^2}{1 - p}
        + \lambda_p\, K \big(p \log p + (1-p) \log(1-p)\big)

    the KL term of the paper's objective as its reference code scales it: :math:`W` are
    the weights of the layer that receives the dropped input (its kernel and bias,
    applied to inputs already scaled by :math:`1/(1-p)`), :math:`K` that layer's input
    dimension, :math:`-\big(p\log p + (1-p)\log(1-p)\big)` the entropy of the dropout
    Bernoulli. The paper sets :math:`\lambda_w = l^2 / N` (prior length-scale :math:`l`,
    :math:`N` training points) and :math:`\lambda_p = 2 / N`; add :math:`R` for every
    concrete-dropout layer to the mean data loss. The entropy term alone is minimal at
    :math:`p = 1/2`; the weight term pushes :math:`p` down.

    Args:
      weights: the next layer's weights: an array or a pytree of arrays (e.g.
        ``{"kernel": [in, out], "bias": [out]}``).
      rate: drop probability :math:`p`, possibly traced and differentiated; rate 1
        gives an infinite weight term.
      input_dim: :math:`K`, the number of dropped input features.
      weight_regularizer: :math:`\lambda_w`.
      dropout_regularizer: :math:`\lambda_p`.

    Returns:
      Scalar regularizer.

    Raises:
      ValueError: a concrete rate outside [0, 1].

    References:
      Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017.
    """
    rate_array = _checks.check_rate(rate)
    sq_norm = sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(weights))
    weight_term = weight_regularizer * sq_norm / (1 - rate_array)
    neg_entropy = xlogy(rate_array, rate_array) + xlogy(1 - rate_array, 1 - rate_array)
    reg = weight_term + dropout_regularizer * input_dim * neg_entropy
    return _checks.nan_if_invalid(reg, rate, rate_array)
