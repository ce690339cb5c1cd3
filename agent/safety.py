"""What the agent does on its own to keep the host safe while the coordinator is unreachable.

Pure code. Without the coordinator nobody re-plans the guests it shrank ahead of forecast demand, so
a guest whose demand rises could run out of memory. The rule is deliberately small: a running guest
whose memory (balloon target) is below its safe floor (memory in use plus the guard's margin, from
fresh balloon statistics) is grown back to that floor, capped at its maximum. Growth still goes
through the guard, which refuses anything past the host's capacity, so this never overcommits the
host. The agent never shrinks a guest on its own, and never starts a command past its deadline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from presculpt.agent.guard import GuardRefused, SafetyGuard
from presculpt.agent.model import DomainInfo, TargetShape


@dataclass(frozen=True)
class SafetyAction:
    domain: str
    target: TargetShape
    reason: str


def safety_actions(domains: Iterable[DomainInfo], guard: SafetyGuard, now: float) -> list[SafetyAction]:
    """Grow every running guest that is below its safe memory floor back to the floor."""
    actions = []
    for d in domains:
        if d.state != "running":
            continue
        try:
            floor = guard.memory_floor_mib(d, now)
        except GuardRefused:
            continue  # no fresh statistics: nothing proves the guest is short
        target = min(floor, d.max_memory_mib)
        if d.memory_mib < target:
            used = d.balloon.used_mib if d.balloon is not None else None
            actions.append(SafetyAction(
                d.name, TargetShape(memory_mib=target),
                f"{d.name} has {d.memory_mib} MiB but uses {used:.0f} MiB; growing to its safe floor "
                f"of {target} MiB",
            ))
    return actions
