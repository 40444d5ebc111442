"""Structured, recurrent and concrete dropout experiments: configs, models, tiny runs."""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab import ConfigError, load_config, run_experiment
from lab.convnet import PatchConv
from lab.model import build_model, input_shape

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"
COMMON = ["seeds=[0]", "train.epochs=1", "plots=false", "progress=false"]


def _load(name, *extra, tmp=None):
    out = [f"output_dir={tmp}"] if tmp is not None else []
    return load_config(CONFIGS / f"{name}.yaml", [*COMMON, *out, *extra])


# Smoke runs train only the methods whose layers are new to the trainer (one compile
# each): none/inverted go through the same code with another (or no) dropout layer,
# and the model tests below run the rest.
STRUCTURED = ("none", "inverted", "channel", "dropblock", "locked", "zoneout")


def _only(*methods, among=(*STRUCTURED, "droppath", "weightdrop")):
    return [f"methods.{m}.enabled={m in methods}" for m in among]


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    cfg = _load(
        "structured_cnn_digits", *_only("channel", "dropblock", "droppath"),
        "data.max_examples=300", "model.channels=[4,4]", "train.batch_size=64",
        tmp=tmp_path_factory.mktemp("cnn"),
    )  # fmt: skip
    return run_experiment(cfg)


@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory):
    cfg = _load(
        "structured_rnn_mnist1d", *_only("zoneout", "weightdrop"), "data.max_examples=200",
        "model.rnn_hidden=[4,4]", "train.batch_size=64", tmp=tmp_path_factory.mktemp("rnn"),
    )  # fmt: skip
    return run_experiment(cfg)


@pytest.fixture(scope="module")
def concrete_run(tmp_path_factory):
    only = [f"methods.{m}.enabled={m == 'concrete'}" for m in ("none", "inverted", "mc")]
    cfg = _load(
        "concrete_toy", *only, "train.epochs=20", "model.hidden=[16,16]",
        "methods.concrete.init_rate=0.2", tmp=tmp_path_factory.mktemp("concrete"),
    )  # fmt: skip
    return cfg, run_experiment(cfg)


def test_new_configs_load_with_their_architecture():
    expected = {
        "structured_cnn_digits": ("cnn", {"none", "inverted", "channel", "dropblock", "droppath"}),
        "structured_rnn_mnist1d": ("gru", {"none", "inverted", "locked", "zoneout", "weightdrop"}),
        "concrete_toy": ("mlp", {"none", "inverted", "mc", "concrete"}),
        "sparse_vd_digits": ("mlp", {"none", "inverted", "sparse_vd"}),
    }
    from lab.config import enabled_methods

    for name, (arch, methods) in expected.items():
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.name == name and len(cfg.seeds) >= 3
        assert cfg.model.architecture == arch
        assert set(enabled_methods(cfg)) == methods


@pytest.mark.parametrize("run", ["cnn_run", "rnn_run"])
def test_structured_runs_finite(run, request):
    out = request.getfixturevalue(run)
    assert out["task"] == "classification"
    for method, per_seed in out["per_seed"].items():
        m = per_seed["0"]
        for key in ("test_acc", "test_nll", "ece", "ood_auroc"):
            assert math.isfinite(m[key]), (method, key)
        assert 0 <= m["test_acc"] <= 1
        assert f"| {method} |" in out["table"]


def test_concrete_learns_and_reports_rate(concrete_run):
    cfg, out = concrete_run
    metrics = out["per_seed"]["concrete"]["0"]
    rates = {k: v for k, v in metrics.items() if k.startswith("learned_rate_")}
    # Two hidden layers: a learned-rate layer in front of dense_1 and of the output.
    assert set(rates) == {"learned_rate_0", "learned_rate_1"}
    for rate in rates.values():
        assert 0 < rate < 1
        assert abs(rate - cfg.methods.concrete.init_rate) > 1e-3  # it was learned
    assert math.isfinite(metrics["test_rmse"])
    assert "learned rate 0" in out["table"] and "learned rate 1" in out["table"]
    curve = out["learning_curves"]["concrete"]
    assert len(curve) == cfg.train.epochs
    assert curve[-1]["learned_rate_0"] == pytest.approx(rates["learned_rate_0"])


