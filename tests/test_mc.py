import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx

import dropout_lab as dl

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (6, 16))
W = jax.random.normal(jax.random.key(2), (16, 5))


def elementwise(k):
    return 2.0 * jnp.tanh(dl.dropout(k, X, 0.3))


def mlp(k):
    return {"logits": elementwise(k) @ W, "hidden": elementwise(k)[:, 0]}


def loop(fn, key, num_samples, transform=lambda y: y):
    one = jax.jit(lambda k: transform(fn(k)))
    outs = [one(k) for k in jax.random.split(key, num_samples)]
    return jax.tree.map(lambda *ys: jnp.stack(ys), *outs)


def test_sample_chunked_equals_unchunked_equals_loop_exactly():
    expected = loop(elementwise, KEY, 11, jax.nn.softmax)
    # 11 is not divisible by 4: the padded last chunk must be dropped.
    for chunk_size in (None, 1, 4):
        got = jax.jit(
            lambda k, c=chunk_size: dl.mc.sample(
                elementwise, k, 11, chunk_size=c, transform=jax.nn.softmax
            )
        )(KEY)
        chex.assert_shape(got, (11, 6, 16))
        np.testing.assert_array_equal(got, expected)


def test_sample_with_matmul_agrees_to_rounding_and_pytrees():
    unchunked = jax.jit(lambda k: dl.mc.sample(mlp, k, 11))(KEY)
    chunked = jax.jit(lambda k: dl.mc.sample(mlp, k, 11, chunk_size=4))(KEY)
    looped = loop(mlp, KEY, 11)
    chex.assert_shape(unchunked["logits"], (11, 6, 5))
    # Elementwise leaf: bit-identical. Matmul leaf: XLA may pick another kernel for
    # another batch size, so only float rounding may differ.
    np.testing.assert_array_equal(chunked["hidden"], unchunked["hidden"])
    np.testing.assert_array_equal(looped["hidden"], unchunked["hidden"])
    scale = float(jnp.max(jnp.abs(unchunked["logits"])))
    for other in (chunked, looped):
        np.testing.assert_allclose(other["logits"], unchunked["logits"], atol=1e-5 * scale)
    # Different keys give different passes.
    assert not np.array_equal(unchunked["hidden"][0], unchunked["hidden"][1])

    # mean() over the same keys gives the moments of these samples.
    for chunk_size, ddof in ((None, 0), (4, 1)):
        moments = jax.jit(
            lambda k, c=chunk_size, d=ddof: dl.mc.mean(mlp, k, 11, chunk_size=c, ddof=d)
        )(KEY)
        chex.assert_trees_all_close(
            moments.mean, jax.tree.map(lambda y: y.mean(0), unchunked), rtol=1e-5, atol=1e-5
        )
        chex.assert_trees_all_close(
            moments.variance,
            jax.tree.map(lambda y, d=ddof: y.var(0, ddof=d), unchunked),
            rtol=1e-4,
            atol=1e-5,
        )


def test_legacy_key_gives_legacy_keys_and_the_same_samples():
    seen = []

    def fn(k):
        seen.append(k.dtype)
        return elementwise(k)

    legacy = jax.jit(lambda k: dl.mc.sample(fn, k, 5, chunk_size=2))(jax.random.PRNGKey(0))
    assert seen[-1] == jnp.uint32
    np.testing.assert_array_equal(legacy, loop(elementwise, KEY, 5))
    chex.assert_shape(dl.mc.split_keys(jax.random.PRNGKey(0), 5), (5, 2))


def test_sample_does_not_retrace_for_a_new_key():
    fn = jax.jit(chex.assert_max_traces(lambda k: dl.mc.sample(elementwise, k, 4, chunk_size=2), 1))
    fn(KEY)
    fn(jax.random.key(7))


