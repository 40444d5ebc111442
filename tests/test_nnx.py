"""dropout_lab.nnx modules against flax.nnx's own Dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dropout_lab import nnx as dlnnx


class MLP(nnx.Module):
    def __init__(self, make_dropout, rngs):
        self.linear1 = nnx.Linear(5, 32, rngs=rngs)
        self.dropout = make_dropout(rngs)
        self.linear2 = nnx.Linear(32, 3, rngs=rngs)

    def __call__(self, x):
        return self.linear2(self.dropout(nnx.relu(self.linear1(x))))


def test_drop_in_replacement_for_flax_nnx_dropout():
    x = jax.random.normal(jax.random.key(1), (8, 5))
    ours = MLP(lambda r: dlnnx.Dropout(0.3, impl="bernoulli", rngs=r), nnx.Rngs(0))
    theirs = MLP(lambda r: nnx.Dropout(0.3, rngs=r), nnx.Rngs(0))
    for _ in range(2):  # the RNG stream advances identically
        np.testing.assert_array_equal(ours(x), theirs(x))
    ours.eval()
    theirs.eval()
    np.testing.assert_array_equal(ours(x), theirs(x))
    ours.train()
    assert not ours.dropout.deterministic


def test_nnx_call_overrides_and_errors():
    x = jnp.ones((4, 6))
    key = jax.random.key(5)
    a = dlnnx.Dropout(0.5)(x, rngs=key)
    b = dlnnx.Dropout(0.5, rngs=nnx.Rngs(9))(x, rngs=key)  # call-time key wins
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(dlnnx.Dropout(0.5)(x, deterministic=True), x)
    with pytest.raises(ValueError, match="no `rngs` argument was provided to Dropout"):
        dlnnx.Dropout(0.5)(x)
    with pytest.raises(ValueError, match="deterministic"):
        dlnnx.Dropout(0.5, deterministic=None)(x)
    view = nnx.view(dlnnx.Dropout(0.5, rngs=nnx.Rngs(0)), deterministic=True)
    np.testing.assert_array_equal(view(x), x)


def test_nnx_statistics_and_dtype():
    x = jnp.ones((512, 512), jnp.bfloat16)
    y = dlnnx.Dropout(0.3, rngs=nnx.Rngs(0))(x)
    assert y.dtype == jnp.bfloat16 and y.shape == x.shape
    assert abs(float((y != 0).mean()) - 0.7) < 5 * np.sqrt(0.21 / x.size)


@pytest.mark.parametrize(
    "make_dropout",
    [
        lambda r: dlnnx.Dropout(0.2, rngs=r),
        lambda r: dlnnx.Dropout(0.2, mode="classic", rngs=r),
        lambda r: dlnnx.GaussianDropout(0.2, rngs=r),
        lambda r: dlnnx.AlphaDropout(0.1, rngs=r),
    ],
)
def test_small_nnx_model_trains(make_dropout):
    _assert_trains(MLP(make_dropout, nnx.Rngs(0)))


def test_dropconnect_linear_trains():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layer = dlnnx.DropConnectLinear(5, 32, 0.2, rngs=rngs)
            self.out = nnx.Linear(32, 3, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.layer(x)))

    _assert_trains(Net(nnx.Rngs(0)))


def _assert_trains(model):
    x = jax.random.normal(jax.random.key(3), (64, 5))
    y = x[:, :3] * jnp.array([1.0, -2.0, 0.5])
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss(m):
            return jnp.mean((m(x) - y) ** 2)

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    def eval_loss():
        model.eval()
        value = float(jnp.mean((model(x) - y) ** 2))
        model.train()
        return value

    before = eval_loss()
    for _ in range(60):
        step(model, optimizer)
    assert eval_loss() < 0.5 * before
