"""The agent's configuration: frozen, typed, with defaults in code.

``config/agent.sample.toml`` explains every key; :func:`load_agent_config` reads such a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from presculpt import config
from presculpt.tls import TlsConfig

WarmState = Literal["paused", "saved", "defined"]
WARM_STATES: tuple[WarmState, ...] = ("paused", "saved", "defined")


@dataclass(frozen=True)
class GuardConfig:
    """Bounds every resize must respect. Memory figures in MiB, CPU in cores."""

    min_vcpus: int = 1
    min_cpu_cores: float = 0.1
    min_memory_mib: int = 256
    # Never balloon below what the guest uses plus max(margin_mib, margin_fraction * used).
    memory_margin_mib: int = 128
    memory_margin_fraction: float = 0.15
    # A single command may shrink memory by at most this share of the current size.
    max_memory_shrink_fraction: float = 0.5
    # Balloon statistics older than this (guest clock vs host clock) cannot justify a shrink.
    balloon_stats_max_age_s: float = 60.0
    # Host capacity: sum of vCPUs <= cpus * cpu_overcommit; sum of memory <= (memory -
    # host_reserved_memory_mib) * memory_overcommit.
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    host_reserved_memory_mib: int = 1024

    def __post_init__(self) -> None:
        if self.min_vcpus < 1:
            raise ValueError("guard.min_vcpus must be at least 1")
        if not 0 < self.min_cpu_cores <= self.min_vcpus:
            raise ValueError("guard.min_cpu_cores must be > 0 and <= guard.min_vcpus")
        if not 0 < self.max_memory_shrink_fraction <= 1:
            raise ValueError("guard.max_memory_shrink_fraction must be in (0, 1]")
        if self.memory_margin_mib < 0 or self.memory_margin_fraction < 0:
            raise ValueError("guard memory margins must not be negative")
        if self.cpu_overcommit <= 0 or self.memory_overcommit <= 0:
            raise ValueError("guard overcommit ratios must be positive")


@dataclass(frozen=True)
class ShadowConfig:
    """The pool of warm shadow VMs kept on this host."""

    template: str = ""  # domain XML file; "{name}" in it is replaced by each shadow's name
    pool: str = "default"
    size: int = 0  # how many shadows `fill` keeps ready
    warm_state: WarmState = "paused"
    ready_timeout_s: float = 180.0  # how long a shadow may take to boot before it is warm

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("shadow.size must not be negative")
        if self.warm_state not in WARM_STATES:
            raise ValueError(f"shadow.warm_state must be one of {', '.join(WARM_STATES)}")


@dataclass(frozen=True)
class StreamConfig:
    """The stream to the coordinator: identity, spool of unacknowledged batches, reconnection."""

    coordinator: str = ""  # HOST:PORT of the coordinator (--coordinator overrides it)
    agent_id: str = ""  # stable identity of this host; empty: the hostname
    spool_path: str = "/var/lib/presculpt/agent/spool.db"  # the unit's StateDirectory
    spool_max_batches: int = 17_280  # one day at 5 s; beyond it the oldest unacknowledged go
    max_inflight_batches: int = 32  # batches sent but not yet acknowledged
    reconnect_initial_s: float = 0.5  # first retry delay; doubles up to reconnect_max_s
    reconnect_max_s: float = 30.0
    reconnect_jitter: float = 0.5  # each delay is drawn from [delay x (1 - jitter), delay]
    # Once the coordinator has been unreachable this long, the agent keeps guests safe on its own.
    local_safety_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.spool_max_batches < 1 or self.max_inflight_batches < 1:
            raise ValueError("stream.spool_max_batches and max_inflight_batches must be at least 1")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ValueError("stream.reconnect_initial_s must be positive and <= reconnect_max_s")
        if not 0 <= self.reconnect_jitter <= 1:
            raise ValueError("stream.reconnect_jitter must be in [0, 1]")
        if self.local_safety_after_s < 0:
            raise ValueError("stream.local_safety_after_s must not be negative")


@dataclass(frozen=True)
class AgentConfig:
    uri: str = "qemu:///system"
    interval_s: float = 5.0  # metrics sampling interval
    inventory_refresh_s: float = 60.0  # full inventory re-read (quota, limits) interval
    metrics_listen: str = ""  # Prometheus endpoint HOST:PORT of `presculpt-agent run`; empty: none
    guard: GuardConfig = field(default_factory=GuardConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)  # mutual TLS to the coordinator (or insecure)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")


def load_agent_config(path: str | Path | None) -> AgentConfig:
    return config.load(AgentConfig, path)
