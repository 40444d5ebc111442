"""The active-learning experiment: static shapes, vmap = one seed alone, Random's uniformity."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab import active, active_acquire, active_results
from lab.active_config import HEURISTICS, load_active_config
from lab.checks import ConfigError
from lab.data import load_dataset

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"
DEFAULT = CONFIGS / "active_learning_digits.yaml"
# Tiny: 300 digits (210 in the pool), a 16-unit MLP, 2 acquisition rounds of 3 labels.
# One heuristic per selection rule (uniform, top-k, power sampling, BatchBALD: its first
# two picks enumerate the 1 and 10 labellings, the third samples 10): each compiled
# round costs ~20 s of one core to compile (the vmap check needs a second one), ~4 s
# with `active.fast_compile`.
HEURISTICS_TINY = "active.heuristics=[random,variation_ratio,power_bald,batch_bald]"
TINY = [
    "data.max_examples=300",
    "model.hidden=[16]",
    "seeds=[0,1]",
    HEURISTICS_TINY,
    "active.rounds=2",
    "active.steps=10",
    "active.acquire=3",
    "active.initial_per_class=1",
    "active.batch_bald_samples=10",
    "active.pool_chunk_size=null",
    "active.fast_compile=true",
    "methods.mc.num_samples=3",
    "train.batch_size=8",
    "progress=false",
]


def _cfg(tmp_path, *extra):
    return load_active_config(DEFAULT, [*TINY, f"output_dir={tmp_path}", *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("active")
    cfg = _cfg(folder)
    data = load_dataset(cfg.data)
    return cfg, data, folder, active.run_active(cfg, data=data)


@pytest.mark.parametrize("name", ["active_learning_digits", "active_learning_repeated_digits"])
def test_configs_load(name):
    cfg = load_active_config(CONFIGS / f"{name}.yaml")
    assert len(cfg.seeds) >= 3 and set(cfg.active.heuristics) <= set(HEURISTICS)
    assert cfg.active.repeat == (3 if "repeated" in name else 1)


@pytest.mark.parametrize(
    "override", ["active.heuristics=[bald,bald]", "active.heuristics=[nope]", "active.acquire=0"]
)
def test_bad_values_name_their_key(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split("[")[0]):
        load_active_config(DEFAULT, [override])


def test_smoke_run_writes_every_output(tiny_run):
    cfg, _, folder, out = tiny_run
    for name in ("config.yaml", "active.json", "results.md", "active_learning.png"):
        assert (folder / name).is_file(), name
    saved = json.loads((folder / "active.json").read_text())
    assert list(saved["curves"]) == list(cfg.active.heuristics)
    assert saved["labels"] == [10, 13, 16]
    assert saved["provenance"]["config_hash"] and saved["provenance"]["data_hash"]
    for curve in saved["curves"].values():
        assert np.asarray(curve["test_error"]).shape == (2, 3)
        assert np.all(np.isfinite(curve["train_loss"]))
    text = (folder / "results.md").read_text()
    assert "| BatchBALD |" in text and "provenance:" in text


def test_start_set_is_balanced_and_shared(tiny_run):
    _, data, _, out = tiny_run
    for idx in out["initial"].values():
        assert sorted(data.y_train[idx].tolist()) == list(range(data.num_classes))
    # Round 0: every heuristic of a seed trains the same model on the same start set.
    first = np.array([np.asarray(c["test_error"])[:, 0] for c in out["curves"].values()])
    np.testing.assert_array_equal(first, np.broadcast_to(first[0], first.shape))


def test_labelled_set_grows_by_the_acquisition_size_without_repeats(tiny_run):
    cfg, data, _, out = tiny_run
    for h, per_seed in out["acquired"].items():
        for seed, rounds in per_seed.items():
            start = out["initial"][seed]
            picks = np.asarray(rounds)
            assert picks.shape == (cfg.active.rounds, cfg.active.acquire), h
            labelled = np.concatenate([start, picks.ravel()])
            assert len(np.unique(labelled)) == len(labelled), (h, seed)  # never twice
            assert labelled.min() >= 0 and labelled.max() < len(data.x_train)


def test_vmapped_rounds_equal_one_seed_alone(tiny_run):
    cfg, data, folder, out = tiny_run
    alone = _cfg(folder / "alone", "seeds=[1]")
    pool = active.make_pool(data, alone.active)
    raw = active.run_rounds(alone, active.active_setup(alone, data, pool), pool)
    got = active_results.collect(alone, raw)
    for h in cfg.active.heuristics:
        assert got["acquired"][h]["1"] == out["acquired"][h]["1"], h
        for key in ("test_error", "train_loss"):
            np.testing.assert_allclose(
                got["curves"][h][key][0], out["curves"][h][key][1], rtol=1e-5, atol=1e-6
            )


def test_random_acquisition_is_uniform_over_the_unlabelled_pool():
    cfg = load_active_config(DEFAULT, ["active.acquire=5"])
    select = active_acquire.selector("random", (), cfg.active)
    num, draws = 50, 20_000
    available = jnp.arange(num) % 5 != 0  # 40 unlabelled points
    scores = jnp.zeros((num, 1))
    keys = jax.random.split(jax.random.key(0), draws)
    picks = jax.jit(jax.vmap(lambda k: select(k, scores, available)))(keys)
    assert all(len(set(row)) == 5 for row in np.asarray(picks[:100]).tolist())
    counts = np.bincount(np.asarray(picks).ravel(), minlength=num)
    assert counts[~np.asarray(available)].sum() == 0  # labelled points never drawn
    # Each unlabelled point is in a draw with probability p = 5/40, independently over
    # draws: its count is Binomial(20000, 1/8), sd = sqrt(20000 p (1-p)) = 46.8. A
    # deviation over 5 sd at any of the 40 points has probability < 40 * 5.7e-7.
    p = 5 / 40
    sd = math.sqrt(draws * p * (1 - p))
    assert np.abs(counts[np.asarray(available)] - draws * p).max() < 5 * sd


def test_labels_needed_reads_the_first_crossing():
    errors = np.array([[0.3, 0.12, 0.09, 0.11, 0.04], [0.3, 0.2, 0.15, 0.12, 0.11]])
    labels = [20, 30, 40, 50, 60]
    assert active_results.labels_needed(errors, labels, 0.10) == [40, None]
    summary = active_results.target_summary({"random": errors}, labels, [0.1])["0.1"]
    assert summary["random"]["reached"] == 1 and summary["random"]["ratio"] is None
