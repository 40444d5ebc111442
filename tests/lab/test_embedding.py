"""Embedding dropout on tokenized sequences: config checks, tokens, model, a tiny run."""

import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab import ConfigError, load_config, run_experiment
from lab.model import build_model, token_edges

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"
COMMON = ["seeds=[0]", "train.epochs=1", "plots=false", "progress=false"]


def _load(name, *extra):
    return load_config(CONFIGS / f"{name}.yaml", [*COMMON, *extra])


def test_config_compares_none_inverted_embedding_on_tokens():
    from lab.config import enabled_methods

    cfg = load_config(CONFIGS / "embedding_rnn_mnist1d.yaml")
    assert cfg.model.architecture == "gru" and cfg.model.token_bins > 1
    assert len(cfg.seeds) >= 3
    assert enabled_methods(cfg) == ["none", "inverted", "embedding"]


def test_embedding_run_is_finite(tmp_path):
    only = [f"methods.{m}.enabled={m == 'embedding'}" for m in ("none", "inverted")]
    cfg = _load(
        "embedding_rnn_mnist1d", *only, "data.max_examples=200", "model.rnn_hidden=[4]",
        "model.embed_dim=3", "train.batch_size=64", f"output_dir={tmp_path}",
    )  # fmt: skip
    out = run_experiment(cfg)
    m = out["per_seed"]["embedding"]["0"]
    for key in ("test_acc", "test_nll", "ece", "ood_auroc"):
        assert math.isfinite(m[key]), key
    assert "| embedding |" in out["table"]
    assert "16 tokens embedded in 3" in (tmp_path / "results.md").read_text()


def test_token_bins_default_zero_reads_floats():
    cfg = _load("structured_rnn_mnist1d", "model.rnn_hidden=[3]")
    assert cfg.model.token_bins == 0
    model = build_model(cfg, "inverted", 40, 10, 100)
    assert model.token_edges == ()
    params = model.init(jax.random.key(0), jnp.zeros((2, 40)))["params"]
    assert set(params) == {"rnn_0", "out"}
    # The GRU reads one float feature per step (no embedding in front).
    assert params["rnn_0"]["cell"]["ir"]["kernel"].shape == (1, 3)


def test_token_edges_are_equal_count_quantiles():
    x = np.arange(400, dtype=np.float32).reshape(10, 40)  # 0 .. 399, each once
    edges = token_edges(x, 4)
    np.testing.assert_allclose(edges, [99.75, 199.5, 299.25])
    tokens = np.searchsorted(edges, x.ravel(), side="right")
    np.testing.assert_array_equal(np.bincount(tokens), [100, 100, 100, 100])
    with pytest.raises(ValueError, match="token_edges"):
        build_model(_load("embedding_rnn_mnist1d"), "embedding", 40, 10, 100)


def test_embedding_dropout_drops_table_rows_per_sequence():
    cfg = _load(
        "embedding_rnn_mnist1d", "model.rnn_hidden=[3]", "model.token_bins=4", "model.embed_dim=4"
    )
    edges = (-0.5, 0.0, 0.5)  # 4 tokens
    model = build_model(cfg, "embedding", 40, 10, 100, token_edges=edges)
    x = jax.random.normal(jax.random.key(0), (8, 40))
    params = model.init(jax.random.key(1), x)

    @jax.jit
    def forward(rate):
        seen = {}

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.module.name in ("drop_embed", "drop_0"):
                seen[context.module.name] = out
            return out

        with nn.intercept_methods(record):
            model.apply(params, x, rate, deterministic=False, rngs={"dropout": jax.random.key(2)})
        return seen

    seen = forward(jnp.float32(0.5))
    # No dropout on the GRU's outputs: the table rows are the only thing dropped.
    assert "drop_embed" in seen and "drop_0" not in seen
    tables = np.asarray(seen["drop_embed"])  # one copy per sequence [8, 4, 4]
    table = np.asarray(params["params"]["embed"]["embedding"])
    assert tables.shape == (8, 4, 4)
    dropped = np.all(tables == 0, axis=-1)
    # Kept rows are scaled by 1 / (1 - rate) = 2; dropped rows are whole rows.
    np.testing.assert_allclose(tables[~dropped], 2 * np.broadcast_to(table, tables.shape)[~dropped])
    assert 0 < dropped.mean() < 1
    assert len({tuple(row) for row in dropped}) > 1  # masks differ between sequences
    # Evaluation reads the table unchanged: the same function as the no-dropout model.
    plain = build_model(cfg, "none", 40, 10, 100, token_edges=edges)
    np.testing.assert_array_equal(model.apply(params, x, 0.5), plain.apply(params, x))


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["model.token_bins=0"], r"methods.embedding.enabled.*model.token_bins"),
        (["model.architecture=cnn", "model.token_bins=0"], r"embedding.*architecture='cnn'"),
        (["model.token_bins=1"], "model.token_bins"),
        (["model.embed_dim=0"], "model.embed_dim"),
    ],
)
def test_embedding_config_errors_name_the_keys(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _load("embedding_rnn_mnist1d", *overrides)


def test_tokens_are_recurrent_only():
    with pytest.raises(ConfigError, match=r"model.token_bins.*architecture='cnn'"):
        load_config(CONFIGS / "structured_cnn_digits.yaml", ["model.token_bins=8"])
