"""PyTorch's dropout tests, ported to dropout, channel_dropout and alpha_dropout.

Ported from pytorch/pytorch ``test/nn/test_dropout.py`` (formerly in ``test_nn.py``; in
our own words, same inputs and assertions). ``nn.Dropout1d/2d/3d`` on ``[N, C, ...]``
input is ``dl.channel_dropout(..., channel_axis=1)``, ``nn.FeatureAlphaDropout`` is
``dl.alpha_dropout`` with the spatial axes in ``broadcast_dims``:

* ``TestDropoutNN``: ``test_AlphaDropout``, ``test_FeatureAlphaDropout``,
  ``test_native_dropout_corner_case``, ``test_invalid_dropout_p``.
* ``TestDropoutNNDeviceType``: ``test_Dropout`` (``_test_dropout`` in float32 and
  bfloat16, ``_test_dropout_discontiguous``, ``_test_dropout_stride_mean_preserve``),
  ``test_Dropout1d`` / ``2d`` / ``3d`` (``_test_dropout``, ``_test_dropoutNd_no_batch``,
  ``_test_dropoutNd_channel_zero``), ``test_empty_dropout``.

Not ported: memory formats, strides and ``inplace`` (no counterpart in JAX), and the
rank warnings and errors of ``Dropout1d/2d/3d`` (``channel_dropout`` takes any rank).

Fixed, being statistically unsound: the shapes PyTorch draws at random are fixed here
(a test's power should not change from run to run). ``_test_dropout`` accepts a mean
within 0.05 of 0.8; ``Dropout1d`` has 100 to 225 channel draws, so 0.05 is 1.25 to 1.9
sigma (a false alarm for 1 run in 5 to 17); every bound below is 6 sigma of the number
of independent draws. The alpha-dropout tolerance of 0.1 is 3.5 sigma for the standard
deviation at p = 0.8 on 5000 elements; it is derived below for element and channel masks.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl

KEY = jax.random.key(0)
SELU_SATURATION = -1.0507009873554805 * 1.6732632423543772  # -lambda * alpha of SELU


def channel(key, x, rate, **kw):
    return dl.channel_dropout(key, x, rate, channel_axis=1, **kw)


DROPOUT_CASES = {
    # PyTorch's _test_dropout inputs (random sizes fixed): (op, shape, dtype, draws).
    "Dropout": (dl.dropout, (1000,), jnp.float32, 1000),
    "Dropout_bfloat16": (dl.dropout, (1000,), jnp.bfloat16, 1000),
    "Dropout1d": (channel, (12, 13, 14), jnp.float32, 12 * 13),
    "Dropout2d": (channel, (1000, 3, 4, 5), jnp.float32, 1000 * 3),
    "Dropout3d": (channel, (1000, 3, 2, 4, 5), jnp.float32, 1000 * 3),
}


@pytest.fixture(scope="module")
def dropout_runs():
    """Output, input gradient and evaluation output of every case, in one compilation.

    p = 0.2 on an input filled with 1 - p = 0.8; the cotangent is the input itself
    (PyTorch: ``output.backward(input)``).
    """

    @jax.jit
    def run(key, p):
        out = {}
        for name, (fn, shape, dtype, _) in DROPOUT_CASES.items():
            x = jnp.full(shape, 0.8, dtype)
            y, vjp = jax.vjp(lambda v, fn=fn: fn(key, v, p), x)
            out[name] = (x, y, vjp(x)[0], fn(key, x, p, deterministic=True))
        return out

    return jax.tree.map(lambda a: np.asarray(a, np.float32), run(KEY, 0.2))


@pytest.mark.parametrize("name", list(DROPOUT_CASES))
def test_dropout(dropout_runs, name):
    p = 0.2
    _, _, dtype, num_draws = DROPOUT_CASES[name]
    x, y, grad, evaluated = dropout_runs[name]
    # Kept values are x / (1 - p) as the dtype computes it (a float32 quotient rounded
    # once to the input's dtype; 1.0 in float32 and in bfloat16).
    kept = float(np.asarray(np.float32(x.flat[0]) / np.float32(1 - p)).astype(dtype))
    assert set(np.unique(y).tolist()) == {0.0, kept}
    # The mean is the kept fraction of num_draws independent draws (shared along the
    # spatial axes for Dropout1d/2d/3d): sigma = sqrt(p (1 - p) / num_draws). PyTorch's
    # 0.05 is 1.25 to 1.9 sigma for Dropout1d's 100 to 225 draws.
    assert abs(y.mean() - (1 - p)) < 6 * np.sqrt(p * (1 - p) / num_draws)
    # The cotangent 0.8 goes through the same mask and scale; evaluation is the identity.
    np.testing.assert_array_equal(grad, y)
    np.testing.assert_array_equal(evaluated, x)


@pytest.mark.parametrize("fn", [dl.dropout, channel], ids=["Dropout", "Dropout2d"])
def test_dropout_discontiguous(fn):
    # p = 0 and p = 1e-10 (1 - p rounds to 1 in float32): the input comes back exactly.
    x = jnp.ones((2, 3, 3, 3))
    run = jax.jit(fn)
    for p in (0.0, 1e-10):
        np.testing.assert_array_equal(run(KEY, x, p), x)


def test_dropout_stride_mean_preserve():
    # PyTorch slices ones(2, 3, 4, 5) at shifts (0, 0), (1, 0), (0, 1), (1, 1) (and
    # permutes its memory layout, which JAX does not expose).
    rates = jnp.array([1e-10, 0.3, 0.5, 0.7])

    @jax.jit
    def run(key):
        x = jnp.ones((2, 3, 4, 5))
        shifted = [x[a:, b:] for a, b in ((0, 0), (1, 0), (0, 1), (1, 1))]
        return [jax.vmap(lambda p, s=s: dl.dropout(key, s, p))(rates) for s in shifted]

    for out in run(KEY):
        out = np.asarray(out)
        np.testing.assert_array_equal(out[0], np.ones(out.shape[1:]))
        for p, y in zip(np.asarray(rates)[1:], out[1:], strict=True):
            assert not np.array_equal(y, np.ones(y.shape))
            # Elements are 0 or 1 / (1 - p): the mean has sigma sqrt(p / (1 - p) / n).
            # PyTorch's bound, |mean - 1| <= 0.5 + 0.5 * 1, is 4.1 sigma at p = 0.7
            # on the smallest slice (40 elements); 6 sigma here.
            assert abs(y.mean() - 1.0) < 6 * np.sqrt(p / (1 - p) / y.size)


@pytest.mark.parametrize(
    "shape, channel_axis",
    [((50, 2), 0), ((50, 2, 2, 2), 0)],
    ids=["Dropout1d", "Dropout3d"],
)
def test_dropout_nd_no_batch(shape, channel_axis):
    # An unbatched input gives the values of the same input with a batch axis of 1:
    # the masks have the same number of draws in the same order.
    x = jnp.asarray(np.random.default_rng(1).uniform(size=shape), jnp.float32)

    @jax.jit
    def both(key):
        unbatched = dl.channel_dropout(key, x, 0.5, channel_axis=channel_axis, batch_axis=None)
        batched = dl.channel_dropout(key, x[None], 0.5, channel_axis=channel_axis + 1)
        return unbatched, batched[0]

    unbatched, batched = both(KEY)
    np.testing.assert_array_equal(unbatched, batched)
    assert (np.asarray(unbatched) == 0).any()


@pytest.mark.parametrize(
    "shape", [(10, 4, 2), (10, 4, 2, 2), (10, 4, 2, 2, 2)], ids=["1d", "2d", "3d"]
)
def test_dropout_nd_channel_zero(shape):
    y = np.asarray(jax.jit(channel)(KEY, jnp.ones(shape), 0.5))
    nonzero = np.count_nonzero(y.reshape(shape[0] * shape[1], -1), axis=1)
    channel_numel = int(np.prod(shape[2:]))
    assert set(nonzero.tolist()) == {0, channel_numel}  # 40 channels: both occur


def test_empty_dropout():
    x = jnp.zeros((0,))
    assert dl.dropout(KEY, x, 0.5).shape == x.shape


def test_native_dropout_corner_case():
    # p in {0, 1}, training and evaluation: the output and the gradient of its sum.
    x = jnp.asarray(np.random.default_rng(1).standard_normal(5), jnp.float32)

    @functools.partial(jax.jit, static_argnums=1)
    def output_and_grad(p, deterministic):
        y, vjp = jax.vjp(lambda v: dl.dropout(KEY, v, p, deterministic=deterministic), x)
        return y, vjp(jnp.ones_like(y))[0]

    for deterministic in (False, True):
        y, grad = output_and_grad(0.0, deterministic)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(grad, np.ones(5))
        y, grad = output_and_grad(1.0, deterministic)
        np.testing.assert_array_equal(y, x if deterministic else np.zeros(5))
        np.testing.assert_array_equal(grad, np.ones(5) if deterministic else np.zeros(5))


@pytest.mark.parametrize("p", [-0.1, 1.1])
def test_invalid_dropout_p(p):
    v = jnp.ones((1, 1, 1))
    for fn in (dl.dropout, channel, dl.alpha_dropout):
        with pytest.raises(ValueError):
            fn(KEY, v, p)


def alpha_tolerances(q, group_size, num_groups):
    """6-sigma bounds on |mean(y) - mean(x)| and |std(y) - std(x)| for alpha dropout.

    For x ~ N(0, 1), a mask shared by groups of ``group_size`` elements and the affine
    map (a, b), y = a (m x + alpha' (1 - m)) + b has mean 0 and variance 1. Group means
    are independent across the ``num_groups`` groups; by the law of total variance
    (over m), a group's mean of y - x has variance
    ``(q (a - 1)**2 + 1 - q) / S + a**2 alpha'**2 q (1 - q)`` and its mean of y**2 has
    ``q (2 a**4 + 4 a**2 b**2) / S + q (1 - q) (a**2 + b**2 - d**2)**2`` with
    d = a alpha' + b the dropped value. The sample std moves by half the change of the
    mean square (delta method at std 1); the input's std adds sqrt(1 / (2 n)).
    """
    s = group_size
    a = (q + SELU_SATURATION**2 * q * (1 - q)) ** -0.5
    b = -a * SELU_SATURATION * (1 - q)
    d = a * SELU_SATURATION + b
    var_diff = (q * (a - 1) ** 2 + 1 - q) / s + (a * SELU_SATURATION) ** 2 * q * (1 - q)
    var_square = q * (2 * a**4 + 4 * a**2 * b**2) / s + q * (1 - q) * (a**2 + b**2 - d**2) ** 2
    mean_tol = 6 * np.sqrt(var_diff / num_groups)
    std_tol = 6 * (np.sqrt(var_square / num_groups) / 2 + np.sqrt(1 / (2 * s * num_groups)))
    return mean_tol, std_tol


@pytest.mark.parametrize(
    "shape, broadcast_dims",
    [((5000,), ()), ((1000, 2, 2, 3, 3), (2, 3, 4)), ((50, 20, 64, 64), (2, 3))],
    ids=["AlphaDropout", "FeatureAlphaDropout", "FeatureAlphaDropout_4d"],
)
def test_alpha_dropout(shape, broadcast_dims):
    x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
    rates = jnp.array([0.2, 0.5, 0.8])

    @jax.jit
    def moments(rates):
        ys = jax.vmap(lambda p: dl.alpha_dropout(KEY, x, p, broadcast_dims=broadcast_dims))(rates)
        axes = tuple(range(1, ys.ndim))
        return jnp.mean(ys, axis=axes), jnp.std(ys, axis=axes)

    means, stds = (np.asarray(a) for a in moments(rates))
    group_size = int(np.prod([shape[d] for d in broadcast_dims]))
    x_mean, x_std = float(jnp.mean(x)), float(jnp.std(x))
    for p, mean, std in zip(np.asarray(rates), means, stds, strict=True):
        mean_tol, std_tol = alpha_tolerances(1 - p, group_size, x.size // group_size)
        assert abs(mean - x_mean) < mean_tol
        assert abs(std - x_std) < std_tol
