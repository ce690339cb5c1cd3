"""The forecaster served by the coordinator: forecasts from a real SQLite store's roll-ups, cold start,
aggregates, retraining with promotion, online accuracy, anomalies, and the API over real gRPC."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import timezone
from pathlib import Path

import grpc
import numpy as np
import pytest

from presculpt.coordinator.config import (
    CoordinatorConfig,
    DispatchConfig,
    ForecastConfig,
    JobsConfig,
    StoreConfig,
)
from presculpt.coordinator.dispatch import Dispatcher
from presculpt.coordinator.forecast.aggregate import AggregateKey, fill_short_gaps, sum_members
from presculpt.coordinator.forecast.anomaly import (
    ABOVE,
    BELOW,
    AnomalyDetector,
    BandCheck,
    BandStep,
    ForecastAnomaly,
)
from presculpt.coordinator.forecast.base import DAY_STEPS, HORIZON, QUANTILES, at_levels
from presculpt.coordinator.forecast.evaluate import Series
from presculpt.coordinator.forecast.nextstep import NextStepConfig, NextStepTail
from presculpt.coordinator.forecast.tail import TailConfig
from presculpt.coordinator.forecast.features import MIN_HISTORY
from presculpt.coordinator.forecast.registry import ModelRegistry, RegistryError
from presculpt.coordinator.forecast.service import COLD_START_NAME, ForecastRun, ForecastService
from presculpt.coordinator.model import HostRecord, MetricBatch, SampleRow, VmRecord
from presculpt.coordinator.routines import FIRST_RETRAIN_DELAY_S, CoordinatorRoutines, in_daemon_thread
from presculpt.coordinator.store.sqlite import SqliteMetricStore
from presculpt.v1 import api_pb2, api_pb2_grpc

from .conftest import CoordinatorThread, coordinator_config, wait_until
from .test_forecast_registry import scores, tiny_model

DAY = 86400.0
STEP = 300.0
T = 19675 * DAY  # midnight UTC: "now" of most tests
TINY = dict(hidden=8, head_hidden=16, epochs=2, samples_per_epoch=2000, threads=1, validation_days=0.5)


def vm(host: str, uuid: str, name: str, **metadata: str) -> VmRecord:
    return VmRecord(host=host, uuid=uuid, name=name, state="running", vcpus=2, max_vcpus=4, cpu_quota_cores=None,
                    memory_mib=4096, max_memory_mib=8192, metadata=metadata)


VMS = [
    vm("h1", "u-web1", "web-1", customer="acme", segment="web", workload_class="web"),
    vm("h1", "u-web2", "web-2", customer="acme", segment="web"),
    vm("h2", "u-db1", "db-1", customer="globex", segment="db"),
    vm("h2", "u-idle", "idle"),  # in the inventory, never reports: no forecast
]
def levels_of(metric: str) -> tuple[float, ...]:
    """The levels of a stored forecast: CPU forecasts carry the VM's own upper tail (forecast/tail.py)."""
    return TailConfig().levels_for(QUANTILES, metric)


Load = Callable[[str, float], tuple[float, float]]  # (uuid, ts) -> (cpu_cores, memory_used_mib)


def daily(uuid: str, ts: float) -> tuple[float, float]:
    """A daily cycle with noise that depends on the VM and the time only (deterministic)."""
    phase = 2 * math.pi * (ts % DAY) / DAY
    size = {"u-web1": 1.0, "u-web2": 1.5, "u-db1": 2.0}[uuid]
    noise = 0.05 * math.sin(ts * 0.0137 + size)
    return size * (1 + 0.5 * math.sin(phase)) + noise, 1000 * size + 100 * math.sin(phase)


