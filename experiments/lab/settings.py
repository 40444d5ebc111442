"""The settings of each method: the schema of its ``methods.<name>`` config section."""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULE_KINDS = ("constant", "early", "late", "linear", "cosine")
PROFILES = ("auto", "uniform", "linear_depth", "decreasing_depth")


@dataclass
class ScheduleSettings:
    """When dropout is on: the rate as a function of the step, and per block.

    Times are fractions of training (0: the first step, 1: the end), so a schedule
    fits runs of any length; the step turns them into steps of the run. The kind and
    its parameters are traced (:func:`lab.rate_schedule.scheduled`): one compiled step
    serves every schedule, and a grid of schedules is one program.

    Attributes:
      kind: one of ``SCHEDULE_KINDS``: ``constant`` (``rate`` at every step: the
        method as without a schedule), ``early`` (``rate`` before ``until``, then 0;
        Liu et al. 2023), ``late`` (0 before ``start``, then ``rate``), ``linear`` /
        ``cosine`` (``rate`` up to ``start``, ``end_rate`` from ``until`` on).
      start: late: when dropout turns on; linear/cosine: when the ramp begins.
      until: early: when dropout turns off; linear/cosine: when the ramp ends.
      end_rate: linear/cosine: the rate at the end, in [0, 1).
      profile: transformer only, the rate of block ``l`` of ``L``: ``uniform``,
        ``linear_depth`` (``l / L`` of it, rising: ``dl.schedules.linear_depth``),
        ``decreasing_depth`` (falling: ``dl.schedules.decreasing_depth``) or ``auto``
        (the variant's own: rising for drop path, falling for DropKey, else uniform).
        Static: part of the model, not of the grid.

    MC prediction (the ``mc`` method) draws its passes at ``rate`` whatever the schedule.
    """

    kind: str = "constant"
    start: float = 0.0
    until: float = 1.0
    end_rate: float = 0.0
    profile: str = "auto"


@dataclass
class NoneSettings:
    """No dropout."""

    enabled: bool = True


@dataclass
class DropoutSettings:
    """A dropout variant: ``rate`` after every hidden activation, ``input_rate`` on inputs.

    ``schedule`` makes ``rate`` a function of the step (``input_rate`` stays constant).
    """

    enabled: bool = True
    rate: float = 0.5
    input_rate: float = 0.0
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)


@dataclass
class RDropSettings(DropoutSettings):
    """R-Drop: inverted dropout plus ``alpha`` times the symmetric KL of two passes."""

    alpha: float = 1.0


@dataclass
class MCSettings(DropoutSettings):
    """MC dropout: trained like inverted dropout, predicted by the mean of passes."""

    num_samples: int = 50
    chunk_size: int | None = None


@dataclass
class DropBlockSettings(DropoutSettings):
    """DropBlock after every convolution: ``rate`` is the expected dropped fraction."""

    enabled: bool = False
    rate: float = 0.1
    block_size: int = 3


@dataclass
class ConcreteSettings:
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
class SparseVDSettings:
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
