"""The coordinator's scheduled jobs. Each is a named ``*_once`` step, run by APScheduler in
production and called directly by tests."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from presculpt.coordinator.config import JobsConfig
from presculpt.coordinator.dispatch import Dispatcher
from presculpt.coordinator.events import EventBus
from presculpt.coordinator.model import Event
from presculpt.coordinator.planning import PlannerService, PlanRun
from presculpt.coordinator.store.base import MetricStore, StoreError
from presculpt.errors import UserError

if TYPE_CHECKING:  # the service module loads torch; the server hands an instance in
    from presculpt.coordinator.forecast.service import ForecastRun, ForecastService, RetrainResult

log = logging.getLogger(__name__)
# Without any model version yet, the first retrain runs this soon after start (it skips quickly
# while there is not enough history).
FIRST_RETRAIN_DELAY_S = 60.0
# The planner runs this long after the forecast job (both every 300 s by default).
PLAN_DELAY_S = 60.0


class CoordinatorRoutines:
    """The jobs. ``clock`` is the time the jobs work in (Unix seconds); ``schedule_clock`` the wall
    clock APScheduler's triggers run on, the same unless time is scaled (the demo's trace clock)."""

    def __init__(self, store: MetricStore, dispatcher: Dispatcher, clock: Callable[[], float] = time.time,
                 forecasts: "ForecastService | None" = None, events: EventBus | None = None,
                 planner: PlannerService | None = None, schedule_clock: Callable[[], float] | None = None):
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.schedule_clock = schedule_clock or clock
        self.forecasts = forecasts
        self.events = events
        self.planner = planner
        # Set by the coordinator as it stops: a job still running in its thread then finds the
        # store closed, which is the stop, not a failure.
        self.stopping = False

    def rollup_once(self) -> int:
        """Aggregate closed buckets into 5-minute (configurable) min/mean/max roll-ups."""
        return self.store.compute_rollups(self.clock())

    def retention_once(self) -> int:
        """Delete raw samples and roll-ups past their retention."""
        return self.store.apply_retention(self.clock())

    def dispatch_once(self) -> None:
        """Resend commands still without outcome; expire those past their deadline."""
        self.dispatcher.run_once(self.clock())

    def forecast_once(self) -> "ForecastRun":
        """Forecast every VM and aggregate, score recent forecasts, find anomalies."""
        assert self.forecasts is not None
        return self.forecasts.forecast_once(self.clock())

    def retrain_once(self) -> "RetrainResult | None":
        """Train a candidate model; it serves only if it beats the current one."""
        assert self.forecasts is not None
        return self.forecasts.retrain_once(self.clock())

    def publish_anomalies(self, run: "ForecastRun") -> None:
        """Send the anomaly episodes a forecast run found to event watchers (on the event loop)."""
        if self.events is None:
            return
        for anomaly in run.anomalies:
            self.events.publish(Event(self.clock(), anomaly.host, anomaly))

    def plan_once(self) -> PlanRun:
        """Plan every VM from the newest forecasts (the planner's memory advances; nothing is sent yet)."""
        assert self.planner is not None
        return self.planner.plan_once(self.clock())

    def apply_plan(self, run: PlanRun) -> None:
        """On the event loop: send the run's commands (enforce mode) and its new unmet demand to
        event watchers."""
        assert self.planner is not None
        self.planner.enforce(run)
        if self.events is None:
            return
        for unmet in run.new_unmet:
            self.events.publish(Event(self.clock(), unmet.host, unmet))

    def schedule(self, scheduler: AsyncIOScheduler, jobs: JobsConfig) -> None:
        """Add every job to an (asyncio) APScheduler; store and forecaster jobs run in a worker thread
        so that gRPC stays responsive while they work."""

        def in_thread(step: Callable[[], Any], name: str, done: Callable[[Any], None] | None = None,
                      daemon: bool = False):
            async def job() -> None:
                try:
                    result = await (in_daemon_thread(step, name) if daemon else asyncio.to_thread(step))
                except asyncio.CancelledError:
                    # The coordinator is stopping with this run in flight: nothing failed (raised
                    # on, APScheduler would log it as a job error with a traceback).
                    log.info("job %s cancelled: the coordinator is stopping", name)
                    return
                except (StoreError, UserError) as err:
                    if self.stopping and isinstance(err, StoreError):
                        log.info("job %s stopped with the coordinator: %s", name, err)
                        return
                    log.error("job %s failed: %s", name, err)
                    self._count_failure(name)
                    return
                except Exception:  # noqa: BLE001 - a failed run is logged; the next one runs as planned
                    log.exception("job %s failed", name)
                    self._count_failure(name)
                    return
                if done is not None:
                    done(result)
            return job

        async def dispatch_job() -> None:
            self.dispatch_once()

        common = dict(trigger="interval", coalesce=True, max_instances=1, misfire_grace_time=None)
        scheduler.add_job(in_thread(self.rollup_once, "rollup"), id="rollup", seconds=jobs.rollup_every_s, **common)
        scheduler.add_job(in_thread(self.retention_once, "retention"), id="retention",
                          seconds=jobs.retention_every_s, **common)
        scheduler.add_job(dispatch_job, id="dispatch", seconds=jobs.dispatch_tick_s, **common)
        if self.forecasts is not None and jobs.forecast_every_s:
            scheduler.add_job(in_thread(self.forecast_once, "forecast", self.publish_anomalies), id="forecast",
                              seconds=jobs.forecast_every_s, **common)
        if self.planner is not None and self.planner.settings.every_s:
            every = self.planner.settings.every_s
            scheduler.add_job(in_thread(self.plan_once, "plan", self.apply_plan), id="plan", seconds=every,
                              next_run_time=self.first_plan(every), **common)
        if self.forecasts is not None and jobs.retrain_every_s:
            scheduler.add_job(in_thread(self.retrain_once, "retrain", daemon=True), id="retrain",
                              seconds=jobs.retrain_every_s, next_run_time=self.first_retrain(jobs.retrain_every_s),
                              **common)

    def first_plan(self, every_s: float) -> datetime:
        """The planner's first run: ``PLAN_DELAY_S`` (at most half an interval) after the forecast
        job's first run when both run as often, so that each plan sees the forecasts of its step."""
        at = self.schedule_clock() + every_s + min(PLAN_DELAY_S, every_s / 2)
        return datetime.fromtimestamp(at, timezone.utc)

    def first_retrain(self, every_s: float) -> datetime:
        """A retrain is due ``every_s`` after the newest model version was made, whenever the
        coordinator restarted in between (so restarts more frequent than retrains do not starve
        it); without any version, shortly after start."""
        assert self.forecasts is not None
        now = self.schedule_clock()  # model versions are stamped with the wall clock
        last = self.forecasts.last_trained_at()
        at = now + FIRST_RETRAIN_DELAY_S if last is None else max(now + FIRST_RETRAIN_DELAY_S, last + every_s)
        log.info("next model retrain at %s", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)))
        return datetime.fromtimestamp(at, timezone.utc)

    def _count_failure(self, name: str) -> None:
        if name == "plan" and self.planner is not None:
            self.planner.metrics.errors.labels("plan").inc()
        if self.forecasts is None:
            return
        if name == "retrain":
            self.forecasts.metrics.retrains.labels("failed").inc()
        elif name == "forecast":
            self.forecasts.metrics.errors.labels("forecast").inc()


async def in_daemon_thread(step: Callable[[], object], name: str) -> object:
    """Run ``step`` in a daemon thread of its own and await its result.

    For the retrain, which takes minutes: ``asyncio.to_thread`` would make the coordinator's exit
    wait for it (``asyncio.run`` joins its executor), while a daemon thread is abandoned when the
    coordinator stops. That is safe: the registry writes checkpoints and its pointer atomically."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: object, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = step()
        except BaseException as err:  # noqa: BLE001 - handed to the awaiting job
            error = err
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            log.info("job %s finished after the coordinator stopped; its result is dropped", name)

    threading.Thread(target=run, name=f"presculpt-{name}", daemon=True).start()
    return await future
