"""Frozen value types the agent passes between its parts.

Units are in the names: ``*_mib`` is MiB, ``*_ns`` nanoseconds, ``*_bps`` bytes per second,
``cpu_cores`` is CPU time per wall-clock second (1.0 = one core fully busy).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostInfo:
    """What one KVM host offers: its identity and capacity."""

    hostname: str
    uri: str
    cpus: int
    memory_mib: int
    hypervisor: str  # e.g. "QEMU 7.2.0"
    libvirt_version: str


@dataclass(frozen=True)
class BalloonStats:
    """The guest's memory as its balloon driver reports it (all MiB).

    ``available_mib`` is the guest's MemTotal, ``usable_mib`` its MemAvailable and
    ``unused_mib`` its MemFree. ``last_update`` is the guest's own timestamp of the report
    (Unix seconds); it is None (and the guest figures are None) while no driver reports.
    """

    actual_mib: float
    unused_mib: float | None = None
    available_mib: float | None = None
    usable_mib: float | None = None
    rss_mib: float | None = None
    last_update: int | None = None

    @property
    def reported(self) -> bool:
        """True once the guest's balloon driver has reported at least once."""
        return bool(self.last_update) and self.available_mib is not None

    @property
    def used_mib(self) -> float | None:
        """Memory the guest really uses: MemTotal - MemAvailable, else MemTotal - MemFree."""
        if self.available_mib is None:
            return None
        if self.usable_mib is not None:
            return max(0.0, self.available_mib - self.usable_mib)
        if self.unused_mib is not None:
            return max(0.0, self.available_mib - self.unused_mib)
        return None


@dataclass(frozen=True)
class DomainInfo:
    """One guest as libvirt sees it now."""

    name: str
    uuid: str
    state: str  # running, paused, shutoff, crashed, pmsuspended, blocked, shutdown, unknown
    vcpus: int
    max_vcpus: int
    memory_mib: int  # current (balloon target) memory
    max_memory_mib: int
    cpu_quota_cores: float | None = None  # total CPU cap in cores, None when uncapped
    balloon: BalloonStats | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    has_managed_save: bool = False
    domain_type: str = "kvm"  # libvirt's <domain type>: kvm, qemu (software emulation, TCG), test

    @property
    def can_unplug_vcpus(self) -> bool:
        """False under TCG: QEMU 7.2 never completes a vCPU unplug there, and the next
        hot-plug crashes it (see lab/README.md). CPU is then lowered through the quota."""
        return self.domain_type != "qemu"

    @property
    def active(self) -> bool:
        return self.state in ("running", "paused", "blocked", "pmsuspended")

    @property
    def cpu_cores(self) -> float:
        """CPU the guest may use in cores: the quota if one is set, else its vCPUs."""
        return self.cpu_quota_cores if self.cpu_quota_cores is not None else float(self.vcpus)


@dataclass(frozen=True)
class DomainCounters:
    """Raw cumulative counters of one guest from one bulk stats call."""

    name: str
    uuid: str
    state: str
    timestamp_ns: int  # monotonic clock of the agent when read
    cpu_time_ns: int
    vcpus: int
    max_vcpus: int
    memory_mib: int
    max_memory_mib: int
    balloon: BalloonStats | None
    block_read_bytes: int = 0
    block_write_bytes: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0


@dataclass(frozen=True)
class VmSample:
    """One guest's measured usage over one sampling interval."""

    name: str
    uuid: str
    ts: float  # Unix seconds at the end of the interval
    interval_s: float
    state: str
    cpu_cores: float
    vcpus: int
    cpu_quota_cores: float | None
    memory_mib: int
    memory_used_mib: float | None
    memory_available_mib: float | None
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float


@dataclass(frozen=True)
class HostSample:
    """The host's own load over one sampling interval (from psutil)."""

    ts: float
    cpu_count: int
    cpu_used_cores: float
    memory_total_mib: float
    memory_used_mib: float
    memory_available_mib: float
    load1: float
    load5: float
    load15: float


@dataclass(frozen=True)
class TargetShape:
    """The shape a resize asks for; None leaves that dimension as it is.

    ``cpu_cores`` is a total CPU cap: 1.5 means two vCPUs whose quota adds up to 1.5 cores.
    When both ``vcpus`` and ``cpu_cores`` are given, ``vcpus`` must be >= ceil(cpu_cores).
    """

    vcpus: int | None = None
    cpu_cores: float | None = None
    memory_mib: int | None = None

    def is_empty(self) -> bool:
        return self.vcpus is None and self.cpu_cores is None and self.memory_mib is None
