"""Bad input is named: keys, x, rates and broadcast_dims of every public function.

Each bad input raises the right exception type with a message that names the argument
and the fix; the good forms (tuple, list, numpy ints, negative axes, legacy uint32
keys, typed keys) keep working.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dropout_lab as dl
from dropout_lab import losses, mc, theory

KEY = jax.random.key(0)
LEGACY = jax.random.PRNGKey(0)
X = jnp.linspace(0.5, 1.5, 24, dtype=jnp.float32).reshape(2, 3, 4)
SQUARE = jnp.ones((4, 4))
KERNEL = jnp.ones((4, 2))
EDGES = jnp.array([[0, 1, 2], [1, 2, 0]])

# Public functions of the form op(key, x, rate, *, deterministic, ...): the argument
# in the x position, bound to the position so that swapped calls can be made.
X_OPS = {
    "dropout": (dl.dropout, X),
    "alpha_dropout": (dl.alpha_dropout, X),
    "gaussian_dropout": (dl.gaussian_dropout, X),
    "concrete_dropout": (dl.concrete_dropout, X),
    "channel_dropout": (dl.channel_dropout, X),
    "dropblock": (lambda k, x, r, **kw: dl.dropblock(k, x, r, block_size=2, **kw), X),
    "drop_path": (dl.drop_path, X),
    "locked_dropout": (dl.locked_dropout, X),
    "embedding_dropout": (dl.embedding_dropout, X),
    "zoneout": (lambda k, x, r, **kw: dl.zoneout(k, x, x, r, **kw), X),
    "weight_drop": (dl.weight_drop, X),
    "dropconnect": (dl.dropconnect, X),
    "dropconnect_dense": (
        lambda k, x, r, **kw: dl.dropconnect_dense(k, x, KERNEL, None, r, **kw),
        X,
    ),
    "drop_node": (dl.drop_node, X),
    "drop_edge_dense": (dl.drop_edge_dense, SQUARE),
}


def _x_op_with_key(name):
    fn, x = X_OPS[name]
    return lambda key, deterministic: fn(key, x, 0.5, deterministic=deterministic)


def _nnx_sample(key, deterministic):
    del deterministic
    model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
    return mc.sample_nnx(model, X, key, 2)


# Every public function that takes a key: call(key, deterministic); the bool says
# whether the function has an evaluation mode (deterministic=True, where None is fine).
KEY_FNS = {
    **{name: (_x_op_with_key(name), True) for name in X_OPS},
    "drop_edge": (
        lambda k, deterministic: dl.drop_edge(k, EDGES, 0.5, deterministic=deterministic),
        True,
    ),
    "variational_dense": (
        lambda k, deterministic: dl.variational_dense(
            k, X, KERNEL, jnp.full((4, 2), -5.0), deterministic=deterministic
        ),
        True,
    ),
    "jensen_gap_mc": (
        lambda k, deterministic: theory.jensen_gap_mc(k, jnp.square, X[0, 0], 0.5, num_samples=4),
        False,
    ),
    "rdrop_forward": (
        lambda k, deterministic: losses.rdrop_forward(lambda xx, kk: dl.dropout(kk, xx, 0.5), X, k),
        False,
    ),
    "sample": (lambda k, deterministic: mc.sample(lambda kk: dl.dropout(kk, X, 0.5), k, 2), False),
    "mean": (lambda k, deterministic: mc.mean(lambda kk: dl.dropout(kk, X, 0.5), k, 2), False),
    "split_keys": (lambda k, deterministic: mc.split_keys(k, 2), False),
    "sample_pool": (
        lambda k, deterministic: mc.sample_pool(lambda kk, xx: dl.dropout(kk, xx, 0.5), k, X, 2),
        False,
    ),
    "sample_nnx": (_nnx_sample, False),
}
EVAL_FNS = [name for name, (_, has_eval) in KEY_FNS.items() if has_eval]

# Every public function that takes a rate: call(rate).
RATE_FNS = {
    **{name: (lambda fn, x: lambda r: fn(KEY, x, r))(*X_OPS[name]) for name in X_OPS},
    "drop_edge": lambda r: dl.drop_edge(KEY, EDGES, r),
    "concrete_dropout_regularizer": lambda r: dl.concrete_dropout_regularizer(
        KERNEL, r, input_dim=4
    ),
    "drop_path_rates": lambda r: dl.drop_path_rates(r, 3),
    "preactivation_mean": lambda r: theory.preactivation_mean(X[0], X[1], r),
    "preactivation_variance": lambda r: theory.preactivation_variance(X[0], X[1], r),
    "mc_dropout_variance": lambda r: theory.mc_dropout_variance(X[0], X[1], r, 3),
    "dropout_regression_loss": lambda r: theory.dropout_regression_loss(
        X[0, 0], X[0], X[0, :, 0], r
    ),
    "dropout_regression_hessian": lambda r: theory.dropout_regression_hessian(X[0], r),
    "dropout_regression_minimizer": lambda r: theory.dropout_regression_minimizer(
        X[0], X[0, :, 0], r
    ),
    "jensen_gap_square": lambda r: theory.jensen_gap_square(X, r),
    "jensen_gap_relu": lambda r: theory.jensen_gap_relu(X, r),
    "jensen_gap_mc": lambda r: theory.jensen_gap_mc(KEY, jnp.square, X[0, 0], r, num_samples=4),
    "exact_mask_expectation": lambda r: theory.exact_mask_expectation(jnp.sum, X[0, 0], r),
    "expected_active_paths": lambda r: theory.expected_active_paths((3, 4, 2), r),
    "expected_ambiguity": lambda r: theory.expected_ambiguity(X[0], X[1], r, 3),
    "bn_train_statistics": lambda r: theory.bn_train_statistics(0.5, 2.0, r),
    "bn_test_shift": lambda r: theory.bn_test_shift(0.5, 2.0, r, case="inverted"),
}

# Every public function that takes broadcast_dims: call(broadcast_dims, deterministic).
# X is [2, 3, 4]; for DropBlock axis 1 is spatial, so only 0 and 2 (batch, channel) may
# share a pattern.
AXES_FNS = {
    "dropout": lambda b, deterministic=False: dl.dropout(
        KEY, X, 0.5, broadcast_dims=b, deterministic=deterministic
    ),
    "alpha_dropout": lambda b, deterministic=False: dl.alpha_dropout(
        KEY, X, 0.5, broadcast_dims=b, deterministic=deterministic
    ),
    "dropblock": lambda b, deterministic=False: dl.dropblock(
        KEY, X, 0.5, block_size=2, broadcast_dims=b, deterministic=deterministic
    ),
}


def _public_functions():
    """(name, function) of every public function of the library's user-facing modules."""
    for name in dl.__all__:
        yield name, getattr(dl, name)
    for module in (losses, theory, mc):
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("_") and fn.__module__ == module.__name__:
                yield name, fn


