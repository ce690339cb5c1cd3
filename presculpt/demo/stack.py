"""The demo's running parts: the coordinator (embedded store) and one agent, in this process, on the
scenario's trace clock; started and stopped explicitly.

Both are the production classes (``CoordinatorServer``, ``AgentRunner``) with configuration scaled
to the demo's time: every duration the coordinator and the agent reason about is trace time (a
5-minute step, a command's 30 s deadline), every interval a job or the agent waits is wall time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from presculpt.agent.commands import CommandApplier
from presculpt.agent.config import AgentConfig, GuardConfig, StreamConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.hypervisor.base import Hypervisor
from presculpt.agent.model import DomainCounters, DomainInfo
from presculpt.agent.resize import Resizer
from presculpt.agent.runner import AgentRunner
from presculpt.agent.spool import BatchSpool
from presculpt.coordinator.config import (
    CoordinatorConfig,
    DispatchConfig,
    ForecastConfig,
    JobsConfig,
    PlannerSettings,
    StoreConfig,
)
from presculpt.coordinator.model import Command, Event, Outcome
from presculpt.coordinator.server import CoordinatorServer
from presculpt.lab.trace import GRID_S
from presculpt.timescale import ScaledClock
from presculpt.tls import TlsConfig

log = logging.getLogger(__name__)

AGENT_ID = "demo-host"
COMMAND_DEADLINE_WALL_S = 30.0  # a command's deadline, in wall seconds (the agent's resizes take real time)
COMMAND_RETRY_WALL_S = 5.0


class OnlyDomains:
    """A hypervisor that shows only the named domains: the demo's agent manages its guests and
    leaves every other domain of the host alone. Everything else is the wrapped hypervisor's."""

    def __init__(self, hypervisor: Hypervisor, names: Sequence[str]):
        self._hv = hypervisor
        self._names = frozenset(names)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hv, name)

    def list_domains(self) -> list[DomainInfo]:
        return [d for d in self._hv.list_domains() if d.name in self._names]

    def domain_counters(self) -> list[DomainCounters]:
        return [c for c in self._hv.domain_counters() if c.name in self._names]


def make_demo_pki(workdir: Path) -> dict[str, TlsConfig]:
    """A throwaway CA with a certificate for the coordinator (on 127.0.0.1) and one for the agent, in
    ``workdir/pki``: the demo's agent stream runs over mutual TLS as in production (a few ms)."""
    from presculpt.certs import init_ca, issue

    pki = workdir / "pki"
    ca, _ = init_ca(pki, "Presculpt demo CA", days=2)
    made = {"coordinator": issue(pki, "coordinator", ips=["127.0.0.1"], days=2), AGENT_ID: issue(pki, AGENT_ID, days=2)}
    return {name: TlsConfig(ca=str(ca), cert=str(i.cert_path), key=str(i.key_path)) for name, i in made.items()}


def coordinator_config(workdir: Path, step_seconds: float, initial_model: Path, host_cpus: int,
                       guests: int, max_vcpus: int, tls: TlsConfig) -> CoordinatorConfig:
    """The coordinator of the demo: enforce mode, every job once a step (in wall seconds), durations
    in trace time, room for every guest's maximum vCPUs on the host."""
    speedup = GRID_S / step_seconds
    overcommit = max(4.0, math.ceil(guests * max_vcpus / max(1, host_cpus)))
    return CoordinatorConfig(
        listen="127.0.0.1:0",
        db=str(workdir / "coordinator.db"),
        store=StoreConfig(rollup_settle_s=0.15 * GRID_S, synchronous="NORMAL"),
        dispatch=DispatchConfig(default_timeout_s=COMMAND_DEADLINE_WALL_S * speedup,
                                retry_interval_s=COMMAND_RETRY_WALL_S * speedup),
        jobs=JobsConfig(rollup_every_s=step_seconds / 10, retention_every_s=10 * step_seconds,
                        dispatch_tick_s=0.2, forecast_every_s=step_seconds, retrain_every_s=0),
        forecast=ForecastConfig(model_dir=str(workdir / "models"), initial_model=str(initial_model)),
        # No host resize budget: the demo replays a few hours chosen for how much they change, where
        # a budget meant for a fleet's day (20 per VM-day) would hold back half the resizes.
        planner=PlannerSettings(mode="enforce", every_s=step_seconds, cpu_overcommit=overcommit,
                                host_resizes_per_vm_day=0.0),
        tls=tls,
    )


