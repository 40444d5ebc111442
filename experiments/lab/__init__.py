"""Experiment library: config schema, data, MLP, trainer, evaluation, reports.

Scripts in ``experiments/`` parse a config and call :func:`run_experiment`.
"""

from lab.config import (
    ConfigError,
    ExperimentConfig,
    enabled_methods,
    load_config,
    to_yaml,
    validate,
)
from lab.data import DataError, Dataset, load_dataset
from lab.model import CNN, MLP, RecurrentNet, build_model
from lab.run import run_dir, run_experiment
from lab.train import RunKeys, Trainer, compile_forward, make_optimizer

__all__ = [
    "CNN",
    "MLP",
    "ConfigError",
    "DataError",
    "Dataset",
    "ExperimentConfig",
    "RecurrentNet",
    "RunKeys",
    "Trainer",
    "build_model",
    "compile_forward",
    "enabled_methods",
    "load_config",
    "load_dataset",
    "make_optimizer",
    "run_dir",
    "run_experiment",
    "to_yaml",
    "validate",
]
