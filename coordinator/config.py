"""The coordinator's configuration: frozen, typed, with defaults in code.

``config/coordinator.sample.toml`` explains every key; :func:`load_coordinator_config` reads such a file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from presculpt import config
from presculpt.tls import TlsConfig

if TYPE_CHECKING:  # the planner's types; imported when converted (numpy only)
    from presculpt.coordinator.planner.model import PlannerConfig, TierPolicy

Synchronous = Literal["FULL", "NORMAL"]
PlannerMode = Literal["observe", "enforce"]


@dataclass(frozen=True)
class StoreConfig:
    """The embedded SQLite store: retention, roll-ups, durability and group commit."""

    raw_retention_s: float = 2 * 86400.0  # raw samples older than this are deleted
    rollup_bucket_s: float = 300.0  # roll-ups aggregate buckets of this length
    rollup_retention_s: float = 90 * 86400.0
    forecast_retention_s: float = 7 * 86400.0  # stored forecasts, for accuracy and display
    # A bucket is rolled up this long after it closed, so that samples still in flight arrive first.
    rollup_settle_s: float = 60.0
    # FULL: every commit is fsynced before a batch is acknowledged (survives power loss).
    # NORMAL: WAL commits survive a crash of the process but not of the machine.
    synchronous: Synchronous = "FULL"
    # Group commit: the writer thread stores up to this many queued batches in one transaction.
    max_group_batches: int = 512
    max_group_samples: int = 50_000

    def __post_init__(self) -> None:
        if min(self.raw_retention_s, self.rollup_retention_s, self.forecast_retention_s) <= 0:
            raise ValueError("store retentions must be positive")
        if self.rollup_bucket_s <= 0 or self.rollup_settle_s < 0:
            raise ValueError("store.rollup_bucket_s must be positive and rollup_settle_s not negative")
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError("store.synchronous must be FULL or NORMAL")
        if self.max_group_batches < 1 or self.max_group_samples < 1:
            raise ValueError("store group-commit limits must be at least 1")


@dataclass(frozen=True)
class IngestConfig:
    """Limits on what agents may send."""

    max_message_bytes: int = 16 * 1024 * 1024  # larger messages fail with RESOURCE_EXHAUSTED
    max_batch_samples: int = 20_000  # larger batches are rejected with INVALID_ARGUMENT
    max_inflight_batches: int = 256  # per agent; beyond it the stream stops reading (backpressure)

    def __post_init__(self) -> None:
        if min(self.max_message_bytes, self.max_batch_samples, self.max_inflight_batches) < 1:
            raise ValueError("ingest limits must be at least 1")


@dataclass(frozen=True)
class DispatchConfig:
    """Command delivery: retries until an outcome arrives or the deadline passes."""

    default_timeout_s: float = 30.0  # deadline of a command when the caller gives none
    retry_interval_s: float = 5.0  # resend a command without outcome this often
    max_pending_per_host: int = 100  # commands held for one (possibly offline) host

    def __post_init__(self) -> None:
        if self.default_timeout_s <= 0 or self.retry_interval_s <= 0:
            raise ValueError("dispatch timeouts must be positive")
        if self.max_pending_per_host < 1:
            raise ValueError("dispatch.max_pending_per_host must be at least 1")


@dataclass(frozen=True)
class JobsConfig:
    """How often the scheduled jobs run (APScheduler interval triggers)."""

    rollup_every_s: float = 60.0
    retention_every_s: float = 600.0
    dispatch_tick_s: float = 0.5  # retries and expiry of commands
    forecast_every_s: float = 300.0  # forecasts, their online accuracy and anomalies; 0: never
    retrain_every_s: float = 86400.0  # retrain the model, promote it only if better; 0: never

    def __post_init__(self) -> None:
        if min(self.rollup_every_s, self.retention_every_s, self.dispatch_tick_s) <= 0:
            raise ValueError("job intervals must be positive")
        if self.forecast_every_s < 0 or self.retrain_every_s < 0:
            raise ValueError("jobs.forecast_every_s and jobs.retrain_every_s must be positive (or 0: never)")


@dataclass(frozen=True)
class ForecastConfig:
    """The forecaster as the coordinator serves it: where its checkpoints live, how much history it
    reads, how it retrains, and how it judges its own forecasts."""

    model_dir: str = ""  # versioned checkpoints; empty: a "models" folder next to the db
    initial_model: str = ""  # a checkpoint imported as the first current model of an empty registry
    history_days: float = 8.0  # roll-ups read per forecast: a week for the weekly lag, plus context
    train_days: float = 14.0  # roll-ups read per retrain (the newest holdout_days are held out)
    max_train_series: int = 200  # series sampled for a retrain (memory: ~0.4 MB per series and day)
    holdout_days: float = 1.0  # newest data the candidate and the current model are compared on
    validation_days: float = 1.0  # end of the training part used for early stopping and calibration
    epochs: int = 14
    samples_per_epoch: int = 100_000
    hidden: int = 48  # LSTM state size of a newly trained model
    head_hidden: int = 128  # width of its output head
    threads: int = 1  # torch threads for training and inference (more compete with ingest)
    keep_versions: int = 5  # kept-aside and retired checkpoints kept (each); older ones are deleted
    accuracy_window_s: float = 86400.0  # forecasts made this recently are scored against what happened
    anomaly_steps: int = 6  # demand outside the outer quantiles this many steps in a row is an anomaly
    empirical_tail: bool = True  # CPU forecasts' upper levels from each VM's own last week (forecast/tail.py)
    next_step_tail: bool = True  # CPU's next step and memory's upper tail from learned models (forecast/nextstep.py)

    def __post_init__(self) -> None:
        # The history the model needs before it forecasts a series (numpy only; torch is not loaded).
        from presculpt.coordinator.forecast.base import DAY_STEPS
        from presculpt.coordinator.forecast.features import MIN_HISTORY

        min_days = MIN_HISTORY / DAY_STEPS
        if not self.history_days >= min_days:
            raise ValueError(f"forecast.history_days must be at least {min_days:g} (the model's context), "
                             f"got {self.history_days:g}")
        if not self.holdout_days > 0 or not self.validation_days > 0:
            raise ValueError("forecast.holdout_days and forecast.validation_days must be positive")
        if not self.train_days > min_days + self.holdout_days + self.validation_days:
            raise ValueError(f"forecast.train_days must exceed {min_days:g} days of context plus holdout_days "
                             f"and validation_days, got {self.train_days:g}")
        if min(self.max_train_series, self.epochs, self.samples_per_epoch, self.hidden, self.head_hidden,
               self.threads) < 1:
            raise ValueError("forecast.max_train_series, epochs, samples_per_epoch, hidden, head_hidden and "
                             "threads must be at least 1")
        if self.keep_versions < 0:
            raise ValueError("forecast.keep_versions must not be negative")
        if not self.accuracy_window_s > 0:
            raise ValueError("forecast.accuracy_window_s must be positive")
        if self.anomaly_steps < 1:
            raise ValueError("forecast.anomaly_steps must be at least 1")


@dataclass(frozen=True)
class PacingSettings:
    """Memory's own pacing in ``[planner.tiers.NAME.memory_pacing]`` (see the planner's ``Pacing``);
    the keys mean what the tier's keys of the same names mean for CPU."""

    lead_steps: int = 1
    hold_steps: int = 3
    shrink_window_steps: int = 3
    deadband: float = 0.10
    max_step_down: float = 0.50
    grow_headroom: float = 0.05
    cooldown_steps: int = 3


