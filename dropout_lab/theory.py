r"""Closed forms of dropout's known results, as functions you can call and check.

Throughout, ``rate`` is the drop probability :math:`p` and ``keep`` is
:math:`q = 1 - p`; a mask element is :math:`m \sim \text{Bernoulli}(q)`. Inverted
dropout multiplies a kept input by :math:`1/q` in training; classic dropout keeps it
unscaled in training and multiplies by :math:`q` at evaluation (see
:func:`dropout_lab.dropout`).

Every function is pure JAX, works under ``jit``/``vmap``/``grad`` and accepts a traced
rate (a concrete rate outside [0, 1] raises ``ValueError``; a traced one makes the
output NaN). :func:`exact_mask_expectation` computes any expectation over all
:math:`2^d` masks, and :func:`jensen_gap_mc` is a Monte Carlo estimator built on
:func:`dropout_lab.dropout`; ``experiments/theory_checks.py`` compares every closed
form here with both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops import dropout

BN_CASES = ("classic_unscaled", "classic", "inverted")


def _rate_and_keep(rate: ArrayLike) -> tuple[jax.Array, jax.Array]:
    rate_array = _checks.check_rate(rate)
    return rate_array, 1.0 - rate_array


def _finish(y: jax.Array, rate: ArrayLike, rate_array: jax.Array) -> jax.Array:
    return _checks.nan_if_invalid(jnp.asarray(y), rate, rate_array)


# --- Linear unit -------------------------------------------------------------------


def preactivation_mean(
    w: ArrayLike, x: ArrayLike, rate: ArrayLike, *, mode: str = "inverted"
) -> jax.Array:
    r"""Expected pre-activation of a linear unit whose inputs go through dropout.

    .. math::
        \text{inverted:}\ \mathbb{E}\Big[\sum_i w_i \tfrac{m_i}{q} x_i\Big] = \sum_i w_i x_i,
        \qquad \text{classic:}\ \mathbb{E}\Big[\sum_i w_i m_i x_i\Big] = q \sum_i w_i x_i.

    Args:
      w: weights ``[..., d]``.
      x: inputs ``[..., d]`` (broadcast against ``w``).
      rate: drop probability in [0, 1].
      mode: ``"inverted"`` or ``"classic"`` (training-time scaling).

    Returns:
      The expected pre-activation ``[...]``.

    References:
      Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, "Dropout: A Simple Way
      to Prevent Neural Networks from Overfitting", JMLR 2014 (section 2: scaling).

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> theory.preactivation_mean(jnp.ones(3), jnp.arange(3.0), 0.5)
      Array(3., dtype=float32)
    """
    rate_array, keep = _rate_and_keep(rate)
    _checks.check_mode(mode)
    mean = jnp.sum(jnp.asarray(w) * jnp.asarray(x), axis=-1)
    if mode == "classic":
        mean = keep * mean
    return _finish(mean, rate, rate_array)


def preactivation_variance(
    w: ArrayLike, x: ArrayLike, rate: ArrayLike, *, mode: str = "inverted"
) -> jax.Array:
    r"""Variance of a linear unit's pre-activation over one dropout mask.

    The mask elements are independent, so the variances of the terms add:

    .. math::
        \text{inverted:}\ \operatorname{Var} = \frac{p}{q} \sum_i (w_i x_i)^2,
        \qquad \text{classic:}\ \operatorname{Var} = p\,q \sum_i (w_i x_i)^2.

    Args:
      w: weights ``[..., d]``.
      x: inputs ``[..., d]``.
      rate: drop probability in [0, 1] (``rate = 1`` gives inf in inverted mode).
      mode: ``"inverted"`` or ``"classic"``.

    Returns:
      The variance ``[...]``.

    References:
      Wang & Manning, "Fast dropout training", ICML 2013.
      Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
      Uncertainty in Deep Learning", ICML 2016.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> theory.preactivation_variance(jnp.ones(2), jnp.ones(2), 0.5)
      Array(2., dtype=float32)
    """
    rate_array, keep = _rate_and_keep(rate)
    _checks.check_mode(mode)
    energy = jnp.sum(jnp.square(jnp.asarray(w) * jnp.asarray(x)), axis=-1)
    factor = rate_array / keep if mode == "inverted" else rate_array * keep
    return _finish(factor * energy, rate, rate_array)


def mc_dropout_variance(w: ArrayLike, x: ArrayLike, rate: ArrayLike, num_samples: int) -> jax.Array:
    r"""Variance of the MC-dropout prediction of a linear unit averaged over T passes.

    The T passes use independent masks, so the single-pass variance is divided by T:

    .. math::
        \operatorname{Var}\Big[\frac{1}{T}\sum_{t=1}^T \sum_i w_i \tfrac{m_{ti}}{q} x_i\Big]
        = \frac{1}{T}\,\frac{p}{q}\sum_i (w_i x_i)^2.

    Args:
      w: weights ``[..., d]``.
      x: inputs ``[..., d]``.
      rate: drop probability in [0, 1].
      num_samples: number of passes T (``>= 1``).

    Returns:
      The variance of the T-pass average ``[...]``.

    Raises:
      ValueError: ``num_samples < 1``.

    References:
      Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
      Uncertainty in Deep Learning", ICML 2016.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> theory.mc_dropout_variance(jnp.ones(2), jnp.ones(2), 0.5, 4)
      Array(0.5, dtype=float32)
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    return preactivation_variance(w, x, rate) / num_samples


