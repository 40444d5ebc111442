r"""Monte Carlo dropout: many stochastic passes of a function of a key.

Every function here takes ``fn(key) -> output`` (any pytree), splits one key into
``num_samples`` keys with ``jax.random.split`` and evaluates ``fn`` once per key. The
split is the same whatever ``chunk_size`` is, so sample ``i`` always sees
``jax.random.split(key, num_samples)[i]`` and a chunked run draws the same masks as an
unchunked run or a Python loop over those keys.

``fn`` is usually a Flax apply with dropout switched on::

    fn = lambda k: model.apply(params, x, deterministic=False, rngs={"dropout": k})

MC dropout switches on dropout and nothing else: BatchNorm stays on its running
averages (switching both to training mode, as ``train=True`` flags and NNX's
``model.train()`` do, normalizes each pass by its own batch statistics, the classic
MC-dropout pitfall). In linen the two are separate call arguments, so give the model
both and pass ``deterministic=False`` with ``use_running_average=True``; no
``batch_stats`` is updated, so ``mutable`` is not needed.

For NNX models, whose RNG state and modes live in the module, use :func:`nnx_fn` or
:func:`sample_nnx`: they switch on the dropout modules (``flax.nnx.Dropout`` and
``dropout_lab.nnx``'s) of a copy and leave every other module in its mode.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> import flax.linen as nn
  >>> import dropout_lab as dl
  >>> class Net(nn.Module):
  ...     @nn.compact
  ...     def __call__(self, x, *, use_running_average: bool, deterministic: bool):
  ...         x = nn.BatchNorm(use_running_average=use_running_average)(nn.Dense(8)(x))
  ...         x = dl.linen.Dropout(0.5, deterministic=deterministic)(x)
  ...         return nn.Dense(3)(x)
  >>> model, x = Net(), jnp.ones((4, 5))
  >>> variables = model.init(
  ...     jax.random.key(0), x, use_running_average=True, deterministic=True)
  >>> def fn(k):  # dropout on, BatchNorm on its running averages
  ...     return model.apply(variables, x, use_running_average=True, deterministic=False,
  ...                        rngs={"dropout": k})
  >>> probs_t = dl.mc.sample(fn, jax.random.key(1), 8, transform=jax.nn.softmax)
  >>> probs_t.shape, probs_t.dtype
  ((8, 4, 3), dtype('float32'))

These functions are not jitted themselves (``fn`` is an arbitrary Python callable);
wrap the call in ``jax.jit`` so that the passes run as one compiled program, e.g.
``jax.jit(lambda k: dl.mc.sample(fn, k, 100, chunk_size=25))(key)``.

References:
  Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
  Uncertainty in Deep Learning", ICML 2016.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from dropout_lab import _checks

__all__ = ["Moments", "mean", "nnx_fn", "sample", "sample_nnx", "sample_pool", "split_keys"]


class Moments(NamedTuple):
    """Running moments of the MC samples (each a pytree shaped like one output).

    Attributes:
      mean: sample mean over the ``num_samples`` passes.
      variance: sample variance, ``sum (y_t - mean)**2 / (num_samples - ddof)``.
    """

    mean: Any
    variance: Any


def _check_counts(num_samples: int, chunk_size: int | None) -> int:
    """Validates the static sample counts and returns the effective chunk size."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive Python int, got {num_samples!r}.")
    if chunk_size is None:
        return num_samples
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive Python int or None, got {chunk_size!r}.")
    return min(chunk_size, num_samples)


def split_keys(key: ArrayLike, num_samples: int) -> jax.Array:
    """The per-sample keys: ``jax.random.split(key, num_samples)``.

    Typed keys (``jax.random.key``) give typed keys; a legacy ``uint32`` key
    (``jax.random.PRNGKey``) gives legacy keys ``[num_samples, 2]``, the same bits.

    Args:
      key: a PRNG key, typed or legacy.
      num_samples: number of keys (a Python int).

    Returns:
      Key array ``[num_samples]`` (typed) or ``[num_samples, 2]`` (legacy).

    Raises:
      ValueError: ``num_samples`` is not a positive int, or ``key`` is not one key.
      TypeError: ``key`` is not a PRNG key.
    """
    _check_counts(num_samples, None)
    typed = _checks.as_key(key)
    keys = jax.random.split(typed, num_samples)
    if typed is key:
        return keys
    return jax.random.key_data(keys)