def fill(store: SqliteMetricStore, start: float, end: float, load: Load, uuids: set[str] | None = None) -> None:
    """One sample per 5-minute bucket in [start, end) for every VM that reports, then roll up."""
    for host in sorted({v.host for v in VMS}):
        rows = []
        for ts in np.arange(start, end, STEP):
            for v in VMS:
                if v.host != host or v.uuid == "u-idle" or (uuids is not None and v.uuid not in uuids):
                    continue
                cpu, memory = load(v.uuid, float(ts))
                rows.append(SampleRow(v.uuid, float(ts) + 150, STEP, cpu, 2, None, 4096, memory, 1000.0, 0, 0, 0, 0))
        if rows:
            store.store_batch(MetricBatch(host, store.last_seq(host) + 1, tuple(rows)))
    store.compute_rollups(end)


def make_store(path) -> SqliteMetricStore:
    store = SqliteMetricStore(path, StoreConfig(rollup_settle_s=0, synchronous="NORMAL"))
    store.start()
    for host in ("h1", "h2"):
        store.upsert_inventory(HostRecord(host, host, "test:///default", 16, 65536),
                               [v for v in VMS if v.host == host])
    return store


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "m.db")
    yield s
    s.stop()


def service(store, tmp_path, **config) -> ForecastService:
    svc = ForecastService(store, ModelRegistry(tmp_path / "models"), ForecastConfig(**{**TINY, **config}))
    svc.start()
    return svc


# -- forecasting ---------------------------------------------------------------------------------

def test_without_a_model_every_vm_gets_a_cold_start_forecast(store, tmp_path, caplog):
    fill(store, T - 2 * DAY, T, daily)
    with caplog.at_level(logging.INFO, logger="presculpt.coordinator.forecast.service"):
        svc = service(store, tmp_path)
        run = svc.forecast_once(T + 42)
    assert "no trained model yet: cold-start forecasts until the first retrain" in caplog.text
    assert "with cold-start:recent-percentile (no trained model yet)" in caplog.text
    assert (run.origin, run.model, run.vms, run.series, run.cold_start, run.stored) == (T, COLD_START_NAME, 3, 6, 6, 6)
    for v in VMS[:3]:
        for metric in ("cpu_cores", "memory_mib"):
            (record,) = store.forecasts(v.host, v.uuid, metric, 0, T + DAY)
            assert (record.origin, record.model, record.cold_start, record.quantiles) == (T, COLD_START_NAME, True,
                                                                                         levels_of(metric))
            assert len(record.values) == HORIZON
            lo, *_, hi = record.values[0]
            assert 0 < lo < hi
    assert store.forecasts("h2", "u-idle", "cpu_cores", 0, T + DAY) == []


def test_aggregates_sum_the_members_of_each_customer_and_segment(store, tmp_path):
    constant = {"u-web1": (1.0, 1000.0), "u-web2": (2.0, 3000.0), "u-db1": (0.5, 500.0)}
    fill(store, T - DAY, T, lambda uuid, ts: constant[uuid])
    svc = service(store, tmp_path)
    assert svc.aggregates() is None  # before the first run
    svc.forecast_once(T)
    aggregates = svc.aggregates()
    assert sorted(aggregates) == [AggregateKey("customer", "acme"), AggregateKey("customer", "globex"),
                                  AggregateKey("segment", "db"), AggregateKey("segment", "web")]
    acme = aggregates[AggregateKey("customer", "acme")]
    assert acme.members == {"cpu_cores": 2, "memory_mib": 2}
    assert acme.capacity == {"cpu_cores": 8.0, "memory_mib": 16384.0}
    cpu, memory = acme.forecasts["cpu_cores"], acme.forecasts["memory_mib"]
    assert cpu.key == "customer:acme/cpu_cores" and cpu.cold_start and cpu.origin == T
    np.testing.assert_allclose(cpu.values, 3.0)  # 1 + 2 cores, at every quantile and step
    np.testing.assert_allclose(memory.values, 4000.0)
    np.testing.assert_allclose(aggregates[AggregateKey("segment", "db")].forecasts["cpu_cores"].values, 0.5)


