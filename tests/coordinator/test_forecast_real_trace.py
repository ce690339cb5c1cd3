"""The coordinator's forecast serving on a slice of a real trace (Bitbrains Rnd, August 2013): cold
start, the first retrain and a warm-started one judged by the registry's rule, forecasts from the
trained model, and online accuracy over the next day fed hour by hour as an agent would.

The scenario runs once per module as a chain of stages (load, cold start, retrain, serve, feed);
each stage is a fixture that returns what it saw, so any test can run alone."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from presculpt.coordinator.accuracy import Accuracy
from presculpt.coordinator.config import ForecastConfig, StoreConfig
from presculpt.coordinator.forecast.aggregate import AggregateKey
from presculpt.coordinator.forecast.base import HORIZON, QUANTILES, STEP_S
from presculpt.coordinator.forecast.tail import TailConfig
from presculpt.coordinator.forecast.registry import COMPARED_METRICS, ModelRegistry, ModelVersion
from presculpt.coordinator.forecast.service import (
    COLD_START_NAME,
    AggregateForecast,
    ForecastRun,
    ForecastService,
    RetrainResult,
)
from presculpt.coordinator.model import ForecastRecord, HostRecord, MetricBatch, SampleRow, VmRecord
from presculpt.coordinator.store.sqlite import SqliteMetricStore
from presculpt.lab.trace import VmTrace, load_trace, read_vms

TRACE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "bitbrains-rnd-2013-08"
DAY = 86400.0
HOUR = 3600.0
LOADED_DAYS = 11  # history in the store before the first forecast
FED_HOURS = 24  # then the next day, an hour at a time
VM_STRIDE = 15  # every 15th VM of vms.csv: 8 of the 120, spread over the file (by position, not content)
VM_COUNT = 8
HOSTS = ("h1", "h2")
CUSTOMERS = ("acme", "globex")
SEGMENTS = ("web", "db")
# Small but real: a few seconds of training on two cores. train_days must exceed the model's context
# (1.125 days) plus the holdout and validation days (see ForecastConfig).
CONFIG = ForecastConfig(hidden=16, head_hidden=32, epochs=2, samples_per_epoch=3000, threads=1,
                        train_days=10.0, holdout_days=1.0, validation_days=1.0)
METRICS = ("cpu_cores", "memory_mib")
# Online coverage of the 90th percentile, CPU. Loose: a tiny model, 2 epochs, one real day. An
# all-zeros forecast would cover only the idle steps (checked below to be well under the floor).
P90_COVERAGE_BAND = (0.6, 1.0)


@dataclass(frozen=True)
class World:
    """The store and the service, with the trace slice behind them; ``now`` is the end of the loaded days."""

    store: SqliteMetricStore
    service: ForecastService
    registry: ModelRegistry
    traces: dict[str, VmTrace]  # the slice: LOADED_DAYS + the fed day, gaps left as gaps
    vms: tuple[VmRecord, ...]
    now: float

    def reporting(self, at: float) -> set[tuple[str, str, str]]:
        """(host, uuid, metric) of every series with a sample in the hour before ``at``."""
        out = set()
        for vm in self.vms:
            t = self.traces[vm.uuid]
            ts = np.asarray(t.ts, dtype=np.float64)
            recent = (ts >= at - HOUR) & (ts < at)
            if recent.any():
                out.add((vm.host, vm.uuid, "cpu_cores"))
            if (recent & ~np.isnan(np.asarray(t.mem_mib))).any():
                out.add((vm.host, vm.uuid, "memory_mib"))
        return out


@dataclass(frozen=True)
class Stage:
    """One forecast run and the VM forecasts it stored (by (host, uuid, metric)) and its aggregates."""

    run: ForecastRun
    records: dict[tuple[str, str, str], list[ForecastRecord]]
    aggregates: dict[AggregateKey, AggregateForecast]


@dataclass(frozen=True)
class Retrained:
    first: RetrainResult
    second: RetrainResult
    versions: list[ModelVersion]  # the registry's, after both


def store_slots(store: SqliteMetricStore, vms: tuple[VmRecord, ...], traces: dict[str, VmTrace],
                start: float, end: float) -> int:
    """Store each VM's trace samples with ``start <= ts < end`` as one batch per host (as its agent
    would send them; a missing slot stays missing), then roll up to ``end``. Returns samples stored."""
    stored = 0
    for host in HOSTS:
        rows = []
        for vm in (v for v in vms if v.host == host):
            t = traces[vm.uuid]
            ts = np.asarray(t.ts)
            lo, hi = np.searchsorted(ts, [start, end])
            for i in range(lo, hi):
                memory = t.mem_mib[i]
                rows.append(SampleRow(vm.uuid, float(t.ts[i]) + STEP_S / 2, STEP_S, t.cpu_cores[i], vm.max_vcpus,
                                      None, vm.memory_mib, None if math.isnan(memory) else memory, None,
                                      0.0, 0.0, 0.0, 0.0))
        if rows:
            store.store_batch(MetricBatch(host, store.last_seq(host) + 1, tuple(rows)))
            stored += len(rows)
    store.compute_rollups(end)
    return stored


def snapshot(world: World, run: ForecastRun) -> Stage:
    records = {}
    for vm in world.vms:
        for metric in METRICS:
            records[(vm.host, vm.uuid, metric)] = world.store.forecasts(vm.host, vm.uuid, metric, run.origin,
                                                                        run.origin + 1)
    return Stage(run, records, world.service.aggregates() or {})


# -- the stages ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    if not (TRACE / "usage.csv.gz").is_file():
        pytest.skip(f"the real trace is not at {TRACE} (expected next to the repository, in shared/traces)")
    shapes = read_vms(TRACE)[::VM_STRIDE][:VM_COUNT]
    full = load_trace(TRACE, [s.vm_id for s in shapes], fill_gaps=False)
    first = min(t.ts[0] for t in full.values())
    now = first + LOADED_DAYS * DAY
    end = now + FED_HOURS * HOUR
    traces = {}
    for vm_id, t in full.items():
        n = int(np.searchsorted(np.asarray(t.ts), end))
        traces[vm_id] = VmTrace(vm_id, t.max_vcpus, t.max_mem_mib, t.ts[:n], t.cpu_cores[:n], t.mem_mib[:n])
    vms = tuple(
        VmRecord(host=HOSTS[i * len(HOSTS) // len(shapes)], uuid=s.vm_id, name=s.vm_id, state="running",
                 vcpus=s.max_vcpus, max_vcpus=s.max_vcpus, cpu_quota_cores=None,
                 memory_mib=int(s.max_mem_mib or 0), max_memory_mib=int(s.max_mem_mib or 0),
                 metadata={"customer": CUSTOMERS[i % 2], "segment": SEGMENTS[i // 2 % 2]})
        for i, s in enumerate(shapes)
    )
    directory = tmp_path_factory.mktemp("real-trace")
    store = SqliteMetricStore(directory / "m.db", StoreConfig(rollup_settle_s=0, synchronous="NORMAL"))
    store.start()
    for host in HOSTS:
        store.upsert_inventory(HostRecord(host, host, "test:///default", 64, 262144),
                               [v for v in vms if v.host == host])
    for day in range(LOADED_DAYS):  # a day per batch keeps each transaction modest
        store_slots(store, vms, traces, first + day * DAY, first + (day + 1) * DAY)
    registry = ModelRegistry(directory / "models")
    service = ForecastService(store, registry, CONFIG)
    service.start()
    yield World(store, service, registry, traces, vms, float(now))
    store.stop()


@pytest.fixture(scope="module")
def cold(world: World) -> Stage:
    return snapshot(world, world.service.forecast_once(world.now))


@pytest.fixture(scope="module")
def retrained(cold: Stage, world: World) -> Retrained:
    first = world.service.retrain_once(world.now)
    second = world.service.retrain_once(world.now)  # the same data: warm-started from the first
    return Retrained(first, second, world.registry.versions())


@pytest.fixture(scope="module")
def served(retrained: Retrained, world: World) -> Stage:
    return snapshot(world, world.service.forecast_once(world.now))


@pytest.fixture(scope="module")
def fed(served: Stage, world: World) -> list[ForecastRun]:
    """The next day, an hour at a time: the hour's samples, roll-ups, then a forecast run."""
    runs = []
    for hour in range(1, FED_HOURS + 1):
        at = world.now + hour * HOUR
        assert store_slots(world.store, world.vms, world.traces, at - HOUR, at) > 0
        runs.append(world.service.forecast_once(at))
    return runs


