"""Typed experiment configuration: dataclass schemas, YAML loading, CLI overrides, checks.

The schema lives here; ``configs/*.yaml`` holds data only. A config is loaded with
:func:`load_config`, which merges the YAML file and dotted ``key=value`` overrides onto
the structured schema (OmegaConf), so an unknown key or a wrong type fails at once,
then checks every value's range (:func:`validate`). Every error names the key.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lab.checks import ConfigError, check_choice, check_range, check_sizes, fail
from lab.distributed import DistributedConfig, MeshConfig, validate_distributed, validate_mesh
from lab.layers import ACTIVATIONS
from lab.methods import ARCHITECTURES, METHODS, RECURRENT, MethodsConfig

DATASETS = ("digits", "breast_cancer", "diabetes", "mnist1d", "toy", "csv", "npz", "idx")
TASKS = ("auto", "classification", "regression")
OOD_KINDS = ("none", "held_out_classes", "noise", "permuted")
OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class DataConfig:
    """Which data set, how it is split, and the out-of-distribution set.

    Attributes:
      name: one of ``DATASETS``; ``csv``/``npz``/``idx`` read ``path``.
      path: file to read (csv: a header row; npz: arrays ``x_key``/``y_key``; idx:
        the images file of an MNIST-style pair).
      labels_path: idx only: the labels file.
      target: csv only: name of the target column.
      x_key: npz only: key of the inputs array.
      y_key: npz only: key of the targets array.
      task: ``auto`` (from the data set), ``classification`` or ``regression``.
      test_fraction: share of examples held out for testing.
      val_fraction: share held out for validation (regression: picks the noise
        precision tau).
      split_seed: seed of the train/val/test split (independent of training seeds).
      standardize: z-score inputs (and regression targets) with train statistics.
      ood: out-of-distribution set for the AUROC: ``none``, ``held_out_classes``
        (classes in ``ood_classes`` are removed from training and testing and form
        the OOD set), ``noise`` (standard normal inputs) or ``permuted`` (test inputs
        with their features shuffled by one fixed permutation).
      ood_classes: labels held out when ``ood=held_out_classes`` (a CSV whose labels
        are names: their numbers, the names in sorted order).
      ood_size: number of OOD examples for ``noise``/``permuted`` (0: test size).
      toy_num_points: toy only: number of noisy points (train + val + test).
      toy_noise: toy only: standard deviation of the target noise.
      max_examples: keep at most this many examples (0: all), for quick runs.
    """

    name: str = "digits"
    path: str | None = None
    labels_path: str | None = None
    target: str | None = None
    x_key: str = "x"
    y_key: str = "y"
    task: str = "auto"
    test_fraction: float = 0.3
    val_fraction: float = 0.0
    split_seed: int = 0
    standardize: bool = True
    ood: str = "none"
    ood_classes: list[int] = field(default_factory=list)
    ood_size: int = 0
    toy_num_points: int = 240
    toy_noise: float = 0.1
    max_examples: int = 0


@dataclass
class ModelConfig:
    """Architecture shared by every method.

    Attributes:
      architecture: one of ``ARCHITECTURES``: ``mlp``, ``cnn`` (convolutions, then a
        dense head), ``gru``/``lstm`` (stacked recurrent layers read out at the last
        step, then a dense head) or ``transformer`` (a pre-LN encoder over patches,
        mean-pooled, then a dense head; :class:`lab.transformer.Transformer`).
      hidden: widths of the MLP's hidden layers; cnn/gru/lstm/transformer: of the
        dense head (no dropout there; may be empty).
      activation: a key of ``lab.layers.ACTIVATIONS``.
      channels: cnn only: output channels of each convolution.
      kernel_size: cnn only: side of the convolution kernels.
      residual: cnn only: the first convolution is a stem and every later one a
        residual block ``x + branch(x)`` (its channels must equal the previous
        ones); the ``droppath`` method drops the branches.
      rnn_hidden: gru/lstm only: state size of each recurrent layer.
      input_shape: cnn/gru/lstm: per-example shape, channels last (empty: inferred
        from the data: a square one-channel image for cnn, e.g. digits ``[8, 8, 1]``;
        a one-feature sequence for gru/lstm, e.g. MNIST-1D ``[40, 1]``).
      token_bins: gru/lstm only: 0 (default) reads the float inputs; ``> 1``: every
        input value is a token, its bin among ``token_bins`` quantile bins of the
        training inputs, read through an ``nn.Embed`` of ``embed_dim`` (the
        ``embedding`` method needs it).
      embed_dim: width of the token embedding (``token_bins > 0`` only).
      depth, heads, width, mlp_ratio: transformer only: blocks, attention heads (they
        divide ``width``), token width, the blocks' MLP width over ``width``.
      patch: transformer only: patch side (images: 2 makes 16 tokens of 4 digits
        pixels) or length (sequences: 4 makes 10 tokens of MNIST-1D).
    """

    architecture: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    activation: str = "relu"
    channels: list[int] = field(default_factory=lambda: [16, 32])
    kernel_size: int = 3
    residual: bool = False
    rnn_hidden: list[int] = field(default_factory=lambda: [64])
    input_shape: list[int] = field(default_factory=list)
    token_bins: int = 0
    embed_dim: int = 16
    depth: int = 2
    heads: int = 4
    width: int = 64
    patch: int = 2
    mlp_ratio: int = 2


@dataclass
class TrainConfig:
    """Optimizer and loop.

    Attributes:
      epochs: passes over the training set.
      batch_size: examples per step (the last partial batch of an epoch is dropped).
      optimizer: one of ``OPTIMIZERS``.
      learning_rate: step size.
      weight_decay: decoupled weight decay (adamw) or L2 coupling (adam/sgd: 0 only
        for adam; sgd adds it to the gradient).
      momentum: sgd only.
      eval_every: steps between evaluations (0: once per epoch); one progress update
        and one learning-curve point each.
      checkpoint_every: evaluations between checkpoints.
      eval_batch_size: rows per compiled evaluation forward.
    """

    epochs: int = 100
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    eval_every: int = 0
    checkpoint_every: int = 10
    eval_batch_size: int = 256


@dataclass
class EvalConfig:
    """Evaluation settings.

    Attributes:
      ece_bins: equal-width confidence bins for ECE and reliability diagrams.
      tau_grid: regression: candidate noise precisions (of standardized targets);
        the one with the best validation (or train) log-likelihood is used.
    """

    ece_bins: int = 15
    tau_grid: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
    )


@dataclass
class ExperimentConfig:
    """Everything one comparison needs; saved resolved with its results.

    Attributes:
      name: run name (default: the YAML file's stem).
      output_dir: run folder (default ``runs/<name>``).
      seeds: training seeds; every number is reported as mean +- standard error.
      data: see :class:`DataConfig`.
      model: see :class:`ModelConfig`.
      train: see :class:`TrainConfig`.
      methods: one section per method of :data:`lab.methods.METHODS`.
      eval: see :class:`EvalConfig`.
      mesh: see :class:`MeshConfig`; ``null`` (default): one device, no mesh.
      distributed: see :class:`DistributedConfig`.
      plots: write PNG plots.
      progress: show progress (a bar on a terminal, plain lines elsewhere).
      fresh: recompute everything: reuse no finished result or checkpoint, even
        those whose provenance matches (``lab.provenance``).
    """

    name: str = ""
    output_dir: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: Any = field(default_factory=MethodsConfig)  # lab.methods.MethodsConfig
    eval: EvalConfig = field(default_factory=EvalConfig)
    mesh: MeshConfig | None = None
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    plots: bool = True
    progress: bool = True
    fresh: bool = False


def merge_config(schema: type, path: str | pathlib.Path | None, overrides: Sequence[str]) -> Any:
    """Merges ``schema``'s defaults, the YAML file and ``key=value`` overrides.

    Raises:
      ConfigError: missing file, malformed override, unknown key or wrong type; the
        message names the key.
    """
    try:
        layers = [OmegaConf.structured(schema)]
        if path is not None:
            path = pathlib.Path(path)
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist.")
            layers.append(OmegaConf.load(path))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value.")
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.merge(*layers)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"config key {key!r}: {str(err).splitlines()[0]}") from err


def load_config(
    path: str | pathlib.Path | None = None,
    overrides: Sequence[str] = (),
    *,
    schema: type = ExperimentConfig,
) -> ExperimentConfig:
    """Loads a YAML config onto the schema, applies dotted overrides and checks it.

    Args:
      path: YAML file (``None``: the schema's defaults).
      overrides: ``key=value`` strings, e.g. ``["train.epochs=50", "seeds=[0,1,2]"]``.
      schema: the structured dataclass: :class:`ExperimentConfig` or a subclass of it
        with more sections (the sweep scripts'); subclasses check their own keys after.

    Returns:
      The checked config as an :class:`ExperimentConfig` object (a typed OmegaConf
      node: attribute access, assignments are type-checked).

    Raises:
      ConfigError: missing file, unknown key, wrong type or impossible value; the
        message names the key.
    """
    cfg = merge_config(schema, path, overrides)
    path = pathlib.Path(path) if path is not None else None
    if not cfg.name:
        cfg.name = path.stem if path is not None else "experiment"
    validate(cfg)
    return cfg


def to_yaml(cfg: ExperimentConfig | DictConfig) -> str:
    """The resolved config as YAML text (loadable again with :func:`load_config`)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def enabled_methods(cfg: ExperimentConfig) -> list[str]:
    """Names of the enabled methods, in :data:`lab.methods.METHODS` order."""
    return [name for name in METHODS if getattr(cfg.methods, name).enabled]


def validate_data(d: DataConfig) -> None:
    """Checks the ``data`` section."""
    check_choice("data.name", d.name, DATASETS)
    check_choice("data.task", d.task, TASKS)
    check_choice("data.ood", d.ood, OOD_KINDS)
    if d.name in ("csv", "npz", "idx") and not d.path:
        fail("data.path", d.path, f"data.name={d.name!r} reads a file; set data.path.")
    if d.name == "csv" and not d.target:
        fail("data.target", d.target, "data.name='csv' needs the target column's name.")
    if d.name == "idx" and not d.labels_path:
        fail("data.labels_path", d.labels_path, "data.name='idx' needs the labels file.")
    check_range("data.test_fraction", d.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    check_range("data.val_fraction", d.val_fraction, 0.0, 1.0, high_open=True)
    if d.test_fraction + d.val_fraction >= 1.0:
        fail("data.val_fraction", d.val_fraction, "test_fraction + val_fraction must be < 1.")
    check_range("data.ood_size", d.ood_size, 0)
    check_range("data.toy_num_points", d.toy_num_points, 10)
    check_range("data.toy_noise", d.toy_noise, 0.0)
    check_range("data.max_examples", d.max_examples, 0)
    if d.ood == "held_out_classes" and not d.ood_classes:
        fail("data.ood_classes", [], "name the labels to hold out, or use data.ood=noise.")


def validate_model(m: ModelConfig) -> None:
    """Checks the ``model`` section."""
    check_choice("model.architecture", m.architecture, ARCHITECTURES)
    check_sizes("model.hidden", m.hidden, nonempty=m.architecture == "mlp")
    check_choice("model.activation", m.activation, tuple(ACTIVATIONS))
    check_sizes("model.channels", m.channels)
    check_sizes("model.rnn_hidden", m.rnn_hidden)
    check_sizes("model.input_shape", m.input_shape, nonempty=False)
    check_range("model.kernel_size", m.kernel_size, 1)
    if m.token_bins != 0:
        check_range("model.token_bins", m.token_bins, 2)
        if m.architecture not in RECURRENT:
            fail(
                "model.token_bins",
                m.token_bins,
                f"tokens are gru/lstm only, not model.architecture={m.architecture!r}.",
            )
    check_range("model.embed_dim", m.embed_dim, 1)
    for key in ("depth", "heads", "width", "patch", "mlp_ratio"):
        check_range(f"model.{key}", getattr(m, key), 1)
    if m.width % m.heads:
        fail("model.width", m.width, f"model.heads={m.heads} must divide it.")
    if m.residual:
        if m.architecture != "cnn":
            fail("model.residual", True, f"residual blocks are cnn only, not {m.architecture!r}.")
        if len(m.channels) < 2 or len(set(m.channels)) != 1:
            fail(
                "model.channels",
                list(m.channels),
                "model.residual=true needs a stem and >= 1 block, all with equal channels.",
            )


def validate_train(t: TrainConfig) -> None:
    """Checks the ``train`` section."""
    check_range("train.epochs", t.epochs, 1)
    check_range("train.batch_size", t.batch_size, 1)
    check_choice("train.optimizer", t.optimizer, OPTIMIZERS)
    check_range("train.learning_rate", t.learning_rate, 0.0, low_open=True)
    check_range("train.weight_decay", t.weight_decay, 0.0)
    check_range("train.momentum", t.momentum, 0.0, 1.0, high_open=True)
    check_range("train.eval_every", t.eval_every, 0)
    check_range("train.checkpoint_every", t.checkpoint_every, 1)
    check_range("train.eval_batch_size", t.eval_batch_size, 1)


def validate_methods(cfg: ExperimentConfig) -> None:
    """Checks every method's settings and that each enabled one fits the model."""
    for name, method in METHODS.items():
        method.check(f"methods.{name}", getattr(cfg.methods, name))
    names = enabled_methods(cfg)
    if not names:
        fail("methods", "all disabled", "enable at least one method.")
    arch = cfg.model.architecture
    for name in names:
        fits = METHODS[name].architectures
        if arch not in fits:
            fail(
                f"methods.{name}.enabled",
                True,
                f"method {name!r} does not fit model.architecture={arch!r} "
                f"(it needs one of {fits}).",
            )
        why = METHODS[name].needs(cfg.model)
        if why is not None:
            fail(f"methods.{name}.enabled", True, why)
        profile = getattr(getattr(cfg.methods, name), "schedule", None)
        if profile and profile.profile not in ("auto", "uniform") and arch != "transformer":
            fail(f"methods.{name}.schedule.profile", profile.profile, "is transformer only.")


def validate_seeds(seeds: Sequence[int]) -> None:
    """At least one seed; distinct; non-negative."""
    if not seeds:
        fail("seeds", list(seeds), "needs at least one seed.")
    if len(set(seeds)) != len(seeds):
        fail("seeds", list(seeds), "seeds must be distinct.")
    for i, seed in enumerate(seeds):
        check_range(f"seeds[{i}]", seed, 0)


def validate_runtime(cfg: ExperimentConfig) -> None:
    """Checks the ``eval``, ``mesh`` and ``distributed`` sections."""
    check_range("eval.ece_bins", cfg.eval.ece_bins, 1)
    if not cfg.eval.tau_grid:
        fail("eval.tau_grid", [], "needs at least one precision.")
    for i, tau in enumerate(cfg.eval.tau_grid):
        check_range(f"eval.tau_grid[{i}]", tau, 0.0, low_open=True)
    validate_mesh(cfg.mesh)
    validate_distributed(cfg.distributed)


def validate(cfg: ExperimentConfig) -> None:
    """Checks every value's range and the combinations; raises :class:`ConfigError`."""
    validate_data(cfg.data)
    validate_model(cfg.model)
    validate_train(cfg.train)
    validate_seeds(cfg.seeds)
    validate_methods(cfg)
    validate_runtime(cfg)
