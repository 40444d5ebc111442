"""Every linen/NNX module against its op, its twin and Flax's own Dropout.

One table drives the checks: each module gives its op's output (the op called directly
with the same key and arguments) in training and in evaluation; rate 0 (and rate 1
where every unit is dropped) needs no RNG and leaves the RNG count alone, as in Flax;
linen and NNX twins have the same fields and call conventions.
"""

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import errors, nnx

import dropout_lab as dl
from dropout_lab import linen as dln
from dropout_lab import nnx as dlx

KEY = jax.random.key(0)
X4 = jax.random.normal(jax.random.key(1), (2, 6, 6, 3)) + 5.0
X3 = jax.random.normal(jax.random.key(2), (2, 5, 4)) + 5.0
X2 = jax.random.normal(jax.random.key(3), (8, 3))
EDGES = jnp.array([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])

# NNX twin of each linen module whose name differs (as nn.Dense / nnx.Linear).
NNX_NAME = {"DropConnectDense": "DropConnectLinear", "VariationalDense": "VariationalLinear"}
# What NNX needs at construction and linen infers from the inputs, per module.
NNX_EXTRA = {"DropConnectDense": {"in_features": 3}, "VariationalDense": {"in_features": 3}}


@dataclasses.dataclass(frozen=True)
class Case:
    """A linen module, its options, its inputs and its op.

    ``op(key, inputs, params, rate, deterministic)`` calls the op directly; ``params``
    are the module's parameters by name (``kernel``, ``bias``, ...).
    """

    id: str
    name: str
    kwargs: dict
    inputs: tuple
    op: object


def _sig(p):
    return jax.nn.sigmoid(p["rate_logit"])


CASES = [
    Case("dropout", "Dropout", {"rate": 0.3}, (X4,), lambda k, i, p, r, d: dl.dropout(
        k, *i, r, deterministic=d)),
    Case("dropout-classic", "Dropout", {"rate": 0.3, "mode": "classic", "broadcast_dims": (1, 2)},
         (X4,), lambda k, i, p, r, d: dl.dropout(
             k, *i, r, mode="classic", broadcast_dims=(1, 2), deterministic=d)),
    Case("dropout-bernoulli", "Dropout", {"rate": 0.3, "impl": "bernoulli"}, (X4,),
         lambda k, i, p, r, d: dl.dropout(k, *i, r, deterministic=d, impl="bernoulli")),
    Case("gaussian", "GaussianDropout", {"rate": 0.3}, (X4,),
         lambda k, i, p, r, d: dl.gaussian_dropout(k, *i, r, deterministic=d)),
    Case("alpha", "AlphaDropout", {"rate": 0.3}, (X4,),
         lambda k, i, p, r, d: dl.alpha_dropout(k, *i, r, deterministic=d)),
    Case("alpha-feature", "AlphaDropout", {"rate": 0.3, "broadcast_dims": (1, 2)}, (X4,),
         lambda k, i, p, r, d: dl.alpha_dropout(k, *i, r, broadcast_dims=(1, 2), deterministic=d)),
    Case("dropconnect", "DropConnectDense", {"features": 4, "rate": 0.3}, (X2,),
         lambda k, i, p, r, d: dl.dropconnect_dense(
             k, *i, p["kernel"], p["bias"], r, deterministic=d)),
    Case("dropconnect-classic", "DropConnectDense",
         {"features": 4, "rate": 0.3, "mode": "classic"}, (X2,),
         lambda k, i, p, r, d: dl.dropconnect_dense(
             k, *i, p["kernel"], p["bias"], r, mode="classic", deterministic=d)),
    Case("channel", "ChannelDropout", {"rate": 0.5}, (X4,),
         lambda k, i, p, r, d: dl.channel_dropout(k, *i, r, deterministic=d)),
    Case("channel-classic", "ChannelDropout", {"rate": 0.5, "mode": "classic"}, (X4,),
         lambda k, i, p, r, d: dl.channel_dropout(k, *i, r, mode="classic", deterministic=d)),
    Case("dropblock", "DropBlock", {"rate": 0.3, "block_size": 3}, (X4,),
         lambda k, i, p, r, d: dl.dropblock(k, *i, r, block_size=3, deterministic=d)),
    Case("drop-path", "DropPath", {"rate": 0.5}, (X4,),
         lambda k, i, p, r, d: dl.drop_path(k, *i, r, deterministic=d)),
    Case("locked", "LockedDropout", {"rate": 0.5, "mode": "classic"}, (X3,),
         lambda k, i, p, r, d: dl.locked_dropout(k, *i, r, mode="classic", deterministic=d)),
    Case("embedding", "EmbeddingDropout", {"rate": 0.5}, (X3,),
         lambda k, i, p, r, d: dl.embedding_dropout(k, *i, r, deterministic=d)),
    Case("zoneout", "Zoneout", {"rate": 0.5}, (X3, -X3),
         lambda k, i, p, r, d: dl.zoneout(k, *i, r, deterministic=d)),
    Case("weight-drop", "WeightDrop", {"rate": 0.5, "mode": "classic"}, ({"hh": X3, "hc": X2},),
         lambda k, i, p, r, d: dl.weight_drop(k, *i, r, mode="classic", deterministic=d)),
    Case("drop-edge", "DropEdge", {"rate": 0.5, "num_nodes": 5, "normalize": True}, (EDGES,),
         lambda k, i, p, r, d: dl.drop_edge(
             k, *i, r, num_nodes=5, normalize=True, deterministic=d)),
    Case("drop-node", "DropNode", {"rate": 0.5}, (X3[0], EDGES),
         lambda k, i, p, r, d: dl.drop_node(k, i[0], r, edge_index=i[1], deterministic=d)),
    Case("concrete", "ConcreteDropout", {"init_rate": 0.3}, (X4,),
         lambda k, i, p, r, d: dl.concrete_dropout(k, *i, _sig(p), deterministic=d)),
    Case("variational", "VariationalDense", {"features": 4}, (X2,),
         lambda k, i, p, r, d: dl.variational_dense(
             k, *i, p["kernel"], p["log_sigma2"], p["bias"], deterministic=d)),
]  # fmt: skip
FIXED_RATE = [c for c in CASES if "rate" in c.kwargs]
# Modules whose rate-0 output is their (first) input itself.
IDENTITY_AT_ZERO = [c for c in FIXED_RATE if c.name not in
                    ("DropConnectDense", "DropEdge", "DropNode", "Zoneout")]  # fmt: skip
