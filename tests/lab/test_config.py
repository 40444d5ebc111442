import pathlib

import pytest

from lab import ConfigError, load_config, to_yaml

# Configs of experiments/compare.py (theory_checks.yaml has its own schema and test).
CONFIGS = sorted(
    p
    for p in (pathlib.Path(__file__).parents[2] / "configs").glob("*.yaml")
    if p.name.startswith(("compare_", "regression_"))
)


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"compare_digits.yaml", "regression_toy.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert len(cfg.seeds) >= 3


def test_overrides_are_applied():
    cfg = load_config(
        CONFIGS[0].parent / "compare_digits.yaml",
        ["train.epochs=50", "methods.rdrop.alpha=0.5", "seeds=[0,1,2,3,4]"],
    )
    assert cfg.train.epochs == 50
    assert cfg.methods.rdrop.alpha == 0.5
    assert list(cfg.seeds) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochz=3", "epochz"),  # unknown key
        ("methods.rdorp.alpha=1", "rdorp"),  # unknown method
        ("methods.none.rate=0.5", "rate"),  # no dropout has no rate
        ("train.epochs=abc", "train.epochs"),  # wrong type
        ("train.epochs=-1", "train.epochs"),  # impossible value
        ("methods.inverted.rate=1.5", "methods.inverted.rate"),
        ("methods.mc.input_rate=-0.1", "methods.mc.input_rate"),
        ("methods.mc.num_samples=0", "methods.mc.num_samples"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("data.name=imagenet", "data.name"),
        ("data.test_fraction=1.0", "data.test_fraction"),
        ("model.hidden=[64,0]", "model.hidden[1]"),
        ("seeds=[1,1]", "seeds"),
        ("data.name=csv", "data.path"),
        ("data.ood=held_out_classes", "data.ood_classes"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="lerning_rate"):
        load_config(path)


def test_wrong_type_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("methods:\n  mc:\n    num_samples: many\n")
    with pytest.raises(ConfigError, match="num_samples"):
        load_config(path)


def test_missing_file_and_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(CONFIGS[0].parent / "compare_digits.yaml", ["train.epochs=7"])
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(path)
    assert to_yaml(again) == to_yaml(cfg)
