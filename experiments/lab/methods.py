"""The table of methods: every compared method declared once, as one :class:`Method`.

A record says how the method builds its dropout layers (``variant`` and
``model_options``), its settings (the ``methods.<name>`` section), its loss, its
prediction (one deterministic pass or MC passes) and its extra metrics. Nothing else
in the lab branches on a method's name: a new method is one entry and a test. The
hyperparameters a step needs travel as a pytree :data:`Hparams` of float32 scalars,
so they may be traced and vmapped over a grid.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dropout_lab import losses, ops
from lab.checks import check_range, check_rate
from lab.rate_schedule import check_schedule, of_settings
from lab.settings import (
    ConcreteSettings,
    DropBlockSettings,
    DropoutSettings,
    MCSettings,
    NoneSettings,
    RDropSettings,
    SparseVDSettings,
)

Hparams = dict[str, jax.Array]
"""``{"rate", "input_rate", "alpha", "weight_decay"}`` and the rate's schedule
(``schedule_kind``, ``schedule_start``, ``schedule_until``, ``schedule_end_rate``;
:mod:`lab.rate_schedule`): float32 scalars (or ``[P]``)."""

ARCHITECTURES = ("mlp", "cnn", "gru", "lstm", "transformer")
RECURRENT = ("gru", "lstm")
ELEMENTWISE = ("mlp", "cnn", "gru", "lstm")  # classic / Gaussian after every activation


# -------------------------------------------------------------------------- losses
def data_loss(out: jax.Array, y: jax.Array, task: str) -> jax.Array:
    """Mean cross-entropy (classification) or mean of ``0.5 (y - out)^2`` (regression)."""
    if task == "classification":
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    return 0.5 * jnp.mean((out[:, 0] - y) ** 2)


def _forward(model, params, x, key, hp: Hparams, **kwargs):
    return model.apply(
        {"params": params}, x, hp["rate"], hp["input_rate"],
        deterministic=False, rngs={"dropout": key}, **kwargs,
    )  # fmt: skip


def plain_loss(model, params, x, y, key, hp: Hparams, task: str) -> jax.Array:
    """The data loss of one stochastic forward pass."""
    return data_loss(_forward(model, params, x, key, hp), y, task)


def sown_loss(model, params, x, y, key, hp: Hparams, task: str) -> jax.Array:
    """Data loss plus the regularizers the layers sow in ``"losses"`` (they carry 1/N)."""
    out, sown = _forward(model, params, x, key, hp, mutable=["losses"])
    return data_loss(out, y, task) + sum(jax.tree.leaves(sown))


def rdrop_loss(model, params, x, y, key, hp: Hparams, task: str) -> jax.Array:
    """R-Drop (Liang et al., NeurIPS 2021): two passes, data loss + alpha x symmetric KL.

    One forward over the batch concatenated with itself: two independent masks, one
    kernel launch per layer. Regression: 1/4 of the sum of both squared errors, the
    scale of the other methods' mean of ``0.5 (y - pred)^2``.
    """
    out_a, out_b = losses.rdrop_forward(lambda xx, k: _forward(model, params, xx, k, hp), x, key)
    if task == "classification":
        return losses.rdrop(out_a, out_b, y, alpha=hp["alpha"])
    return 0.25 * losses.rdrop_regression(out_a[:, 0], out_b[:, 0], y, alpha=hp["alpha"])


# --------------------------------------------------------------- options and metrics
def no_options(settings: Any, num_train: int) -> dict:
    """No model options beyond the variant."""
    return {}


def concrete_options(settings: Any, num_train: int) -> dict:
    r"""Concrete layers' init rate, temperature, :math:`\lambda_w`, :math:`\lambda_p`."""
    scale = num_train * settings.tau
    return {
        "concrete_init_rate": settings.init_rate,
        "temperature": settings.temperature,
        "weight_regularizer": settings.length_scale**2 / scale,
        "dropout_regularizer": 2.0 / scale,
        "concrete_inputs": settings.on_inputs,
    }


def sparse_vd_options(settings: Any, num_train: int) -> dict:
    """Variational layers' KL scale ``1/N``, pruning threshold and initial log-variance."""
    return {
        "vd_kl_scale": 1.0 / num_train,
        "vd_threshold": settings.threshold,
        "vd_log_sigma2_init": settings.log_sigma2_init,
    }


def dropblock_options(settings: Any, num_train: int) -> dict:
    """DropBlock's block side."""
    return {"block_size": settings.block_size}


def no_metrics(settings: Any, params: Any) -> dict[str, float]:
    """No metrics read from the parameters."""
    return {}