def _compose(fn: Callable, transform: Callable | None) -> Callable:
    if transform is None:
        return fn
    return lambda k: transform(fn(k))


def _shard_samples(tree: Any, sharding: Any, lead: int) -> Any:
    """Constrains axis ``lead`` of every leaf to ``sharding``'s one sample-axis entry."""
    if sharding is None:
        return tree
    if isinstance(sharding, NamedSharding):
        spec = sharding.spec
        out: Any = NamedSharding(sharding.mesh, P(*([None] * lead), *spec))
    elif isinstance(sharding, P):
        spec = sharding
        out = P(*([None] * lead), *spec)
    else:
        raise TypeError(f"sharding must be a NamedSharding or a PartitionSpec, got {sharding!r}.")
    if len(spec) != 1:
        raise ValueError(f"sharding must name the sample axis only (one entry), got {spec}.")
    return jax.lax.with_sharding_constraint(tree, out)


def sample(
    fn: Callable[[jax.Array], Any],
    key: ArrayLike,
    num_samples: int,
    *,
    chunk_size: int | None = None,
    transform: Callable[[Any], Any] | None = None,
    sharding: NamedSharding | P | None = None,
) -> Any:
    r"""Stacks ``num_samples`` stochastic passes ``transform(fn(k_t))``.

    .. math::
        y_t = \text{transform}(\text{fn}(k_t)),\qquad
        (k_1, \dots, k_T) = \texttt{jax.random.split}(\text{key}, T)

    Without ``chunk_size`` all passes run at once under ``jax.vmap``. With it, the
    keys are processed ``chunk_size`` at a time in sequence (``jax.lax.map`` over
    chunks, each vmapped), so only one chunk's intermediates are live at a time. When
    ``chunk_size`` does not divide ``num_samples`` the last chunk is padded with
    repeated keys whose passes are discarded (at most ``chunk_size - 1`` extra passes).
    The stacked output itself still holds all ``num_samples`` results; use
    :func:`mean` when only moments are needed.

    Pass ``t`` gets key ``t`` whatever ``chunk_size`` is, so the dropout masks, and
    every elementwise computation, are bit-identical between chunked, unchunked and
    looped runs. Contractions (matmuls) agree to float rounding only: XLA may pick a
    different kernel for a different batch size (measured on CPU: a few ulp).

    With ``sharding`` the passes are spread over devices: the keys and the stacked
    outputs are constrained to it along the sample axis (with ``chunk_size``, each
    chunk is spread, so make ``chunk_size`` a multiple of the axis size). Each
    device draws its own passes' masks; pass ``t`` still gets key ``t``, so the
    samples are the ones of the unsharded call.

    Args:
      fn: function of one PRNG key returning an array or pytree, e.g.
        ``lambda k: model.apply(params, x, deterministic=False, rngs={"dropout": k})``.
      key: a PRNG key (``jax.random.key`` or a legacy ``jax.random.PRNGKey``); ``fn``
        receives keys of the same kind.
      num_samples: number of passes ``T`` (a Python int).
      chunk_size: passes evaluated together (a Python int); ``None`` runs all at once.
      transform: applied to each pass before stacking, e.g. ``jax.nn.softmax``.
      sharding: how to spread the sample axis over a mesh: a ``NamedSharding`` with
        one spec entry, e.g. ``NamedSharding(mesh, P("data"))``, or a
        ``PartitionSpec`` such as ``P("data")`` under ``jax.set_mesh(mesh)``;
        ``None``: leave placement to the caller and XLA.

    Returns:
      The outputs stacked on a new leading axis: ``[num_samples, ...]`` per leaf.

    Raises:
      ValueError: ``num_samples`` or ``chunk_size`` is not a positive int, or
        ``sharding`` has more than one spec entry.
      TypeError: ``sharding`` is neither a ``NamedSharding`` nor a ``PartitionSpec``.

    References:
      Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
      Uncertainty in Deep Learning", ICML 2016.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> x = jnp.ones((4, 3))
      >>> fn = lambda k: dl.dropout(k, x, 0.5)
      >>> y = dl.mc.sample(fn, jax.random.key(0), 10, chunk_size=4)
      >>> y.shape, y.dtype
      ((10, 4, 3), dtype('float32'))
    """
    chunk = _check_counts(num_samples, chunk_size)
    keys = split_keys(key, num_samples)
    f = _compose(fn, transform)
    if chunk == num_samples:
        return _shard_samples(jax.vmap(f)(_shard_samples(keys, sharding, 0)), sharding, 0)
    # Every chunk has the same shape, so every pass runs the same compiled batched
    # computation as in the unchunked call (a smaller last chunk can round
    # differently); the padding passes reuse the first keys and are discarded.
    num_chunks = -(-num_samples // chunk)
    padded = jnp.concatenate([keys, keys[: num_chunks * chunk - num_samples]])
    padded = _shard_samples(padded.reshape((num_chunks, chunk, *keys.shape[1:])), sharding, 1)
    ys = _shard_samples(jax.lax.map(jax.vmap(f), padded), sharding, 1)
    return jax.tree.map(lambda y: y.reshape((-1, *y.shape[2:]))[:num_samples], ys)


def _pool_size(x_pool: Any) -> int:
    """The common leading size ``N`` of every leaf of ``x_pool``."""
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else -1 for leaf in jax.tree.leaves(x_pool)}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            "x_pool must be an array (or pytree of arrays) whose leaves share a leading "
            f"pool axis; got leading sizes {sorted(sizes)} (-1: a scalar leaf)."
        )
    return sizes.pop()


