"""Typed experiment configuration: dataclass schemas, YAML loading, CLI overrides, checks.

The schema lives here; ``configs/*.yaml`` holds data only. A config is loaded with
:func:`load_config`, which merges the YAML file and dotted ``key=value`` overrides onto
the structured schema (OmegaConf), so an unknown key or a wrong type fails at once,
then checks every value's range (:func:`validate`). Every error names the key.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

DATASETS = ("digits", "breast_cancer", "diabetes", "mnist1d", "toy", "csv", "npz", "idx")
TASKS = ("auto", "classification", "regression")
OOD_KINDS = ("none", "held_out_classes", "noise", "permuted")
ACTIVATIONS = ("relu", "gelu", "tanh", "elu", "silu")
OPTIMIZERS = ("adam", "adamw", "sgd")
METHODS = (
    "none", "classic", "inverted", "rdrop", "mc", "dropconnect", "gaussian",
    "channel", "dropblock", "locked", "zoneout", "concrete",
    "droppath", "weightdrop", "sparse_vd", "embedding",
)  # fmt: skip
ARCHITECTURES = ("mlp", "cnn", "gru", "lstm")
# Architectures each method's dropout layers fit (the rest: every architecture).
METHOD_ARCHITECTURES = {
    "dropconnect": ("mlp",),
    "channel": ("cnn",),
    "dropblock": ("cnn",),
    "locked": ("gru", "lstm"),
    "zoneout": ("gru", "lstm"),
    "concrete": ("mlp",),
    "droppath": ("cnn",),
    "weightdrop": ("gru", "lstm"),
    "sparse_vd": ("mlp",),
    "embedding": ("gru", "lstm"),
}


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""


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
        dense head) or ``gru``/``lstm`` (stacked recurrent layers read out at the last
        step, then a dense head).
      hidden: widths of the MLP's hidden layers; cnn/gru/lstm: of the dense head
        (no dropout there; may be empty).
      activation: one of ``ACTIVATIONS``.
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
class NoneMethod:
    """No dropout."""

    enabled: bool = True


@dataclass
class DropoutMethod:
    """A dropout variant: ``rate`` after every hidden activation, ``input_rate`` on inputs."""

    enabled: bool = True
    rate: float = 0.5
    input_rate: float = 0.0


@dataclass
class RDropMethod:
    """R-Drop: inverted dropout plus ``alpha`` times the symmetric KL of two passes."""

    enabled: bool = True
    rate: float = 0.5
    input_rate: float = 0.0
    alpha: float = 1.0


@dataclass
class MCMethod:
    """MC dropout: trained like inverted dropout, predicted by the mean of passes."""

    enabled: bool = True
    rate: float = 0.5
    input_rate: float = 0.0
    num_samples: int = 50
    chunk_size: int | None = None


@dataclass
class DropBlockMethod:
    """DropBlock after every convolution: ``rate`` is the expected dropped fraction."""

    enabled: bool = False
    rate: float = 0.1
    input_rate: float = 0.0
    block_size: int = 3


@dataclass
class ConcreteMethod:
    r"""Concrete dropout: the rate of every layer is learned (Gal, Hron & Kendall 2017).

    The loss adds each layer's regularizer with :math:`\lambda_w = l^2 / (N\tau)` and
    :math:`\lambda_p = 2 / (N\tau)` (:math:`N` training examples): the paper's scaling
    for a data term that is the mean negative log-likelihood, which the regression
    loss :math:`\tfrac12 (y - \hat y)^2` is up to the factor :math:`\tau`.

    Attributes:
      init_rate: initial rate of every layer, in (0, 1).
      temperature: relaxation temperature.
      length_scale: prior length-scale :math:`l`.
      on_inputs: also a learned-rate layer on the inputs.
      tau: noise precision :math:`\tau` of the standardized regression targets the
        data term assumes (1 for classification: cross-entropy is the NLL).
    """

    enabled: bool = False
    init_rate: float = 0.1
    temperature: float = 0.1
    length_scale: float = 1e-2
    on_inputs: bool = False
    tau: float = 1.0


@dataclass
class SparseVDMethod:
    r"""Sparse variational dropout (Kingma et al. 2015; Molchanov et al. 2017), MLP only.

    Every dense layer has a learned per-weight noise variance
    (:class:`dropout_lab.linen.VariationalDense`); the loss adds the approximate KL of
    all weights times :math:`1 / N` (:math:`N` training examples: the negative ELBO
    per example). Evaluation zeroes the weights with :math:`\log\alpha \ge`
    ``threshold`` (the reported test metrics are the pruned network's).

    Attributes:
      log_sigma2_init: initial :math:`\log\sigma^2` of every weight.
      threshold: pruning threshold on :math:`\log\alpha` (the paper's 3).
    """

    enabled: bool = False
    log_sigma2_init: float = -10.0
    threshold: float = 3.0


@dataclass
class MethodsConfig:
    """The methods compared; each can be switched off with ``enabled: false``."""

    none: NoneMethod = field(default_factory=NoneMethod)
    classic: DropoutMethod = field(default_factory=DropoutMethod)
    inverted: DropoutMethod = field(default_factory=DropoutMethod)
    rdrop: RDropMethod = field(default_factory=RDropMethod)
    mc: MCMethod = field(default_factory=MCMethod)
    dropconnect: DropoutMethod = field(default_factory=lambda: DropoutMethod(enabled=False))
    gaussian: DropoutMethod = field(default_factory=lambda: DropoutMethod(enabled=False))
    channel: DropoutMethod = field(default_factory=lambda: DropoutMethod(enabled=False))
    dropblock: DropBlockMethod = field(default_factory=DropBlockMethod)
    locked: DropoutMethod = field(default_factory=lambda: DropoutMethod(enabled=False))
    zoneout: DropoutMethod = field(default_factory=lambda: DropoutMethod(enabled=False))
    concrete: ConcreteMethod = field(default_factory=ConcreteMethod)
    droppath: DropoutMethod = field(default_factory=lambda: DropoutMethod(enabled=False))
    weightdrop: DropoutMethod = field(default_factory=lambda: DropoutMethod(enabled=False))
    sparse_vd: SparseVDMethod = field(default_factory=SparseVDMethod)
    embedding: DropoutMethod = field(default_factory=lambda: DropoutMethod(enabled=False))


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
class MeshConfig:
    """Device mesh of data-parallel training (``jax.sharding.Mesh``, axes ``data``, ``model``).

    Attributes:
      data: devices on the ``data`` axis, which splits each training batch, each
        evaluation batch and (in sweeps) the grid points; ``-1``: every device left
        after ``model``.
      model: devices on the ``model`` axis: parameters and optimizer moments whose
        last dimension it divides are split along that dimension (the rest are
        replicated); ``1``: every device holds all parameters (plain data parallel).
    """

    data: int = -1
    model: int = 1


@dataclass
class DistributedConfig:
    """Multi-process setup (``jax.distributed.initialize``), one process per host.

    Attributes:
      enabled: ``true``: always initialize; ``false``: never; ``null`` (default):
        initialize when a field below is set or the environment names a
        multi-process job (``JAX_COORDINATOR_ADDRESS``, or SLURM / Open MPI with
        more than one task).
      coordinator_address: ``host:port`` of process 0 (``null``: from the
        environment or the cluster).
      num_processes: number of processes (``null``: from the environment).
      process_id: this process's index (``null``: from the environment).
      initialization_timeout: seconds to wait for every process to connect.
    """

    enabled: bool | None = None
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    initialization_timeout: int = 300


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
      methods: see :class:`MethodsConfig`.
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
    methods: MethodsConfig = field(default_factory=MethodsConfig)
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
    """Names of the enabled methods, in ``METHODS`` order."""
    return [m for m in METHODS if getattr(cfg.methods, m).enabled]


def _fail(key: str, value, why: str):
    raise ConfigError(f"config key {key!r} = {value!r}: {why}")


def _check_choice(key: str, value, choices: Sequence[str]):
    if value not in choices:
        _fail(key, value, f"must be one of {tuple(choices)}.")


def _check_range(key: str, value, low=None, high=None, *, low_open=False, high_open=False):
    if isinstance(value, float) and math.isnan(value):
        _fail(key, value, "must not be NaN.")
    if low is not None and (value <= low if low_open else value < low):
        _fail(key, value, f"must be {'>' if low_open else '>='} {low}.")
    if high is not None and (value >= high if high_open else value > high):
        _fail(key, value, f"must be {'<' if high_open else '<='} {high}.")


def validate(cfg: ExperimentConfig) -> None:
    """Checks every value's range and the combinations; raises :class:`ConfigError`."""
    d, m, t = cfg.data, cfg.model, cfg.train
    _check_choice("data.name", d.name, DATASETS)
    _check_choice("data.task", d.task, TASKS)
    _check_choice("data.ood", d.ood, OOD_KINDS)
    if d.name in ("csv", "npz", "idx") and not d.path:
        _fail("data.path", d.path, f"data.name={d.name!r} reads a file; set data.path.")
    if d.name == "csv" and not d.target:
        _fail("data.target", d.target, "data.name='csv' needs the target column's name.")
    if d.name == "idx" and not d.labels_path:
        _fail("data.labels_path", d.labels_path, "data.name='idx' needs the labels file.")
    _check_range("data.test_fraction", d.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    _check_range("data.val_fraction", d.val_fraction, 0.0, 1.0, high_open=True)
    if d.test_fraction + d.val_fraction >= 1.0:
        _fail("data.val_fraction", d.val_fraction, "test_fraction + val_fraction must be < 1.")
    _check_range("data.ood_size", d.ood_size, 0)
    _check_range("data.toy_num_points", d.toy_num_points, 10)
    _check_range("data.toy_noise", d.toy_noise, 0.0)
    _check_range("data.max_examples", d.max_examples, 0)
    if d.ood == "held_out_classes" and not d.ood_classes:
        _fail("data.ood_classes", [], "name the labels to hold out, or use data.ood=noise.")
    _check_choice("model.architecture", m.architecture, ARCHITECTURES)
    if not m.hidden and m.architecture == "mlp":
        _fail("model.hidden", list(m.hidden), "needs at least one hidden layer.")
    for i, width in enumerate(m.hidden):
        _check_range(f"model.hidden[{i}]", width, 1)
    _check_choice("model.activation", m.activation, ACTIVATIONS)
    for key in ("channels", "rnn_hidden", "input_shape"):
        if key != "input_shape" and not getattr(m, key):
            _fail(f"model.{key}", [], "needs at least one layer.")
        for i, size in enumerate(getattr(m, key)):
            _check_range(f"model.{key}[{i}]", size, 1)
    _check_range("model.kernel_size", m.kernel_size, 1)
    if m.token_bins != 0:
        _check_range("model.token_bins", m.token_bins, 2)
        if m.architecture not in ("gru", "lstm"):
            _fail(
                "model.token_bins",
                m.token_bins,
                f"tokens are gru/lstm only, not model.architecture={m.architecture!r}.",
            )
    _check_range("model.embed_dim", m.embed_dim, 1)
    _check_range("train.epochs", t.epochs, 1)
    _check_range("train.batch_size", t.batch_size, 1)
    _check_choice("train.optimizer", t.optimizer, OPTIMIZERS)
    _check_range("train.learning_rate", t.learning_rate, 0.0, low_open=True)
    _check_range("train.weight_decay", t.weight_decay, 0.0)
    _check_range("train.momentum", t.momentum, 0.0, 1.0, high_open=True)
    _check_range("train.eval_every", t.eval_every, 0)
    _check_range("train.checkpoint_every", t.checkpoint_every, 1)
    _check_range("train.eval_batch_size", t.eval_batch_size, 1)
    if not cfg.seeds:
        _fail("seeds", list(cfg.seeds), "needs at least one seed.")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        _fail("seeds", list(cfg.seeds), "seeds must be distinct.")
    for i, seed in enumerate(cfg.seeds):
        _check_range(f"seeds[{i}]", seed, 0)
    names = enabled_methods(cfg)
    if not names:
        _fail("methods", "all disabled", "enable at least one method.")
    for name in names:
        method = getattr(cfg.methods, name)
        for rate_key in ("rate", "input_rate"):
            if hasattr(method, rate_key):
                # A rate of 1 drops everything: nothing can be learned.
                _check_range(
                    f"methods.{name}.{rate_key}",
                    getattr(method, rate_key),
                    0.0,
                    1.0,
                    high_open=True,
                )
        fits = METHOD_ARCHITECTURES.get(name, ARCHITECTURES)
        if m.architecture not in fits:
            _fail(
                f"methods.{name}.enabled",
                True,
                f"method {name!r} does not fit model.architecture={m.architecture!r} "
                f"(it needs one of {fits}).",
            )
    if "droppath" in names and not m.residual:
        _fail(
            "methods.droppath.enabled",
            True,
            "drop path drops residual branches: it needs model.residual=true.",
        )
    if "embedding" in names and m.token_bins == 0:
        _fail(
            "methods.embedding.enabled",
            True,
            "embedding dropout drops token vectors: it needs model.token_bins > 0.",
        )
    if m.residual:
        if m.architecture != "cnn":
            _fail("model.residual", True, f"residual blocks are cnn only, not {m.architecture!r}.")
        if len(m.channels) < 2 or len(set(m.channels)) != 1:
            _fail(
                "model.channels",
                list(m.channels),
                "model.residual=true needs a stem and >= 1 block, all with equal channels.",
            )
    _check_range("methods.rdrop.alpha", cfg.methods.rdrop.alpha, 0.0)
    _check_range("methods.dropblock.block_size", cfg.methods.dropblock.block_size, 1)
    c = cfg.methods.concrete
    _check_range("methods.concrete.init_rate", c.init_rate, 0.0, 1.0, low_open=True, high_open=True)
    _check_range("methods.concrete.temperature", c.temperature, 0.0, low_open=True)
    _check_range("methods.concrete.length_scale", c.length_scale, 0.0)
    _check_range("methods.concrete.tau", c.tau, 0.0, low_open=True)
    _check_range("methods.sparse_vd.threshold", cfg.methods.sparse_vd.threshold, -10.0, 10.0)
    _check_range("methods.mc.num_samples", cfg.methods.mc.num_samples, 1)
    if cfg.methods.mc.chunk_size is not None:
        _check_range("methods.mc.chunk_size", cfg.methods.mc.chunk_size, 1)
    _check_range("eval.ece_bins", cfg.eval.ece_bins, 1)
    if not cfg.eval.tau_grid:
        _fail("eval.tau_grid", [], "needs at least one precision.")
    for i, tau in enumerate(cfg.eval.tau_grid):
        _check_range(f"eval.tau_grid[{i}]", tau, 0.0, low_open=True)
    if cfg.mesh is not None:
        if cfg.mesh.data != -1:
            _check_range("mesh.data", cfg.mesh.data, 1)
        _check_range("mesh.model", cfg.mesh.model, 1)
    dist = cfg.distributed
    if dist.num_processes is not None:
        _check_range("distributed.num_processes", dist.num_processes, 1)
    if dist.process_id is not None:
        _check_range("distributed.process_id", dist.process_id, 0)
        if dist.num_processes is not None and dist.process_id >= dist.num_processes:
            _fail("distributed.process_id", dist.process_id, "must be < num_processes.")
    _check_range("distributed.initialization_timeout", dist.initialization_timeout, 1)
