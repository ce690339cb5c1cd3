"""Applying the coordinator's commands, each through the safety guard, and describing the outcome.

Every command names a target state, so applying it twice is harmless; on top of that the applier
remembers recent outcomes by command id and answers a repeated command (the coordinator resends
until it hears back) with its first outcome, without touching the hypervisor again. A command whose
deadline has passed is not started (EXPIRED): a late resize could be wrong by the time it lands.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from presculpt.agent.guard import GuardRefused
from presculpt.agent.hypervisor.base import DomainNotFound, HypervisorError, InvalidOperation
from presculpt.agent.model import DomainInfo, TargetShape
from presculpt.agent.resize import ResizeFailed, Resizer
from presculpt.agent.shadow import ShadowPool, ShadowPoolError
from presculpt.v1 import model_pb2

log = logging.getLogger(__name__)

Status = model_pb2.CommandOutcome.Status
RECENT_OUTCOMES = 500


def vm_info_pb(d: DomainInfo) -> model_pb2.VmInfo:
    msg = model_pb2.VmInfo(name=d.name, uuid=d.uuid, state=d.state, vcpus=d.vcpus, max_vcpus=d.max_vcpus,
                           memory_mib=d.memory_mib, max_memory_mib=d.max_memory_mib, metadata=d.metadata)
    if d.cpu_quota_cores is not None:
        msg.cpu_quota_cores = d.cpu_quota_cores
    return msg


def target_from_pb(shape: model_pb2.Shape) -> TargetShape:
    return TargetShape(
        vcpus=shape.vcpus if shape.HasField("vcpus") else None,
        cpu_cores=shape.cpu_cores if shape.HasField("cpu_cores") else None,
        memory_mib=shape.memory_mib if shape.HasField("memory_mib") else None,
    )


class CommandApplier:
    """Turns a ``presculpt.v1.Command`` into guarded hypervisor calls and a ``CommandOutcome``.

    ``clock`` is the coordinator's time (deadlines, ``finished_at``); the guard judges the guests'
    balloon statistics against the host's own time, the resizer's clock.
    """

    def __init__(
        self,
        resizer: Resizer,
        shadow_pool: Callable[[str], ShadowPool] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.resizer = resizer
        self.shadow_pool = shadow_pool
        self.clock = clock
        self._recent: OrderedDict[str, model_pb2.CommandOutcome] = OrderedDict()

    def apply(self, command: model_pb2.Command) -> model_pb2.CommandOutcome:
        if command.id in self._recent:
            log.info("command %s seen before: answering with its first outcome", command.id)
            return self._recent[command.id]
        outcome = self._apply(command)
        outcome.command_id = command.id
        outcome.finished_at = self.clock()
        self._recent[command.id] = outcome
        while len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        log.info("command %s (%s): %s %s", command.id, command.WhichOneof("action"),
                 Status.Name(outcome.status), outcome.message)
        return outcome

    def _apply(self, command: model_pb2.Command) -> model_pb2.CommandOutcome:
        action = command.WhichOneof("action")
        if command.deadline and self.clock() > command.deadline:
            return model_pb2.CommandOutcome(status=Status.EXPIRED,
                                            message="the deadline passed before the agent could start it")
        try:
            if action in ("resize", "presculpt"):
                body = getattr(command, action)
                return self._resize(body.vm, target_from_pb(body.target))
            if action == "downgrade":
                return self._downgrade(command.downgrade.vm, target_from_pb(command.downgrade.target))
            if action in ("shadow_fill", "shadow_activate", "shadow_drain"):
                return self._shadow(action, getattr(command, action))
        except GuardRefused as err:
            return model_pb2.CommandOutcome(status=Status.REFUSED, message=str(err))
        except ResizeFailed as err:
            return model_pb2.CommandOutcome(status=Status.FAILED, message=str(err), steps=err.steps_done)
        except (DomainNotFound, InvalidOperation) as err:
            return model_pb2.CommandOutcome(status=Status.REFUSED, message=str(err))
        except (HypervisorError, ShadowPoolError) as err:
            return model_pb2.CommandOutcome(status=Status.FAILED, message=str(err))
        return model_pb2.CommandOutcome(status=Status.REFUSED, message=f"unknown command action {action!r}")

    def _resize(self, vm: str, target: TargetShape) -> model_pb2.CommandOutcome:
        result = self.resizer.apply(vm, target)
        after = self.resizer.hypervisor.domain_info(vm)
        if not result.changed:
            return model_pb2.CommandOutcome(status=Status.UNCHANGED, message="already at the target shape",
                                            vm=vm_info_pb(after))
        return model_pb2.CommandOutcome(status=Status.APPLIED, message="; ".join(result.steps),
                                        steps=result.steps, vm=vm_info_pb(after))

    def _downgrade(self, vm: str, target: TargetShape) -> model_pb2.CommandOutcome:
        """One guarded step toward a smaller target: memory shrinks by at most the guard's per-step
        share, and never below the guest's safe floor; the coordinator repeats it to continue."""
        domain = self.resizer.hypervisor.domain_info(vm)
        step = target
        if target.memory_mib is not None and target.memory_mib < domain.memory_mib:
            cfg = self.resizer.guard.config
            least = math.ceil(domain.memory_mib * (1 - cfg.max_memory_shrink_fraction))
            floor = self.resizer.guard.memory_floor_mib(domain, self.resizer.clock())  # the host's time
            memory = max(target.memory_mib, least, floor)
            step = TargetShape(vcpus=target.vcpus, cpu_cores=target.cpu_cores,
                               memory_mib=min(memory, domain.memory_mib))
        outcome = self._resize(vm, step)
        if step.memory_mib != target.memory_mib:
            outcome.message = (f"{outcome.message}; stepped to {step.memory_mib} MiB of the target "
                               f"{target.memory_mib} MiB (repeat to continue)")
        return outcome

    def _shadow(self, action: str, body) -> model_pb2.CommandOutcome:
        if self.shadow_pool is None:
            return model_pb2.CommandOutcome(status=Status.REFUSED, message="this agent has no shadow pool")
        pool = self.shadow_pool(body.pool or "default")
        if action == "shadow_fill":
            created = pool.fill(body.size, body.warm_state or "paused")
            status = Status.APPLIED if created else Status.UNCHANGED
            state = body.warm_state or "paused"
            return model_pb2.CommandOutcome(status=status, steps=[f"created {s.name}" for s in created],
                                            message=f"pool {pool.pool} holds {body.size} {state} shadow(s)")
        if action == "shadow_activate":
            active = [d for d in pool.hypervisor.list_domains()
                      if d.metadata.get("role") == "active" and d.metadata.get("assigned_name") == body.assigned_name]
            if active:
                return model_pb2.CommandOutcome(status=Status.UNCHANGED, vm=vm_info_pb(active[0]),
                                                message=f"{active[0].name} is already active as {body.assigned_name}")
            activation = pool.activate(body.assigned_name, target_from_pb(body.shape), dict(body.metadata))
            return model_pb2.CommandOutcome(
                status=Status.APPLIED, vm=vm_info_pb(pool.hypervisor.domain_info(activation.shadow)),
                message=f"activated {activation.shadow} as {body.assigned_name} in {activation.activate_seconds:.2f} s")
        removed = pool.drain()
        return model_pb2.CommandOutcome(status=Status.APPLIED if removed else Status.UNCHANGED,
                                        steps=[f"removed {name}" for name in removed],
                                        message=f"pool {pool.pool} drained")
