"""Live resize of one guest: check with the safety guard, then apply in a safe order.

A request is idempotent: it names a target shape, and a guest already in that shape is left alone.
A refusal by the guard changes nothing; a hypervisor failure part-way is reported with what was done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from presculpt.agent.guard import ResolvedShape, SafetyGuard
from presculpt.agent.hypervisor.base import Hypervisor, HypervisorError
from presculpt.agent.model import DomainInfo, TargetShape

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResizeApplied:
    """The outcome of a resize: the shapes before and after and the steps taken."""

    domain: str
    before: ResolvedShape
    after: ResolvedShape
    steps: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return bool(self.steps)


class ResizeFailed(Exception):
    """The hypervisor failed part-way; ``steps_done`` lists what had already been applied."""

    def __init__(self, message: str, steps_done: tuple[str, ...]):
        super().__init__(message)
        self.steps_done = steps_done


class Resizer:
    """Applies :class:`TargetShape` requests through the hypervisor, guarded."""

    def __init__(
        self, hypervisor: Hypervisor, guard: SafetyGuard, clock: Callable[[], float] = time.time
    ):
        self.hypervisor = hypervisor
        self.guard = guard
        self.clock = clock

    def plan(self, name: str, target: TargetShape) -> tuple[DomainInfo, ResolvedShape]:
        """Read fresh state and ask the guard; raises GuardRefused or HypervisorError."""
        domain = self.hypervisor.domain_info(name)
        host = self.hypervisor.host_info()
        others = self.hypervisor.list_domains()
        shape = self.guard.check(domain, target, host, others, now=self.clock())
        return domain, shape

    def apply(self, name: str, target: TargetShape) -> ResizeApplied:
        domain, shape = self.plan(name, target)
        before = ResolvedShape.of(domain)
        steps: list[str] = []
        try:
            # vCPUs first, then the cap: the per-vCPU quota is computed from the vCPUs online.
            if shape.vcpus != before.vcpus:
                self.hypervisor.set_vcpus(name, shape.vcpus)
                steps.append(f"vcpus {before.vcpus}->{shape.vcpus}")
            if shape.cpu_quota_cores != before.cpu_quota_cores or (
                shape.cpu_quota_cores is not None and shape.vcpus != before.vcpus
            ):
                self.hypervisor.set_cpu_quota(name, shape.cpu_quota_cores)
                steps.append(f"cpu quota {_cores(before.cpu_quota_cores)}->{_cores(shape.cpu_quota_cores)}")
            if shape.memory_mib != before.memory_mib:
                self.hypervisor.set_memory(name, shape.memory_mib)
                steps.append(f"memory {before.memory_mib}->{shape.memory_mib} MiB")
        except HypervisorError as err:
            done = ", ".join(steps) or "nothing"
            raise ResizeFailed(f"{err} (already applied: {done})", tuple(steps)) from None
        if steps:
            log.info("resized %s: %s", name, "; ".join(steps))
        after = ResolvedShape.of(self.hypervisor.domain_info(name))
        return ResizeApplied(domain=name, before=before, after=after, steps=tuple(steps))


def _cores(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"