# --- Linear regression: dropout as adaptive ridge ------------------------------------


def dropout_regression_loss(w: ArrayLike, x: ArrayLike, y: ArrayLike, rate: ArrayLike) -> jax.Array:
    r"""Expected squared loss of linear regression with inverted dropout on the inputs.

    With an independent mask for every example and feature,
    :math:`L_\text{drop}(w) = \frac{1}{2n}\sum_i (y_i - \sum_j w_j \tfrac{m_{ij}}{q} x_{ij})^2`
    has expectation the plain loss plus a ridge penalty scaled per feature by
    its second moment:

    .. math::
        \mathbb{E}[L_\text{drop}(w)] = \frac{1}{2n}\sum_i (y_i - w^\top x_i)^2
        + \frac{p}{2nq}\sum_i \sum_j w_j^2 x_{ij}^2.

    Args:
      w: weights ``[d]``.
      x: design matrix ``[n, d]``.
      y: targets ``[n]``.
      rate: drop probability in [0, 1).

    Returns:
      The expected loss, a scalar.

    References:
      Wager, Wang & Liang, "Dropout Training as Adaptive Regularization", NeurIPS 2013.
      Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting", JMLR 2014 (section 9.1, linear regression).

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> theory.dropout_regression_loss(jnp.ones(2), jnp.ones((3, 2)), jnp.ones(3), 0.5).shape
      ()
    """
    rate_array, keep = _rate_and_keep(rate)
    w, x, y = jnp.asarray(w), jnp.asarray(x), jnp.asarray(y)
    n = x.shape[0]
    plain = jnp.sum(jnp.square(y - x @ w)) / (2 * n)
    penalty = rate_array / (2 * n * keep) * jnp.sum(jnp.square(x) @ jnp.square(w))
    return _finish(plain + penalty, rate, rate_array)


def dropout_regression_hessian(x: ArrayLike, rate: ArrayLike) -> jax.Array:
    r"""Hessian in ``w`` of :func:`dropout_regression_loss` (it does not depend on ``w``).

    .. math::
        \nabla^2_w\,\mathbb{E}[L_\text{drop}] = \frac{1}{n} X^\top X
        + \frac{p}{q}\,\frac{1}{n}\operatorname{diag}(X^\top X),

    the plain Hessian plus a positive semidefinite diagonal: dropout only adds
    curvature, most along features with a large second moment.

    Args:
      x: design matrix ``[n, d]``.
      rate: drop probability in [0, 1).

    Returns:
      The Hessian ``[d, d]``.

    References:
      Wager, Wang & Liang, "Dropout Training as Adaptive Regularization", NeurIPS 2013.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> theory.dropout_regression_hessian(jnp.ones((3, 2)), 0.5).shape
      (2, 2)
    """
    rate_array, keep = _rate_and_keep(rate)
    x = jnp.asarray(x)
    gram = x.T @ x / x.shape[0]
    return _finish(gram + rate_array / keep * jnp.diag(jnp.diag(gram)), rate, rate_array)