# -- the tests ----------------------------------------------------------------------------------

def test_before_any_model_every_reporting_vm_gets_a_cold_start_forecast(cold: Stage, world: World):
    expected = world.reporting(world.now)
    assert {k[2] for k in expected} == set(METRICS)  # the slice has CPU and memory
    run = cold.run
    assert (run.origin, run.model, run.series, run.cold_start, run.stored) == (
        world.now, COLD_START_NAME, len(expected), len(expected), len(expected))
    assert {key for key, records in cold.records.items() if records} == expected
    for key in expected:
        (record,) = cold.records[key]
        assert (record.model, record.cold_start, record.quantiles, len(record.values)) == (
            COLD_START_NAME, True, levels_of(key[2]), HORIZON), key


def test_the_first_retrain_is_promoted_and_the_warm_started_one_is_judged_by_the_rule(
        retrained: Retrained, world: World):
    first, second = retrained.first, retrained.second
    assert first is not None and first.promoted and first.current_scores is None
    assert first.series == len(world.reporting(world.now))  # every series is long and whole enough
    assert second is not None
    by_name = {v.version: v.info for v in retrained.versions}
    assert list(by_name) == [first.version, second.version]
    first_info, second_info = by_name[first.version], by_name[second.version]
    assert first_info["scores"]["current"] is None and not first_info["training"]["warm_start"]
    assert second_info["parent"] == first.version and second_info["training"]["warm_start"]
    assert second_info["scores"]["current_version"] == first.version

    # The current model was scored on the same held-out day as when it was a candidate.
    for metric in COMPARED_METRICS:
        assert second_info["scores"]["current"][metric]["pinball"] == pytest.approx(
            first_info["scores"]["candidate"][metric]["pinball"], rel=1e-6), metric

    # The rule, from the sidecar's scores: promoted exactly when the mean relative change of the
    # pinball loss over CPU and memory is negative.
    changes = [(second_info["scores"]["candidate"][m]["pinball"] - second_info["scores"]["current"][m]["pinball"])
               / second_info["scores"]["current"][m]["pinball"] for m in COMPARED_METRICS]
    better = float(np.mean(changes)) < 0
    assert second.promoted == better, f"relative changes {changes}, promoted {second.promoted}"
    winner = second.version if better else first.version
    assert world.registry.current().version == winner == world.service.model_name
    assert (second_info["status"], first_info["status"]) == (
        ("current", "retired") if better else ("kept-aside", "current"))