def agent_config(workdir: Path, step_seconds: float, coordinator: str, cpu_overcommit: float,
                 tls: TlsConfig) -> AgentConfig:
    """The agent samples about three times a step (at most once a second) and re-reads its
    inventory five times a step, as often in trace time as it does in production (every 60 s of
    5-minute steps): the planner sees a balloon's new size before its next step."""
    return AgentConfig(
        interval_s=min(1.0, step_seconds / 3),
        inventory_refresh_s=step_seconds / 5,
        guard=GuardConfig(cpu_overcommit=cpu_overcommit),
        stream=StreamConfig(coordinator=coordinator, agent_id=AGENT_ID, spool_path=str(workdir / "agent-spool.db"),
                            reconnect_initial_s=0.1, reconnect_max_s=2.0),
        tls=tls,
    )


class CoordinatorThread:
    """A CoordinatorServer on its own event loop in a background thread. ``on_event`` receives the
    commands the coordinator sends and their outcomes (on the coordinator's loop: keep it short)."""

    def __init__(self, config: CoordinatorConfig, clock: ScaledClock,
                 on_event: Callable[[Event], None] | None = None):
        self.config = config
        self.clock = clock
        self.on_event = on_event
        self.server: CoordinatorServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> "CoordinatorThread":
        ready: Future = Future()

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.loop.set_exception_handler(self._loop_error)
            self._stopped = asyncio.Event()
            self.server = CoordinatorServer(self.config, clock=self.clock, schedule_clock=time.time)
            try:
                self.port = await self.server.start()
            except BaseException as err:  # noqa: BLE001 - handed to the starting thread
                ready.set_exception(err)
                return
            watcher = asyncio.create_task(self._watch()) if self.on_event else None
            ready.set_result(None)
            await self._stopped.wait()
            if watcher is not None:
                watcher.cancel()
            await self.server.stop(grace_s=0.5)

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="demo-coordinator", daemon=True)
        self._thread.start()
        ready.result(timeout=timeout_s)
        return self

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Once the server has stopped, gRPC's poller may still be called on its closed descriptor
        (EBADF): expected at shutdown, not worth an error. Anything else goes to the default handler."""
        error = context.get("exception")
        if self._stopped is not None and self._stopped.is_set() and isinstance(error, OSError) and error.errno == 9:
            log.debug("gRPC's poller after the coordinator stopped: %s", error)
            return
        loop.default_exception_handler(context)

    async def _watch(self) -> None:
        assert self.server is not None and self.on_event is not None
        sub = self.server.events.subscribe()
        try:
            while True:
                event = await sub.get()
                if isinstance(event.payload, (Command, Outcome)):
                    self.on_event(event)
        finally:
            self.server.events.unsubscribe(sub)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._thread is None:
            return
        if self.loop is not None and self._stopped is not None:
            self.loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.warning("the coordinator did not stop within %.0f s", timeout_s)
        self._thread = None


class AgentThread:
    """An AgentRunner ticking in a background thread, on the trace clock (sample timestamps and
    command deadlines); its guard judges balloon statistics on the wall clock."""

    def __init__(self, hypervisor: Hypervisor, config: AgentConfig, clock: ScaledClock):
        resizer = Resizer(hypervisor, SafetyGuard(config.guard), clock=time.time)
        self.runner = AgentRunner(hypervisor, config, resizer, CommandApplier(resizer, clock=clock),
                                  BatchSpool(config.stream.spool_path), config.stream.coordinator, clock=clock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "AgentThread":
        self.runner.start()
        self._thread = threading.Thread(target=self.runner.run, args=(self._stop,), name="demo-agent", daemon=True)
        self._thread.start()
        return self

    def connected(self) -> bool:
        return self.runner.link.connected.is_set()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        self.runner.stop()


def describe_config(config: CoordinatorConfig) -> dict[str, Any]:
    """The parts of the coordinator's configuration the demo changed, for the JSON."""
    p = config.planner
    return {"planner_mode": p.mode, "planner_every_s": p.every_s, "forecast_every_s": config.jobs.forecast_every_s,
            "cpu_overcommit": p.cpu_overcommit, "default_tier": p.default_tier,
            "tier": dataclasses.asdict(p.tiers[p.default_tier])}