# Modules whose training output at rate 1 is all zeros (flax's rate-1 shortcut).
ZEROS_AT_ONE = {
    "Dropout", "GaussianDropout", "AlphaDropout", "ChannelDropout", "DropBlock", "DropPath",
    "LockedDropout", "EmbeddingDropout", "WeightDrop",
}  # fmt: skip
ZEROS_AT_ONE_CASES = [c for c in FIXED_RATE if c.name in ZEROS_AT_ONE]


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def linen_module(case, **overrides):
    """The linen module of ``case``, its variables and its parameters."""
    module = getattr(dln, case.name)(**{**case.kwargs, **overrides})
    variables = module.init({"params": KEY}, *case.inputs, deterministic=True)
    return module, variables, variables.get("params", {})


def nnx_module(case, rngs="default", **overrides):
    """The NNX twin of ``case`` (with its construction-time extras) and its parameters.

    ``rngs="default"`` gives it ``nnx.Rngs(params=0, dropout=0)``; ``rngs=None`` gives
    it none, except to the layers that need a ``params`` stream (then no dropout one).
    """
    kwargs = {**case.kwargs, **overrides, **NNX_EXTRA.get(case.name, {})}
    if "features" in kwargs:
        kwargs["out_features"] = kwargs.pop("features")
    if rngs == "default":
        rngs = nnx.Rngs(params=0, dropout=0)
    elif rngs is None and case.name in NNX_EXTRA:
        rngs = nnx.Rngs(params=0, dropout=0)
    module = getattr(dlx, NNX_NAME.get(case.name, case.name))(**kwargs, rngs=rngs)
    return module, nnx.state(module, nnx.Param).to_pure_dict()


class _KeyProbe(nn.Module):
    @nn.compact
    def __call__(self):
        return self.make_rng("dropout")


def linen_stream_key(key):
    """The first key a top-level linen module draws from ``rngs={"dropout": key}``."""
    return _KeyProbe().apply({}, rngs={"dropout": key})