@dataclass(frozen=True)
class TierSettings:
    """One SLA tier of ``[planner.tiers.NAME]`` (see the planner's ``TierPolicy``)."""

    priority: int = 1  # higher is served first when a host runs short
    quantile: float = 0.99  # the forecast quantile provisioned for
    margin: float = 0.05  # safety margin on top of it (fraction)
    lead_steps: int = 1  # grow this many forecast steps before the need
    hold_steps: int = 3  # steps the forecast must stay low before a downgrade
    shrink_window_steps: int = 3  # a downgrade provisions for the forecast peak over this many steps (0: all)
    deadband: float = 0.10  # shrink only when the forecast is this far below the allocation (fraction)
    max_step_down: float = 0.50  # at most this fraction of the allocation per downgrade
    grow_headroom: float = 0.05  # a grow goes this far past the need (fraction)
    cooldown_steps: int = 3  # no downgrade this soon after a resize of the VM
    violation_penalty: float = 0.0  # price of unmet demand per unit of allocation price; 0: q / (1 - q)
    memory_quantile: float = 0.999  # the quantile memory is provisioned for (a shortfall swaps or kills)
    memory_margin: float = 0.10  # safety margin on top of it (fraction)
    violation_cost: float = 0.0  # CPU: cost-optimal level per step, a violated step costing this many vCPU-steps; 0: off
    min_level: float = 0.0  # with violation_cost: never a level below this one (e.g. 0.95); 0: any
    memory_pacing: PacingSettings = field(default_factory=PacingSettings)  # memory's own lead, hold, bands
    memory_peak_factor: float = 0.0  # memory never below this x its peak of planner.memory_peak_hours; 0: off
    max_resizes_per_day: float = 0.0  # a VM's resizes per day at most, on average (safety raises aside); 0: no limit