def dropout_regression_minimizer(x: ArrayLike, y: ArrayLike, rate: ArrayLike) -> jax.Array:
    r"""Minimizer of :func:`dropout_regression_loss`: a generalized ridge solution.

    Setting the gradient to zero,

    .. math::
        w^\star = \Big(X^\top X + \frac{p}{q}\operatorname{diag}(X^\top X)\Big)^{-1} X^\top y,

    ridge regression whose penalty on :math:`w_j` is :math:`\frac{p}{q}\sum_i x_{ij}^2`.

    Args:
      x: design matrix ``[n, d]`` (``X^T X`` invertible, or ``rate > 0`` with no
        all-zero column).
      y: targets ``[n]``.
      rate: drop probability in [0, 1).

    Returns:
      The weights ``[d]``.

    References:
      Wager, Wang & Liang, "Dropout Training as Adaptive Regularization", NeurIPS 2013.
      Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting", JMLR 2014 (section 9.1).

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> theory.dropout_regression_minimizer(jnp.eye(2), jnp.ones(2), 0.5)
      Array([0.5, 0.5], dtype=float32)
    """
    rate_array, keep = _rate_and_keep(rate)
    x, y = jnp.asarray(x), jnp.asarray(y)
    gram = x.T @ x
    system = gram + rate_array / keep * jnp.diag(jnp.diag(gram))
    return _finish(jnp.linalg.solve(system, x.T @ y), rate, rate_array)


# --- Jensen gap ----------------------------------------------------------------------


def jensen_gap_square(x: ArrayLike, rate: ArrayLike) -> jax.Array:
    r"""Jensen gap of :math:`\phi(z) = z^2` for one input with unit weight, inverted dropout.

    With :math:`z = m x / q`, :math:`\mathbb{E}[z^2] = x^2/q` and :math:`\mathbb{E}[z] = x`:

    .. math::
        \mathbb{E}[\phi(z)] - \phi(\mathbb{E}[z]) = x^2\,\frac{p}{q}.

    Args:
      x: input(s) ``[...]``, one independent unit per element.
      rate: drop probability in [0, 1).

    Returns:
      The gap ``[...]``.

    References:
      Baldi & Sadowski, "Understanding Dropout", NeurIPS 2013.

    Examples:
      >>> from dropout_lab import theory
      >>> float(theory.jensen_gap_square(2.0, 0.5))
      4.0
    """
    rate_array, keep = _rate_and_keep(rate)
    return _finish(jnp.square(x) * rate_array / keep, rate, rate_array)


def jensen_gap_relu(x: ArrayLike, rate: ArrayLike, bias: ArrayLike = 0.0) -> jax.Array:
    r"""Exact Jensen gap of ReLU for one input with unit weight and a bias, inverted dropout.

    With :math:`z = m x / q + b`, the two outcomes of the mask give

    .. math::
        \mathbb{E}[\operatorname{relu}(z)] - \operatorname{relu}(\mathbb{E}[z])
        = q\,\operatorname{relu}(x/q + b) + p\,\operatorname{relu}(b) - \operatorname{relu}(x + b).

    For ``bias = 0`` the gap is exactly 0 (ReLU is positively homogeneous), which is
    why "inverted dropout matches train and test after ReLU" looks true for one input;
    with a bias, or with several inputs (see :func:`exact_mask_expectation`), it is not.

    Args:
      x: input(s) ``[...]``.
      rate: drop probability in [0, 1).
      bias: bias ``b`` (broadcast against ``x``).

    Returns:
      The gap ``[...]`` (always >= 0: ReLU is convex).

    References:
      Baldi & Sadowski, "Understanding Dropout", NeurIPS 2013.

    Examples:
      >>> from dropout_lab import theory
      >>> float(theory.jensen_gap_relu(1.0, 0.5)), float(theory.jensen_gap_relu(1.0, 0.5, -0.5))
      (0.0, 0.25)
    """
    rate_array, keep = _rate_and_keep(rate)
    x, bias = jnp.asarray(x), jnp.asarray(bias)
    safe_keep = jnp.where(keep > 0, keep, 1.0)
    train = keep * jax.nn.relu(x / safe_keep + bias) + rate_array * jax.nn.relu(bias)
    return _finish(train - jax.nn.relu(x + bias), rate, rate_array)


