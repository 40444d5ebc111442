"""dropout_lab.linen modules against flax.linen's own Dropout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dropout_lab as dl
from dropout_lab import linen as dln

KEY = jax.random.key(0)


class MLP(nn.Module):
    dropout_cls: type
    rate: float = 0.3
    kwargs: tuple = ()

    @nn.compact
    def __call__(self, x, deterministic):
        x = nn.relu(nn.Dense(32)(x))
        x = self.dropout_cls(self.rate, **dict(self.kwargs))(x, deterministic=deterministic)
        return nn.Dense(3)(x)


def test_drop_in_replacement_for_flax_dropout():
    x = jax.random.normal(jax.random.key(1), (8, 5))
    ours = MLP(dln.Dropout, kwargs=(("impl", "bernoulli"),))
    theirs = MLP(nn.Dropout)
    params = theirs.init(KEY, x, deterministic=True)
    rngs = {"dropout": jax.random.key(2)}
    # Same program, same key stream, bit-identical masks with the exact impl.
    np.testing.assert_array_equal(
        ours.apply(params, x, deterministic=False, rngs=rngs),
        theirs.apply(params, x, deterministic=False, rngs=rngs),
    )
    np.testing.assert_array_equal(
        MLP(dln.Dropout).apply(params, x, deterministic=True),
        theirs.apply(params, x, deterministic=True),
    )


def test_call_conventions_match_flax():
    x = jnp.ones((4, 6))
    layer = dln.Dropout(0.5, deterministic=False)
    # An explicit `rng` is used as the mask key, as in flax.linen.Dropout.
    np.testing.assert_array_equal(layer.apply({}, x, rng=KEY), dl.dropout(KEY, x, 0.5))
    np.testing.assert_array_equal(
        dln.Dropout(0.5).apply({}, x, False, rng=KEY), dl.dropout(KEY, x, 0.5)
    )
    with pytest.raises(ValueError, match="deterministic"):
        dln.Dropout(0.5).apply({}, x)  # neither attribute nor call argument
    # Deterministic calls need no RNG at all, as in Flax.
    np.testing.assert_array_equal(dln.Dropout(0.5).apply({}, x, deterministic=True), x)


def test_fast_module_statistics_match_flax():
    x = jnp.ones((512, 512))
    rngs = {"dropout": KEY}
    ours = dln.Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs)
    theirs = nn.Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    n = x.size
    # Both keep fractions ~ 0.7 within 5 sigma = 5 sqrt(0.21 / n).
    for y in (ours, theirs):
        assert abs(float((y != 0).mean()) - 0.7) < 5 * np.sqrt(0.21 / n)


def test_traced_rate_through_linen_module():
    x = jnp.ones((4, 6))
    rates = jnp.array([0.0, 0.5, 1.0])
    ys = jax.vmap(
        lambda r: dln.Dropout(r).apply({}, x, deterministic=False, rngs={"dropout": KEY})
    )(rates)
    np.testing.assert_array_equal(ys[0], x)
    np.testing.assert_array_equal(ys[2], jnp.zeros_like(x))


@pytest.mark.parametrize(
    "layer",
    [
        lambda: dln.Dropout(0.2),
        lambda: dln.Dropout(0.2, mode="classic"),
        lambda: dln.GaussianDropout(0.2),
        lambda: dln.AlphaDropout(0.1),
    ],
)
def test_small_model_trains_with_each_module(layer):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic):
            x = nn.relu(nn.Dense(16)(x))
            x = layer()(x, deterministic=deterministic)
            return nn.Dense(1)(x)

    _assert_trains(Net())


def test_dropconnect_dense_trains_and_names_params_like_dense():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic):
            x = nn.relu(dln.DropConnectDense(16, 0.2)(x, deterministic=deterministic))
            return nn.Dense(1)(x)

    params = _assert_trains(Net())
    assert set(params["params"]["DropConnectDense_0"]) == {"kernel", "bias"}


def _assert_trains(model):
    kx, kd = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (64, 4))
    y = x @ jnp.array([[1.0], [-2.0], [0.5], [0.0]])
    params = model.init(KEY, x, deterministic=True)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        def loss(p):
            pred = model.apply(p, x, deterministic=False, rngs={"dropout": key})
            return jnp.mean((pred - y) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    eval_loss = lambda p: float(jnp.mean((model.apply(p, x, deterministic=True) - y) ** 2))  # noqa: E731
    before = eval_loss(params)
    for key in jax.random.split(kd, 60):
        params, state, _ = step(params, state, key)
    assert eval_loss(params) < 0.5 * before
    return params