def rate_of(case):
    return case.kwargs.get("rate")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_linen_module_gives_its_op_output_in_both_modes(case):
    module, variables, params = linen_module(case)
    rate = rate_of(case)
    expected = case.op(KEY, case.inputs, params, rate, False)
    train = module.apply(variables, *case.inputs, deterministic=False, rng=KEY)
    assert_trees_equal(train, expected)
    # From the stream: the key any top-level linen module (flax's Dropout too) draws.
    expected = case.op(linen_stream_key(KEY), case.inputs, params, rate, False)
    train = module.apply(variables, *case.inputs, deterministic=False, rngs={"dropout": KEY})
    assert_trees_equal(train, expected)
    expected_eval = case.op(None, case.inputs, params, rate, True)
    assert_trees_equal(module.apply(variables, *case.inputs, deterministic=True), expected_eval)
    fixed = getattr(dln, case.name)(**case.kwargs, deterministic=True)
    assert_trees_equal(fixed.apply(variables, *case.inputs), expected_eval)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nnx_module_gives_its_op_output_in_both_modes(case):
    module, params = nnx_module(case)
    rate = rate_of(case)
    assert_trees_equal(
        module(*case.inputs, rngs=KEY), case.op(KEY, case.inputs, params, rate, False)
    )
    # An nnx.Rngs at the call and the stored (forked) stream give the keys Flax would draw.
    call_key = nnx.Rngs(dropout=7)["dropout"]()
    expected = case.op(call_key, case.inputs, params, rate, False)
    assert_trees_equal(module(*case.inputs, rngs=nnx.Rngs(dropout=7)), expected)
    stored_key = nnx.Rngs(dropout=0)["dropout"].fork()()
    expected = case.op(stored_key, case.inputs, params, rate, False)
    assert_trees_equal(module(*case.inputs), expected)
    expected_eval = case.op(None, case.inputs, params, rate, True)
    assert_trees_equal(module(*case.inputs, deterministic=True), expected_eval)
    module.eval()
    assert_trees_equal(module(*case.inputs), expected_eval)
    module.train()
    assert_trees_equal(nnx.view(module, deterministic=True)(*case.inputs), expected_eval)


@pytest.mark.parametrize("case", FIXED_RATE, ids=[c.id for c in FIXED_RATE])
def test_rate_zero_needs_no_rng(case):
    # Flax's Dropout returns its input at rate 0 without asking for a key; so do ours,
    # with the op's own rate-0 training output (the same for any key).
    module, variables, params = linen_module(case, rate=0.0)
    expected = case.op(jax.random.key(9), case.inputs, params, 0.0, False)
    assert_trees_equal(module.apply(variables, *case.inputs, deterministic=False), expected)
    module, params = nnx_module(case, rngs=None, rate=0.0)
    expected = case.op(jax.random.key(9), case.inputs, params, 0.0, False)
    assert_trees_equal(module(*case.inputs), expected)
    assert module.rngs is None or module.rngs.count[...] == 0


@pytest.mark.parametrize("case", IDENTITY_AT_ZERO, ids=[c.id for c in IDENTITY_AT_ZERO])
def test_rate_zero_returns_the_input_exactly(case):
    x = case.inputs[0]
    linen_module_, variables, _ = linen_module(case, rate=0.0)
    assert_trees_equal(linen_module_.apply(variables, x, deterministic=False), x)
    assert_trees_equal(nnx_module(case, rngs=None, rate=0.0)[0](x), x)


def test_structured_outputs_at_rate_zero():
    # Zoneout keeps h_new, DropEdge every edge, DropNode every node: no key needed.
    np.testing.assert_array_equal(dln.Zoneout(0.0).apply({}, X3, -X3, deterministic=False), -X3)
    np.testing.assert_array_equal(dlx.Zoneout(0.0)(X3, -X3), -X3)
    edges = dlx.DropEdge(0.0)(EDGES)
    assert edges.mask.all() and (edges.edge_weight == 1).all()
    nodes = dln.DropNode(0.0).apply({}, X3[0], EDGES, deterministic=False)
    np.testing.assert_array_equal(nodes.x, X3[0])
    assert nodes.node_mask.all() and nodes.edge_mask.all()


@pytest.mark.parametrize("case", ZEROS_AT_ONE_CASES, ids=[c.id for c in ZEROS_AT_ONE_CASES])
def test_rate_one_needs_no_rng_where_everything_is_dropped(case):
    module, variables, params = linen_module(case, rate=1.0)
    zeros = jax.tree.map(jnp.zeros_like, case.inputs[0])
    assert_trees_equal(case.op(KEY, case.inputs, params, 1.0, False), zeros)
    assert_trees_equal(module.apply(variables, *case.inputs, deterministic=False), zeros)
    module, _ = nnx_module(case, rngs=None, rate=1.0)
    assert_trees_equal(module(*case.inputs), zeros)
    # Evaluation still comes first, as in Flax: the op's evaluation output.
    assert_trees_equal(module(*case.inputs, deterministic=True),
                       case.op(None, case.inputs, params, 1.0, True))  # fmt: skip