def test_every_public_function_is_covered():
    """A new public function taking a key, a rate or broadcast_dims must be added here."""
    for name, fn in _public_functions():
        if not callable(fn) or isinstance(fn, type):
            continue
        params = inspect.signature(fn).parameters
        if "key" in params:
            assert name in KEY_FNS, f"{name} takes a key: add it to KEY_FNS"
        if "rate" in params:
            assert name in RATE_FNS, f"{name} takes a rate: add it to RATE_FNS"
        if "broadcast_dims" in params:
            assert name in AXES_FNS, f"{name} takes broadcast_dims: add it to AXES_FNS"


# --- key ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KEY_FNS))
def test_missing_key_raises_naming_key_and_how_to_make_one(name):
    fn, _ = KEY_FNS[name]
    with pytest.raises(TypeError, match=r"key is None.*jax\.random\.key\(0\)"):
        fn(None, False)


@pytest.mark.parametrize("bad", ["abc", 0, jnp.zeros(2, jnp.int32), object()])
@pytest.mark.parametrize("name", sorted(KEY_FNS))
def test_non_key_raises_naming_key_and_how_to_make_one(name, bad):
    fn, _ = KEY_FNS[name]
    with pytest.raises(TypeError, match=r"key must be a PRNG key.*jax\.random\.key\(0\)"):
        fn(bad, False)


@pytest.mark.parametrize("bad", [0.5, np.float32(0.5), jnp.ones(3)])
@pytest.mark.parametrize("name", sorted(KEY_FNS))
def test_float_key_says_the_key_comes_first(name, bad):
    fn, _ = KEY_FNS[name]
    with pytest.raises(TypeError, match=r"key must be a PRNG key.*key comes first"):
        fn(bad, False)


@pytest.mark.parametrize(
    "bad", [jax.random.split(KEY, 2), jnp.zeros((3, 2), jnp.uint32), jnp.zeros(4, jnp.uint32)]
)
def test_several_keys_raise_value_error(bad):
    with pytest.raises(ValueError, match=r"key .*vmap over keys"):
        dl.dropout(bad, X, 0.5)