def jensen_gap_mc(
    key: ArrayLike,
    phi: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    rate: ArrayLike,
    *,
    num_samples: int,
    w: ArrayLike | None = None,
    bias: ArrayLike = 0.0,
) -> tuple[jax.Array, jax.Array]:
    r"""Monte Carlo estimate of the Jensen gap of any nonlinearity under inverted dropout.

    Draws :math:`T` masks with :func:`dropout_lab.dropout` and averages

    .. math::
        \widehat{\Delta} = \frac{1}{T}\sum_{t=1}^T \phi(z_t) - \phi(w^\top x + b),
        \qquad z_t = w^\top \operatorname{dropout}_t(x) + b,

    an unbiased estimate of :math:`\mathbb{E}[\phi(z)] - \phi(\mathbb{E}[z])`, returned
    with its standard error :math:`\hat\sigma_\phi/\sqrt{T}`.

    Args:
      key: a PRNG key.
      phi: elementwise nonlinearity, e.g. ``jnp.square`` or ``jax.nn.relu``.
      x: inputs ``[d]``.
      rate: drop probability in [0, 1).
      num_samples: number of masks T (static).
      w: weights ``[d]``; ``None`` means all ones.
      bias: scalar bias ``b``.

    Returns:
      ``(estimate, standard_error)``, two scalars.

    Raises:
      TypeError: ``key`` is not a PRNG key or ``x`` is not floating point.
      ValueError: a concrete rate outside [0, 1].

    References:
      Baldi & Sadowski, "Understanding Dropout", NeurIPS 2013.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> gap, err = theory.jensen_gap_mc(
      ...     jax.random.key(0), jnp.square, jnp.ones(1), 0.5, num_samples=100)
      >>> gap.shape, err.shape
      ((), ())
    """
    _checks.check_key(key)
    x = _checks.check_float_array(x)
    _checks.check_rate(rate)
    w = jnp.ones_like(x) if w is None else jnp.asarray(w, x.dtype)
    keys = jax.random.split(_checks.as_key(key), num_samples)
    z = jax.vmap(lambda k: jnp.dot(w, dropout(k, x, rate)) + bias)(keys)
    values = phi(z) - phi(jnp.dot(w, x) + bias)
    return jnp.mean(values), jnp.std(values, ddof=1) / math.sqrt(num_samples)


def exact_mask_expectation(
    fn: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    rate: ArrayLike,
    *,
    mode: str = "inverted",
) -> jax.Array:
    r"""Exact expectation of ``fn(dropout(x))`` over all :math:`2^d` masks (no sampling).

    .. math::
        \mathbb{E}[f(\tilde x)] = \sum_{m \in \{0,1\}^d} q^{|m|} p^{d-|m|}\, f(\tilde x_m),
        \qquad \tilde x_m = m \odot x / q \ \text{(inverted)}\ \text{or}\ m \odot x
        \ \text{(classic)}.

    Args:
      fn: function of the dropped inputs ``[d]`` returning an array ``[...]``.
      x: inputs ``[d]``, ``d <= 20``.
      rate: drop probability in [0, 1).
      mode: ``"inverted"`` or ``"classic"``.

    Returns:
      The expectation ``[...]``.

    Raises:
      ValueError: ``x`` is not 1-D or has more than 20 elements.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> theory.exact_mask_expectation(jnp.sum, jnp.ones(3), 0.5)
      Array(3., dtype=float32)
    """
    x = _checks.check_float_array(x)
    _checks.check_mode(mode)
    if x.ndim != 1 or x.shape[0] > 20:
        raise ValueError(f"x must be 1-D with at most 20 elements, got shape {x.shape}.")
    rate_array, keep = _rate_and_keep(rate)
    d = x.shape[0]
    masks = (jnp.arange(2**d)[:, None] >> jnp.arange(d)) & 1 == 1
    num_kept = jnp.sum(masks, axis=1)
    probs = keep**num_kept * rate_array ** (d - num_kept)
    scaled = x / jnp.where(keep > 0, keep, 1.0) if mode == "inverted" else x
    values = jax.vmap(fn)(jnp.where(masks, scaled[None, :], jnp.zeros((), x.dtype)))
    expectation = jnp.tensordot(probs.astype(values.dtype), values, axes=1)
    return _finish(expectation, rate, rate_array)