def test_zoneout_at_rate_one_keeps_the_previous_state_without_rng():
    np.testing.assert_array_equal(dln.Zoneout(1.0).apply({}, X3, -X3, deterministic=False), X3)
    np.testing.assert_array_equal(dlx.Zoneout(1.0)(X3, -X3), X3)


def test_flax_and_ours_agree_at_rates_zero_and_one_without_rngs():
    x = X4
    for rate in (0.0, 1.0):
        theirs = nn.Dropout(rate).apply({}, x, deterministic=False)
        np.testing.assert_array_equal(dln.Dropout(rate).apply({}, x, deterministic=False), theirs)
        np.testing.assert_array_equal(dlx.Dropout(rate)(x), nnx.Dropout(rate)(x))


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_rng_count_does_not_advance_when_no_mask_is_drawn(rate):
    x = X4
    theirs = nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0))
    theirs(x)
    for case in FIXED_RATE:
        if rate == 1.0 and case.name not in ZEROS_AT_ONE | {"Zoneout"}:
            continue
        module, _ = nnx_module(case, rate=rate)
        module(*case.inputs)
        call_rngs = nnx.Rngs(dropout=0)
        module(*case.inputs, rngs=call_rngs)
        assert module.rngs.count[...] == theirs.rngs.count[...] == 0, case.id
        assert call_rngs.dropout.count[...] == 0, case.id
    # At a rate that draws a mask both advance by one per call.
    ours, theirs = dlx.Dropout(0.5, rngs=nnx.Rngs(dropout=0)), nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    ours(x), theirs(x)
    assert ours.rngs.count[...] == theirs.rngs.count[...] == 1


def test_traced_rate_zero_still_draws_its_key():
    # A traced rate cannot be compared with 0: the mask is drawn (and keeps everything).
    def output_and_count(rate):
        module = dlx.Dropout(rate, rngs=nnx.Rngs(dropout=0))
        return module(X4), module.rngs.count[...]

    y, count = jax.jit(output_and_count)(0.0)
    np.testing.assert_array_equal(y, X4)
    assert count == 1
    with pytest.raises(errors.InvalidRngError):
        jax.jit(lambda r: dln.Dropout(r).apply({}, X4, deterministic=False))(0.0)


def _message(fn):
    with pytest.raises(Exception) as info:  # the callers check the type
        fn()
    return info.value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_linen_missing_rng_error_is_flax_error(case):
    theirs = _message(lambda: nn.Dropout(0.5).apply({}, X4, deterministic=False))
    module, variables, _ = linen_module(case)
    ours = _message(lambda: module.apply(variables, *case.inputs, deterministic=False))
    assert type(ours) is type(theirs) is errors.InvalidRngError
    assert str(theirs) in str(ours)
    assert any("rngs={'dropout': key}" in note for note in ours.__notes__)
    theirs = _message(lambda: nn.Dropout(0.5).apply({}, X4))
    ours = _message(lambda: module.apply(variables, *case.inputs))
    assert type(ours) is type(theirs) is ValueError
    assert str(theirs) in str(ours)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nnx_missing_rngs_and_deterministic_errors_contain_flax_messages(case):
    name = NNX_NAME.get(case.name, case.name)
    theirs = _message(lambda: nnx.Dropout(0.5)(X4))
    module, _ = nnx_module(case, rngs=None)
    if module.rngs is None:
        ours = _message(lambda: module(*case.inputs))
        assert type(ours) is type(theirs) is ValueError
        assert str(theirs).replace("Dropout", name) in str(ours)
    theirs = _message(lambda: nnx.Dropout(0.5, deterministic=None)(X4))
    ours = _message(lambda: nnx_module(case, deterministic=None)[0](*case.inputs))
    assert type(ours) is type(theirs) is ValueError
    assert str(theirs).replace("Dropout", name) in str(ours)