def test_after_training_every_reporting_vm_is_forecast_by_the_current_model(
        served: Stage, retrained: Retrained, world: World):
    current = world.registry.current().version
    expected = world.reporting(world.now)
    run = served.run
    assert (run.origin, run.model, run.series, run.cold_start, run.stored) == (
        world.now, current, len(expected), 0, len(expected))
    assert {key for key, records in served.records.items() if records} == expected
    for key in expected:
        (record,) = served.records[key]  # the cold-start forecast of this origin was replaced
        assert (record.model, record.cold_start, record.quantiles) == (current, False, levels_of(key[2])), key
        assert_sound(np.array(record.values), key[2], key)

    for customer in CUSTOMERS:
        aggregate = served.aggregates[AggregateKey("customer", customer)]
        members = [v for v in world.vms if v.metadata["customer"] == customer]
        assert aggregate.members == {"cpu_cores": len(members), "memory_mib": len(members)}
        assert aggregate.capacity == {"cpu_cores": float(sum(v.max_vcpus for v in members)),
                                      "memory_mib": float(sum(v.max_memory_mib for v in members))}
        for metric in METRICS:
            forecast = aggregate.forecasts[metric]
            assert (forecast.model, forecast.cold_start, forecast.origin) == (current, False, world.now)
            assert_sound(np.asarray(forecast.values), metric, f"customer {customer} {metric}")


