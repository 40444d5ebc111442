"""linen and NNX modules of the structured, recurrent, graph and learned variants."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dropout_lab as dl
from dropout_lab import linen as dln
from dropout_lab import nnx as dlx

KEY = jax.random.key(0)
X4 = jax.random.normal(jax.random.key(1), (2, 6, 6, 3)) + 5.0
X3 = jax.random.normal(jax.random.key(1), (2, 5, 4)) + 5.0
EDGES = jnp.array([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])

# (name, op(key, *inputs, **kw) with the module's options, module kwargs, inputs tuple)
CASES = [
    (
        "ChannelDropout",
        lambda k, x, **kw: dl.channel_dropout(k, x, 0.5, **kw),
        {"rate": 0.5},
        (X4,),
    ),
    (
        "DropBlock",
        lambda k, x, **kw: dl.dropblock(k, x, 0.3, block_size=3, **kw),
        {"rate": 0.3, "block_size": 3},
        (X4,),
    ),
    ("DropPath", lambda k, x, **kw: dl.drop_path(k, x, 0.5, **kw), {"rate": 0.5}, (X4,)),
    ("LockedDropout", lambda k, x, **kw: dl.locked_dropout(k, x, 0.5, **kw), {"rate": 0.5}, (X3,)),
    (
        "EmbeddingDropout",
        lambda k, x, **kw: dl.embedding_dropout(k, x, 0.5, **kw),
        {"rate": 0.5},
        (X3,),
    ),
    (
        "Zoneout",
        lambda k, a, b, **kw: dl.zoneout(k, a, b, 0.5, **kw),
        {"rate": 0.5},
        (X3, -X3),
    ),
    (
        "WeightDrop",
        lambda k, w, **kw: dl.weight_drop(k, w, 0.5, **kw),
        {"rate": 0.5},
        ({"hh": X3},),
    ),
    (
        "DropEdge",
        lambda k, e, **kw: dl.drop_edge(k, e, 0.5, num_nodes=5, normalize=True, **kw),
        {"rate": 0.5, "num_nodes": 5, "normalize": True},
        (EDGES,),
    ),
    ("DropNode", lambda k, x, **kw: dl.drop_node(k, x, 0.5, **kw), {"rate": 0.5}, (X3[0],)),
]


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("name,op,kwargs,inputs", CASES, ids=[c[0] for c in CASES])
def test_linen_module_matches_op(name, op, kwargs, inputs):
    module = getattr(dln, name)(**kwargs)
    variables = module.init(KEY, *inputs, deterministic=True)
    assert variables == {}
    # Training: the key from rng= or from the "dropout" stream gives the op's output.
    assert_trees_equal(module.apply({}, *inputs, deterministic=False, rng=KEY), op(KEY, *inputs))
    out = module.apply({}, *inputs, deterministic=False, rngs={"dropout": KEY})
    assert jax.tree.structure(out) == jax.tree.structure(op(KEY, *inputs))
    # Evaluation: the op's own deterministic output, from the call and from the field.
    expected = op(None, *inputs, deterministic=True)
    assert_trees_equal(module.apply({}, *inputs, deterministic=True), expected)
    fixed = getattr(dln, name)(**kwargs, deterministic=True)
    assert_trees_equal(fixed.apply({}, *inputs), expected)


@pytest.mark.parametrize("name,op,kwargs,inputs", CASES, ids=[c[0] for c in CASES])
def test_nnx_module_matches_op(name, op, kwargs, inputs):
    module = getattr(dlx, name)(**kwargs, rngs=nnx.Rngs(dropout=0))
    assert_trees_equal(module(*inputs, rngs=KEY), op(KEY, *inputs))
    # The stored stream gives fresh keys: two calls differ.
    first, second = module(*inputs), module(*inputs)
    leaves = zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True)
    assert any(not np.array_equal(a, b) for a, b in leaves)
    # Evaluation: the op's own deterministic output, from eval() and from the call.
    expected = op(None, *inputs, deterministic=True)
    module.eval()
    assert_trees_equal(module(*inputs), expected)
    module.train()
    assert_trees_equal(module(*inputs, deterministic=True), expected)


def test_linen_concrete_dropout_learns_through_its_regularizer():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic):
            drop = dln.ConcreteDropout(init_rate=0.2)
            dense = nn.Dense(2)
            y = dense(drop(x, deterministic))
            reg = drop.regularizer(dense.variables["params"], input_dim=x.shape[-1])
            return y, reg, drop.rate

    net = Net()
    x = jnp.ones((4, 3))
    variables = net.init({"params": KEY, "dropout": KEY}, x, False)
    assert variables["params"]["ConcreteDropout_0"]["rate_logit"].shape == ()
    _, reg, rate = net.apply(variables, x, False, rngs={"dropout": KEY})
    np.testing.assert_allclose(rate, 0.2, rtol=1e-6)
    kernel = variables["params"]["Dense_0"]
    np.testing.assert_allclose(
        reg, dl.concrete_dropout_regularizer(kernel, 0.2, input_dim=3), rtol=1e-5
    )

    def loss(params):
        y, reg, _ = net.apply({"params": params}, x, False, rngs={"dropout": KEY})
        return jnp.sum(y**2) + reg

    grads = jax.grad(loss)(variables["params"])
    g = float(grads["ConcreteDropout_0"]["rate_logit"])
    assert np.isfinite(g) and g != 0.0
    # Evaluation: the dense layer applied to the op's deterministic output (x itself).
    y_eval, _, _ = net.apply(variables, x, True)
    expected = dl.concrete_dropout(None, x, 0.2, deterministic=True) @ kernel["kernel"]
    np.testing.assert_allclose(y_eval, expected + kernel["bias"], rtol=1e-6)


def test_nnx_concrete_dropout():
    drop = dlx.ConcreteDropout(0.3, rngs=nnx.Rngs(dropout=0))
    np.testing.assert_allclose(drop.rate, 0.3, rtol=1e-6)
    x = jnp.ones((64,))
    np.testing.assert_array_equal(drop(x, rngs=KEY), dl.concrete_dropout(KEY, x, drop.rate))

    def loss(module):
        return jnp.mean(module(x, rngs=KEY)) + module.regularizer(jnp.ones(3), input_dim=64)

    grads = nnx.grad(loss)(drop)
    assert np.isfinite(grads.rate_logit[...]) and grads.rate_logit[...] != 0
    with pytest.raises(ValueError):
        dlx.ConcreteDropout(1.0)


def test_linen_variational_dense():
    layer = dln.VariationalDense(4)
    x = jax.random.normal(jax.random.key(1), (8, 3))
    variables = layer.init(KEY, x, deterministic=True)
    params = variables["params"]
    assert params["log_sigma2"].shape == params["kernel"].shape == (3, 4)
    np.testing.assert_array_equal(params["log_sigma2"], -10.0)
    y = layer.apply(variables, x, deterministic=False, rng=KEY)
    np.testing.assert_allclose(
        y,
        dl.variational_dense(KEY, x, params["kernel"], params["log_sigma2"], params["bias"]),
        rtol=1e-6,
    )
    kl = layer.apply(variables, method="kl")
    log_alpha = dl.variational_log_alpha(params["kernel"], params["log_sigma2"])
    np.testing.assert_allclose(kl, dl.variational_kl(log_alpha), rtol=1e-6)
    # Push one weight's noise up: it is pruned at evaluation.
    params = {**params, "log_sigma2": params["log_sigma2"].at[0, 0].set(20.0)}
    mask = layer.apply({"params": params}, method="pruning_mask")
    assert not mask[0, 0] and mask.sum() == 11
    y_eval = layer.apply({"params": params}, x, deterministic=True)
    np.testing.assert_allclose(
        y_eval, x @ jnp.where(mask, params["kernel"], 0) + params["bias"], rtol=1e-5
    )


def test_nnx_variational_linear():
    layer = dlx.VariationalLinear(3, 4, rngs=nnx.Rngs(params=0, dropout=1))
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = layer(x, rngs=KEY)
    np.testing.assert_allclose(
        y,
        dl.variational_dense(KEY, x, layer.kernel[...], layer.log_sigma2[...], layer.bias[...]),
        rtol=1e-6,
    )
    assert layer.kl() > 0 and layer.pruning_mask().all()
    grads = nnx.grad(lambda m: jnp.sum(m(x, rngs=KEY) ** 2) + m.kl())(layer)
    assert jnp.abs(grads.log_sigma2[...]).sum() > 0
    layer.eval()
    np.testing.assert_allclose(layer(x), x @ layer.kernel[...] + layer.bias[...], rtol=1e-5)