def test_mean_with_transform():
    moments = jax.jit(
        lambda k: dl.mc.mean(elementwise, k, 7, chunk_size=3, transform=jax.nn.softmax)
    )(KEY)
    probs = loop(elementwise, KEY, 7, jax.nn.softmax)
    chex.assert_trees_all_close(moments.mean, probs.mean(0), rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(moments.variance, probs.var(0), rtol=1e-4, atol=1e-9)


def test_linear_layer_mc_variance_matches_closed_form():
    # y = w . dropout(x): independent inverted-dropout masks (keep q = 1 - rate) give
    # Var[y] = (rate / q) * sum_i (w_i x_i)^2; the mean of T passes has Var[y] / T.
    rate = 0.5  # exact keep probability for impl="fast"
    x = jax.random.normal(jax.random.key(3), (16,))
    w = jax.random.normal(jax.random.key(4), (16,))
    var_one = rate / (1 - rate) * float(jnp.sum((w * x) ** 2))

    def fn(k):
        return dl.dropout(k, x, rate) @ w

    # Sample variance s^2 of n passes: Var[s^2] = sigma^4 (2/(n-1) + kurt/n); the excess
    # kurtosis of a weighted sum of Bernoulli(1/2) is negative, so its relative std is
    # at most sqrt(2/(n-1)) and we allow 5 of those. The mean is within 5 sigma/sqrt(n).
    n = 4096
    moments = jax.jit(lambda k: dl.mc.mean(fn, k, n, chunk_size=512, ddof=1))(jax.random.key(5))
    assert abs(float(moments.variance) / var_one - 1) < 5 * np.sqrt(2 / (n - 1))
    assert abs(float(moments.mean) - float(w @ x)) < 5 * np.sqrt(var_one / n)

    # Variance of the MC estimate over R independent estimates of T passes each: the
    # means are close to Gaussian (excess kurtosis <= 0), so the same bound holds with R.
    num_estimates, num_passes = 2048, 8
    passes = jax.jit(lambda k: dl.mc.sample(fn, k, num_estimates * num_passes))(jax.random.key(6))
    estimates = passes.reshape(num_estimates, num_passes).mean(axis=1)
    ratio = float(jnp.var(estimates, ddof=1)) / (var_one / num_passes)
    assert abs(ratio - 1) < 5 * np.sqrt(2 / (num_estimates - 1))


def test_chunk_size_bounds_live_samples():
    # Each pass keeps a [64, 512] dropped input and a [64, 256] hidden layer alive:
    # 196,608 bytes. Unchunked, 64 passes need at least 64 of those; chunks of 8 must
    # need at most a few chunks' worth.
    x = jnp.ones((64, 512))
    w1 = jnp.full((512, 256), 0.01)
    w2 = jnp.ones((256, 4))

    def fn(k):
        return jax.nn.relu(dl.dropout(k, x, 0.5) @ w1) @ w2

    per_pass = 4 * (64 * 512 + 64 * 256)
    for reduce in (dl.mc.sample, dl.mc.mean):

        def temp_bytes(chunk_size, reduce=reduce):
            lowered = jax.jit(lambda k: reduce(fn, k, 64, chunk_size=chunk_size)).lower(KEY)
            return lowered.compile().memory_analysis().temp_size_in_bytes

        unchunked, chunked = temp_bytes(None), temp_bytes(8)
        assert unchunked >= 64 * per_pass
        assert chunked <= 3 * 8 * per_pass
        assert chunked * 4 < unchunked


class Net(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 8, rngs=rngs)
        self.drop1 = dl.nnx.Dropout(0.5, rngs=rngs)
        self.drop2 = dl.nnx.Dropout(0.2, rngs=rngs)

    def __call__(self, x):
        return self.drop2(self.drop1(self.linear(x)))


def rng_state(model):
    state = nnx.state(model, nnx.RngState)
    return [
        np.asarray(jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v)
        for v in jax.tree.leaves(state)
    ]


def test_sample_nnx_is_pure_chunk_invariant_and_per_key():
    model = Net(nnx.Rngs(params=0, dropout=1))
    x = jax.random.normal(jax.random.key(2), (3, 4))
    before = rng_state(model)
    draw = jax.jit(lambda k: dl.mc.sample_nnx(model, x, k, 7))
    a = draw(KEY)
    b = jax.jit(lambda k: dl.mc.sample_nnx(model, x, k, 7, chunk_size=3))(KEY)
    chex.assert_shape(a, (7, 3, 8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, loop(dl.mc.nnx_fn(model, x), KEY, 7))
    # The module's own RNG state is neither used nor advanced.
    for old, new in zip(before, rng_state(model), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(a, draw(KEY))
    # Every pass has its own masks (that the streams get independent keys is tested by
    # test_nnx_fn_gives_every_rng_stream_its_own_key).
    zeros = np.asarray(a == 0).reshape(7, -1)
    assert len({row.tobytes() for row in zeros}) == 7
    other = draw(jax.random.key(9))
    assert not np.array_equal(a, other)


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="num_samples"):
        dl.mc.sample(elementwise, KEY, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        dl.mc.mean(elementwise, KEY, 4, chunk_size=0)


class Stacked(nnx.Module):
    def __init__(self, rngs):
        self.drop_a = dl.nnx.Dropout(0.5, rngs=rngs)
        self.drop_b = dl.nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.drop_b(self.drop_a(x))


def test_nnx_fn_gives_every_rng_stream_its_own_key():
    # Two stacked rate-0.5 layers with independent masks keep a unit with probability
    # 1/4; with one key for both streams the masks coincide and 1/2 is kept. Over
    # n = 8 * 64 * 256 units the kept fraction is Binomial(n, 1/4) / n, standard
    # deviation sqrt(3 / 16 / n) = 0.0012; 6 of those (0.0072) is far from 1/4 away.
    model = Stacked(nnx.Rngs(dropout=3))
    y = jax.jit(lambda k: dl.mc.sample_nnx(model, jnp.ones((64, 256)), k, 8))(KEY)
    kept = float(jnp.mean(y != 0))
    assert abs(kept - 0.25) < 6 * np.sqrt(3 / 16 / y.size)


class BNNet(nnx.Module):
    def __init__(self, rngs):
        self.linear1 = nnx.Linear(4, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.ours = dl.nnx.Dropout(0.5, rngs=rngs)
        self.theirs = nnx.Dropout(0.25, rngs=rngs)
        self.linear2 = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.linear2(self.theirs(self.ours(self.bn(self.linear1(x)))))


def bn_model():
    model = BNNet(nnx.Rngs(params=0, dropout=1))
    # Running statistics far from the batch's own, so the two BatchNorm modes differ.
    model.bn.mean[...] = jax.random.normal(jax.random.key(3), (16,))
    model.bn.var[...] = jax.random.uniform(jax.random.key(4), (16,), minval=0.5, maxval=2)
    return model


def manual_passes(model, x, key, num_samples, *, running_average):
    """Dropout on, BatchNorm as asked, with the keys nnx_fn documents: the j-th RngKey
    (in nnx.split order) becomes fold_in(key_t, j) and its stream's first draw folds
    in the count 0."""
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.RngKey))]
    index = {path[0].key: j for j, path in enumerate(paths)}
    bn = model.bn

    def one(k):
        h = model.linear1(x)
        if running_average:
            mean, var = bn.mean[...], bn.var[...]
        else:
            mean, var = h.mean(0), h.var(0)
        h = (h - mean) / jnp.sqrt(var + bn.epsilon) * bn.scale[...] + bn.bias[...]
        for name in ("ours", "theirs"):
            stream_key = jax.random.fold_in(jax.random.fold_in(k, index[name]), 0)
            h = getattr(model, name)(h, deterministic=False, rngs=stream_key)
        return model.linear2(h)

    return jnp.stack([one(k) for k in jax.random.split(key, num_samples)])


def modes(model):
    return model.ours.deterministic, model.theirs.deterministic, model.bn.use_running_average


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_sample_nnx_switches_on_dropout_only(mode):
    model = bn_model()
    getattr(model, mode)()
    before_modes, before_rng = modes(model), rng_state(model)
    before_stats = [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]
    x = jax.random.normal(jax.random.key(5), (6, 4))
    num_samples = 16
    y = jax.jit(lambda k: dl.mc.sample_nnx(model, x, k, num_samples))(KEY)
    chex.assert_shape(y, (num_samples, 6, 3))
    # Every pass is stochastic (eval() used to give 16 copies of one pass).
    assert len({np.asarray(row).tobytes() for row in y}) == num_samples
    # BatchNorm keeps its mode: running averages after eval(), batch statistics after
    # train(). Each pass equals the manual computation with the same masks, up to the
    # rounding of a vmapped matmul; the other BatchNorm mode is far off.
    running = mode == "eval"
    expected = manual_passes(model, x, KEY, num_samples, running_average=running)
    other = manual_passes(model, x, KEY, num_samples, running_average=not running)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.mean(0), expected.mean(0), rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(other - expected))) > 0.1
    # The caller's model is unchanged: modes, RNG state and batch statistics.
    assert modes(model) == before_modes
    for old, new in zip(before_rng, rng_state(model), strict=True):
        np.testing.assert_array_equal(old, new)
    after_stats = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    for old, new in zip(before_stats, after_stats, strict=True):
        np.testing.assert_array_equal(old, new)


