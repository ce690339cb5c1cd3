"""The forecaster served by the coordinator: named steps over the store and the model registry.

``forecast_once`` reads every VM's roll-ups, forecasts each VM (and each customer's and segment's
summed demand) for the next hour, stores the VM forecasts, scores the forecasts made in the last
accuracy window against what happened, and finds forecast anomalies. ``retrain_once`` trains a
candidate on the newest roll-ups (warm-started from the current model) and lets the registry's
promotion rule decide whether it serves. Both are plain calls: the scheduled jobs run them in a
worker thread, tests call them directly. No gRPC here; events are returned, not published.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from presculpt.coordinator.accuracy import Accuracy, AccuracyTally, tally
from presculpt.coordinator.config import ForecastConfig
from presculpt.coordinator.forecast.aggregate import AggregateKey, AggregateSeries, aggregate_series
from presculpt.coordinator.forecast.anomaly import AnomalyDetector, BandCheck, ForecastAnomaly, recent_band
from presculpt.coordinator.forecast.base import (
    DAY_STEPS,
    HORIZON,
    QUANTILES,
    STEP_S,
    QuantileForecast,
    SeriesHistory,
    forward_fill,
)
from presculpt.coordinator.forecast.baselines import RecentPercentileForecaster
from presculpt.coordinator.forecast.features import MIN_HISTORY
from presculpt.coordinator.forecast.registry import ModelRegistry, ModelVersion, RegistryError, describe
from presculpt.coordinator.forecast.tail import calibrate_tail
from presculpt.coordinator.forecast_view import METRIC_SOURCES
from presculpt.coordinator.metrics import CoordinatorMetrics
from presculpt.coordinator.model import ForecastRecord, VmRecord
from presculpt.coordinator.store.base import MetricStore
from presculpt.errors import UserError

if TYPE_CHECKING:
    # torch (under these) takes seconds to import and a coordinator without a model never needs it:
    # the methods that train import them when called; a loaded checkpoint has imported torch already.
    from presculpt.coordinator.forecast.evaluate import Series
    from presculpt.coordinator.forecast.lstm.module import ModelConfig
    from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster
    from presculpt.coordinator.forecast.lstm.training import TrainConfig

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = tuple(METRIC_SOURCES)  # forecast metrics: cpu_cores, memory_mib
# A series without a value in its last hour is not forecast: the VM is off or its agent is away.
STALE_STEPS = HORIZON
# Series with more steps missing than this are left out of training: the forward-filled flat
# stretches would teach the model flat lines.
MIN_KNOWN_FRACTION = 0.9
COLD_START_NAME = RecentPercentileForecaster.name

Grid = dict[tuple[str, str], dict[str, np.ndarray]]  # (host, uuid) -> metric -> values on the grid


@dataclass(frozen=True)
class ForecastRun:
    """What one ``forecast_once`` did."""

    origin: float  # start of the first forecast step
    model: str  # the model that served (a version, or the cold-start rule)
    vms: int  # VMs forecast
    series: int  # VM series forecast (one per VM and metric with recent data)
    cold_start: int  # of those, forecast by the cold-start rule
    stored: int  # forecast records stored
    aggregates: int  # aggregate series forecast
    anomalies: tuple[ForecastAnomaly, ...]
    seconds: float


@dataclass(frozen=True)
class RetrainResult:
    """What one ``retrain_once`` did (None from it: not enough history)."""

    version: str  # the candidate's version
    promoted: bool
    reason: str
    candidate_scores: dict[str, Any]
    current_scores: dict[str, Any] | None
    series: int
    seconds: float


@dataclass(frozen=True)
class VmAccuracy:
    host: str
    uuid: str
    vm: str  # the VM's name
    metric: str
    tally: AccuracyTally

    @property
    def accuracy(self) -> Accuracy:
        return self.tally.result()


@dataclass(frozen=True)
class AccuracyReport:
    """Online accuracy of the forecasts made in the ``window_s`` before ``scored_at``."""

    model: str  # the model serving when it was scored
    scored_at: float
    window_s: float
    vms: tuple[VmAccuracy, ...]

    def overall(self, metric: str, host: str | None = None) -> Accuracy:
        """Every VM's (on ``host``, if given) steps of ``metric`` scored together."""
        total = AccuracyTally()
        for entry in self.vms:
            if entry.metric == metric and (not host or entry.host == host):
                total.merge(entry.tally)
        return total.result()

    def for_host(self, host: str | None) -> list[VmAccuracy]:
        return [v for v in self.vms if not host or v.host == host]