def test_aggregate_sums_bridge_short_gaps_only():
    nan = np.nan
    assert np.allclose(fill_short_gaps(np.array([nan, 1, nan, nan, nan, 2]), 2), [nan, 1, 1, 1, nan, 2],
                       equal_nan=True)
    total = sum_members([np.array([1.0, nan, nan, nan, nan]), np.array([nan, 2.0, 2.0, nan, 2.0])], gap_steps=1)
    # The first member is bridged for one step, then counts as gone; the second from its first value.
    assert np.allclose(total, [1.0, 3.0, 2.0, 2.0, 2.0])
    assert np.isnan(sum_members([np.array([nan, 1.0])], 1)[0])


def test_retrain_promotes_the_first_model_and_forecasts_use_it(store, tmp_path, caplog):
    fill(store, T - 3 * DAY, T, daily)
    svc = service(store, tmp_path)
    with caplog.at_level(logging.INFO):
        first = svc.retrain_once(T)
    assert first is not None and first.promoted and first.series == 6
    assert set(first.candidate_scores) == {"cpu_cores", "memory_mib"} and first.current_scores is None
    assert "retraining on 6 series of 3 VMs (the newest 1 day(s) held out)" in caplog.text
    assert "epoch 2/2" in caplog.text  # training's progress
    assert f"retrain done in" in caplog.text and f"{first.version} promoted" in caplog.text
    assert svc.model_name == first.version

    run = svc.forecast_once(T)
    assert (run.model, run.cold_start) == (first.version, 0)
    (record,) = store.forecasts("h1", "u-web1", "cpu_cores", 0, T + DAY)
    assert record.model == first.version and not record.cold_start
    assert svc.aggregates()[AggregateKey("customer", "acme")].forecasts["cpu_cores"].model == first.version

    # A restart serves the same version.
    restarted = service(store, tmp_path)
    assert restarted.model_name == first.version

    # The next retrain starts from the current model's weights; the registry decides by the rule.
    second = svc.retrain_once(T + STEP)
    sidecar = json.loads((tmp_path / "models" / f"{second.version}.json").read_text())
    assert sidecar["parent"] == first.version and sidecar["training"]["warm_start"]
    assert sidecar["scores"]["current_version"] == first.version
    current = svc.registry.current().version
    assert current == (second.version if second.promoted else first.version) == svc.model_name
    assert (sidecar["status"] == "current") == second.promoted


def test_not_enough_history_to_train_is_logged_and_skipped(store, tmp_path, caplog):
    fill(store, T - DAY, T, daily)
    svc = service(store, tmp_path)
    with caplog.at_level(logging.INFO, logger="presculpt.coordinator.forecast.service"):
        assert svc.retrain_once(T) is None
    needed = (MIN_HISTORY + HORIZON + 0.5 * DAY_STEPS + DAY_STEPS) / DAY_STEPS
    assert f"not enough history to train (need {needed:.3g} days, have 1)" in caplog.text
    assert svc.registry.versions() == [] and svc.model_name == COLD_START_NAME


def test_initial_model_seeds_an_empty_registry(store, tmp_path):
    seed = tmp_path / "seed.pt"
    tiny_model(5).save(seed)
    svc = service(store, tmp_path, initial_model=str(seed))
    (version,) = svc.registry.versions()
    assert svc.model_name == version.version and version.info["source"] == "imported"
    assert service(store, tmp_path, initial_model=str(seed)).model_name == version.version  # not imported twice
    with pytest.raises(RegistryError, match="does not exist"):
        service(store, tmp_path / "other", initial_model=str(tmp_path / "missing.pt"))


# -- online accuracy and anomalies --------------------------------------------------------------