@pytest.mark.parametrize("name", EVAL_FNS)
def test_no_key_needed_in_evaluation(name):
    fn, _ = KEY_FNS[name]
    fn(None, True)  # Flax's convention: deterministic mode takes no rng


@pytest.mark.parametrize("name", EVAL_FNS)
def test_bad_key_reported_even_in_evaluation(name):
    fn, _ = KEY_FNS[name]
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        fn("abc", True)


@pytest.mark.parametrize(
    "key",
    [KEY, LEGACY, np.asarray(LEGACY)],
    ids=["typed", "legacy", "numpy_legacy"],
)
@pytest.mark.parametrize("name", sorted(KEY_FNS))
def test_typed_and_legacy_keys_work(name, key):
    fn, _ = KEY_FNS[name]
    jax.block_until_ready(fn(key, False))


def test_legacy_and_typed_keys_give_the_same_output():
    for key in (LEGACY, np.asarray(LEGACY)):
        np.testing.assert_array_equal(dl.dropout(key, X, 0.5), dl.dropout(KEY, X, 0.5))
        np.testing.assert_array_equal(
            dl.alpha_dropout(key, X, 0.5, broadcast_dims=(1,)),
            dl.alpha_dropout(KEY, X, 0.5, broadcast_dims=(1,)),
        )


def test_traced_keys_are_checked_at_trace_time():
    keys = jax.random.split(KEY, 3)
    y = jax.jit(jax.vmap(lambda k: dl.alpha_dropout(k, X, 0.5)))(keys)
    assert y.shape == (3, *X.shape)
    y = jax.jit(jax.vmap(lambda k: dl.dropout(k, X, 0.5)))(jax.random.key_data(keys))
    assert y.shape == (3, *X.shape)
    with pytest.raises(TypeError, match="key comes first"):
        jax.jit(lambda k: dl.gaussian_dropout(k, X, 0.5))(jnp.float32(0.5))


# --- swapped arguments --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(X_OPS))
def test_swapped_key_and_rate_names_the_order(name):
    fn, x = X_OPS[name]
    with pytest.raises(TypeError, match=r"key comes first: op\(key, x, rate"):
        fn(0.5, x, KEY)  # dl.dropout(0.5, x, key)
    with pytest.raises(TypeError, match=r"key comes first: op\(key, x, rate"):
        fn(0.5, x, LEGACY)


@pytest.mark.parametrize("name", sorted(X_OPS))
def test_swapped_key_and_x_names_the_order(name):
    fn, x = X_OPS[name]
    with pytest.raises(TypeError, match=r"key comes first: op\(key, x, rate"):
        fn(x, KEY, 0.5)


@pytest.mark.parametrize("name", ["dropout", "alpha_dropout", "gaussian_dropout"])
def test_swapped_x_and_rate_names_the_order(name):
    fn, x = X_OPS[name]
    with pytest.raises(ValueError, match=r"rate must be a scalar.*key comes first"):
        fn(KEY, 0.5, x)


# --- x -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (None, TypeError, r"is None[;,] .*pass a floating array"),
        ("abc", TypeError, "must be a floating array"),
        (jnp.ones(3, jnp.int32), TypeError, r"floating dtype.*astype\(jnp\.float32\)"),
        (KEY, TypeError, "key comes first"),
    ],
)
@pytest.mark.parametrize("name", sorted(X_OPS))
def test_bad_x_raises_naming_the_argument(name, bad, error, match):
    fn, _ = X_OPS[name]
    with pytest.raises(error, match=match):
        fn(KEY, bad, 0.5)


# --- rate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (KEY, TypeError, r"rate got a PRNG key.*key comes first"),
        (LEGACY, TypeError, r"rate got a uint32 .*legacy PRNG key.*key comes first"),
        (jnp.ones(3), ValueError, r"rate must be a scalar.*vmap over rates"),
        (None, TypeError, r"rate must be a real number in \[0, 1\].*None"),
        ("0.5", TypeError, r"rate must be a real number"),
        (True, TypeError, r"rate must be a real number"),
        (1.5, ValueError, r"rate=1\.5 is outside \[0, 1\]"),
        (float("nan"), ValueError, r"rate=nan is outside \[0, 1\]"),
    ],
)
@pytest.mark.parametrize("name", sorted(RATE_FNS))
def test_bad_rate_raises_naming_rate(name, bad, error, match):
    with pytest.raises(error, match=match):
        RATE_FNS[name](bad)


