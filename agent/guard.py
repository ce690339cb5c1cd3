"""The safety guard: the last check between a resize request and the hypervisor.

Pure code: it sees frozen snapshots (the domain, the host, the other domains) and either returns the
fully resolved shape to apply or raises :class:`GuardRefused` with the reason. Its rules follow oVirt
MoM's: never balloon a guest below what it uses plus a free margin, never shrink memory by too much in
one step, and never grow past the domain's maximum or the host's capacity at its overcommit ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from presculpt.agent.config import GuardConfig
from presculpt.agent.model import DomainInfo, HostInfo, TargetShape

_EPS = 1e-6
_NO_UNPLUG = (
    "{name} runs under software emulation (TCG), where removing vCPUs crashes QEMU; "
    "lower --cpu-cores instead, which caps the vCPUs through the CPU quota"
)


class GuardRefused(Exception):
    """The guard refused a resize; nothing was changed. The message says why, in one line."""


@dataclass(frozen=True)
class ResolvedShape:
    """A complete shape: vCPUs online, total CPU cap in cores (None: uncapped), memory in MiB."""

    vcpus: int
    cpu_quota_cores: float | None
    memory_mib: int

    @classmethod
    def of(cls, domain: DomainInfo) -> "ResolvedShape":
        return cls(domain.vcpus, domain.cpu_quota_cores, domain.memory_mib)

    @property
    def cpu_cores(self) -> float:
        return self.cpu_quota_cores if self.cpu_quota_cores is not None else float(self.vcpus)


def resolve(current: DomainInfo, target: TargetShape) -> ResolvedShape:
    """Turn a partial target into a complete shape, keeping what the target leaves out.

    ``cpu_cores`` alone picks ceil(cores) vCPUs capped at ``cores``; ``vcpus`` alone gives that
    many uncapped vCPUs; both together cap ``vcpus`` vCPUs at ``cpu_cores`` in total.
    """
    vcpus, quota = current.vcpus, current.cpu_quota_cores
    if target.cpu_cores is not None:
        if not math.isfinite(target.cpu_cores) or target.cpu_cores <= 0:
            raise GuardRefused(f"CPU cores must be a positive number, got {target.cpu_cores:g}")
        vcpus = target.vcpus if target.vcpus is not None else math.ceil(target.cpu_cores - _EPS)
        if target.cpu_cores > vcpus + _EPS:
            raise GuardRefused(
                f"{target.cpu_cores:g} CPU cores do not fit in {vcpus} vCPUs; ask for at least "
                f"{math.ceil(target.cpu_cores - _EPS)} vCPUs"
            )
        quota = None if abs(target.cpu_cores - vcpus) < _EPS else round(target.cpu_cores, 4)
        if vcpus < current.vcpus and not current.can_unplug_vcpus:
            if target.vcpus is not None:
                raise GuardRefused(_NO_UNPLUG.format(name=current.name))
            vcpus = current.vcpus  # keep the vCPUs, cap them through the quota
            quota = None if abs(target.cpu_cores - vcpus) < _EPS else round(target.cpu_cores, 4)
    elif target.vcpus is not None:
        if target.vcpus < current.vcpus and not current.can_unplug_vcpus:
            raise GuardRefused(_NO_UNPLUG.format(name=current.name))
        vcpus, quota = target.vcpus, None
    memory = current.memory_mib if target.memory_mib is None else target.memory_mib
    return ResolvedShape(vcpus=int(vcpus), cpu_quota_cores=quota, memory_mib=int(memory))


class SafetyGuard:
    """Checks resizes against the domain's limits, its memory in use and the host's capacity."""

    def __init__(self, config: GuardConfig):
        self.config = config

    def check(
        self,
        domain: DomainInfo,
        target: TargetShape,
        host: HostInfo,
        others: Iterable[DomainInfo],
        now: float,
    ) -> ResolvedShape:
        """Return the shape to apply, or raise :class:`GuardRefused`.

        ``others`` are the host's other domains; ``now`` is the host's Unix time, used to judge
        whether the guest's balloon statistics are fresh enough to justify shrinking memory.
        """
        if not domain.active:
            raise GuardRefused(f"{domain.name} is {domain.state}; only a running guest can be resized")
        if target.is_empty():
            raise GuardRefused("nothing to change: give vCPUs, CPU cores or memory")
        shape = resolve(domain, target)
        self._check_cpu(domain, shape)
        self._check_memory(domain, shape, now)
        self._check_host(domain, shape, host, list(others))
        return shape

    def host_limits(self, host: HostInfo) -> tuple[float, float]:
        """What the active guests of ``host`` may hold together: (vCPUs, memory MiB)."""
        cfg = self.config
        return host.cpus * cfg.cpu_overcommit, (host.memory_mib - cfg.host_reserved_memory_mib) * cfg.memory_overcommit

    def _check_cpu(self, domain: DomainInfo, shape: ResolvedShape) -> None:
        cfg = self.config
        if shape.vcpus > domain.max_vcpus:
            raise GuardRefused(
                f"{shape.vcpus} vCPUs exceeds the maximum of {domain.max_vcpus} for {domain.name}"
            )
        if shape.vcpus < cfg.min_vcpus:
            raise GuardRefused(f"{shape.vcpus} vCPUs is below the floor of {cfg.min_vcpus}")
        if shape.cpu_cores < cfg.min_cpu_cores - _EPS:
            raise GuardRefused(
                f"{shape.cpu_cores:g} CPU cores is below the floor of {cfg.min_cpu_cores:g}"
            )

    def _check_memory(self, domain: DomainInfo, shape: ResolvedShape, now: float) -> None:
        cfg = self.config
        target, current = shape.memory_mib, domain.memory_mib
        if target > domain.max_memory_mib:
            raise GuardRefused(
                f"{target} MiB exceeds the maximum of {domain.max_memory_mib} MiB for {domain.name}"
            )
        if target < cfg.min_memory_mib:
            raise GuardRefused(f"{target} MiB is below the floor of {cfg.min_memory_mib} MiB")
        if target >= current:
            return
        shrink = (current - target) / current
        if shrink > cfg.max_memory_shrink_fraction + _EPS:
            raise GuardRefused(
                f"shrinking {domain.name} from {current} to {target} MiB ({shrink:.0%}) exceeds the "
                f"limit of {cfg.max_memory_shrink_fraction:.0%} per step; shrink in smaller steps"
            )
        floor = self.memory_floor_mib(domain, now)
        if target < floor:
            raise GuardRefused(
                f"{target} MiB is below {domain.name}'s safe floor of {floor} MiB "
                f"(memory in use plus margin)"
            )

    def memory_floor_mib(self, domain: DomainInfo, now: float) -> int:
        """The least memory the guest may have: used + margin, never below the configured floor.

        Raises :class:`GuardRefused` when there are no fresh balloon statistics to prove it.
        """
        cfg = self.config
        balloon = domain.balloon
        used = balloon.used_mib if balloon is not None and balloon.reported else None
        if used is None:
            raise GuardRefused(
                f"{domain.name} reports no balloon statistics (is the virtio_balloon driver "
                f"loaded?); cannot prove a shrink is safe"
            )
        assert balloon is not None and balloon.last_update is not None
        age = now - balloon.last_update
        if age > cfg.balloon_stats_max_age_s:
            raise GuardRefused(
                f"{domain.name}'s balloon statistics are {age:.0f} s old (limit "
                f"{cfg.balloon_stats_max_age_s:g} s); cannot prove a shrink is safe"
            )
        margin = max(cfg.memory_margin_mib, used * cfg.memory_margin_fraction)
        return max(cfg.min_memory_mib, int(math.ceil(used + margin)))

    def _check_host(
        self, domain: DomainInfo, shape: ResolvedShape, host: HostInfo, others: list[DomainInfo]
    ) -> None:
        cfg = self.config
        running = [d for d in others if d.active and d.uuid != domain.uuid]
        vcpu_cap, memory_cap = self.host_limits(host)
        if shape.vcpus > domain.vcpus:
            total = shape.vcpus + sum(d.vcpus for d in running)
            if total > vcpu_cap + _EPS:
                raise GuardRefused(
                    f"{total} vCPUs on {host.hostname} would exceed its capacity of {vcpu_cap:g} "
                    f"({host.cpus} CPUs x overcommit {cfg.cpu_overcommit:g})"
                )
        if shape.memory_mib > domain.memory_mib:
            total = shape.memory_mib + sum(d.memory_mib for d in running)
            if total > memory_cap + _EPS:
                raise GuardRefused(
                    f"{total} MiB of guest memory on {host.hostname} would exceed its capacity of "
                    f"{memory_cap:.0f} MiB"
                )