def learned_rates(settings: Any, params: Any) -> dict[str, float]:
    """``learned_rate_<i>`` (and ``learned_rate_in``): ``sigmoid(rate_logit)`` of ``drop_<i>``."""
    out = {}
    for name, sub in params.items():
        if isinstance(sub, Mapping) and "rate_logit" in sub:
            key = "learned_rate_" + name.removeprefix("drop_")
            out[key] = float(jax.nn.sigmoid(sub["rate_logit"]))
    return dict(sorted(out.items()))


def pruned_fraction(settings: Any, params: Any) -> dict[str, float]:
    """``pruned_fraction``: share of variational weights with ``log_alpha >= threshold``."""
    pruned, total = 0, 0
    for sub in params.values():
        if isinstance(sub, Mapping) and "log_sigma2" in sub:
            log_alpha = ops.variational_log_alpha(sub["kernel"], sub["log_sigma2"])
            pruned += int(jnp.sum(~ops.variational_prune_mask(log_alpha, settings.threshold)))
            total += log_alpha.size
    return {"pruned_fraction": pruned / total} if total else {}


def no_final_metrics(model, params, x: np.ndarray, y: np.ndarray, task: str) -> dict:
    """No metrics beyond the common evaluation."""
    return {}


def unpruned_accuracy(model, params, x: np.ndarray, y: np.ndarray, task: str) -> dict:
    """``test_acc_unpruned``: a sparse-VD classifier's test accuracy with every weight."""
    if task != "classification":
        return {}
    logits = jax.jit(model.clone(vd_threshold=None).apply)({"params": params}, x)
    return {"test_acc_unpruned": float(np.mean(np.asarray(logits).argmax(-1) == y))}


# -------------------------------------------------------------------------- checks
def no_needs(model_cfg: Any) -> str | None:
    """No requirement on the model beyond the architecture."""
    return None


def needs_residual(model_cfg: Any) -> str | None:
    """Drop path drops residual branches (a transformer's blocks always are)."""
    if model_cfg.architecture == "cnn" and not model_cfg.residual:
        return "drop path drops residual branches: it needs model.residual=true."
    return None


def needs_tokens(model_cfg: Any) -> str | None:
    """Embedding dropout drops token vectors."""
    if model_cfg.token_bins == 0:
        return "embedding dropout drops token vectors: it needs model.token_bins > 0."
    return None


def check_rates(prefix: str, s: Any) -> None:
    """``rate`` and ``input_rate`` in [0, 1), and the ``schedule``, where the settings have them."""
    for key in ("rate", "input_rate"):
        if hasattr(s, key):
            check_rate(f"{prefix}.{key}", getattr(s, key))
    if hasattr(s, "schedule"):
        check_schedule(f"{prefix}.schedule", s.schedule)


def check_rdrop(prefix: str, s: Any) -> None:
    """Rates, and ``alpha >= 0``."""
    check_rates(prefix, s)
    check_range(f"{prefix}.alpha", s.alpha, 0.0)


def check_mc(prefix: str, s: Any) -> None:
    """Rates, ``num_samples >= 1`` and ``chunk_size`` null or >= 1."""
    check_rates(prefix, s)
    check_range(f"{prefix}.num_samples", s.num_samples, 1)
    if s.chunk_size is not None:
        check_range(f"{prefix}.chunk_size", s.chunk_size, 1)


def check_dropblock(prefix: str, s: Any) -> None:
    """Rates, and ``block_size >= 1``."""
    check_rates(prefix, s)
    check_range(f"{prefix}.block_size", s.block_size, 1)


def check_concrete(prefix: str, s: Any) -> None:
    """Initial rate in (0, 1), positive temperature and tau, length-scale >= 0."""
    check_range(f"{prefix}.init_rate", s.init_rate, 0.0, 1.0, low_open=True, high_open=True)
    check_range(f"{prefix}.temperature", s.temperature, 0.0, low_open=True)
    check_range(f"{prefix}.length_scale", s.length_scale, 0.0)
    check_range(f"{prefix}.tau", s.tau, 0.0, low_open=True)


def check_sparse_vd(prefix: str, s: Any) -> None:
    """Pruning threshold in [-10, 10]."""
    check_range(f"{prefix}.threshold", s.threshold, -10.0, 10.0)


