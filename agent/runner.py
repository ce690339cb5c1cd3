"""The agent's loop: one tick (``run_once``) of named steps, called by ``run`` every interval and
directly by tests.

    refresh_inventory   re-read the domains when due or when an unknown guest shows up
    sample              one bulk counter read of every guest, plus the host
    spool               store the batch durably in the local spool (it gets the next seq)
    send                wake the stream; it sends every unacknowledged batch
    apply_commands      commands from the coordinator, each through the safety guard
    keep_safe           while the coordinator is unreachable: see :mod:`presculpt.agent.safety`

Between ticks the loop waits on the command inbox, so a resize is applied within moments of its
arrival rather than at the next tick. All hypervisor calls happen on the loop's thread.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable

from presculpt.agent.collectors import GuestCollector, HostCollector
from presculpt.agent.commands import CommandApplier, vm_info_pb
from presculpt.agent.config import AgentConfig
from presculpt.agent.guard import GuardRefused
from presculpt.agent.hypervisor.base import Hypervisor, HypervisorError
from presculpt.agent.metrics import AgentMetrics
from presculpt.agent.model import DomainInfo, HostInfo, HostSample, VmSample
from presculpt.agent.resize import ResizeFailed, Resizer
from presculpt.agent.safety import safety_actions
from presculpt.agent.spool import BatchSpool, SpoolError
from presculpt.agent.stream import CoordinatorLink
from presculpt.v1 import agent_pb2, model_pb2
from presculpt.wire import vm_sample_pb

log = logging.getLogger(__name__)
AGENT_VERSION = "0.1.0"


def host_sample_pb(h: HostSample) -> model_pb2.HostSample:
    return model_pb2.HostSample(ts=h.ts, cpu_count=h.cpu_count, cpu_used_cores=h.cpu_used_cores,
                                memory_total_mib=h.memory_total_mib, memory_used_mib=h.memory_used_mib,
                                memory_available_mib=h.memory_available_mib, load1=h.load1)


def host_info_pb(h: HostInfo) -> model_pb2.HostInfo:
    return model_pb2.HostInfo(hostname=h.hostname, uri=h.uri, cpus=h.cpus, memory_mib=h.memory_mib,
                              hypervisor=h.hypervisor, libvirt_version=h.libvirt_version)


def _inventory_key(domains: list[DomainInfo]) -> tuple:
    return tuple(sorted(
        (d.uuid, d.name, d.state, d.vcpus, d.max_vcpus, d.cpu_quota_cores, d.memory_mib,
         d.max_memory_mib, tuple(sorted(d.metadata.items())))
        for d in domains
    ))


class AgentRunner:
    """Samples, spools and streams metrics; applies the coordinator's commands; keeps guests safe."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        config: AgentConfig,
        resizer: Resizer,
        applier: CommandApplier,
        spool: BatchSpool,
        coordinator: str,
        metrics: AgentMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.hypervisor = hypervisor
        self.config = config
        self.resizer = resizer
        self.applier = applier
        self.spool = spool
        self.metrics = metrics or AgentMetrics()
        self.clock = clock
        self.agent_id = config.stream.agent_id or socket.gethostname()
        self.guests = GuestCollector(hypervisor, clock)
        self.host = HostCollector(clock)
        self.inbox: queue.Queue[model_pb2.Command] = queue.Queue()
        self.link = CoordinatorLink(coordinator, self.agent_id, spool, self.hello, self.inbox.put,
                                    config.stream, self.metrics, config.tls)
        self._host_info: HostInfo | None = None
        self._domains: list[DomainInfo] = []
        self._inventory_key: tuple = ()
        self._inventory_at = float("-inf")
        self._samples: tuple[list[VmSample], HostSample | None] = ([], None)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Open the spool, read the inventory and connect (in the background)."""
        self.spool.open()
        self._host_info = self.hypervisor.host_info()
        self.metrics.observe_host(self.agent_id, self._host_info, *self.resizer.guard.host_limits(self._host_info),
                                  AGENT_VERSION)
        self.refresh_inventory(force=True)
        self.link.start()

    def stop(self) -> None:
        self.link.stop()
        self.spool.close()

    def run(self, stop: threading.Event, heartbeat: Callable[[], None] | None = None) -> None:
        """Tick every ``interval_s`` until ``stop`` is set; commands are applied as they arrive.
        ``heartbeat`` (systemd's watchdog) is called after each tick and at least twice a second
        while the loop waits, so it stops being called when the loop is stuck."""
        interval = self.config.interval_s
        beat = heartbeat or (lambda: None)
        next_tick = time.monotonic()
        while not stop.is_set():
            self.run_once()
            beat()
            next_tick += interval
            if next_tick < time.monotonic():
                next_tick = time.monotonic() + interval  # a slow tick: skip, do not bunch up
            while not stop.is_set() and (remaining := next_tick - time.monotonic()) > 0:
                try:
                    command = self.inbox.get(timeout=min(remaining, 0.5))
                except queue.Empty:
                    beat()
                    continue
                self._apply_command(command)
                beat()

    def hello(self) -> agent_pb2.Hello:
        """Called by the stream on each (re)connection: identity, capacity and inventory."""
        assert self._host_info is not None
        return agent_pb2.Hello(agent_id=self.agent_id, host=host_info_pb(self._host_info),
                               vms=[vm_info_pb(d) for d in self._domains], agent_version=AGENT_VERSION)

    # -- one tick ------------------------------------------------------------------------
    def run_once(self) -> None:
        for name, step in (
            ("sample", self.sample),
            ("spool", self.spool_batch),
            ("send", self.send),
            ("apply_commands", self.apply_commands),
            ("keep_safe", self.keep_safe),
        ):
            started = time.perf_counter()
            try:
                step()
            except HypervisorError as err:
                self.metrics.errors.labels("hypervisor").inc()
                log.warning("step %s: %s", name, err)
            except SpoolError as err:  # e.g. a full disk: keep sampling and keeping guests safe
                self.metrics.errors.labels("spool").inc()
                log.error("step %s: %s", name, err)
            log.debug("step %s took %.1f ms", name, (time.perf_counter() - started) * 1e3)

    def refresh_inventory(self, force: bool = False) -> None:
        """Re-read every domain; tell the coordinator when the inventory changed."""
        if not force and time.monotonic() - self._inventory_at < self.config.inventory_refresh_s:
            return
        domains = self.hypervisor.list_domains()
        self._inventory_at = time.monotonic()
        self._domains = domains
        self.metrics.observe_guests(self.agent_id, domains)
        key = _inventory_key(domains)
        if key != self._inventory_key:
            self._inventory_key = key
            self.link.send(agent_pb2.AgentMessage(
                inventory=agent_pb2.Inventory(vms=[vm_info_pb(d) for d in domains])))

    def sample(self) -> None:
        counters = self.hypervisor.domain_counters()
        known = {d.uuid for d in self._domains}
        self.refresh_inventory(force=any(c.uuid not in known for c in counters))
        quotas = {d.uuid: d.cpu_quota_cores for d in self._domains}
        known = {d.uuid for d in self._domains}
        vms = [s for s in self.guests.derive(counters, quotas) if s.uuid in known]
        self._samples = (vms, self.host.sample())
        self.metrics.samples_taken.inc(len(vms))
        self.metrics.observe_usage(self.agent_id, *self._samples)

    def spool_batch(self) -> None:
        vms, host = self._samples
        if not vms and host is None:
            return
        body = agent_pb2.MetricBatch(vms=[vm_sample_pb(s) for s in vms])
        if host is not None:
            body.host.CopyFrom(host_sample_pb(host))

        def build(seq: int) -> bytes:
            body.seq = seq
            return body.SerializeToString()

        self.spool.append(build)
        self._samples = ([], None)
        self.metrics.spool_batches.set(len(self.spool))

    def send(self) -> None:
        self.link.wake()

    def apply_commands(self) -> None:
        while True:
            try:
                command = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._apply_command(command)

    def _apply_command(self, command: model_pb2.Command) -> None:
        started = time.perf_counter()
        outcome = self.applier.apply(command)
        self.metrics.command_seconds.observe(time.perf_counter() - started)
        self.metrics.commands.labels(command.WhichOneof("action") or "none",
                                     model_pb2.CommandOutcome.Status.Name(outcome.status)).inc()
        self.link.send(agent_pb2.AgentMessage(outcome=outcome))
        try:
            self.refresh_inventory(force=True)  # the coordinator sees the new shape at once
        except HypervisorError as err:
            log.warning("inventory after command %s: %s", command.id, err)

    def keep_safe(self) -> None:
        down = self.link.disconnected_for()
        if down < self.config.stream.local_safety_after_s:
            return
        self.refresh_inventory(force=True)  # fresh balloon statistics
        actions = safety_actions(self._domains, self.resizer.guard, self.resizer.clock())  # the host's time
        for action in actions:
            log.warning("coordinator unreachable for %.0f s: %s", down, action.reason)
            try:
                self.resizer.apply(action.domain, action.target)
            except (GuardRefused, ResizeFailed, HypervisorError) as err:
                log.warning("could not grow %s: %s", action.domain, err)
        if actions:
            self.refresh_inventory(force=True)