def test_nnx_rngs_type_errors_are_flax_messages():
    theirs = _message(lambda: nnx.Dropout(0.5, rngs=3))
    assert str(theirs) == str(_message(lambda: dlx.Dropout(0.5, rngs=3)))
    theirs = _message(lambda: nnx.Dropout(0.5)(X4, rngs=3))
    assert str(theirs) == str(_message(lambda: dlx.Dropout(0.5)(X4, rngs=3)))


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("broadcast_dims", [(), (0,), (1, 2)])
def test_same_output_as_flax_linen_dropout(rate, broadcast_dims):
    ours = dln.Dropout(rate, broadcast_dims, impl="bernoulli")
    theirs = nn.Dropout(rate, broadcast_dims)
    rngs = {"dropout": jax.random.key(3)}
    for deterministic in (False, True):
        np.testing.assert_array_equal(
            ours.apply({}, X4, deterministic, rngs=rngs),
            theirs.apply({}, X4, deterministic, rngs=rngs),
        )
    np.testing.assert_array_equal(
        ours.apply({}, X4, False, jax.random.key(4)), theirs.apply({}, X4, False, jax.random.key(4))
    )


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("broadcast_dims", [(), (0,), (1, 2)])
def test_same_output_as_flax_nnx_dropout(rate, broadcast_dims):
    ours = dlx.Dropout(rate, broadcast_dims=broadcast_dims, impl="bernoulli", rngs=nnx.Rngs(5))
    theirs = nnx.Dropout(rate, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(5))
    for _ in range(3):  # the stored streams advance alike
        np.testing.assert_array_equal(ours(X4), theirs(X4))
    call = nnx.Rngs(dropout=6)
    np.testing.assert_array_equal(ours(X4, rngs=call), theirs(X4, rngs=nnx.Rngs(dropout=6)))
    key = jax.random.key(7)
    np.testing.assert_array_equal(ours(X4, rngs=key), theirs(X4, rngs=key))
    ours.eval(), theirs.eval()
    np.testing.assert_array_equal(ours(X4), theirs(X4))
    assert ours.rngs.count[...] == theirs.rngs.count[...]


def test_feature_alpha_dropout_shares_one_draw_per_channel():
    x = jnp.ones((4, 6, 6, 8))
    y = dln.AlphaDropout(0.5, (1, 2)).apply({}, x, deterministic=False, rng=KEY)
    np.testing.assert_array_equal(y, dlx.AlphaDropout(0.5, broadcast_dims=(1, 2))(x, rngs=KEY))
    # Kept ones become a + b, dropped ones a * alpha' + b: constant over height and width.
    dropped = y < 0
    np.testing.assert_array_equal(dropped, jnp.broadcast_to(dropped[:, :1, :1], x.shape))
    assert 0 < dropped[:, 0, 0].mean() < 1


def _linen_modules():
    return {n: c for n, c in vars(dln).items() if isinstance(c, type) and issubclass(c, nn.Module)
            and c.__module__ == dln.__name__ and not n.startswith("_")}  # fmt: skip


def _linen_fields(cls):
    """Constructor fields of a linen module, in order, with their defaults."""
    skip = {"parent", "name"}
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in skip]
    empty = inspect.Parameter.empty  # as inspect spells "no default"
    return [(f.name, empty if f.default is dataclasses.MISSING else f.default) for f in fields]