@pytest.fixture(scope="module")
def rnn():
    """A two-layer GRU (5 and 6 units) per variant, sharing one set of parameters."""
    cfg = _load("structured_rnn_mnist1d", "model.rnn_hidden=[5,6]")
    variants = ("none", "inverted", "locked", "zoneout", "weightdrop")
    models = {m: build_model(cfg, m, 40, 10, 100) for m in variants}
    x = jax.random.normal(jax.random.key(0), (3, 40))
    # Dropout layers have no parameters: every variant has the same ones.
    params = jax.jit(models["zoneout"].init)(jax.random.key(1), x)
    return models, params, x


def test_locked_mask_is_constant_over_time(rnn):
    import flax.linen as nn

    models, params, x = rnn
    for method, constant in (("locked", True), ("inverted", False)):

        @jax.jit
        def forward(params, x, key, model=models[method]):
            seen = {}

            def record(next_fun, args, kwargs, context):
                # The first layer's output sequence [batch, time, 5] and its dropped copy.
                out = next_fun(*args, **kwargs)
                if context.module.name == "drop_0":
                    seen["seq"], seen["dropped"] = args[0], out
                return out

            with nn.intercept_methods(record):
                model.apply(params, x, 0.5, deterministic=False, rngs={"dropout": key})
            return seen["seq"], seen["dropped"]

        seq, dropped = forward(params, x, jax.random.key(2))
        assert seq.shape == dropped.shape == (3, 40, 5)
        # GRU outputs are never exactly 0 here, so zeros are the dropped units.
        assert bool(jnp.all(seq != 0))
        kept = dropped != 0
        assert 0 < float(kept.mean()) < 1
        assert bool(jnp.all(kept == kept[:, :1])) == constant, method
        # Kept units are scaled by 1 / (1 - rate) = 2.
        np.testing.assert_allclose(dropped[kept], 2 * seq[kept], rtol=1e-6)


def test_zoneout_rate_zero_is_the_plain_rnn_and_rate_changes_it(rnn):
    models, params, x = rnn
    ref = jax.jit(models["none"].apply)(params, x)
    zone = jax.jit(
        lambda rate: models["zoneout"].apply(
            params, x, rate, deterministic=False, rngs={"dropout": jax.random.key(3)}
        )
    )
    np.testing.assert_allclose(zone(0.0), ref, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(zone(0.5) - ref))) > 1e-3


@pytest.mark.parametrize(("shape", "kernel"), [((2, 8, 8, 3), (3, 3)), ((2, 10, 2), (4,))])
def test_patch_conv_matches_flax_conv(shape, kernel):
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(0), shape)
    ref = nn.Conv(5, kernel, padding="SAME")
    params = ref.init(jax.random.key(1), x)
    np.testing.assert_allclose(
        PatchConv(5, kernel).apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5
    )


def test_input_shapes_are_inferred_and_checked():
    assert input_shape(_load("structured_cnn_digits").model, 64) == (8, 8, 1)
    assert input_shape(_load("structured_rnn_mnist1d").model, 40) == (40, 1)
    with pytest.raises(ConfigError, match="model.input_shape"):
        input_shape(_load("structured_cnn_digits").model, 40)
    with pytest.raises(ConfigError, match="model.input_shape"):
        input_shape(_load("structured_rnn_mnist1d", "model.input_shape=[20,3]").model, 40)