def test_online_accuracy_scores_stored_forecasts_against_what_happened(store, tmp_path):
    fill(store, T - DAY, T, lambda uuid, ts: (1.0, 1000.0))
    svc = service(store, tmp_path)
    assert svc.accuracy() is None
    svc.forecast_once(T)  # cold start: every quantile 1 core, 1000 MiB
    fill(store, T, T + HORIZON * STEP, lambda uuid, ts: (2.0, 1000.0))  # then the CPU doubles
    svc.forecast_once(T + HORIZON * STEP)
    report = svc.accuracy()
    assert report.scored_at == T + HORIZON * STEP and report.model == COLD_START_NAME
    cpu = report.overall("cpu_cores")
    # Each level q misses by 1 core below: pinball q * 1, averaged over the levels.
    assert cpu.count == 3 * HORIZON and cpu.pinball == pytest.approx(np.mean(QUANTILES))
    assert cpu.coverage_p90 == 0 and cpu.coverage_p99 == 0
    memory = report.overall("memory_mib")
    assert memory.pinball == 0 and memory.coverage_p90 == 1
    assert report.overall("cpu_cores", host="h2").count == HORIZON
    assert {(v.vm, v.metric) for v in report.for_host("h2")} == {("db-1", "cpu_cores"), ("db-1", "memory_mib")}
    gauge = svc.metrics.registry.get_sample_value
    assert gauge("presculpt_forecast_pinball", {"metric": "cpu_cores"}) == pytest.approx(np.mean(QUANTILES))
    assert gauge("presculpt_forecast_coverage", {"metric": "memory_mib", "quantile": "0.9"}) == 1
    assert gauge("presculpt_forecast_vm_pinball", {"host": "h1", "vm": "web-1", "metric": "cpu_cores"}) > 0


def band(*actuals: float, low: float = 1.0, high: float = 2.0) -> BandCheck:
    steps = tuple(BandStep(T + i * STEP, a, low, high) for i, a in enumerate(actuals))
    return BandCheck("h1", "u1", "web-1", "cpu_cores", "m", 0.1, 0.99, steps)


def test_anomaly_detector_raises_once_per_episode():
    detector = AnomalyDetector(steps=3)
    assert detector.update([band(3, 3)]) == []  # too few steps to judge
    assert detector.update([band(1.5, 3, 3)]) == []  # not all outside
    (anomaly,) = detector.update([band(3, 3, 3)])
    assert (anomaly.direction, anomaly.quantile, [s.actual for s in anomaly.steps]) == (ABOVE, 0.99, [3, 3, 3])
    assert detector.update([band(3, 3, 3, 4)]) == []  # the same episode
    assert detector.update([band(3, 3)]) == []  # cannot judge: the episode goes on
    assert detector.update([band(3, 3, 3)]) == []
    assert detector.update([band(3, 3, 1.5)]) == []  # back inside: re-armed
    assert detector.active == {}
    assert [a.direction for a in detector.update([band(3, 3, 3)])] == [ABOVE]
    (below,) = detector.update([band(0.5, 0.2, 0.1)])  # straight to the other side: a new episode
    assert (below.direction, below.quantile) == (BELOW, 0.1)
    assert detector.update([]) == [] and detector.active == {}  # the VM is gone: forgotten


def test_forecast_run_raises_an_anomaly_once_with_a_warning(store, tmp_path, caplog):
    fill(store, T - DAY, T, lambda uuid, ts: (1.0, 1000.0))
    svc = service(store, tmp_path, anomaly_steps=3)
    surge = lambda uuid, ts: (4.0 if uuid == "u-web2" else 1.0, 1000.0)  # noqa: E731
    runs = []
    for i in range(3):  # a forecast every step, then the step's demand
        runs.append(svc.forecast_once(T + i * STEP))
        fill(store, T + i * STEP, T + (i + 1) * STEP, surge)
    with caplog.at_level(logging.WARNING, logger="presculpt.coordinator.forecast.service"):
        raised = svc.forecast_once(T + 3 * STEP + 10)  # the surge has lasted three steps
        again = svc.forecast_once(T + 3 * STEP + 20)
    assert all(not r.anomalies for r in runs)
    (anomaly,) = raised.anomalies
    assert (anomaly.vm, anomaly.host, anomaly.metric, anomaly.direction) == ("web-2", "h1", "cpu_cores", ABOVE)
    assert [s.actual for s in anomaly.steps] == [4.0, 4.0, 4.0] and all(s.high == 1.0 for s in anomaly.steps)
    assert again.anomalies == ()
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("forecast anomaly: cpu_cores of VM web-2 on h1 above its p99 forecast for the last 3 "
                           "steps: actual 4, 4, 4; forecast at most 1, 1, 1")
    assert svc.metrics.registry.get_sample_value("presculpt_forecast_anomalies_total",
                                                 {"metric": "cpu_cores", "direction": "above"}) == 1