# --- Paths and ensembles -------------------------------------------------------------


def expected_active_paths(widths: Sequence[int], rate: ArrayLike) -> jax.Array:
    r"""Expected number of active input-output paths in a fully connected net.

    ``widths = (d_in, h_1, ..., h_L, d_out)`` with dropout on the :math:`L` hidden
    layers. A path visits one unit per hidden layer and is active when all :math:`L`
    are kept, which happens with probability :math:`q^L`; by linearity

    .. math::
        \mathbb{E}[N_\text{active}] = N_\text{total}\,q^L,
        \qquad N_\text{total} = d_\text{in}\Big(\prod_{l=1}^L h_l\Big) d_\text{out},

    the "exponentially many thinned networks sharing weights" of Srivastava et al.

    Args:
      widths: layer widths, at least input and output (static ints).
      rate: drop probability in [0, 1].

    Returns:
      The expected number of active paths, a scalar.

    Raises:
      ValueError: fewer than two widths, or a width below 1.

    References:
      Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting", JMLR 2014.

    Examples:
      >>> from dropout_lab import theory
      >>> float(theory.expected_active_paths((2, 4, 4, 1), 0.5))
      8.0
    """
    widths = tuple(int(width) for width in widths)
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must hold at least two positive ints, got {widths}.")
    rate_array, keep = _rate_and_keep(rate)
    num_hidden = len(widths) - 2
    return _finish(float(math.prod(widths)) * keep**num_hidden, rate, rate_array)


class Ambiguity(NamedTuple):
    """Both sides of the ambiguity decomposition (see :func:`ambiguity_decomposition`)."""

    individual_error: jax.Array
    ensemble_error: jax.Array
    diversity: jax.Array
    ambiguity: jax.Array


def ambiguity_decomposition(predictions: ArrayLike, labels: ArrayLike) -> Ambiguity:
    r"""Ambiguity decomposition of an ensemble of T sub-networks under squared loss.

    With :math:`\bar f = \frac1T\sum_t f_t`, the identity

    .. math::
        \underbrace{\frac{1}{T}\sum_t (f_t - y)^2}_{E_\text{ind}}
        - \underbrace{(\bar f - y)^2}_{E_\text{ens}}
        = \frac{T-1}{2T}\, D, \qquad D = \frac{1}{T(T-1)}\sum_{t \ne s} (f_t - f_s)^2,

    holds for every data point (and so for their mean). ``ambiguity`` is the right-hand
    side computed from the pairwise differences, independently of the left-hand side.
    For 0/1 predictions, :math:`D` is the pairwise disagreement rate. Applied to
    dropout sub-networks, the ensemble (MC-dropout average) gains exactly the
    ambiguity over its average member.

    Args:
      predictions: ``[num_samples, ...]``, one prediction per sub-network, T >= 2.
      labels: targets ``[...]`` (broadcast against ``predictions[0]``).

    Returns:
      :class:`Ambiguity` of scalars (each averaged over the data): ``individual_error``
      :math:`E_\text{ind}`, ``ensemble_error`` :math:`E_\text{ens}`, ``diversity``
      :math:`D` and ``ambiguity`` :math:`\frac{T-1}{2T}D`.

    Raises:
      ValueError: fewer than two predictions.

    References:
      Krogh & Vedelsby, "Neural Network Ensembles, Cross Validation, and Active
      Learning", NeurIPS 1995.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> out = theory.ambiguity_decomposition(jnp.array([[0.0], [1.0]]), jnp.zeros(1))
      >>> float(out.individual_error - out.ensemble_error), float(out.ambiguity)
      (0.25, 0.25)
    """
    predictions = jnp.asarray(predictions)
    num = predictions.shape[0]
    if num < 2:
        raise ValueError(f"need at least two predictions, got {num}.")
    labels = jnp.broadcast_to(jnp.asarray(labels, predictions.dtype), predictions.shape[1:])
    individual = jnp.mean(jnp.square(predictions - labels[None]))
    ensemble = jnp.mean(jnp.square(jnp.mean(predictions, axis=0) - labels))
    # Sum over s of mean_n (f_t - f_s)^2 for each t, one t at a time (memory O(T n)).
    data_axes = tuple(range(1, predictions.ndim))
    pair_sums = lax.map(
        lambda f_t: jnp.sum(jnp.mean(jnp.square(f_t[None] - predictions), axis=data_axes)),
        predictions,
    )
    diversity = jnp.sum(pair_sums) / (num * (num - 1))
    return Ambiguity(individual, ensemble, diversity, (num - 1) / (2 * num) * diversity)