@pytest.mark.parametrize("rate", [0.25, np.float64(0.25), jnp.float32(0.25)])
@pytest.mark.parametrize("name", sorted(RATE_FNS))
def test_good_rates_work(name, rate):
    jax.block_until_ready(RATE_FNS[name](rate))


# --- broadcast_dims -------------------------------------------------------------------

BAD_DIMS = [
    ("ab", TypeError, r"broadcast_dims must be a sequence of int axes, got the str 'ab'"),
    (1, TypeError, r"wrap a single axis in a tuple: broadcast_dims=\(1,\)"),
    (None, TypeError, r"broadcast_dims must be a sequence of int axes.*\(\) for no shared"),
    ({0}, TypeError, r"broadcast_dims must be a sequence of int axes, got .* set"),
    ((1.5,), TypeError, r"broadcast_dims contains the float 1\.5; each entry must be an int"),
    ((0.0,), TypeError, r"broadcast_dims contains the float 0\.0"),
    ((True,), TypeError, r"broadcast_dims contains the bool True"),
    ((np.bool_(False),), TypeError, r"broadcast_dims contains .*bool"),
    (("a",), TypeError, r"broadcast_dims contains the str 'a'"),
    ((5,), ValueError, r"broadcast_dims contains 5, which is not an axis .* 3 dimensions"),
    ((-4,), ValueError, r"broadcast_dims contains -4, which is not an axis"),
    ((0, -3), ValueError, r"broadcast_dims names axis 0 twice"),
    ((2, 2), ValueError, r"broadcast_dims names axis 2 twice"),
]


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("bad, error, match", BAD_DIMS)
@pytest.mark.parametrize("name", sorted(AXES_FNS))
def test_bad_broadcast_dims_raise_naming_broadcast_dims(name, bad, error, match, deterministic):
    # Checked before any work, in evaluation mode too.
    with pytest.raises(error, match=match):
        AXES_FNS[name](bad, deterministic)


@pytest.mark.parametrize(
    "dims",
    [[0, 2], (np.int64(0), np.int32(2)), np.array([0, 2]), (-3, -1), (2, 0), range(0, 3, 2)],
    ids=["list", "numpy_ints", "numpy_array", "negative", "unordered", "range"],
)
@pytest.mark.parametrize("name", sorted(AXES_FNS))
def test_good_broadcast_dims_forms_are_equivalent(name, dims):
    fn = AXES_FNS[name]
    np.testing.assert_array_equal(fn(dims), fn((0, 2)))
    # Under jit a concrete rate is a compile-time constant that XLA may fold: alpha
    # dropout's (a, b) can then differ by an ulp from the eager call.
    np.testing.assert_allclose(jax.jit(lambda: fn(dims))(), fn((0, 2)), rtol=1e-6)


@pytest.mark.parametrize("name", ["dropout", "alpha_dropout"])
def test_empty_broadcast_dims_forms(name):
    fn = AXES_FNS[name]
    for empty in ([], np.array([], np.int64)):
        np.testing.assert_array_equal(fn(empty), fn(()))


# --- single axes: channel_axis, batch_axis, time_axis, feature_axis -------------------

AXIS_CALLS = {
    "channel_axis": lambda a: dl.channel_dropout(KEY, X, 0.5, channel_axis=a),
    "batch_axis": lambda a: dl.channel_dropout(KEY, X, 0.5, batch_axis=a),
    "time_axis": lambda a: dl.locked_dropout(KEY, X, 0.5, time_axis=a),
    "feature_axis": lambda a: dl.embedding_dropout(KEY, X, 0.5, feature_axis=a),
    "dropblock channel_axis": lambda a: dl.dropblock(KEY, X, 0.5, block_size=2, channel_axis=a),
}


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (True, TypeError, r"{}=True is a bool; give the axis as an int"),
        (1.5, TypeError, r"{} must be an int axis, got the float 1\.5"),
        ("1", TypeError, r"{} must be an int axis, got the str '1'"),
        (3, ValueError, r"{}=3 is not an axis of an array with 3 dimensions"),
    ],
)
@pytest.mark.parametrize("arg", sorted(AXIS_CALLS))
def test_bad_axis_raises_naming_the_argument(arg, bad, error, match):
    with pytest.raises(error, match=match.format(arg.split()[-1])):
        AXIS_CALLS[arg](bad)


@pytest.mark.parametrize("arg", ["time_axis", "feature_axis"])
def test_numpy_and_negative_axes_work(arg):
    call = AXIS_CALLS[arg]
    np.testing.assert_array_equal(call(np.int64(1)), call(1))
    np.testing.assert_array_equal(call(-2), call(1))
