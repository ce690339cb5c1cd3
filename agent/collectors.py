"""Collectors: turn raw counters into per-interval usage samples.

:class:`GuestCollector` reads every guest with one bulk hypervisor call per tick and differentiates
cumulative counters (CPU time, disk and network bytes) over the interval; :class:`HostCollector`
reads the host through psutil. Neither starts anything in its constructor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import psutil

from presculpt.agent.hypervisor.base import Hypervisor
from presculpt.agent.model import DomainCounters, HostSample, VmSample

NS_PER_S = 1e9


def _rate(now: int, before: int, seconds: float) -> float:
    # Counters reset when a guest restarts; a negative delta is a restart, not negative usage.
    return max(0, now - before) / seconds


class GuestCollector:
    """Per-guest usage from successive bulk counter reads. The first read of a guest only primes it."""

    def __init__(self, hypervisor: Hypervisor, wall_clock: Callable[[], float] = time.time):
        self.hypervisor = hypervisor
        self.wall_clock = wall_clock
        self._previous: dict[str, DomainCounters] = {}

    def sample(self, cpu_quota_cores: Mapping[str, float | None] | None = None) -> list[VmSample]:
        """Read all active guests once; ``cpu_quota_cores`` maps uuid to the known CPU cap."""
        counters = self.hypervisor.domain_counters()
        return self.derive(counters, cpu_quota_cores or {})

    def derive(
        self, counters: list[DomainCounters], cpu_quota_cores: Mapping[str, float | None]
    ) -> list[VmSample]:
        now = self.wall_clock()
        samples = []
        current: dict[str, DomainCounters] = {}
        for c in counters:
            current[c.uuid] = c
            prev = self._previous.get(c.uuid)
            if prev is None or c.timestamp_ns <= prev.timestamp_ns:
                continue
            seconds = (c.timestamp_ns - prev.timestamp_ns) / NS_PER_S
            balloon = c.balloon
            samples.append(
                VmSample(
                    name=c.name,
                    uuid=c.uuid,
                    ts=now,
                    interval_s=seconds,
                    state=c.state,
                    cpu_cores=_rate(c.cpu_time_ns, prev.cpu_time_ns, seconds) / NS_PER_S,
                    vcpus=c.vcpus,
                    cpu_quota_cores=cpu_quota_cores.get(c.uuid),
                    memory_mib=c.memory_mib,
                    memory_used_mib=balloon.used_mib if balloon is not None else None,
                    memory_available_mib=balloon.available_mib if balloon is not None else None,
                    disk_read_bps=_rate(c.block_read_bytes, prev.block_read_bytes, seconds),
                    disk_write_bps=_rate(c.block_write_bytes, prev.block_write_bytes, seconds),
                    net_rx_bps=_rate(c.net_rx_bytes, prev.net_rx_bytes, seconds),
                    net_tx_bps=_rate(c.net_tx_bytes, prev.net_tx_bytes, seconds),
                )
            )
        self._previous = current  # guests that stopped are forgotten
        return samples


class HostCollector:
    """The host's CPU, memory and load from psutil."""

    def __init__(self, wall_clock: Callable[[], float] = time.time):
        self.wall_clock = wall_clock
        self._primed = False

    def sample(self) -> HostSample:
        # cpu_percent(None) measures since the previous call; the first call primes it.
        percent = psutil.cpu_percent(interval=None if self._primed else 0.1)
        self._primed = True
        cpus = psutil.cpu_count() or 1
        memory = psutil.virtual_memory()
        load1, load5, load15 = psutil.getloadavg()
        mib = 1024 * 1024
        return HostSample(
            ts=self.wall_clock(),
            cpu_count=cpus,
            cpu_used_cores=round(percent / 100 * cpus, 4),
            memory_total_mib=memory.total / mib,
            memory_used_mib=(memory.total - memory.available) / mib,
            memory_available_mib=memory.available / mib,
            load1=load1,
            load5=load5,
            load15=load15,
        )