@dataclass(frozen=True)
class QuotaSettings:
    """One customer's quota of ``[planner.quotas.NAME]``: the most its VMs may hold together (0: no limit)."""

    max_cores: float = 0.0
    max_memory_mib: float = 0.0

    def __post_init__(self) -> None:
        if self.max_cores < 0 or self.max_memory_mib < 0:
            raise ValueError("quota max_cores and max_memory_mib must not be negative (0: no limit)")


def _planner_default(name: str) -> float:
    """The planner's default of ``name`` (measured there), as settings write it (None: 0)."""
    from presculpt.coordinator.planner.model import PlannerConfig

    return getattr(PlannerConfig(), name) or 0.0


def _default_tiers() -> dict[str, TierSettings]:
    """The planner's default tiers (``DEFAULT_TIERS``, where they are measured) as settings."""
    from presculpt.coordinator.planner.model import DEFAULT_TIERS

    return {name: tier_settings(policy) for name, policy in DEFAULT_TIERS.items()}


def tier_settings(policy: TierPolicy) -> TierSettings:
    """A planner tier as ``[planner.tiers.NAME]`` writes it: what the planner leaves unset (None) is 0,
    memory's pacing its own (the planner's None, memory paced as CPU, as CPU's keys)."""
    values = dataclasses.asdict(policy)
    pacing = values.pop("memory_pacing") or {f.name: values[f.name] for f in dataclasses.fields(PacingSettings)}
    keys = {f.name for f in dataclasses.fields(TierSettings)}
    return TierSettings(**{k: 0.0 if v is None else v for k, v in values.items() if k in keys},
                        memory_pacing=PacingSettings(**pacing))