# -- jobs, configuration ------------------------------------------------------------------------

def test_first_retrain_follows_the_newest_version(store, tmp_path):
    now = [T]
    svc = service(store, tmp_path)
    routines = CoordinatorRoutines(store, Dispatcher(DispatchConfig()), clock=lambda: now[0], forecasts=svc)
    assert routines.first_retrain(DAY).astimezone(timezone.utc).timestamp() == T + FIRST_RETRAIN_DELAY_S
    svc.registry.clock = lambda: T - 3600
    svc.registry.promote_if_better(tiny_model(1), scores(1.0), None)
    assert routines.first_retrain(DAY).timestamp() == T - 3600 + DAY  # a restart does not delay it
    now[0] = T + 2 * DAY
    assert routines.first_retrain(DAY).timestamp() == T + 2 * DAY + FIRST_RETRAIN_DELAY_S  # overdue: soon


def test_a_running_retrain_does_not_hold_up_the_coordinator_stop():
    assert asyncio.run(in_daemon_thread(lambda: 42, "retrain")) == 42
    with pytest.raises(ZeroDivisionError):
        asyncio.run(in_daemon_thread(lambda: 1 / 0, "retrain"))
    release = threading.Event()

    async def start_and_stop() -> None:
        job = asyncio.create_task(in_daemon_thread(release.wait, "retrain"))
        await asyncio.sleep(0)  # let the job start its thread
        job.cancel()

    loop_thread = threading.Thread(target=asyncio.run, args=(start_and_stop(),), daemon=True)
    loop_thread.start()
    loop_thread.join(timeout=10)
    stopped = not loop_thread.is_alive()
    release.set()
    assert stopped, "the event loop waited for the running step to finish"


def test_forecast_config_is_validated_with_clear_errors():
    with pytest.raises(ValueError, match=f"history_days must be at least {MIN_HISTORY / DAY_STEPS:g} "):
        ForecastConfig(history_days=1.0)
    with pytest.raises(ValueError, match="train_days must exceed"):
        ForecastConfig(train_days=3.0)
    with pytest.raises(ValueError, match="anomaly_steps must be at least 1"):
        ForecastConfig(anomaly_steps=0)
    with pytest.raises(ValueError, match="retrain_every_s must be positive \\(or 0: never\\)"):
        JobsConfig(retrain_every_s=-1)
    assert CoordinatorConfig(db="/var/lib/presculpt/p.db").model_dir() == Path("/var/lib/presculpt/models")


def test_the_sample_config_documents_every_forecaster_key():
    import dataclasses
    import tomllib

    sample = tomllib.loads((Path(__file__).resolve().parents[2] / "config" / "coordinator.sample.toml").read_text())
    assert set(sample["forecast"]) == {f.name for f in dataclasses.fields(ForecastConfig)}
    assert {"forecast_every_s", "retrain_every_s"} <= set(sample["jobs"])


def test_the_scheduled_forecast_job_stores_forecasts(tmp_path):
    config = coordinator_config(tmp_path, jobs=JobsConfig(dispatch_tick_s=0.1, forecast_every_s=0.2,
                                                          retrain_every_s=0),
                                store=StoreConfig(rollup_settle_s=0, synchronous="NORMAL"))
    c = CoordinatorThread(config).start()
    try:
        store = c.server.store
        for host in ("h1", "h2"):
            store.upsert_inventory(HostRecord(host, host, "x", 16, 65536), [v for v in VMS if v.host == host])
        now = math.floor(time.time() / STEP) * STEP
        fill(store, now - DAY / 2, now, lambda uuid, ts: (1.0, 1000.0))
        records = wait_until(lambda: store.forecasts("h1", "u-web1", "cpu_cores", 0, now + DAY),
                             what="a scheduled forecast")
        assert records[-1].cold_start and records[-1].origin >= now
    finally:
        c.stop()