# --------------------------------------------------------------------------- table
@dataclass(frozen=True)
class Method:
    """One compared method.

    Attributes:
      name: the ``methods.<name>`` config section and the name in every output.
      settings: the section's schema; its default ``enabled`` says whether the method
        runs unless a config says otherwise.
      variant: the dropout layers :func:`lab.model.build_model` puts in the network.
      architectures: the architectures those layers fit.
      loss: ``loss(model, params, x, y, key, hparams, task)`` of one batch.
      mc: predicted by the mean of ``settings.num_samples`` stochastic passes (else by
        one deterministic pass).
      needs: ``needs(cfg.model)``: why the model cannot host the method, or ``None``.
      check: ``check(prefix, settings)`` raises :class:`~lab.checks.ConfigError`.
      model_options: ``model_options(settings, num_train)``: keyword arguments of the
        model beyond the variant.
      param_metrics: ``param_metrics(settings, params)``: metrics read from the
        parameters (learning curves and final table).
      final_metrics: ``final_metrics(model, params, x_test, y_test, task)``: metrics
        of the final evaluation only.
    """

    name: str
    settings: type
    variant: str
    architectures: tuple[str, ...] = ARCHITECTURES
    loss: Callable[..., jax.Array] = plain_loss
    mc: bool = False
    needs: Callable[[Any], str | None] = no_needs
    check: Callable[[str, Any], None] = check_rates
    model_options: Callable[[Any, int], dict] = no_options
    param_metrics: Callable[[Any, Any], dict[str, float]] = no_metrics
    final_metrics: Callable[..., dict] = no_final_metrics

    @property
    def sweeps_rate(self) -> bool:
        """Has a dropout rate (a sweep varies it; ``none`` is trained at rate 0)."""
        return hasattr(self.settings, "rate")

    @property
    def sweeps_alpha(self) -> bool:
        """Has R-Drop's alpha (a sweep varies it too)."""
        return hasattr(self.settings, "alpha")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("none", NoneSettings, "none"),
        Method("classic", DropoutSettings, "classic", ELEMENTWISE),
        Method("inverted", DropoutSettings, "inverted"),
        Method("rdrop", RDropSettings, "inverted", loss=rdrop_loss, check=check_rdrop),
        Method("mc", MCSettings, "inverted", mc=True, check=check_mc),
        Method("dropconnect", DropoutSettings, "dropconnect", ("mlp",)),
        Method("gaussian", DropoutSettings, "gaussian", ELEMENTWISE),
        Method("channel", DropoutSettings, "channel", ("cnn",)),
        Method(
            "dropblock", DropBlockSettings, "dropblock", ("cnn",),
            check=check_dropblock, model_options=dropblock_options,
        ),
        Method("locked", DropoutSettings, "locked", RECURRENT),
        Method("zoneout", DropoutSettings, "zoneout", RECURRENT),
        Method(
            "concrete", ConcreteSettings, "concrete", ("mlp",), loss=sown_loss,
            check=check_concrete, model_options=concrete_options, param_metrics=learned_rates,
        ),
        Method(
            "droppath", DropoutSettings, "droppath", ("cnn", "transformer"), needs=needs_residual
        ),
        Method("weightdrop", DropoutSettings, "weightdrop", RECURRENT),
        Method(
            "sparse_vd", SparseVDSettings, "sparse_vd", ("mlp",), loss=sown_loss,
            check=check_sparse_vd, model_options=sparse_vd_options,
            param_metrics=pruned_fraction, final_metrics=unpruned_accuracy,
        ),
        Method("embedding", DropoutSettings, "embedding", RECURRENT, needs=needs_tokens),
        Method("attention", DropoutSettings, "attention", ("transformer",)),
        Method("dropkey", DropoutSettings, "dropkey", ("transformer",)),
    )
}  # fmt: skip

# Methods enabled unless a config switches them off (the rest are opt-in).
_ON_BY_DEFAULT = ("none", "classic", "inverted", "rdrop", "mc")


def _default_settings(method: Method) -> Any:
    if method.settings is DropoutSettings:
        return DropoutSettings(enabled=method.name in _ON_BY_DEFAULT)
    return method.settings()


MethodsConfig = make_dataclass(
    "MethodsConfig",
    [
        (m.name, m.settings, field(default_factory=functools.partial(_default_settings, m)))
        for m in METHODS.values()
    ],
)
MethodsConfig.__doc__ = "One section per method of :data:`METHODS`; ``enabled: false`` skips it."


def settings_of(cfg: Any, name: str) -> Any:
    """The ``methods.<name>`` section of an experiment config."""
    return getattr(cfg.methods, name)


def hyperparameters(settings: Any, weight_decay: float) -> Hparams:
    """A method's traced hyperparameters from its settings (0 where it has none).

    A method without a ``schedule`` gets the constant one (``rate`` at every step).
    """
    values = {
        "rate": getattr(settings, "rate", 0.0),
        "input_rate": getattr(settings, "input_rate", 0.0),
        "alpha": getattr(settings, "alpha", 0.0),
        "weight_decay": weight_decay,
        **of_settings(settings),
    }
    return {k: jnp.float32(v) for k, v in values.items()}
