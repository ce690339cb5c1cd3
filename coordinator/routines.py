"""The coordinator's scheduled jobs. Each is a named ``*_once`` step, run by APScheduler in
production and called directly by tests. (Forecasting and planning join here later.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from presculpt.coordinator.config import JobsConfig
from presculpt.coordinator.dispatch import Dispatcher
from presculpt.coordinator.store.base import MetricStore, StoreError

log = logging.getLogger(__name__)


class CoordinatorRoutines:
    def __init__(self, store: MetricStore, dispatcher: Dispatcher, clock: Callable[[], float] = time.time):
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock

    def rollup_once(self) -> int:
        """Aggregate closed buckets into 5-minute (configurable) min/mean/max roll-ups."""
        return self.store.compute_rollups(self.clock())

    def retention_once(self) -> int:
        """Delete raw samples and roll-ups past their retention."""
        return self.store.apply_retention(self.clock())

    def dispatch_once(self) -> None:
        """Resend commands still without outcome; expire those past their deadline."""
        self.dispatcher.run_once(self.clock())

    def schedule(self, scheduler: AsyncIOScheduler, jobs: JobsConfig) -> None:
        """Add every job to an (asyncio) APScheduler; store jobs run in a worker thread."""

        def in_thread(step: Callable[[], int], name: str):
            async def job() -> None:
                try:
                    await asyncio.to_thread(step)
                except StoreError as err:
                    log.error("job %s failed: %s", name, err)
            return job

        async def dispatch_job() -> None:
            self.dispatch_once()

        common = dict(trigger="interval", coalesce=True, max_instances=1, misfire_grace_time=None)
        scheduler.add_job(in_thread(self.rollup_once, "rollup"), id="rollup", seconds=jobs.rollup_every_s, **common)
        scheduler.add_job(in_thread(self.retention_once, "retention"), id="retention",
                          seconds=jobs.retention_every_s, **common)
        scheduler.add_job(dispatch_job, id="dispatch", seconds=jobs.dispatch_tick_s, **common)