def test_linen_pattern_keeps_batchnorm_on_running_averages():
    # The pattern of the dl.mc docstring: deterministic=False, use_running_average=True.
    class Net(linen.Module):
        @linen.compact
        def __call__(self, x, *, use_running_average, deterministic):
            x = linen.BatchNorm(use_running_average=use_running_average)(linen.Dense(8)(x))
            return linen.Dense(3)(dl.linen.Dropout(0.5, deterministic=deterministic)(x))

    model = Net()
    x = jax.random.normal(jax.random.key(1), (6, 5))
    variables = model.init(KEY, x, use_running_average=True, deterministic=True)
    stats = variables["batch_stats"]["BatchNorm_0"]
    variables["batch_stats"]["BatchNorm_0"] = {"mean": stats["mean"] + 1.0, "var": stats["var"]}

    def passes(rows, running):
        def fn(k):
            out = model.apply(
                variables, rows, use_running_average=running, deterministic=False,
                rngs={"dropout": k}, mutable=False if running else ["batch_stats"],
            )  # fmt: skip
            return out if running else out[0]

        return jax.jit(lambda k: dl.mc.sample(fn, k, 8))(KEY)

    y = passes(x, True)
    assert len({np.asarray(row).tobytes() for row in y}) == 8
    # Running averages: an example's output (its mask fixed by the key) does not depend
    # on the rest of the batch; with batch statistics it does.
    changed = x.at[1:].multiply(3.0)
    np.testing.assert_allclose(passes(changed, True)[:, 0], y[:, 0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(passes(changed, False)[:, 0], passes(x, False)[:, 0], atol=1e-3)