# -- the API over gRPC --------------------------------------------------------------------------

@pytest.fixture
def served(tmp_path):
    """A coordinator whose store has a day of steady load and one forecast run."""
    config = coordinator_config(tmp_path, store=StoreConfig(rollup_settle_s=0, synchronous="NORMAL"))
    c = CoordinatorThread(config).start()
    store = c.server.store
    for host in ("h1", "h2"):
        store.upsert_inventory(HostRecord(host, host, "x", 16, 65536), [v for v in VMS if v.host == host])
    channel = grpc.insecure_channel(c.address)
    yield c, api_pb2_grpc.CoordinatorServiceStub(channel)
    channel.close()
    c.stop()


def test_forecast_accuracy_and_aggregates_over_grpc(served):
    c, api = served
    with pytest.raises(grpc.RpcError) as err:
        api.GetForecastAccuracy(api_pb2.GetForecastAccuracyRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == ("no forecast accuracy yet: the forecast job has not run since the coordinator "
                                   "started (it runs every 300 s)")

    store, forecasts = c.server.store, c.server.forecasts
    fill(store, T - DAY, T, lambda uuid, ts: (1.0, 1000.0))
    forecasts.forecast_once(T)
    fill(store, T, T + HORIZON * STEP, lambda uuid, ts: (2.0, 1000.0))
    forecasts.forecast_once(T + HORIZON * STEP)

    everything = api.GetForecastAccuracy(api_pb2.GetForecastAccuracyRequest(), timeout=10)
    assert everything.model == COLD_START_NAME and everything.window_s == DAY
    assert everything.overall_cpu.count == 3 * HORIZON
    assert everything.overall_cpu.pinball == pytest.approx(np.mean(QUANTILES))
    assert everything.overall_memory.count == 3 * HORIZON and everything.overall_memory.coverage_p90 == 1
    assert len(everything.vms) == 6
    h2 = api.GetForecastAccuracy(api_pb2.GetForecastAccuracyRequest(host="h2"), timeout=10)
    assert {(v.host, v.vm) for v in h2.vms} == {("h2", "db-1")} and h2.overall_cpu.count == HORIZON
    with pytest.raises(grpc.RpcError) as err:
        api.GetForecastAccuracy(api_pb2.GetForecastAccuracyRequest(host="nope"), timeout=10)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "no host 'nope'")

    acme = api.GetAggregateForecast(api_pb2.GetAggregateForecastRequest(kind="customer", name="acme"), timeout=10)
    assert (acme.kind, acme.name, acme.vms, acme.cpu_capacity_cores) == ("customer", "acme", 2, 8.0)
    assert acme.model == COLD_START_NAME and acme.cold_start and list(acme.quantiles) == list(QUANTILES)
    cpu = next(f for f in acme.forecasts if f.metric == "cpu_cores")
    assert len(cpu.steps) == HORIZON and cpu.ts[0] == T + HORIZON * STEP
    assert cpu.steps[0].values[-1] == pytest.approx(4.0)  # two VMs at 2 cores, top of the last day
    listed = api.ListAggregateForecasts(api_pb2.ListAggregateForecastsRequest(kind="segment"), timeout=10)
    assert [(a.kind, a.name) for a in listed.aggregates] == [("segment", "db"), ("segment", "web")]
    assert len(api.ListAggregateForecasts(api_pb2.ListAggregateForecastsRequest(), timeout=10).aggregates) == 4

    for request, code, message in [
        (api_pb2.GetAggregateForecastRequest(kind="customer", name="initech"), grpc.StatusCode.NOT_FOUND,
         "no customer 'initech' (known: acme, globex)"),
        (api_pb2.GetAggregateForecastRequest(kind="team", name="x"), grpc.StatusCode.INVALID_ARGUMENT,
         "kind must be 'customer' or 'segment', got 'team'"),
        (api_pb2.GetAggregateForecastRequest(kind="segment"), grpc.StatusCode.INVALID_ARGUMENT, "give a segment name"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            api.GetAggregateForecast(request, timeout=10)
        assert (err.value.code(), err.value.details()) == (code, message)


def test_anomalies_reach_event_watchers(served):
    c, api = served
    events = api.WatchEvents(api_pb2.WatchEventsRequest(host="h1"))
    wait_until(lambda: c.call(lambda: c.server.events.active), what="the watcher to subscribe")
    anomaly = ForecastAnomaly("h1", "u-web2", "web-2", "cpu_cores", ABOVE, 0.99, "lstm-x",
                              tuple(BandStep(T + i * STEP, 4.0, 0.5, 1.0) for i in range(3)))
    run = ForecastRun(T, "lstm-x", 3, 6, 0, 6, 0, (anomaly,), 0.1)
    c.call(lambda: c.server.routines.publish_anomalies(run))
    event = next(events)
    events.cancel()
    assert event.WhichOneof("kind") == "anomaly" and event.host == "h1"
    a = event.anomaly
    assert (a.vm, a.uuid, a.metric, a.direction, a.quantile, a.model) == ("web-2", "u-web2", "cpu_cores", "above",
                                                                           0.99, "lstm-x")
    assert list(a.actual) == [4.0] * 3 and list(a.bound) == [1.0] * 3 and a.ts[0] == T


def test_the_learned_next_step_serves_from_the_checkpoint_and_can_be_turned_off(store, tmp_path):
    fill(store, T - 3 * DAY, T, daily)
    model = tiny_model(3)
    ts = T - 10 * DAY + np.arange(10 * DAY_STEPS) * STEP
    training = [Series(f"h/{uuid}/cpu_cores", "cpu_cores", np.array([daily(uuid, t)[0] for t in ts]), ts[0], 4.0,
                       len(ts)) for uuid in ("u-web1", "u-web2", "u-db1")]
    tail = NextStepTail.fit(training, NextStepConfig(trees=10, min_exceedances=5))
    assert tail is not None
    model.next_steps = (tail,)
    ModelRegistry(tmp_path / "models").promote_if_better(model, scores(1.0), None)

    def first_forecast(**config) -> np.ndarray:
        svc = service(store, tmp_path, **config)  # loads the checkpoint, the learned tail with it
        assert [t.metric for t in svc.model.next_steps] == ["cpu_cores"]
        svc.forecast_once(T)
        (record,) = store.forecasts("h1", "u-web1", "cpu_cores", 0, T + DAY)
        served = levels_of("cpu_cores")
        if svc.config.next_step_tail:  # the learned levels join the forecast's
            served = tail.levels_with(served)
        assert record.quantiles == served
        learned = svc.metrics.registry.get_sample_value("presculpt_forecast_series", {"kind": "next_step"})
        assert learned == (3 if svc.config.next_step_tail else 0)  # the three VMs' CPU, not their memory
        return np.array(record.values)

    learned, empirical = first_forecast(), first_forecast(next_step_tail=False)
    levels = tail.levels_with(levels_of("cpu_cores"))
    upper = [levels.index(q) for q in tail.levels]
    assert not np.allclose(learned[0, upper], at_levels(empirical[0], levels_of("cpu_cores"), levels)[upper])
    # ... the later steps keep the empirical tail (read at the added levels)
    assert np.array_equal(learned[1:], at_levels(empirical[1:], levels_of("cpu_cores"), levels))
    assert np.array_equal(learned[0, :upper[0]], empirical[0, :upper[0]])  # and the body the network's