@dataclass(frozen=True)
class PlannerSettings:
    """The planner as the coordinator runs it: its mode, tiers, margins, prices, host overcommit and
    customer quotas. :meth:`planner_config` turns it into the pure planner's ``PlannerConfig``."""

    mode: PlannerMode = "observe"  # observe: plan and report only; enforce: send the actions to the agents
    every_s: float = 300.0  # planner job interval; 0: never
    default_tier: str = "silver"  # the tier of VMs whose metadata names none (or an unknown one)
    tiers: dict[str, TierSettings] = field(default_factory=_default_tiers)
    memory_margin_fraction: float = 0.10  # never balloon below used * (1 + this) + memory_margin_mib
    memory_margin_mib: float = 128.0
    memory_floor_mib: float = 256.0
    memory_peak_hours: float = 24.0  # the window of a tier's memory_peak_factor
    cpu_floor_cores: float = 0.1
    reclaim_idle_steps: int = 36
    idle_fraction: float = 0.05
    price_vcpu_hour: float = 0.04
    price_gib_hour: float = 0.005
    resize_cost: float = 0.006
    veto_threshold: float = 0.0
    benefit_hours: float = 4.0  # how long a change is expected to last, to price what it adds or frees
    host_resizes_per_vm_day: float = field(default_factory=lambda: _planner_default("host_resizes_per_vm_day"))  # 0: none
    cpu_overcommit: float = 4.0  # allocated cores on a host may reach cpus * this
    memory_overcommit: float = 1.0
    reserved_cores: float = 0.0  # kept for the host itself
    reserved_memory_mib: float = 1024.0
    quotas: dict[str, QuotaSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("observe", "enforce"):
            raise ValueError(f"planner.mode must be observe or enforce, got {self.mode!r}")
        if not self.every_s >= 0:
            raise ValueError(f"planner.every_s must be positive (or 0: never), got {self.every_s:g}")
        if self.cpu_overcommit <= 0 or self.memory_overcommit <= 0:
            raise ValueError("planner.cpu_overcommit and memory_overcommit must be positive")
        if self.reserved_cores < 0 or self.reserved_memory_mib < 0:
            raise ValueError("planner.reserved_cores and reserved_memory_mib must not be negative")
        if self.memory_floor_mib < 0 or self.cpu_floor_cores < 0 or self.reclaim_idle_steps < 0:
            raise ValueError("planner floors and reclaim_idle_steps must not be negative")
        if not 0 <= self.idle_fraction < 1:
            raise ValueError(f"planner.idle_fraction must be in [0, 1), got {self.idle_fraction:g}")
        if not self.host_resizes_per_vm_day >= 0:
            raise ValueError(f"planner.host_resizes_per_vm_day must not be negative (0: no limit), "
                             f"got {self.host_resizes_per_vm_day:g}")
        for tier in self.tiers:
            if not tier.strip():
                raise ValueError("planner.tiers: a tier needs a name")
        self.planner_config()  # the planner's own checks (tiers, default_tier, prices): one line each

    def planner_config(self) -> "PlannerConfig":
        """The pure planner's configuration (the one place settings become ``PlannerConfig``)."""
        from presculpt.coordinator.planner.model import CostModel, Pacing, PlannerConfig, TierPolicy

        tiers = {name: TierPolicy(name, **{**dataclasses.asdict(t), "violation_penalty": t.violation_penalty or None,
                                           "violation_cost": t.violation_cost or None,
                                           "min_level": t.min_level or None,
                                           "memory_peak_factor": t.memory_peak_factor or None,
                                           "max_resizes_per_day": t.max_resizes_per_day or None,
                                           "memory_pacing": Pacing(**dataclasses.asdict(t.memory_pacing))})
                 for name, t in self.tiers.items()}
        cost = CostModel(price_vcpu_hour=self.price_vcpu_hour, price_gib_hour=self.price_gib_hour,
                         resize_cost=self.resize_cost, veto_threshold=self.veto_threshold,
                         benefit_hours=self.benefit_hours)
        return PlannerConfig(mode=self.mode, tiers=tiers, default_tier=self.default_tier,
                             memory_margin_fraction=self.memory_margin_fraction,
                             memory_margin_mib=self.memory_margin_mib, memory_floor_mib=self.memory_floor_mib,
                             memory_peak_hours=self.memory_peak_hours,
                             cpu_floor_cores=self.cpu_floor_cores, reclaim_idle_steps=self.reclaim_idle_steps,
                             idle_fraction=self.idle_fraction, cost=cost,
                             host_resizes_per_vm_day=self.host_resizes_per_vm_day or None)


@dataclass(frozen=True)
class CoordinatorConfig:
    listen: str = "127.0.0.1:7600"  # gRPC address of the agent stream and the client API
    db: str = "presculpt.db"
    metrics_listen: str = ""  # Prometheus endpoint HOST:PORT; empty: none
    event_queue: int = 1000  # events buffered per watcher; a slower watcher misses events
    store: StoreConfig = field(default_factory=StoreConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    tls: TlsConfig = field(default_factory=TlsConfig)  # mutual TLS with agents and operators (or insecure)

    def __post_init__(self) -> None:
        if self.event_queue < 1:
            raise ValueError("event_queue must be at least 1")

    def model_dir(self) -> Path:
        """Where the forecaster's checkpoints live: ``forecast.model_dir``, else next to the db."""
        if self.forecast.model_dir:
            return Path(self.forecast.model_dir)
        return Path(self.db).resolve().parent / "models"


def load_coordinator_config(path: str | Path | None) -> CoordinatorConfig:
    return config.load(CoordinatorConfig, path)