def expected_ambiguity(w: ArrayLike, x: ArrayLike, rate: ArrayLike, num_samples: int) -> jax.Array:
    r"""Expected ambiguity of T dropout passes of a linear unit (inverted dropout).

    For i.i.d. passes, :math:`\mathbb{E}[D] = 2\operatorname{Var}[f]`, so

    .. math::
        \mathbb{E}[E_\text{ind} - E_\text{ens}] = \frac{T-1}{T}\,\frac{p}{q}\sum_i (w_i x_i)^2:

    the single-pass variance minus the variance left after averaging T passes
    (:func:`preactivation_variance` minus :func:`mc_dropout_variance`).

    Args:
      w: weights ``[..., d]``.
      x: inputs ``[..., d]``.
      rate: drop probability in [0, 1).
      num_samples: number of passes T (``>= 1``).

    Returns:
      The expected ambiguity ``[...]``.

    References:
      Krogh & Vedelsby, "Neural Network Ensembles, Cross Validation, and Active
      Learning", NeurIPS 1995.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropout_lab import theory
      >>> theory.expected_ambiguity(jnp.ones(2), jnp.ones(2), 0.5, 2)
      Array(1., dtype=float32)
    """
    return preactivation_variance(w, x, rate) - mc_dropout_variance(w, x, rate, num_samples)


# --- BatchNorm after dropout: variance shift -----------------------------------------


