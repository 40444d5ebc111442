"""Variational (Gaussian) dropout with learned per-weight variances and its sparse variant."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops._bernoulli import compute_dtype

# Molchanov, Ashukha & Vetrov 2017, eq. (14).
KL_K1 = 0.63576
KL_K2 = 1.8732
KL_K3 = 1.48695
PRUNE_THRESHOLD = 3.0
LOG_ALPHA_CLIP = (-10.0, 10.0)


def variational_log_alpha(
    kernel: ArrayLike, log_sigma2: ArrayLike, *, eps: float = 1e-8
) -> jax.Array:
    r"""Per-weight :math:`\log\alpha = \log\sigma^2 - \log\theta^2`, clipped to [-10, 10].

    The additive reparameterization of Molchanov et al.: each weight is
    :math:`w = \theta + \sigma\varepsilon`, i.e. multiplicative Gaussian noise
    :math:`w = \theta(1 + \sqrt{\alpha}\,\varepsilon)` with :math:`\alpha = \sigma^2 /
    \theta^2`, the variance of Bernoulli dropout at rate :math:`\alpha / (1 + \alpha)`.

    Args:
      kernel: weight means :math:`\theta`, any shape.
      log_sigma2: :math:`\log\sigma^2`, same shape.
      eps: added to :math:`\theta^2` inside the log.

    Returns:
      :math:`\log\alpha` with the shape of ``kernel``.

    References:
      Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural
      Networks", ICML 2017.
    """
    kernel = _checks.check_float_array(kernel, "kernel")
    log_sigma2 = _checks.check_float_array(log_sigma2, "log_sigma2")
    log_alpha = log_sigma2 - jnp.log(jnp.square(kernel) + eps)
    return jnp.clip(log_alpha, *LOG_ALPHA_CLIP)


def variational_kl(log_alpha: ArrayLike) -> jax.Array:
    r"""Molchanov et al.'s approximation of :math:`\mathrm{KL}(q\,\|\,p)`, summed over weights.

    For the log-uniform prior and :math:`q(w) = \mathcal N(\theta, \alpha\theta^2)`:

    .. math:: -\mathrm{KL} \approx k_1\,\sigma(k_2 + k_3\log\alpha)
        - \tfrac12 \log\!\left(1 + \alpha^{-1}\right) - k_1

    with :math:`k_1 = 0.63576,\ k_2 = 1.8732,\ k_3 = 1.48695`. It is positive,
    decreasing in :math:`\log\alpha` and tends to 0 as :math:`\alpha \to \infty`, which
    is what drives unneeded weights to large :math:`\alpha` (pruned).

    Args:
      log_alpha: :math:`\log\alpha` of any shape (see :func:`variational_log_alpha`).

    Returns:
      Scalar KL, the sum over all weights.

    References:
      Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural
      Networks", ICML 2017.
      Kingma, Salimans & Welling, "Variational Dropout and the Local
      Reparameterization Trick", NeurIPS 2015.
    """
    log_alpha = _checks.check_float_array(log_alpha, "log_alpha")
    neg_kl = (
        KL_K1 * jax.nn.sigmoid(KL_K2 + KL_K3 * log_alpha)
        - 0.5 * jax.nn.softplus(-log_alpha)
        - KL_K1
    )
    return -jnp.sum(neg_kl)


def variational_prune_mask(log_alpha: ArrayLike, threshold: float = PRUNE_THRESHOLD) -> jax.Array:
    r"""Weights kept by sparse variational dropout: :math:`\log\alpha < \text{threshold}`.

    :math:`\log\alpha > 3` means noise of more than :math:`e^{1.5} \approx 4.5` times
    the weight (a Bernoulli rate above :math:`0.95`): such weights are set to 0.

    Args:
      log_alpha: :math:`\log\alpha` of any shape.
      threshold: the pruning threshold (the paper's 3).

    Returns:
      Boolean keep-mask with the shape of ``log_alpha``.

    References:
      Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural
      Networks", ICML 2017.
    """
    return jnp.asarray(log_alpha) < threshold


def variational_dense(
    key: ArrayLike | None,
    x: ArrayLike,
    kernel: ArrayLike,
    log_sigma2: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    deterministic: bool = False,
    threshold: float | None = PRUNE_THRESHOLD,
    eps: float = 1e-8,
) -> jax.Array:
    r"""A dense layer with variational Gaussian dropout on every weight.

    Training uses the local reparameterization trick: the pre-activations are Gaussian
    given the inputs, so they are sampled directly (one draw per example and unit):

    .. math:: \mu = x\theta + b,\quad s^2 = x^2 (\alpha \odot \theta^2),\qquad
        y = \mu + \sqrt{s^2 + \epsilon}\;\varepsilon,\ \ \varepsilon \sim \mathcal N(0, I)

    with :math:`\log\alpha` from :func:`variational_log_alpha`. Evaluation uses the
    means, with the weights whose :math:`\log\alpha \ge` ``threshold`` pruned to 0
    (sparse VD; ``threshold=None`` keeps all). Train with the data loss summed over the
    data set plus :func:`variational_kl` (the negative ELBO).

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: inputs ``[batch, in_features]`` (any leading axes).
      kernel: weight means :math:`\theta`, ``[in_features, out_features]``.
      log_sigma2: :math:`\log\sigma^2`, ``[in_features, out_features]``.
      bias: ``[out_features]`` or ``None``.
      deterministic: evaluation mode: pruned mean weights, no noise.
      threshold: pruning threshold on :math:`\log\alpha` at evaluation, or ``None``.
      eps: variance floor inside the square root.

    Returns:
      ``[batch, out_features]`` in the dtype of ``x``.

    Raises:
      ValueError: shapes that do not fit.
      TypeError: non-floating inputs or weights.

    References:
      Kingma, Salimans & Welling, "Variational Dropout and the Local
      Reparameterization Trick", NeurIPS 2015.
      Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural
      Networks", ICML 2017.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> w, s = jnp.ones((3, 2)), jnp.full((3, 2), -10.0)
      >>> y = dl.variational_dense(jax.random.key(0), jnp.ones((4, 3)), w, s)
      >>> y.shape, y.dtype
      ((4, 2), dtype('float32'))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    kernel = _checks.check_float_array(kernel, "kernel")
    if kernel.ndim != 2 or x.shape[-1:] != kernel.shape[:1]:
        raise ValueError(
            f"x of shape {x.shape} and kernel of shape {kernel.shape} do not fit: "
            "expected x [..., in_features] and kernel [in_features, out_features]."
        )
    if jnp.shape(log_sigma2) != kernel.shape:
        raise ValueError(
            f"log_sigma2 of shape {jnp.shape(log_sigma2)} must match kernel {kernel.shape}."
        )
    log_alpha = variational_log_alpha(kernel, log_sigma2, eps=eps)
    dtype = compute_dtype(x.dtype)
    xc, theta = x.astype(dtype), kernel.astype(dtype)
    if deterministic:
        if threshold is not None:
            keep = variational_prune_mask(log_alpha, threshold)
            theta = jnp.where(keep, theta, jnp.zeros((), dtype))
        y = xc @ theta
    else:
        mean = xc @ theta
        var = jnp.square(xc) @ (jnp.exp(log_alpha).astype(dtype) * jnp.square(theta))
        noise = jax.random.normal(_checks.as_key(key), mean.shape, dtype)
        y = mean + jnp.sqrt(var + eps) * noise
    if bias is not None:
        y = y + jnp.asarray(bias, dtype)
    return y.astype(x.dtype)
