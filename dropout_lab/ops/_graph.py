"""DropEdge and DropNode for graph networks, with static shapes (jit-friendly).

Nothing here returns a variable-size edge list: dropped edges keep their slot with a
``False`` mask and a zero weight, so the output shapes depend only on the input shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropout_lab import _checks
from dropout_lab.ops._bernoulli import check_impl, dropout, keep_mask


class EdgeDrop(NamedTuple):
    """Result of :func:`drop_edge`.

    Attributes:
      mask: ``[num_edges]`` bool, True for kept edges.
      edge_weight: ``[num_edges]`` weights, 0 for dropped edges (GCN-normalized when
        ``normalize=True``).
      self_loop_weight: ``[num_nodes]`` weights of the added self-loops when
        ``normalize=True``, else ``None``.
    """

    mask: jax.Array
    edge_weight: jax.Array
    self_loop_weight: jax.Array | None


class NodeDrop(NamedTuple):
    """Result of :func:`drop_node`.

    Attributes:
      x: ``[num_nodes, ...]`` features, rows of dropped nodes zero.
      node_mask: ``[num_nodes]`` bool, True for kept nodes.
      edge_mask: ``[num_edges]`` bool, True for edges whose two ends are kept (``None``
        without ``edge_index``).
    """

    x: jax.Array
    node_mask: jax.Array
    edge_mask: jax.Array | None


def _check_edge_index(edge_index: ArrayLike) -> jax.Array:
    edge_index = jnp.asarray(edge_index)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must be [2, num_edges], got shape {edge_index.shape}.")
    if not jnp.issubdtype(edge_index.dtype, jnp.integer):
        raise TypeError(f"edge_index must be integer, got {edge_index.dtype}.")
    return edge_index


def gcn_normalize_edges(
    edge_index: ArrayLike, edge_weight: ArrayLike, num_nodes: int
) -> tuple[jax.Array, jax.Array]:
    r"""GCN normalization :math:`\hat D^{-1/2}(A + I)\hat D^{-1/2}` on an edge list.

    .. math:: \hat w_{ij} = \frac{w_{ij}}{\sqrt{\hat d_i \hat d_j}},\qquad
        \hat d_j = 1 + \sum_{i \to j} w_{ij}

    Degrees are the weighted in-degrees (the target, ``edge_index[1]``, aggregates, as
    in PyG's ``gcn_norm``) plus the self-loop, so a dropped edge (weight 0) no longer
    counts.

    Args:
      edge_index: ``[2, num_edges]`` integer (source, target) pairs.
      edge_weight: ``[num_edges]`` weights.
      num_nodes: number of nodes (static).

    Returns:
      ``(edge_weight [num_edges], self_loop_weight [num_nodes])``.

    References:
      Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional
      Networks", ICLR 2017.
    """
    edge_index = _check_edge_index(edge_index)
    edge_weight = jnp.asarray(edge_weight)
    src, dst = edge_index[0], edge_index[1]
    degree = jnp.ones(num_nodes, edge_weight.dtype).at[dst].add(edge_weight)
    inv_sqrt = jax.lax.rsqrt(degree)
    return inv_sqrt[src] * edge_weight * inv_sqrt[dst], 1.0 / degree


def drop_edge(
    key: ArrayLike | None,
    edge_index: ArrayLike,
    rate: ArrayLike,
    *,
    edge_weight: ArrayLike | None = None,
    num_nodes: int | None = None,
    undirected: bool = False,
    normalize: bool = False,
    deterministic: bool = False,
    impl: str = "exact",
) -> EdgeDrop:
    r"""DropEdge (Rong et al. 2020): drops each edge with probability ``rate``.

    .. math:: \tilde w_e = m_e\, w_e,\qquad m_e \sim \text{Bernoulli}(1 - \text{rate})

    As in the paper and PyG's ``dropout_edge``, kept edges are not rescaled. With
    ``undirected=True`` the edges :math:`(i, j)` and :math:`(j, i)` share one draw (the
    key is folded with the unordered pair), as PyG's ``force_undirected``. With
    ``normalize=True`` the returned weights are the GCN-normalized weights of the
    dropped graph plus self-loops (:func:`gcn_normalize_edges`), re-normalized for
    every new mask as the paper does. Rate 1 drops every edge.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      edge_index: ``[2, num_edges]`` integer (source, target) pairs.
      rate: drop probability of an edge, in [0, 1], possibly traced.
      edge_weight: ``[num_edges]`` floating weights (default ones).
      num_nodes: number of nodes; required with ``normalize``.
      undirected: drop both directions of an edge together.
      normalize: return GCN-normalized weights and self-loop weights.
      deterministic: evaluation mode: keep every edge.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      An :class:`EdgeDrop` of static shapes.

    Raises:
      ValueError: a concrete rate outside [0, 1], a bad ``edge_index`` shape, or
        ``normalize`` without ``num_nodes``.
      TypeError: ``edge_index`` is not integer or ``edge_weight`` not floating.

    References:
      Rong, Huang, Xu & Huang, "DropEdge: Towards Deep Graph Convolutional Networks
      on Node Classification", ICLR 2020.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> edges = jnp.array([[0, 1, 1, 2], [1, 0, 2, 1]])
      >>> out = dl.drop_edge(jax.random.key(0), edges, 0.5, num_nodes=3, normalize=True)
      >>> out.mask.shape, out.edge_weight.dtype, out.self_loop_weight.shape
      ((4,), dtype('float32'), (3,))
    """
    _checks.check_key(key, deterministic=deterministic)
    edge_index = _check_edge_index(edge_index)
    num_edges = edge_index.shape[1]
    rate_array = _checks.check_rate(rate)
    check_impl(impl)
    if normalize and num_nodes is None:
        raise ValueError("normalize=True needs num_nodes (a static int).")
    if edge_weight is None:
        edge_weight = jnp.ones(num_edges, jnp.float32)
    edge_weight = _checks.check_float_array(edge_weight, "edge_weight")
    if edge_weight.shape != (num_edges,):
        raise ValueError(f"edge_weight must be [{num_edges}], got shape {edge_weight.shape}.")

    keep = _checks.keep_probability(rate, rate_array)
    if deterministic:
        mask = jnp.ones(num_edges, bool)
    elif undirected:
        key = _checks.as_key(key)
        lo = jnp.minimum(edge_index[0], edge_index[1])
        hi = jnp.maximum(edge_index[0], edge_index[1])

        def pair_mask(a, b):
            pair_key = jax.random.fold_in(jax.random.fold_in(key, a), b)
            return keep_mask(pair_key, (), keep, impl)[0]

        mask = jax.vmap(pair_mask)(lo, hi)
    else:
        mask = keep_mask(_checks.as_key(key), (num_edges,), keep, impl)[0]
    weight = jnp.where(mask, edge_weight, jnp.zeros((), edge_weight.dtype))
    self_loop = None
    if normalize and num_nodes is not None:  # (normalize without num_nodes raised above)
        weight, self_loop = gcn_normalize_edges(edge_index, weight, num_nodes)
        self_loop = _checks.nan_if_invalid(self_loop, rate, rate_array)
    return EdgeDrop(mask, _checks.nan_if_invalid(weight, rate, rate_array), self_loop)


def drop_edge_dense(
    key: ArrayLike | None,
    adjacency: ArrayLike,
    rate: ArrayLike,
    *,
    symmetric: bool = False,
    normalize: bool = False,
    deterministic: bool = False,
    impl: str = "exact",
) -> jax.Array:
    r"""DropEdge on a dense adjacency matrix, optionally GCN-normalized.

    .. math:: \tilde A = M \odot A,\qquad \text{normalized: }
        \hat D^{-1/2}(\tilde A + I)\hat D^{-1/2},\ \hat D = \operatorname{diag}
        \big(1 + \textstyle\sum_j \tilde A_{ij}\big)

    Every entry is kept with probability ``1 - rate`` (no rescaling, as in the paper);
    with ``symmetric=True`` the mask is drawn on the upper triangle and mirrored, so an
    undirected graph stays undirected. Normalization (row degrees) happens after the
    drop, every time.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      adjacency: floating ``[num_nodes, num_nodes]`` (weighted) adjacency.
      rate: drop probability of an edge, in [0, 1], possibly traced.
      symmetric: one draw per unordered pair.
      normalize: return :math:`\hat D^{-1/2}(\tilde A + I)\hat D^{-1/2}`.
      deterministic: evaluation mode: no edge dropped.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      ``[num_nodes, num_nodes]`` with the dtype of ``adjacency``.

    Raises:
      ValueError: a concrete rate outside [0, 1], or ``adjacency`` is not square.
      TypeError: ``adjacency`` is not floating point.

    References:
      Rong, Huang, Xu & Huang, "DropEdge: Towards Deep Graph Convolutional Networks
      on Node Classification", ICLR 2020.
      Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional
      Networks", ICLR 2017.
    """
    _checks.check_key(key, deterministic=deterministic)
    adjacency = _checks.check_float_array(adjacency, "adjacency")
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ValueError(f"adjacency must be square [n, n], got shape {adjacency.shape}.")
    rate_array = _checks.check_rate(rate)
    check_impl(impl)
    if deterministic:
        a = adjacency
    else:
        keep = _checks.keep_probability(rate, rate_array)
        mask = keep_mask(_checks.as_key(key), adjacency.shape, keep, impl)[0]
        if symmetric:
            upper = jnp.triu(mask)
            mask = upper | jnp.triu(mask, 1).T
        a = jnp.where(mask, adjacency, jnp.zeros((), adjacency.dtype))
    if normalize:
        a = a + jnp.eye(a.shape[0], dtype=a.dtype)
        inv_sqrt = jax.lax.rsqrt(jnp.sum(a, axis=1))
        a = inv_sqrt[:, None] * a * inv_sqrt[None, :]
    return _checks.nan_if_invalid(a, rate, rate_array)


def drop_node(
    key: ArrayLike | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    edge_index: ArrayLike | None = None,
    rescale: bool = True,
    deterministic: bool = False,
    impl: str = "exact",
) -> NodeDrop:
    r"""DropNode: drops whole nodes (all their features) with probability ``rate``.

    .. math:: \tilde x_i = m_i\, x_i / q,\qquad m_i \sim \text{Bernoulli}(q)

    The features are :func:`dropout_lab.dropout` with every axis but the node axis in
    ``broadcast_dims`` (inverted scaling as in GRAND's DropNode; ``rescale=False``
    leaves kept rows unscaled). With ``edge_index`` it also returns the edge mask of
    PyG's ``dropout_node``: an edge survives when both its ends do.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      x: floating node features ``[num_nodes, ...]``.
      rate: drop probability of a node, in [0, 1], possibly traced.
      edge_index: optional ``[2, num_edges]`` integer (source, target) pairs.
      rescale: scale kept rows by :math:`1/q`.
      deterministic: evaluation mode: keep every node, ``x`` unchanged.
      impl: mask generator, ``"exact"`` (default), ``"bernoulli"`` or ``"fast"``, as
        in :func:`dropout_lab.dropout`.

    Returns:
      A :class:`NodeDrop` of static shapes.

    Raises:
      ValueError: a concrete rate outside [0, 1] or a bad ``edge_index`` shape.
      TypeError: ``x`` is not floating point or ``edge_index`` not integer.

    References:
      Rong, Huang, Xu & Huang, "DropEdge: Towards Deep Graph Convolutional Networks
      on Node Classification", ICLR 2020.
      Feng, Zhang, Dong, Han, Luan, Xu, Yang, Kharlamov & Tang, "Graph Random Neural
      Network for Semi-Supervised Learning on Graphs", NeurIPS 2020.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dropout_lab as dl
      >>> out = dl.drop_node(jax.random.key(0), jnp.ones((5, 2)), 0.2)
      >>> out.x.shape, out.node_mask.shape
      ((5, 2), (5,))
    """
    _checks.check_key(key, deterministic=deterministic)
    x = _checks.check_float_array(x)
    if x.ndim < 1:
        raise ValueError("x must have a node axis, got a scalar.")
    rate_array = _checks.check_rate(rate)
    check_impl(impl)
    broadcast_dims = tuple(range(1, x.ndim))
    if deterministic:
        node_mask = jnp.ones(x.shape[0], bool)
        y = _checks.nan_if_invalid(x, rate, rate_array)
    else:
        key = _checks.as_key(key)
        mode = "inverted" if rescale else "classic"
        y = dropout(key, x, rate, mode=mode, broadcast_dims=broadcast_dims, impl=impl)
        # The same key and mask shape as inside `dropout`: the same mask.
        keep = _checks.keep_probability(rate, rate_array)
        mask = keep_mask(key, _checks.mask_shape(x.shape, broadcast_dims), keep, impl)[0]
        node_mask = mask.reshape(x.shape[0])
    edge_mask = None
    if edge_index is not None:
        edge_index = _check_edge_index(edge_index)
        edge_mask = node_mask[edge_index[0]] & node_mask[edge_index[1]]
    return NodeDrop(y, node_mask, edge_mask)
