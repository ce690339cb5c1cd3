"""Frozen value types of the coordinator, shared by the store, ingest, the API and (later) the
forecaster and planner. They import neither gRPC nor SQL.

Units are in the names: ``*_mib`` MiB, ``*_bps`` bytes per second, ``cpu_cores`` CPU time per second;
``ts``, ``start`` and ``last_seen`` are Unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class SampleRow(NamedTuple):
    """One VM's usage over one interval. A NamedTuple: ingest builds tens of thousands per second."""

    uuid: str
    ts: float
    interval_s: float
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


class HostSampleRow(NamedTuple):
    ts: float
    cpu_count: int
    cpu_used_cores: float
    memory_total_mib: float
    memory_used_mib: float
    memory_available_mib: float
    load1: float


# The metrics that roll-ups aggregate (min, mean, max of each).
ROLLUP_METRICS: tuple[str, ...] = (
    "cpu_cores",
    "memory_mib",
    "memory_used_mib",
    "disk_read_bps",
    "disk_write_bps",
    "net_rx_bps",
    "net_tx_bps",
)


@dataclass(frozen=True)
class Stat:
    min: float | None
    mean: float | None
    max: float | None


@dataclass(frozen=True)
class RollupRow:
    """One VM's aggregate over one bucket ``[start, start + duration_s)``."""

    uuid: str
    start: float
    duration_s: float
    count: int
    stats: dict[str, Stat]  # keyed by ROLLUP_METRICS


@dataclass(frozen=True)
class HostRecord:
    """A host (one agent) as the coordinator knows it."""

    id: str  # the agent id, stable across reconnects
    hostname: str
    uri: str
    cpus: int
    memory_mib: int
    hypervisor: str = ""
    libvirt_version: str = ""
    last_seen: float = 0.0


@dataclass(frozen=True)
class VmRecord:
    """A guest of one host, from the agent's latest inventory."""

    host: str
    uuid: str
    name: str
    state: str
    vcpus: int
    max_vcpus: int
    cpu_quota_cores: float | None
    memory_mib: int
    max_memory_mib: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricBatch:
    """One batch as an agent sent it: stored atomically, once per (agent_id, seq)."""

    agent_id: str
    seq: int
    samples: tuple[SampleRow, ...]
    host_sample: HostSampleRow | None = None


@dataclass(frozen=True)
class BatchStored:
    """The store's answer to a batch: durable (or already stored before, ``duplicate``)."""

    agent_id: str
    seq: int
    samples: int
    duplicate: bool = False


# -- commands ----------------------------------------------------------------------------------

COMMAND_KINDS = ("resize", "presculpt", "downgrade", "shadow_fill", "shadow_activate", "shadow_drain")
OUTCOME_STATUSES = ("APPLIED", "UNCHANGED", "REFUSED", "FAILED", "EXPIRED")


@dataclass(frozen=True)
class Shape:
    """A partial target shape; None leaves that dimension as it is."""

    vcpus: int | None = None
    cpu_cores: float | None = None
    memory_mib: int | None = None

    def is_empty(self) -> bool:
        return self.vcpus is None and self.cpu_cores is None and self.memory_mib is None


@dataclass(frozen=True)
class Command:
    """A command to one host's agent. ``kind`` is one of COMMAND_KINDS; ``vm`` and ``target`` are
    set for guest commands (resize, presculpt, downgrade), the ``pool`` fields for shadow commands.
    Every kind names a target state, so delivering it twice is harmless."""

    id: str
    host: str
    kind: str
    issued_at: float
    deadline: float
    vm: str = ""
    target: Shape = field(default_factory=Shape)
    reason: str = ""
    pool: str = ""
    pool_size: int = 0
    warm_state: str = ""
    assigned_name: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    demand_at: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """What an agent reports for a command (or EXPIRED, from the dispatcher)."""

    command_id: str
    status: str  # one of OUTCOME_STATUSES
    message: str = ""
    steps: tuple[str, ...] = ()
    vm: VmRecord | None = None
    finished_at: float = 0.0


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Something that happened, for watchers: ``payload`` is a MetricBatch, Command, Outcome,
    AgentStatus, ForecastAnomaly or UnmetDemand (of the planner)."""

    ts: float
    host: str
    payload: object


@dataclass(frozen=True)
class AgentStatus:
    connected: bool
    message: str = ""


@dataclass(frozen=True)
class ForecastRecord:
    """A stored quantile forecast of one VM metric made at ``origin``.

    ``values[h][q]`` is the forecast of step ``h`` (covering ``[origin + h*step_s, origin +
    (h+1)*step_s)``) at quantile level ``quantiles[q]``, in the metric's units.
    """

    host: str
    uuid: str
    metric: str  # cpu_cores or memory_mib
    origin: float
    step_s: float
    model: str
    cold_start: bool
    quantiles: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]