@pytest.mark.parametrize(
    ("config", "override", "method", "arch"),
    [
        ("concrete_toy", "methods.dropblock.enabled=true", "dropblock", "mlp"),
        ("structured_cnn_digits", "methods.zoneout.enabled=true", "zoneout", "cnn"),
        ("structured_rnn_mnist1d", "methods.channel.enabled=true", "channel", "gru"),
        ("structured_rnn_mnist1d", "model.architecture=cnn", "locked", "cnn"),
        ("structured_cnn_digits", "methods.concrete.enabled=true", "concrete", "cnn"),
        ("structured_rnn_mnist1d", "methods.droppath.enabled=true", "droppath", "gru"),
        ("structured_cnn_digits", "methods.weightdrop.enabled=true", "weightdrop", "cnn"),
        ("structured_cnn_digits", "methods.sparse_vd.enabled=true", "sparse_vd", "cnn"),
        ("sparse_vd_digits", "methods.droppath.enabled=true", "droppath", "mlp"),
    ],
)
def test_method_architecture_mismatch_names_both(config, override, method, arch):
    with pytest.raises(ConfigError, match=rf"{method}.*architecture='{arch}'"):
        _load(config, override)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.architecture=transformer", "model.architecture"),
        ("model.channels=[]", "model.channels"),
        ("model.rnn_hidden=[8,0]", r"model.rnn_hidden\[1\]"),
        ("model.kernel_size=0", "model.kernel_size"),
        ("methods.dropblock.block_size=0", "methods.dropblock.block_size"),
        ("methods.concrete.init_rate=1.0", "methods.concrete.init_rate"),
        ("methods.concrete.temperature=0", "methods.concrete.temperature"),
        ("model.residual=true", "model.residual"),
        ("methods.sparse_vd.threshold=11", "methods.sparse_vd.threshold"),
    ],
)
def test_bad_model_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_droppath_needs_residual_blocks_of_equal_channels():
    with pytest.raises(ConfigError, match=r"methods.droppath.*model.residual"):
        _load("structured_cnn_digits", "model.residual=false")
    for channels in ("[8]", "[8,16]"):
        with pytest.raises(ConfigError, match="model.channels"):
            _load("structured_cnn_digits", f"model.channels={channels}")


@pytest.fixture(scope="module")
def sparse_vd_run(tmp_path_factory):
    only = [f"methods.{m}.enabled={m == 'sparse_vd'}" for m in ("none", "inverted")]
    cfg = _load(
        "sparse_vd_digits", *only, "train.epochs=3", "data.max_examples=300",
        "model.hidden=[16,16]", tmp=tmp_path_factory.mktemp("vd"),
    )  # fmt: skip
    return cfg, run_experiment(cfg)


def test_sparse_vd_reports_pruned_fraction(sparse_vd_run):
    cfg, out = sparse_vd_run
    m = out["per_seed"]["sparse_vd"]["0"]
    for key in ("test_acc", "test_acc_unpruned", "test_nll", "ece", "ood_auroc"):
        assert math.isfinite(m[key]), key
    assert 0 <= m["pruned_fraction"] <= 1
    assert 0 <= m["test_acc_unpruned"] <= 1
    assert "pruned weights" in out["table"] and "test acc unpruned" in out["table"]
    curve = out["learning_curves"]["sparse_vd"]
    assert len(curve) == cfg.train.epochs
    assert curve[-1]["pruned_fraction"] == pytest.approx(m["pruned_fraction"])


def test_sparse_vd_loss_is_nll_plus_kl_over_n(sparse_vd_run):
    import optax

    import dropout_lab as dl
    from lab.data import load_dataset
    from lab.fit import RunKeys, init_state, make_setup

    cfg, _ = sparse_vd_run
    data = load_dataset(cfg.data)
    setup = make_setup(cfg, "sparse_vd", data)
    params = init_state(setup, RunKeys.from_seed(0).init, data.x_train[:1])["params"]
    x, y = data.x_train[:32], data.y_train[:32]
    key = jax.random.key(5)
    out = setup.model.apply({"params": params}, x, deterministic=False, rngs={"dropout": key})
    nll = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    kl = sum(
        dl.variational_kl(dl.variational_log_alpha(p["kernel"], p["log_sigma2"]))
        for p in params.values()
    )
    assert set(params) == {"dense_0", "dense_1", "out"}
    expected = nll + kl / len(data.x_train)
    # The KL term dominates at initialization (log alpha ~ -6: ~3.5 nats per weight).
    assert float(kl / len(data.x_train)) > float(nll)
    loss = setup.method.loss(setup.model, params, x, y, key, setup.hparams(), setup.task)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.fixture(scope="module")
