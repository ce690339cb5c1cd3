"""The scheduled jobs: named run_once steps, and APScheduler running them in the coordinator."""

from __future__ import annotations

import asyncio
import threading
import time

from presculpt.coordinator.config import DispatchConfig, JobsConfig, StoreConfig
from presculpt.coordinator.dispatch import Dispatcher
from presculpt.coordinator.model import HostRecord, HostSampleRow, MetricBatch, SampleRow, VmRecord
from presculpt.coordinator.routines import CoordinatorRoutines
from presculpt.coordinator.store.base import StoreError
from presculpt.coordinator.store.sqlite import SqliteMetricStore

from .conftest import CoordinatorThread, coordinator_config, wait_until

HOST = HostRecord(id="h1", hostname="h1", uri="x", cpus=4, memory_mib=8192)
VM = VmRecord(host="h1", uuid="u1", name="a", state="running", vcpus=1, max_vcpus=2, cpu_quota_cores=None,
              memory_mib=512, max_memory_mib=1024)


def batch(seq: int, ts: float) -> MetricBatch:
    return MetricBatch("h1", seq, (SampleRow("u1", ts, 1, 0.5, 1, None, 512, 100, 400, 0, 0, 0, 0),),
                       HostSampleRow(ts, 4, 1, 8192, 1000, 7192, 0.1))


def test_steps_run_directly(tmp_path):
    store = SqliteMetricStore(tmp_path / "m.db", StoreConfig(rollup_settle_s=0, raw_retention_s=600))
    store.start()
    try:
        store.upsert_inventory(HOST, [VM])
        store.store_batch(batch(1, 100.0))
        now = [1000.0]
        routines = CoordinatorRoutines(store, Dispatcher(DispatchConfig()), clock=lambda: now[0])
        assert routines.rollup_once() == 1
        assert routines.retention_once() == 2  # the raw sample and its host sample, past 600 s
        now[0] = 100 * 86400.0
        assert routines.retention_once() == 1  # the roll-up, past 90 days
        routines.dispatch_once()
    finally:
        store.stop()


def test_job_triggers_follow_the_schedule_clock_when_time_is_scaled(tmp_path):
    store = SqliteMetricStore(tmp_path / "m.db")
    trace_time, wall = 1_376_546_400.0, 1_800_000_000.0
    routines = CoordinatorRoutines(store, Dispatcher(DispatchConfig()), clock=lambda: trace_time,
                                   schedule_clock=lambda: wall)
    assert routines.first_plan(3.0).timestamp() == wall + 3.0 + 1.5
    assert CoordinatorRoutines(store, Dispatcher(DispatchConfig()), clock=lambda: trace_time).first_plan(
        300.0).timestamp() == trace_time + 300.0 + 60.0  # one clock: the same as before


def test_scheduler_runs_the_jobs(tmp_path):
    config = coordinator_config(tmp_path, store=StoreConfig(rollup_bucket_s=1, rollup_settle_s=0),
                                jobs=JobsConfig(rollup_every_s=0.2, retention_every_s=0.2, dispatch_tick_s=0.1))
    c = CoordinatorThread(config).start()
    try:
        store = c.server.store
        store.upsert_inventory(HOST, [VM])
        store.store_batch(batch(1, time.time() - 5))
        wait_until(lambda: store.rollups("h1", "u1", 0, time.time()), what="the scheduled roll-up")
        assert time.time() - 1 < c.call(lambda: c.server.next_run("rollup")) <= time.time() + 0.3
        assert c.call(lambda: c.server.next_run("forecast")) is not None  # every 300 s by default
        assert c.call(lambda: c.server.next_run("nope")) is None
    finally:
        c.stop()


class Jobs:
    """The scheduler's add_job, keeping what it is given."""

    def __init__(self):
        self.funcs = {}

    def add_job(self, func, id, **_):
        self.funcs[id] = func


def test_a_job_cancelled_at_shutdown_ends_quietly(tmp_path, caplog):
    release = threading.Event()
    routines = CoordinatorRoutines(SqliteMetricStore(tmp_path / "m.db"), Dispatcher(DispatchConfig()))
    routines.rollup_once = lambda: release.wait(30)  # a roll-up still running when the coordinator stops
    jobs = Jobs()
    routines.schedule(jobs, JobsConfig())

    async def stop_mid_run():
        task = asyncio.ensure_future(jobs.funcs["rollup"]())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.wait([task])
        release.set()  # let the worker thread end (asyncio.run joins it)
        return task

    with caplog.at_level("INFO", logger="presculpt.coordinator.routines"):
        task = asyncio.run(stop_mid_run())
    # The job returned instead of raising CancelledError into APScheduler (logged there as an error).
    assert not task.cancelled() and task.exception() is None
    assert "job rollup cancelled: the coordinator is stopping" in caplog.text


def test_a_store_closed_under_a_running_job_is_a_failure_unless_the_coordinator_is_stopping(tmp_path, caplog):
    routines = CoordinatorRoutines(SqliteMetricStore(tmp_path / "m.db"), Dispatcher(DispatchConfig()))
    failures = []
    routines._count_failure = failures.append

    def closed():
        raise StoreError("the store is not running (not started, or stopped)")

    routines.rollup_once = closed
    jobs = Jobs()
    routines.schedule(jobs, JobsConfig())
    with caplog.at_level("INFO", logger="presculpt.coordinator.routines"):
        asyncio.run(jobs.funcs["rollup"]())
        assert failures == ["rollup"] and "ERROR" in caplog.text  # while running: a failure
        caplog.clear()
        routines.stopping = True
        asyncio.run(jobs.funcs["rollup"]())
    assert failures == ["rollup"]  # not counted again
    assert "job rollup stopped with the coordinator: the store is not running" in caplog.text
    assert "ERROR" not in caplog.text