def bn_train_statistics(
    mean: ArrayLike, variance: ArrayLike, rate: ArrayLike, *, mode: str = "inverted"
) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance that BatchNorm sees in training when its input went through dropout.

    For an input with mean :math:`\mu` and variance :math:`\sigma^2` (any distribution;
    Li et al. take :math:`x \sim \mathcal N(\mu, \sigma^2)`):

    .. math::
        \text{classic } (y = m x):\quad \mathbb{E}[y] = q\mu,\quad
        \operatorname{Var}[y] = q\sigma^2 + q(1-q)\mu^2;

        \text{inverted } (y = m x / q):\quad \mathbb{E}[y] = \mu,\quad
        \operatorname{Var}[y] = \sigma^2/q + (1-q)\mu^2/q.

    Args:
      mean: input mean :math:`\mu` ``[...]``.
      variance: input variance :math:`\sigma^2` ``[...]``.
      rate: drop probability in [0, 1).
      mode: ``"inverted"`` or ``"classic"``.

    Returns:
      ``(mean, variance)`` of the dropped input ``[...]``.

    References:
      Li, Chen, Hu & Yang, "Understanding the Disharmony between Dropout and Batch
      Normalization by Variance Shift", CVPR 2019.

    Examples:
      >>> from dropout_lab import theory
      >>> [float(v) for v in theory.bn_train_statistics(0.0, 1.0, 0.5)]
      [0.0, 2.0]
    """
    rate_array, keep = _rate_and_keep(rate)
    _checks.check_mode(mode)
    mean, variance = jnp.asarray(mean), jnp.asarray(variance)
    second_moment = variance + jnp.square(mean)
    if mode == "classic":
        out_mean, out_var = keep * mean, keep * second_moment - jnp.square(keep * mean)
    else:
        out_mean, out_var = mean, second_moment / keep - jnp.square(mean)
    return _finish(out_mean, rate, rate_array), _finish(out_var, rate, rate_array)


class BatchNormShift(NamedTuple):
    """Test-time shift of a BatchNorm output (see :func:`bn_test_shift`)."""

    mean_shift: jax.Array
    variance_ratio: jax.Array


def bn_test_shift(
    mean: ArrayLike,
    variance: ArrayLike,
    rate: ArrayLike,
    *,
    case: str,
    gamma: ArrayLike = 1.0,
    eps: float = 0.0,
) -> BatchNormShift:
    r"""Test-time shift of a BatchNorm output placed after dropout.

    BatchNorm keeps the training statistics :math:`(\mu_\text{tr}, \sigma^2_\text{tr})`
    of :func:`bn_train_statistics` and at test time normalizes an input with mean
    :math:`\mu_\text{te}` and variance :math:`\sigma^2_\text{te}`. Its output
    :math:`\gamma (y - \mu_\text{tr})/\sqrt{\sigma^2_\text{tr}+\epsilon} + \beta`
    then has

    .. math::
        \Delta = \frac{\gamma(\mu_\text{te} - \mu_\text{tr})}{\sqrt{\sigma^2_\text{tr}+\epsilon}}
        \ \text{(mean shift)},\qquad
        \frac{\sigma^2_\text{te}}{\sigma^2_\text{tr}}\ \text{(variance ratio, test / train)}.

    Cases:

    * ``"classic_unscaled"`` (a): classic dropout switched off at test without
      scaling, :math:`y = x`:
      :math:`\Delta = \gamma\mu(1-q)/\sqrt{q\sigma^2 + q(1-q)\mu^2 + \epsilon}`,
      ratio :math:`\sigma^2/(q\sigma^2 + q(1-q)\mu^2)`.
    * ``"classic"`` (b): classic dropout scaled by q at test, :math:`y = qx`: no mean
      shift, ratio :math:`q\sigma^2/(\sigma^2 + (1-q)\mu^2)`.
    * ``"inverted"`` (c): :math:`y = x`: no mean shift, the same ratio
      :math:`q\sigma^2/(\sigma^2 + (1-q)\mu^2) < 1`, Li et al.'s variance shift.

    Args:
      mean: input mean :math:`\mu` ``[...]`` (before dropout).
      variance: input variance :math:`\sigma^2` ``[...]``.
      rate: drop probability in [0, 1).
      case: ``"classic_unscaled"``, ``"classic"`` or ``"inverted"``.
      gamma: BatchNorm scale ``[...]``.
      eps: BatchNorm epsilon.

    Returns:
      :class:`BatchNormShift` with ``mean_shift`` and ``variance_ratio`` ``[...]``.

    Raises:
      ValueError: an unknown ``case``.

    References:
      Li, Chen, Hu & Yang, "Understanding the Disharmony between Dropout and Batch
      Normalization by Variance Shift", CVPR 2019.

    Examples:
      >>> from dropout_lab import theory
      >>> shift = theory.bn_test_shift(1.0, 1.0, 0.5, case="classic_unscaled")
      >>> round(float(shift.mean_shift), 4)
      0.5774
    """
    if case not in BN_CASES:
        raise ValueError(f"case={case!r} is not one of {BN_CASES}.")
    rate_array, keep = _rate_and_keep(rate)
    mean, variance = jnp.asarray(mean), jnp.asarray(variance)
    train_mode = "inverted" if case == "inverted" else "classic"
    train_mean, train_var = bn_train_statistics(mean, variance, rate, mode=train_mode)
    if case == "classic":
        test_mean, test_var = keep * mean, jnp.square(keep) * variance
    else:
        test_mean, test_var = mean, variance
    mean_shift = jnp.asarray(gamma) * (test_mean - train_mean) / jnp.sqrt(train_var + eps)
    return BatchNormShift(
        _finish(mean_shift, rate, rate_array), _finish(test_var / train_var, rate, rate_array)
    )