@dataclass(frozen=True)
class AggregateForecast:
    """The latest forecast of one customer's or segment's summed demand, by metric."""

    key: AggregateKey
    members: dict[str, int]  # by metric: VMs whose series were summed
    capacity: dict[str, float | None]  # by metric: the members' summed size (vCPUs, MiB)
    forecasts: dict[str, QuantileForecast] = field(default_factory=dict)


class ForecastService:
    """Serves forecasts from the registry's current model. Call ``start`` once, then the steps."""

    def __init__(
        self,
        store: MetricStore,
        registry: ModelRegistry,
        config: ForecastConfig = ForecastConfig(),
        metrics: CoordinatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        bucket_s: float = STEP_S,
    ):
        self.store = store
        self.registry = registry
        self.config = config
        self.metrics = metrics or CoordinatorMetrics()
        self.clock = clock
        self.bucket_s = bucket_s
        self.step_s = STEP_S
        self.cold_start = RecentPercentileForecaster(QUANTILES, HORIZON)
        self.detector = AnomalyDetector(config.anomaly_steps)
        # Replaced whole (never mutated) so that readers on other threads see one consistent value.
        self._model: "LstmForecaster | None" = None
        self._accuracy: AccuracyReport | None = None
        self._aggregates: dict[AggregateKey, AggregateForecast] = {}
        self._aggregates_at: float | None = None

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        """Seed an empty registry with ``initial_model`` (if configured), then load the current model.

        A bad ``initial_model`` fails (the operator asked for it); a current checkpoint that cannot be
        loaded is logged and the coordinator forecasts with the cold-start rule until a retrain."""
        if self.bucket_s != self.step_s:
            log.warning("roll-up buckets are %g s but the forecaster works on %g s steps: no forecasts",
                        self.bucket_s, self.step_s)
        if self.config.initial_model:
            current = self.registry.current()
            if current is None:
                self.registry.import_checkpoint(self.config.initial_model)
            else:
                log.info("initial_model %s not imported: %s already has current version %s",
                         self.config.initial_model, self.registry.directory, current.version)
        try:
            loaded = self.registry.load_current()
        except RegistryError as err:
            log.error("cannot load the current model: %s; cold-start forecasts until the next retrain", err)
            return
        if loaded is None:
            log.info("no trained model yet: cold-start forecasts until the first retrain")
            return
        version, model = loaded
        self._serve(version, model)
        log.info("serving model %s (trained %s)", version.version, _training_summary(version))

    def _serve(self, version: ModelVersion, model: "LstmForecaster") -> None:
        model.threads = self.config.threads
        self._model = model
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(version.version).set(1)

    @property
    def model(self) -> "LstmForecaster | None":
        """The trained model that serves, or None (cold start)."""
        return self._model

    @property
    def model_name(self) -> str:
        return self._model.name if self._model is not None else COLD_START_NAME

    def last_trained_at(self) -> float | None:
        """When the newest version (current or kept aside) was made; None: never (or unreadable)."""
        try:
            versions = self.registry.versions()
        except RegistryError as err:
            log.error("cannot list model versions: %s", err)
            return None
        created = [float(v.info["created_at"]) for v in versions if "created_at" in v.info]
        return max(created) if created else None

    def accuracy(self) -> AccuracyReport | None:
        """The latest online accuracy (None until the forecast job has run)."""
        return self._accuracy

    def aggregates(self) -> dict[AggregateKey, AggregateForecast] | None:
        """The latest aggregate forecasts (None until the forecast job has run)."""
        return None if self._aggregates_at is None else dict(self._aggregates)

    # -- the forecast step ----------------------------------------------------------------
    def forecast_once(self, now: float | None = None) -> ForecastRun:
        """Forecast every VM and aggregate from the roll-ups before ``now``'s step, store the VM
        forecasts, score recent forecasts and find anomalies."""
        started = time.monotonic()
        now = self.clock() if now is None else now
        origin = math.floor(now / self.step_s) * self.step_s
        model = self._model
        forecaster = model if model is not None else self.cold_start
        if self.bucket_s != self.step_s:
            return ForecastRun(origin, forecaster.name, 0, 0, 0, 0, 0, (), 0.0)
        history = int(round(self.config.history_days * DAY_STEPS))
        scored = int(math.ceil(self.config.accuracy_window_s / self.step_s)) + HORIZON
        steps = max(history, scored)
        grid_start = origin - steps * self.step_s
        vms = self.store.vms()
        grid = self._read_grid(grid_start, steps)
        anomalies = self._score(vms, grid, grid_start, origin, forecaster.name)
        recent_grid = {k: {m: v[-history:] for m, v in per.items()} for k, per in grid.items()}
        vm_histories = self._vm_histories(vms, recent_grid, origin)
        agg_histories = self._aggregate_histories(vms, recent_grid, origin)
        histories = [h for _, h in vm_histories] + [h for _, h in agg_histories]
        forecasts = self._predict(forecaster, histories)
        if self.config.empirical_tail:
            forecasts = [calibrate_tail(h, f) for h, f in zip(histories, forecasts, strict=True)]
        learned = 0  # VM series whose upper tail a learned next-step model gave
        if self.config.next_step_tail and model is not None:  # learned on VMs
            n = len(vm_histories)
            refined = forecasts[:n]
            for tail in model.next_steps:
                refined = tail.refine(histories[:n], refined, self.config.threads)
            learned = sum(1 for new, old in zip(refined, forecasts) if new is not old)
            forecasts = refined + forecasts[n:]
        by_key = {f.key: f for f in forecasts}
        stored = self._store(vm_histories, by_key)
        self.metrics.observe_forecasts((vm, metric, by_key[h.key].quantiles, by_key[h.key].values[0])
                                       for (vm, metric), h in vm_histories)
        self._keep_aggregates(agg_histories, by_key, now)

        cold = sum(1 for _, h in vm_histories if by_key[h.key].cold_start)
        vm_count = len({(vm.host, vm.uuid) for (vm, _), _ in vm_histories})
        run = ForecastRun(origin, forecaster.name, vm_count, len(vm_histories), cold, stored, len(agg_histories),
                          tuple(anomalies), time.monotonic() - started)
        self.metrics.forecast_series.labels("model").set(run.series - cold)
        self.metrics.forecast_series.labels("cold_start").set(cold)
        self.metrics.forecast_series.labels("next_step").set(learned)
        self.metrics.forecast_seconds.observe(run.seconds)
        why = "" if model is not None else " (no trained model yet)"
        cold_note = (f", {cold} by the cold-start rule (less than {MIN_HISTORY / DAY_STEPS:g} days of history)"
                     if cold and forecaster is not self.cold_start else "")
        learned_note = f", the next step's tail learned for {learned}" if learned else ""
        log.info("forecast %d series of %d VMs and %d aggregate series from %s with %s%s%s%s, %.1f s", run.series,
                 run.vms, run.aggregates, time.strftime("%H:%M", time.gmtime(origin)), forecaster.name, why,
                 cold_note, learned_note, run.seconds)
        return run

    def _vm_histories(self, vms: Sequence[VmRecord], grid: Grid, origin: float
                      ) -> list[tuple[tuple[VmRecord, str], SeriesHistory]]:
        """The history of every VM metric with a value in its last hour, with its (VM, metric)."""
        out = []
        for vm in vms:
            for metric, values in grid.get((vm.host, vm.uuid), {}).items():
                recent = _recent(values)
                if recent is not None:
                    out.append(((vm, metric), SeriesHistory(
                        f"{vm.host}/{vm.uuid}/{metric}", metric, origin, recent, _capacity(vm, metric),
                        vm.metadata.get("workload_class", ""), vm.metadata.get("customer", ""), step_s=self.step_s)))
        return out

    def _aggregate_histories(self, vms: Sequence[VmRecord], grid: Grid, origin: float
                             ) -> list[tuple[AggregateSeries, SeriesHistory]]:
        """The summed history of every customer and segment (see aggregate.py)."""
        out = []
        for agg in aggregate_series(vms, grid, _capacity):
            recent = _recent(agg.values)
            if recent is not None:
                out.append((agg, SeriesHistory(
                    agg.key.series_key(agg.metric), agg.metric, origin, recent, agg.capacity,
                    customer=agg.key.name if agg.key.kind == "customer" else "", step_s=self.step_s)))
        return out

    def _store(self, vm_histories: Sequence[tuple[tuple[VmRecord, str], SeriesHistory]],
               by_key: Mapping[str, QuantileForecast]) -> int:
        """Store the VM forecasts (aggregates live in memory only: the store keys forecasts by VM)."""
        records = []
        for (vm, metric), history in vm_histories:
            f = by_key[history.key]
            records.append(ForecastRecord(vm.host, vm.uuid, metric, f.origin, f.step_s, f.model, f.cold_start,
                                          tuple(f.quantiles), tuple(tuple(float(v) for v in row) for row in f.values)))
        return self.store.store_forecasts(records) if records else 0

    def _read_grid(self, start: float, steps: int) -> Grid:
        """Every VM's roll-up means on the grid of ``steps`` steps from ``start``; NaN where missing."""
        sources = [METRIC_SOURCES[m] for m in METRICS]
        rows = self.store.rollup_means(sources, start, start + steps * self.step_s)
        grid: Grid = {}
        for vm_key, buckets in rows.items():
            table = np.array(buckets, dtype=np.float64).reshape(len(buckets), 1 + len(sources))  # None -> NaN
            index = np.rint((table[:, 0] - start) / self.step_s).astype(np.int64)
            inside = (index >= 0) & (index < steps)
            per_metric = {}
            for j, metric in enumerate(METRICS):
                values = np.full(steps, np.nan)
                values[index[inside]] = table[inside, 1 + j]
                per_metric[metric] = values
            grid[vm_key] = per_metric
        return grid

    def _predict(self, forecaster: Any, histories: Sequence[SeriesHistory]) -> list[QuantileForecast]:
        if not histories:
            return []
        if forecaster is self.cold_start:
            return self.cold_start.predict(histories)
        try:
            return forecaster.predict(histories)
        except Exception:  # noqa: BLE001 - a broken model must not stop forecasting: fall back, loudly
            log.exception("model %s failed to forecast; cold-start forecasts this run", forecaster.name)
            self.metrics.errors.labels("forecast").inc()
            return self.cold_start.predict(histories)

    def _keep_aggregates(self, agg_histories: Sequence[tuple[AggregateSeries, SeriesHistory]],
                         by_key: Mapping[str, QuantileForecast], now: float) -> None:
        out: dict[AggregateKey, AggregateForecast] = {}
        for agg, history in agg_histories:
            entry = out.setdefault(agg.key, AggregateForecast(agg.key, {}, {}, {}))
            entry.members[agg.metric] = agg.members
            entry.capacity[agg.metric] = agg.capacity
            entry.forecasts[agg.metric] = by_key[history.key]
        self._aggregates = out
        self._aggregates_at = now

    # -- online accuracy and anomalies ------------------------------------------------------
    def _score(self, vms: Sequence[VmRecord], grid: Grid, grid_start: float, origin: float,
               model: str) -> list[ForecastAnomaly]:
        """Score the forecasts made in the accuracy window, and judge the anomaly bands."""
        window_start = origin - self.config.accuracy_window_s
        band_start = origin - (2 * self.config.anomaly_steps + HORIZON) * self.step_s
        read_from = min(window_start, band_start)
        first = max(int((read_from - grid_start) // self.step_s), 0)  # older actuals are never needed
        entries: list[VmAccuracy] = []
        checks: list[BandCheck] = []
        for vm in vms:
            per_metric = grid.get((vm.host, vm.uuid), {})
            for metric in METRICS:
                values = per_metric.get(metric)
                if values is None:
                    continue
                known = first + np.flatnonzero(~np.isnan(values[first:]))
                actuals = dict(zip((grid_start + known * self.step_s).tolist(), values[known].tolist()))
                records = self.store.forecasts(vm.host, vm.uuid, metric, read_from, origin)
                if not records:
                    continue
                made = [r for r in records if r.origin >= window_start]
                entries.append(VmAccuracy(vm.host, vm.uuid, vm.name, metric, tally(made, actuals)))
                band, band_model = recent_band((r for r in records if r.origin >= band_start), actuals, origin,
                                               self.step_s, self.config.anomaly_steps)
                levels = records[-1].quantiles
                checks.append(BandCheck(vm.host, vm.uuid, vm.name, metric, band_model, levels[0], levels[-1],
                                        tuple(band)))
        report = AccuracyReport(model, origin, self.config.accuracy_window_s, tuple(entries))
        self._accuracy = report
        self._export_accuracy(report)
        anomalies = self.detector.update(checks)
        for anomaly in anomalies:
            log.warning("%s", anomaly.describe())
            self.metrics.forecast_anomalies.labels(anomaly.metric, anomaly.direction).inc()
        return anomalies

    def _export_accuracy(self, report: AccuracyReport) -> None:
        m = self.metrics
        for metric in METRICS:
            overall = report.overall(metric)
            if overall.count:
                m.forecast_pinball.labels(metric).set(overall.pinball)
                m.forecast_coverage.labels(metric, "0.9").set(overall.coverage_p90)
                m.forecast_coverage.labels(metric, "0.99").set(overall.coverage_p99)
        per_vm = {(e.host, e.vm, e.metric): e.accuracy for e in report.vms}
        m.forecast_vm_pinball.replace({labels: a.pinball for labels, a in per_vm.items() if a.count})

    # -- the retrain step ---------------------------------------------------------------------
    def model_config(self) -> "ModelConfig":
        """The configured size of a newly trained model."""
        from presculpt.coordinator.forecast.lstm.module import ModelConfig

        return ModelConfig(horizon=HORIZON, quantiles=QUANTILES, hidden=self.config.hidden,
                           head_hidden=self.config.head_hidden)

    def train_config(self) -> "TrainConfig":
        from presculpt.coordinator.forecast.lstm.training import TrainConfig

        return TrainConfig(epochs=self.config.epochs, samples_per_epoch=self.config.samples_per_epoch,
                           threads=self.config.threads)

    def training_series(self, now: float) -> "tuple[list[Series], float]":
        """Series of the last ``train_days`` long enough to train and to be held out on, sampled down
        to ``max_train_series``; and the longest history found (days), for the log."""
        from presculpt.coordinator.forecast.evaluate import Series

        cfg = self.config
        origin = math.floor(now / self.step_s) * self.step_s
        steps = int(round(cfg.train_days * DAY_STEPS))
        start = origin - steps * self.step_s
        holdout = int(round(cfg.holdout_days * DAY_STEPS))
        needed = self.needed_steps()
        grid = self._read_grid(start, steps)
        vms = {(v.host, v.uuid): v for v in self.store.vms()}
        series, longest = [], 0
        for vm_key, per_metric in sorted(grid.items()):
            vm = vms.get(vm_key)
            if vm is None:
                continue
            for metric, values in per_metric.items():
                known = ~np.isnan(values)
                if not known.any():
                    continue
                first = int(np.argmax(known))
                span = len(values) - first
                longest = max(longest, span)
                last = len(values) - 1 - int(np.argmax(known[::-1]))
                if span < needed or known[first:].mean() < MIN_KNOWN_FRACTION or last < len(values) - STALE_STEPS:
                    continue
                series.append(Series(
                    key=f"{vm.host}/{vm.uuid}/{metric}", metric=metric, values=forward_fill(values[first:]),
                    start_ts=start + first * self.step_s, capacity=_capacity(vm, metric), train_end=span - holdout,
                    workload_class=vm.metadata.get("workload_class", ""), customer=vm.metadata.get("customer", "")))
        if len(series) > cfg.max_train_series:
            rng = np.random.default_rng(int(origin // 86400))  # another sample each day
            chosen = np.sort(rng.choice(len(series), size=cfg.max_train_series, replace=False))
            series = [series[i] for i in chosen]
        return series, longest / DAY_STEPS

    def needed_steps(self) -> int:
        """History a series needs to take part in a retrain: the model's context, the validation
        part, the horizon after it, and the holdout."""
        cfg = self.config
        return (MIN_HISTORY + HORIZON + int(round(cfg.validation_days * DAY_STEPS))
                + int(round(cfg.holdout_days * DAY_STEPS)))

    def retrain_once(self, now: float | None = None) -> RetrainResult | None:
        """Train a candidate on the newest roll-ups and promote it if it beats the current model on
        the held-out newest ``holdout_days``. None: not enough history yet."""
        from presculpt.coordinator.forecast.evaluate import backtest, train_lstm
        from presculpt.coordinator.forecast.nextstep import DEFAULT_CONFIGS

        started = time.monotonic()
        now = self.clock() if now is None else now
        cfg = self.config
        series, longest = self.training_series(now)
        if not series:
            log.info("not enough history to train (need %.3g days, have %.3g)",
                     self.needed_steps() / DAY_STEPS, longest)
            self.metrics.retrains.labels("skipped").inc()
            return None
        current = self._model
        model_config = self.model_config()
        initial_state, parent = None, None
        if current is not None and current.model.config == model_config:
            initial_state, parent = current.model.state_dict(), current.name
        elif current is not None:
            log.info("the current model %s is not of the configured size (hidden %d, head %d): training "
                     "from scratch", current.name, cfg.hidden, cfg.head_hidden)
        vms = len({s.key.rsplit("/", 1)[0] for s in series})
        log.info("retraining on %d series of %d VMs (the newest %g day(s) held out)%s", len(series), vms,
                 cfg.holdout_days, f", warm-started from {parent}" if parent else "")
        try:
            candidate, meta = train_lstm(series, model_config, self.train_config(), cfg.validation_days,
                                         initial_state, DEFAULT_CONFIGS if cfg.next_step_tail else ())
        except UserError as err:
            log.info("not enough history to train: %s", err)
            self.metrics.retrains.labels("skipped").inc()
            return None
        candidate.threads = cfg.threads
        candidate_scores = backtest(candidate, series)
        current_scores = backtest(current, series) if current is not None else None
        training = {
            "window_start": min(s.start_ts for s in series),
            "window_end": max(s.start_ts + s.train_end * self.step_s for s in series),
            "holdout_end": max(s.start_ts + len(s.values) * self.step_s for s in series),
            "series": len(series), "vms": vms, "warm_start": parent is not None, **meta,
        }
        promotion = self.registry.promote_if_better(candidate, candidate_scores, current_scores, training, parent)
        if promotion.promoted:
            self._serve(promotion.version, candidate)
        self.metrics.retrains.labels("promoted" if promotion.promoted else "kept_aside").inc()
        result = RetrainResult(promotion.version.version, promotion.promoted, promotion.reason, candidate_scores,
                               current_scores, len(series), time.monotonic() - started)
        log.info("retrain done in %.0f s: %s %s (pinball %s; current %s)", result.seconds, result.version,
                 "promoted" if result.promoted else "kept aside", describe(candidate_scores),
                 describe(current_scores))
        return result


def _capacity(vm: VmRecord, metric: str) -> float | None:
    """The VM's size in the metric's units: its maximum vCPUs or memory (None if unknown)."""
    size = vm.max_vcpus if metric == "cpu_cores" else vm.max_memory_mib
    return float(size) if size > 0 else None


def _recent(values: np.ndarray) -> np.ndarray | None:
    """The series from its first known value on; None when it has no value in its last hour."""
    known = ~np.isnan(values)
    if not known[-STALE_STEPS:].any():
        return None
    return values[int(np.argmax(known)):]


def _training_summary(version: ModelVersion) -> str:
    info = version.info
    training = info.get("training") or {}
    when = info.get("created_at")
    parts = [time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when)) if when else "at an unknown time"]
    if info.get("source") == "imported":
        parts.append(f"imported from {info.get('imported_from')}")
    if training.get("series"):
        parts.append(f"on {training['series']} series")
    return ", ".join(parts)