def test_online_accuracy_over_the_next_day_is_plausible(fed: list[ForecastRun], world: World):
    assert all(run.model == world.service.model_name and run.cold_start == 0 for run in fed)
    report = world.service.accuracy()
    assert report.scored_at == world.now + FED_HOURS * HOUR and report.model == world.service.model_name
    cpu, memory = report.overall("cpu_cores"), report.overall("memory_mib")
    figures = f"CPU {describe(cpu)}; memory {describe(memory)}"
    # The forecasts of the day's 24 origins, 12 steps each, for every VM: most steps have an outcome.
    assert cpu.count > 0.9 * FED_HOURS * HORIZON * len(world.vms), figures
    assert memory.count > 0, figures
    low, high = P90_COVERAGE_BAND
    assert low <= cpu.coverage_p90 <= high, figures
    assert cpu.coverage_p99 >= cpu.coverage_p90 and math.isfinite(cpu.pinball) and cpu.pinball > 0, figures
    # The band means something: forecasting zero would cover only the idle steps of the day...
    start, end = world.now, world.now + FED_HOURS * HOUR
    idle = idle_share(world, start, end)
    assert idle < low, f"{idle:.2f} of the day's CPU samples are zero: the coverage floor proves nothing"
    # ...and the top of the band is no excuse for forecasting the VM's size: the loss must be well
    # below that of either trivial forecast (nothing, or everything the VM has).
    nothing = constant_pinball(world, start, end, lambda vm: 0.0)
    everything = constant_pinball(world, start, end, lambda vm: float(vm.max_vcpus))
    assert cpu.pinball < 0.5 * min(nothing, everything), (
        f"{figures}; forecasting zero: pinball {nothing:.4g}, the VM's vCPUs: {everything:.4g}")


# -- helpers ------------------------------------------------------------------------------------

def levels_of(metric: str) -> tuple[float, ...]:
    """The levels of a stored forecast: CPU forecasts carry the VM's own upper tail (forecast/tail.py)."""
    return TailConfig().levels_for(QUANTILES, metric)


def assert_sound(values: np.ndarray, metric: str, what: object) -> None:
    """Quantile forecast rows (steps x levels): finite, non-negative, non-decreasing across levels."""
    assert values.shape == (HORIZON, len(levels_of(metric))), what
    assert np.isfinite(values).all() and (values >= 0).all(), (what, values)
    assert (np.diff(values, axis=1) >= 0).all(), (what, values)


def describe(accuracy: Accuracy) -> str:
    return (f"count {accuracy.count}, pinball {accuracy.pinball:.4g}, coverage p90 {accuracy.coverage_p90:.3f}, "
            f"p99 {accuracy.coverage_p99:.3f}")


def constant_pinball(world: World, start: float, end: float, forecast: Callable[[VmRecord], float]) -> float:
    """The mean pinball loss (over QUANTILES and the CPU samples in [start, end)) of forecasting
    ``forecast(vm)`` at every level; each step is scored once, as the hourly online forecasts are."""
    losses = []
    for vm in world.vms:
        t = world.traces[vm.uuid]
        ts = np.asarray(t.ts)
        error = np.asarray(t.cpu_cores)[(ts >= start) & (ts < end)] - forecast(vm)
        levels = np.asarray(QUANTILES)[:, None]
        losses.append(np.maximum(levels * error, (levels - 1) * error).mean(axis=0))
    return float(np.mean(np.concatenate(losses)))


def idle_share(world: World, start: float, end: float) -> float:
    """Share of the VMs' CPU samples in [start, end) that are zero (or below)."""
    cpu = np.concatenate([np.asarray(t.cpu_cores)[(np.asarray(t.ts) >= start) & (np.asarray(t.ts) < end)]
                          for t in world.traces.values()])
    return float(np.mean(cpu <= 0))
