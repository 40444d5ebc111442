"""The lab: config schema, data, models, the table of methods, fit, evaluate, report.

Scripts in ``experiments/`` parse a config and call :func:`run_experiment`.
"""

# The lab's imports follow the check of its optional dependencies below.
# ruff: noqa: E402
import importlib.util

# The lab needs the ``experiments`` extra; the library (``dropout_lab``) does not.
_MISSING = [
    name
    for name in ("omegaconf", "orbax", "matplotlib", "sklearn", "mnist1d", "rich")
    if importlib.util.find_spec(name) is None
]
if _MISSING:
    raise ImportError(
        f"the experiments need {', '.join(_MISSING)}, from the 'experiments' extra: "
        'run `make install`, or `pip install -e ".[experiments]"` in a checkout.'
    )

from lab.config import (
    ConfigError,
    ExperimentConfig,
    enabled_methods,
    load_config,
    to_yaml,
    validate,
)
from lab.data import DataError, Dataset, load_dataset
from lab.fit import RunKeys, Setup, fit, make_optimizer, make_setup
from lab.methods import METHODS, Method
from lab.model import CNN, MLP, RecurrentNet, build_model
from lab.predict import Predictor, compile_forward
from lab.run import run_dir, run_experiment

__all__ = [
    "CNN",
    "MLP",
    "ConfigError",
    "DataError",
    "Dataset",
    "ExperimentConfig",
    "RecurrentNet",
    "METHODS",
    "Method",
    "Predictor",
    "RunKeys",
    "Setup",
    "build_model",
    "compile_forward",
    "enabled_methods",
    "fit",
    "load_config",
    "load_dataset",
    "make_optimizer",
    "make_setup",
    "run_dir",
    "run_experiment",
    "to_yaml",
    "validate",
]