def residual_cnn():
    cfg = _load("structured_cnn_digits", "model.channels=[3,3]")
    x = jax.random.normal(jax.random.key(0), (6, 64))
    models = {m: build_model(cfg, m, 64, 10, 100) for m in ("none", "droppath")}
    params = jax.jit(models["droppath"].init)(jax.random.key(1), x)
    plain = build_model(
        _load("structured_cnn_digits", "model.channels=[3]", "model.residual=false",
              "methods.droppath.enabled=false"), "none", 64, 10, 100,
    )  # fmt: skip
    return models, plain, params, x


def test_droppath_rate_zero_is_the_residual_cnn_and_rate_one_the_stem(residual_cnn):
    models, plain, params, x = residual_cnn
    drop = jax.jit(
        lambda rate: models["droppath"].apply(
            params, x, rate, deterministic=False, rngs={"dropout": jax.random.key(2)}
        )
    )
    full = models["none"].apply(params, x)
    # One block: the linear schedule gives it the whole rate. Rate 0 keeps the branch,
    # rate 1 drops it for every example: the stem alone (same conv_0 and out).
    np.testing.assert_allclose(drop(0.0), full, rtol=1e-6, atol=1e-6)
    stem = plain.apply({"params": {k: params["params"][k] for k in ("conv_0", "out")}}, x)
    np.testing.assert_allclose(drop(1.0), stem, rtol=1e-6, atol=1e-6)
    assert bool(jnp.all(jnp.max(jnp.abs(full - stem), axis=-1) > 1e-3))
    # Rate 0.5: each example is either the stem or stem + 2 * branch (kept, rescaled).
    half = drop(0.5)
    kept = 2 * full - stem
    is_stem = jnp.all(jnp.isclose(half, stem, atol=1e-5), axis=-1)
    is_kept = jnp.all(jnp.isclose(half, kept, atol=1e-5), axis=-1)
    assert bool(jnp.all(is_stem ^ is_kept))


def test_weightdrop_masks_hidden_kernels_once_per_sequence(rnn):
    import flax.linen as nn

    import dropout_lab as dl

    models, params, x = rnn
    rate, key = 0.5, jax.random.key(4)

    @jax.jit
    def forward(params, x, key):
        seen = {}

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, dl.linen.WeightDrop):
                seen[context.module.name] = out
            return out

        with nn.intercept_methods(record):
            y = models["weightdrop"].apply(
                params, x, rate, deterministic=False, rngs={"dropout": key}
            )
        return y, seen

    y, masked = forward(params, x, key)
    assert set(masked) == {"weight_drop_0", "weight_drop_1"}
    cells = {i: params["params"][f"rnn_{i}"]["cell"] for i in (0, 1)}
    fixed = jax.tree.map(lambda a: a, params)
    for i, cell in cells.items():
        kernels = masked[f"weight_drop_{i}"]
        assert set(kernels) == {"hr", "hz", "hn"}  # the GRU's hidden-to-hidden kernels
        for name, k in kernels.items():
            kept = k != 0
            assert 0 < float(kept.mean()) < 1
            # Kept weights are scaled by 1 / (1 - rate) = 2.
            np.testing.assert_allclose(k[kept], 2 * cell[name]["kernel"][kept], rtol=1e-6)
            fixed["params"][f"rnn_{i}"]["cell"][name]["kernel"] = k
    # The plain GRU with these fixed masked kernels at every step gives the same output:
    # one mask for all 40 steps of the sequence (and the input kernels are untouched).
    np.testing.assert_allclose(y, models["none"].apply(fixed, x), rtol=1e-5, atol=1e-6)
    # Rate 0 is the plain GRU; evaluation uses the unmasked kernels.
    ref = models["none"].apply(params, x)
    zero = models["weightdrop"].apply(params, x, 0.0, deterministic=False, rngs={"dropout": key})
    np.testing.assert_allclose(zero, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(models["weightdrop"].apply(params, x, rate), ref, rtol=1e-6)
