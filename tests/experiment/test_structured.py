"""Structured, recurrent and concrete dropout experiments: configs, models, tiny runs."""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropout_lab.experiment import ConfigError, load_config, run_experiment
from dropout_lab.experiment.model import PatchConv, build_model, input_shape

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"
COMMON = ["seeds=[0]", "train.epochs=1", "plots=false", "progress=false"]


def _load(name, *extra, tmp=None):
    out = [f"output_dir={tmp}"] if tmp is not None else []
    return load_config(CONFIGS / f"{name}.yaml", [*COMMON, *out, *extra])


# Smoke runs train only the methods whose layers are new to the trainer (one compile
# each): none/inverted go through the same code with another (or no) dropout layer,
# and the model tests below run the rest.
def _only(*methods, among=("none", "inverted", "channel", "dropblock", "locked", "zoneout")):
    return [f"methods.{m}.enabled={m in methods}" for m in among]


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    cfg = _load(
        "structured_cnn_digits", *_only("channel", "dropblock"), "data.max_examples=300",
        "model.channels=[4,4]", "train.batch_size=64", tmp=tmp_path_factory.mktemp("cnn"),
    )  # fmt: skip
    return run_experiment(cfg)


@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory):
    cfg = _load(
        "structured_rnn_mnist1d", *_only("zoneout"), "data.max_examples=200",
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
        "structured_cnn_digits": ("cnn", {"none", "inverted", "channel", "dropblock"}),
        "structured_rnn_mnist1d": ("gru", {"none", "inverted", "locked", "zoneout"}),
        "concrete_toy": ("mlp", {"none", "inverted", "mc", "concrete"}),
    }
    from dropout_lab.experiment.config import enabled_methods

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
    variants = ("none", "inverted", "locked", "zoneout")
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
    assert input_shape(_load("structured_cnn_digits"), 64) == (8, 8, 1)
    assert input_shape(_load("structured_rnn_mnist1d"), 40) == (40, 1)
    with pytest.raises(ConfigError, match="model.input_shape"):
        input_shape(_load("structured_cnn_digits"), 40)
    with pytest.raises(ConfigError, match="model.input_shape"):
        input_shape(_load("structured_rnn_mnist1d", "model.input_shape=[20,3]"), 40)


@pytest.mark.parametrize(
    ("config", "override", "method", "arch"),
    [
        ("concrete_toy", "methods.dropblock.enabled=true", "dropblock", "mlp"),
        ("structured_cnn_digits", "methods.zoneout.enabled=true", "zoneout", "cnn"),
        ("structured_rnn_mnist1d", "methods.channel.enabled=true", "channel", "gru"),
        ("structured_rnn_mnist1d", "model.architecture=cnn", "locked", "cnn"),
        ("structured_cnn_digits", "methods.concrete.enabled=true", "concrete", "cnn"),
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
    ],
)
def test_bad_model_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])
