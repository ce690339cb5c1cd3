"""The coordinator's configuration: frozen, typed, with defaults in code.

``config/coordinator.sample.toml`` explains every key; :func:`load_coordinator_config` reads such a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from presculpt import config

Synchronous = Literal["FULL", "NORMAL"]


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