def sample_pool(
    fn: Callable[[jax.Array, Any], Any],
    key: ArrayLike,
    x_pool: Any,
    num_samples: int,
    *,
    pool_chunk_size: int | None = None,
    chunk_size: int | None = None,
    transform: Callable[[Any], Any] | None = None,
    reduce: Callable[[Any], Any] | None = None,
) -> Any:
    r"""MC passes over a pool of inputs, chunk by chunk, with the same keys for every chunk.

    The pool ``x_pool [N, ...]`` is cut into chunks of ``pool_chunk_size`` points, and
    each chunk ``x_c`` gets :func:`sample`'s passes with the *same* ``key``:

    .. math::
        y_{t, c} = \text{transform}(\text{fn}(k_t, x_c)),\qquad
        (k_1, \dots, k_T) = \texttt{jax.random.split}(\text{key}, T)

    so pass :math:`t` uses key :math:`k_t` for every chunk. With ``reduce`` (a function
    of one chunk's stacked passes ``[T, n, ...]`` returning per-point values
    ``[n, ...]``, e.g. ``dl.acquisition.bald``) only the reduced values are kept, so the
    memory of the call is set by ``pool_chunk_size`` (and ``chunk_size``), not by
    ``N``. The chunks run in sequence in a ``lax.fori_loop``; when ``pool_chunk_size``
    does not divide ``N`` the last chunk is the last ``pool_chunk_size`` points (it
    overlaps the previous one, and its values are the ones kept).

    **Consistent MC dropout.** BatchBALD scores points jointly, so pass :math:`t` must
    be the same sub-network for every pool point (Kirsch et al. 2019, who call this
    consistent MC dropout). Here the keys are shared across chunks; the masks are the
    same for every point when no mask depends on the position of a point in its
    chunk, i.e. when every dropout layer shares its mask over the batch axis:
    ``dl.dropout(key, h, rate, broadcast_dims=(0,))`` on ``h [batch, features]``, or
    ``dl.linen.Dropout(rate, broadcast_dims=(0,))`` / ``dl.nnx.Dropout``. The mask is
    then ``[1, features]``, drawn from ``k_t`` alone, and pass :math:`t` applies it to
    every point of every chunk: chunked and whole-pool runs give the same passes
    (bit for bit for elementwise work; matmuls to float rounding, see :func:`sample`).
    Train with per-example masks as usual; share the mask only for these passes.

    Args:
      fn: function ``fn(key, x_chunk)`` of one PRNG key and a chunk of inputs
        ``[n, ...]``, returning an array or pytree with the chunk axis first, e.g.
        ``lambda k, x: model.apply(params, x, deterministic=False, rngs={"dropout": k})``.
      key: a PRNG key, typed or legacy; every chunk receives the same split of it.
      x_pool: the pool ``[N, ...]`` (an array or a pytree whose leaves share ``N``).
      num_samples: number of passes ``T`` (a Python int).
      pool_chunk_size: pool points evaluated together (a Python int); ``None``
        evaluates the whole pool at once.
      chunk_size: passes evaluated together within a chunk (see :func:`sample`).
      transform: applied to each pass, e.g. ``jax.nn.softmax``.
      reduce: maps one chunk's ``[T, n, ...]`` passes to ``[n, ...]`` per-point values.

    Returns:
      Without ``reduce``: the passes ``[num_samples, N, ...]`` per leaf. With it: the
      reduced values ``[N, ...]`` per leaf.

    Raises:
      ValueError: bad counts, leaves of ``x_pool`` without a common leading axis, or a
        ``reduce`` whose output does not keep the chunk axis first.

    References:
      Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch
      Acquisition for Deep Bayesian Active Learning", NeurIPS 2019.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> fn = lambda k, x: dl.dropout(k, x, 0.5, broadcast_dims=(0,))
      >>> x_pool = jnp.ones((10, 3))
      >>> y = dl.mc.sample_pool(fn, jax.random.key(0), x_pool, 4, pool_chunk_size=4)
      >>> y.shape, y.dtype
      ((4, 10, 3), dtype('float32'))
      >>> s = dl.mc.sample_pool(fn, jax.random.key(0), x_pool, 4, pool_chunk_size=4,
      ...                       reduce=lambda y_t: y_t.var(axis=0).sum(axis=-1))
      >>> s.shape
      (10,)
    """
    _check_counts(num_samples, chunk_size)
    num_points = _pool_size(x_pool)
    chunk = num_points
    if pool_chunk_size is not None:
        if isinstance(pool_chunk_size, bool) or not isinstance(pool_chunk_size, int):
            raise ValueError(f"pool_chunk_size must be a Python int, got {pool_chunk_size!r}.")
        if pool_chunk_size < 1:
            raise ValueError(f"pool_chunk_size must be positive, got {pool_chunk_size}.")
        chunk = min(pool_chunk_size, num_points)

    def run(x_chunk: Any) -> Any:
        ys = sample(
            lambda k: fn(k, x_chunk), key, num_samples, chunk_size=chunk_size, transform=transform
        )
        return ys if reduce is None else reduce(ys)

    if chunk == num_points:
        return run(x_pool)
    axis = 1 if reduce is None else 0

    def take(start: Any) -> Any:
        return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, chunk), x_pool)

    shapes = jax.eval_shape(run, take(0))
    for leaf in jax.tree.leaves(shapes):
        if leaf.ndim <= axis or leaf.shape[axis] != chunk:
            raise ValueError(
                f"each output leaf must have the chunk axis ({chunk} points) at axis {axis}; "
                f"got shape {leaf.shape}. reduce must return per-point values [n, ...]."
            )

    def body(i: jax.Array, out: Any) -> Any:
        start = jnp.minimum(i * chunk, num_points - chunk)
        ys = run(take(start))
        return jax.tree.map(
            lambda o, y: jax.lax.dynamic_update_slice_in_dim(o, y, start, axis), out, ys
        )

    out = jax.tree.map(
        lambda s: jnp.zeros((*s.shape[:axis], num_points, *s.shape[axis + 1 :]), s.dtype), shapes
    )
    return jax.lax.fori_loop(0, -(-num_points // chunk), body, out)


def _promote(y: jax.Array) -> jax.Array:
    """Accumulate half-precision outputs in float32."""
    y = jnp.asarray(y)
    return y.astype(jnp.promote_types(y.dtype, jnp.float32))


def _chunk_moments(f: Callable, keys: jax.Array) -> tuple[jax.Array, Any, Any]:
    """Count, mean and sum of squared deviations of one chunk of passes."""
    ys = jax.tree.map(_promote, jax.vmap(f)(keys))
    mu = jax.tree.map(lambda y: jnp.mean(y, axis=0), ys)
    m2 = jax.tree.map(lambda y, m: jnp.sum(jnp.square(y - m), axis=0), ys, mu)
    return jnp.asarray(keys.shape[0], jnp.float32), mu, m2


def _combine(a: tuple, b: tuple) -> tuple:
    """Chan, Golub & LeVeque's pairwise update of (count, mean, M2)."""
    n_a, mu_a, m2_a = a
    n_b, mu_b, m2_b = b
    n = n_a + n_b
    w_b = n_b / n
    w_ab = n_a * n_b / n

    def mean_of(ma, mb):
        return ma + (mb - ma) * w_b.astype(ma.dtype)

    def m2_of(ma, mb, sa, sb):
        return sa + sb + jnp.square(mb - ma) * w_ab.astype(ma.dtype)

    return (
        n,
        jax.tree.map(mean_of, mu_a, mu_b),
        jax.tree.map(m2_of, mu_a, mu_b, m2_a, m2_b),
    )


def mean(
    fn: Callable[[jax.Array], Any],
    key: ArrayLike,
    num_samples: int,
    *,
    chunk_size: int | None = None,
    transform: Callable[[Any], Any] | None = None,
    ddof: int = 0,
) -> Moments:
    r"""Mean and variance of ``num_samples`` passes without storing them all.

    The passes use the same keys as :func:`sample`. Each chunk of ``chunk_size``
    passes is reduced to its mean and sum of squared deviations :math:`M_2`, and the
    chunks are merged in a ``lax.scan`` with the pairwise update (Chan et al. 1979):

    .. math::
        \delta = \bar y_b - \bar y_a,\quad
        \bar y = \bar y_a + \delta \tfrac{n_b}{n},\quad
        M_2 = M_{2,a} + M_{2,b} + \delta^2 \tfrac{n_a n_b}{n}

    so live memory is one chunk of outputs plus the running moments. The variance is
    :math:`M_2 / (T - \text{ddof})`; ``ddof=0`` (the default) is the MC-dropout
    convention :math:`\frac1T\sum_t y_t^2 - \bar y^2` of Gal & Ghahramani (2016).
    Half-precision outputs are accumulated in float32.

    Args:
      fn: function of one PRNG key returning an array or pytree.
      key: a PRNG key, typed or legacy.
      num_samples: number of passes ``T`` (a Python int).
      chunk_size: passes evaluated together; ``None`` evaluates all at once.
      transform: applied to each pass first, e.g. ``jax.nn.softmax``.
      ddof: delta degrees of freedom of the variance (0 or 1 usually).

    Returns:
      ``Moments(mean, variance)``, each shaped like one (transformed) output.

    Raises:
      ValueError: ``num_samples`` or ``chunk_size`` is not a positive int.

    References:
      Chan, Golub & LeVeque, "Updating Formulae and a Pairwise Algorithm for Computing
      Sample Variances", Stanford CS report STAN-CS-79-773, 1979.
      Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
      Uncertainty in Deep Learning", ICML 2016.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> fn = lambda k: dl.dropout(k, jnp.ones((4, 3)), 0.5)
      >>> m, v = dl.mc.mean(fn, jax.random.key(0), 10, chunk_size=4)
      >>> m.shape, v.dtype
      ((4, 3), dtype('float32'))
    """
    chunk = _check_counts(num_samples, chunk_size)
    keys = split_keys(key, num_samples)
    f = _compose(fn, transform)
    num_full, remainder = divmod(num_samples, chunk)
    full = keys[: num_full * chunk].reshape((num_full, chunk, *keys.shape[1:]))
    state = _chunk_moments(f, full[0])
    if num_full > 1:

        def step(carry, chunk_keys):
            return _combine(carry, _chunk_moments(f, chunk_keys)), None

        state, _ = jax.lax.scan(step, state, full[1:])
    if remainder:
        state = _combine(state, _chunk_moments(f, keys[num_full * chunk :]))
    _, mu, m2 = state
    variance = jax.tree.map(lambda s: s / jnp.asarray(num_samples - ddof, s.dtype), m2)
    return Moments(mu, variance)


def _dropout_on(model: Any) -> Any:
    """A view of ``model`` (sharing its variables) with only the dropout modules on."""
    from flax import nnx

    from dropout_lab import nnx as dl_nnx

    dropout_types = (nnx.Dropout, dl_nnx._Stochastic)
    return nnx.view(model, only=dropout_types, deterministic=False, raise_if_not_found=False)


def nnx_fn(model: Any, *args: Any, **kwargs: Any) -> Callable[[jax.Array], Any]:
    """A function of a key that calls an NNX model with dropout on and fresh RNG streams.

    Whatever mode ``model`` is in (after ``model.eval()`` too), the passes are
    stochastic: the dropout modules, ``flax.nnx.Dropout`` and every stochastic module
    of :mod:`dropout_lab.nnx`, are switched to ``deterministic=False`` in a view of
    the model (``nnx.view``), while BatchNorm and every other module keep their mode.
    For MC dropout put the model in ``model.eval()`` first, so that BatchNorm uses its
    running averages; in training mode it normalizes each pass by the batch's own
    statistics. ``model`` itself is not changed: its attributes, its RNG state and its
    batch statistics are the same after the calls as before. A ``deterministic=True``
    passed by the model's own code at call time still takes precedence.

    The view is split once (``nnx.split``) into its graph, its ``RngKey`` and
    ``RngCount`` variables and the rest. The returned ``fn(key)`` replaces the
    ``j``-th ``RngKey`` (in ``nnx.split``'s path order) by
    ``jax.random.fold_in(key, j)`` (split to its shape if it is a key array), resets
    the counts to zero, merges a fresh copy and returns ``copy(*args, **kwargs)``. The
    model's own RNG state is neither read nor advanced, each key gives its own masks,
    and ``fn`` can be vmapped over keys: pass it to :func:`sample` or :func:`mean`.
    State the call mutates in the copy (batch statistics) is discarded.

    Args:
      model: an ``nnx.Module``, in any mode (``model.eval()`` for MC dropout).
      *args: positional arguments of the call.
      **kwargs: keyword arguments of the call.

    Returns:
      ``fn(key) -> model(*args, **kwargs)`` with fresh RNG streams.
    """
    from flax import nnx

    # Flax types the states after the second as variadic: unpack them in two steps.
    graphdef, rng_keys, *states = nnx.split(_dropout_on(model), nnx.RngKey, nnx.RngCount, ...)
    rng_counts, rest = states
    old_keys, treedef = jax.tree.flatten(rng_keys)
    zero_counts = jax.tree.map(jnp.zeros_like, rng_counts)

    def reseeded(key: jax.Array, j: int, old: jax.Array) -> jax.Array:
        new = jax.random.fold_in(key, j)
        return new if old.shape == () else jax.random.split(new, old.shape)

    def fn(key: jax.Array) -> Any:
        key = _checks.as_key(key)
        new_keys = [reseeded(key, j, old) for j, old in enumerate(old_keys)]
        copy = nnx.merge(
            graphdef, jax.tree.unflatten(treedef, new_keys), zero_counts, rest, copy=True
        )
        return copy(*args, **kwargs)

    return fn


def sample_nnx(
    model: Any,
    x: Any,
    key: ArrayLike,
    num_samples: int,
    *,
    chunk_size: int | None = None,
    transform: Callable[[Any], Any] | None = None,
) -> Any:
    """:func:`sample` for an NNX model: ``num_samples`` passes of ``model(x)``.

    Each pass runs on a copy of ``model`` with its dropout modules switched on and its
    RNG streams reseeded from the pass's own key (see :func:`nnx_fn`): the passes are
    stochastic whatever mode the model is in, BatchNorm and every other module keep
    their mode (``model.eval()`` first, for running averages), the model is left
    untouched and the chunked run draws the same masks as the unchunked one (see
    :func:`sample`).

    Args:
      model: an ``nnx.Module``, in any mode (``model.eval()`` for MC dropout).
      x: the input (any pytree the model's ``__call__`` takes as its one argument).
      key: a PRNG key, typed or legacy.
      num_samples: number of passes ``T``.
      chunk_size: passes evaluated together; ``None`` evaluates all at once.
      transform: applied to each pass, e.g. ``jax.nn.softmax``.

    Returns:
      ``[num_samples, ...]`` per output leaf.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> import dropout_lab as dl
      >>> model = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
      ...                        dl.nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=1)))
      >>> model.eval()  # dropout is switched on for the passes all the same
      >>> y = dl.mc.sample_nnx(model, jnp.ones((4, 3)), jax.random.key(0), 8)
      >>> y.shape
      (8, 4, 2)
    """
    return sample(nnx_fn(model, x), key, num_samples, chunk_size=chunk_size, transform=transform)