def _nnx_params(cls, drop=("rngs", "in_features")):
    """Constructor arguments of an NNX module, in order, with their defaults."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    names = {"out_features": "features"}
    return [(names.get(p.name, p.name), p.default) for p in params if p.name not in drop]


def _same_default(a, b):
    """Equal defaults; initializers compare by code and captured settings."""
    if callable(a) and callable(b) and hasattr(a, "__code__"):
        cells = lambda f: [c.cell_contents for c in f.__closure__ or ()]  # noqa: E731
        return a.__code__ == b.__code__ and cells(a) == cells(b)
    return a == b


def test_every_linen_module_has_an_nnx_twin_and_back():
    linen_names = set(_linen_modules())
    nnx_names = {n for n, c in vars(dlx).items() if isinstance(c, type)
                 and issubclass(c, nnx.Module) and c.__module__ == dlx.__name__
                 and not n.startswith("_")}  # fmt: skip
    assert {NNX_NAME.get(n, n) for n in linen_names} == nnx_names
    assert {c.name for c in CASES} == linen_names  # the table covers every module


def test_flax_dropout_pair_follows_the_rule_the_twins_follow():
    # The rule below, checked on Flax's own pair: same fields in the same order apart
    # from NNX's rngs; deterministic defaults to None in linen, False in NNX.
    linen, nnx_ = dict(_linen_fields(nn.Dropout)), dict(_nnx_params(nnx.Dropout))
    assert list(linen) == list(nnx_)
    assert (linen.pop("deterministic"), nnx_.pop("deterministic")) == (None, False)
    assert linen == nnx_
    # Ours extend Flax's: its fields first, in its order (linen takes them positionally).
    assert _linen_fields(dln.Dropout)[:4] == _linen_fields(nn.Dropout)
    flax_names = [name for name, _ in _nnx_params(nnx.Dropout)]
    ours = [name for name, _ in _nnx_params(dlx.Dropout)]
    assert [name for name in ours if name in flax_names] == flax_names


@pytest.mark.parametrize("name", sorted(_linen_modules()))
def test_linen_and_nnx_twins_have_the_same_fields(name):
    linen = _linen_fields(getattr(dln, name))
    nnx_ = _nnx_params(getattr(dlx, NNX_NAME.get(name, name)))
    assert [n for n, _ in linen] == [n for n, _ in nnx_]
    for (field, a), (_, b) in zip(linen, nnx_, strict=True):
        if field == "deterministic":
            assert (a, b) == (None, False)
        else:
            assert _same_default(a, b), (field, a, b)


@pytest.mark.parametrize("name", sorted(_linen_modules()))
def test_linen_and_nnx_twins_have_the_same_call_and_methods(name):
    linen_cls, nnx_cls = getattr(dln, name), getattr(dlx, NNX_NAME.get(name, name))
    linen = list(inspect.signature(linen_cls.__call__).parameters.values())[1:]
    nnx_ = list(inspect.signature(nnx_cls.__call__).parameters.values())[1:]
    flax_linen = list(inspect.signature(nn.Dropout.__call__).parameters.values())[1:]
    flax_nnx = list(inspect.signature(nnx.Dropout.__call__).parameters.values())[1:]
    # Inputs first, then Flax's own (deterministic, rng) / keyword-only (deterministic, rngs).
    assert [(p.name, p.kind) for p in linen[-2:]] == [(p.name, p.kind) for p in flax_linen[-2:]]
    assert [(p.name, p.kind) for p in nnx_[-2:]] == [(p.name, p.kind) for p in flax_nnx[-2:]]
    assert [(p.name, p.default) for p in linen[:-2]] == [(p.name, p.default) for p in nnx_[:-2]]

    def public(cls):
        """Public methods and properties defined by the class itself, by kind."""
        fields = {f.name for f in dataclasses.fields(linen_cls)}
        kinds = {}
        for attr, value in vars(cls).items():
            value = getattr(value, "wrapped", value)  # linen wraps properties
            if attr.startswith("_") or attr in fields:
                continue
            if inspect.isfunction(value) or isinstance(value, property):
                kinds[attr] = type(value).__name__
        return kinds

    assert public(linen_cls) == public(nnx_cls)


def test_concrete_dropout_checks_init_rate_in_linen_and_nnx():
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="init_rate"):
            dln.ConcreteDropout(bad)
        with pytest.raises(ValueError, match="init_rate"):
            dlx.ConcreteDropout(bad)


OPS = {
    "Dropout": dl.dropout, "GaussianDropout": dl.gaussian_dropout,
    "AlphaDropout": dl.alpha_dropout, "DropConnectDense": dl.dropconnect_dense,
    "ChannelDropout": dl.channel_dropout, "DropBlock": dl.dropblock, "DropPath": dl.drop_path,
    "LockedDropout": dl.locked_dropout, "EmbeddingDropout": dl.embedding_dropout,
    "Zoneout": dl.zoneout, "WeightDrop": dl.weight_drop, "DropEdge": dl.drop_edge,
    "DropNode": dl.drop_node, "ConcreteDropout": dl.concrete_dropout,
    "VariationalDense": dl.variational_dense,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPS))
def test_module_options_default_like_their_op(name):
    # A module left at its defaults is its op left at its defaults (impl, mode, axes...).
    assert set(OPS) == set(_linen_modules())
    op_params = inspect.signature(OPS[name]).parameters
    shared = [
        (field, default)
        for field, default in _linen_fields(getattr(dln, name))
        if field in op_params and field not in ("rate", "deterministic")
    ]
    assert shared or name == "GaussianDropout"
    for field, default in shared:
        op_default = op_params[field].default
        # Where the op has no default the module may give one (DropBlock's block_size 7).
        assert op_default is inspect.Parameter.empty or default == op_default, field
