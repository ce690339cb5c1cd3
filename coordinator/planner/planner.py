"""One planning run: per-VM rules, customer quotas, host shortages, the cost model.

:func:`plan` takes a frozen :class:`Snapshot` and returns a :class:`Plan`: the actions (each with
its reason, confidence and cost), the demand no host can meet, and what the planner remembers for
its next run. It imports neither libvirt, gRPC, SQL nor torch.

Order of the passes:
1. each VM alone (rules.decide for CPU and memory): pre-sculpt, downgrade, reclaim;
2. customer quotas: growth that would take a customer past its quota is throttled;
3. host capacity: when a host's targets exceed its capacity, VMs forecast to have excess give it
   up first (resource swapping), then growth is cut from the lowest SLA tier up; what is still
   missing is reported as unmet demand;
Before 2, the cost model prices each VM's rule decision and vetoes those whose cost exceeds their
expected benefit (a vetoed VM keeps its allocation, so the later passes count what will be).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

from presculpt.coordinator.planner.model import (
    Action,
    Allocation,
    CustomerQuota,
    HostSnapshot,
    Plan,
    PlannerConfig,
    Snapshot,
    TierPolicy,
    Unmet,
    VmMemory,
    VmSnapshot,
)
from presculpt.coordinator.planner.rules import MetricDecision, decide, shortfall_avoided, violations_avoided

STEP_HOURS = 300.0 / 3600.0
BUDGET_HOURS = 6.0  # a resize budget (a tier's per VM, a host's) holds this many hours' worth


@dataclass
class _Work:
    """One VM while the passes run (mutable on purpose, local to :func:`plan`)."""

    vm: VmSnapshot
    tier: TierPolicy
    cpu: MetricDecision | None
    memory: MetricDecision | None
    cpu_target: float
    memory_target: float
    notes: list[str]
    memory_floor: float = 0.0
    kind: str = ""
    vetoed: bool = False
    wanted: tuple[float, float] = (0.0, 0.0)  # a vetoed decision's targets
    held_by: str = ""  # what vetoed it (Action.held_by)
    benefit: float = 0.0
    action_cost: float = 0.0

    @property
    def cpu_need(self) -> float:
        return self.cpu.need if self.cpu else self.vm.current.cpu_cores

    @property
    def memory_need(self) -> float:
        return self.memory.need if self.memory else self.vm.current.memory_mib


def vcpus_for(cores: float, max_vcpus: int) -> int:
    """Whole vCPUs that carry ``cores`` (the quota caps them to the fraction)."""
    return max(1, min(max_vcpus, math.ceil(cores - 1e-6)))


def memory_floor(vm: VmSnapshot, config: PlannerConfig) -> float:
    """Never balloon below what the guest uses plus a margin (nor below the VM's floor); whole MiB."""
    floor = max(vm.floor_memory_mib, config.memory_floor_mib)
    if vm.memory_used_mib is not None:
        floor = max(floor, vm.memory_used_mib * (1 + config.memory_margin_fraction) + config.memory_margin_mib)
    return min(float(math.ceil(floor - 1e-9)), vm.max_memory_mib)


def decide_vm(vm: VmSnapshot, memory: VmMemory, step: int, config: PlannerConfig) -> _Work:
    tier = config.tier(vm.tier)
    cpu = mem = None
    if vm.opted_in and vm.cpu is not None:
        cpu = decide("CPU", "cores", vm.cpu, vm.current.cpu_cores, max(vm.floor_cores, config.cpu_floor_cores),
                     float(vm.max_vcpus), tier, memory, memory.cpu_below_steps, step, config.idle_fraction,
                     config.reclaim_idle_steps)
    if vm.opted_in and vm.memory is not None:
        hard = memory_floor(vm, config) if vm.memory_used_mib is not None else 0.0
        floor, why = max(vm.floor_memory_mib, config.memory_floor_mib), "the floor"
        if tier.memory_peak_factor is not None and vm.memory_peak_mib is not None:
            peak = min(vm.memory_peak_mib * tier.memory_peak_factor, vm.max_memory_mib)
            if peak > floor:
                floor, why = peak, f"{tier.memory_peak_factor:g}x its {config.memory_peak_hours:g}-hour peak"
        mem = decide("memory", "MiB", vm.memory, vm.current.memory_mib, floor, vm.max_memory_mib, tier.for_memory,
                     memory, memory.memory_below_steps, step, hard_floor=hard,
                     hard_floor_reason="what the guest uses plus the margin", floor_reason=why)
    work = _Work(vm, tier, cpu, mem, cpu.target if cpu else vm.current.cpu_cores,
                 mem.target if mem else vm.current.memory_mib, [], memory_floor(vm, config))
    kinds = [d.kind for d in (cpu, mem) if d is not None and d.kind]
    # A VM gets one action: growing either metric makes it a pre-sculpt.
    work.kind = "presculpt" if "presculpt" in kinds else (kinds[0] if kinds else "")
    return work


def cut_growth(works: list[_Work], attr: str, excess: float, note: str, reason: str) -> list[Unmet]:
    """Take ``excess`` off the growth of ``works`` (lowest tier first); what is cut is unmet demand."""
    unmet: list[Unmet] = []
    for w in sorted(works, key=lambda w: w.tier.priority):
        if excess <= 1e-9:
            break
        growth = _target(w, attr) - _current(w, attr)
        if growth <= 0:
            continue
        cut = min(growth, excess)
        _set_target(w, attr, _target(w, attr) - cut)
        excess -= cut
        w.notes.append(f"{note}: growth cut by {cut:.3g}")
        unmet.append(Unmet(w.vm.host, w.vm.uuid, cut if attr == "cpu" else 0.0, cut if attr == "memory" else 0.0,
                           f"{reason} ({w.vm.name}, tier {w.tier.name})"))
        if w.kind == "presculpt" and not _grows(w):
            w.kind = "throttle"
    return unmet


def apply_quotas(works: list[_Work], quotas: dict[str, CustomerQuota]) -> list[Unmet]:
    """Throttle growth that takes a customer past its quota (lowest tier first); the growth cut is
    reported as unmet demand."""
    unmet: list[Unmet] = []
    by_customer: dict[str, list[_Work]] = defaultdict(list)
    for w in works:
        if w.vm.customer in quotas:
            by_customer[w.vm.customer].append(w)
    for customer, group in by_customer.items():
        quota = quotas[customer]
        for attr, limit, unit in (("cpu", quota.max_cores, "cores"), ("memory", quota.max_memory_mib, "MiB")):
            if limit is None:
                continue
            excess = sum(_target(w, attr) for w in group) - limit
            unmet += cut_growth(group, attr, excess,
                                f"throttled: customer {customer!r} at its {attr} quota of {limit:g} {unit}",
                                f"customer {customer!r} is at its {attr} quota of {limit:g} {unit}")
    return unmet


def apply_host_capacity(works: list[_Work], host: HostSnapshot) -> list[Unmet]:
    """Fit a host's targets into its capacity: swap excess first, then cut growth by tier."""
    unmet: list[Unmet] = []
    for attr, capacity, unit in (("cpu", host.cpu_capacity, "cores"), ("memory", host.memory_capacity_mib, "MiB")):
        deficit = sum(_target(w, attr) for w in works) - capacity
        if deficit <= 1e-9:
            continue
        # 1. Resource swapping: VMs forecast to need less than they hold give the excess up now.
        for w in sorted(works, key=lambda w: w.tier.priority):
            if deficit <= 1e-9:
                break
            floor = _floor(w, attr)
            excess = _target(w, attr) - max(_need(w, attr), floor)
            if excess <= 0 or _grows_attr(w, attr):
                continue
            give = min(excess, deficit)
            _set_target(w, attr, _target(w, attr) - give)
            deficit -= give
            w.notes.append(f"host {host.id} short of {attr}: gives {give:.3g} {unit} it is forecast not to need")
            if w.vetoed or not w.kind:  # a swap is the host's need, not the VM's: never vetoed
                w.vetoed, w.kind = False, "swap"
        # 2. Serve higher tiers first: cut growth from the lowest tier up.
        unmet += cut_growth(works, attr, deficit, f"host {host.id} short of {attr} (higher tiers served first)",
                            f"host {host.id} has no {attr} left for the forecast demand")
    return unmet


def veto(w: _Work, config: PlannerConfig) -> None:
    """Price a VM's rule decision with the cost model; a vetoed decision keeps the VM as it is.

    The benefit of a change is the expected shortfall it avoids over the forecast horizon (priced
    at the tier's penalty) plus the allocation it frees over ``cost.benefit_hours``; its cost is the
    resize cost, the allocation it adds over the horizon and the shortfall it risks."""
    vm, cost = w.vm, config.cost
    cur = vm.current
    if not w.kind:
        return
    if (abs(w.cpu_target - cur.cpu_cores) <= 0.01 * cur.cpu_cores
            and abs(w.memory_target - cur.memory_mib) <= max(1.0, 0.01 * cur.memory_mib)):
        w.kind, w.cpu_target, w.memory_target = "", cur.cpu_cores, cur.memory_mib  # not worth a resize
        return
    # A grow is reconsidered once its forecast horizon has passed; a shrink lasts until demand returns.
    horizon = max((f.horizon for f in (vm.cpu, vm.memory) if f is not None), default=12)
    hours = horizon * config.step_s / 3600.0 if w.kind == "presculpt" else cost.benefit_hours
    delta = (w.cpu_target - cur.cpu_cores) * cost.price_vcpu_hour + \
        (w.memory_target - cur.memory_mib) / 1024 * cost.price_gib_hour
    step_h = config.step_s / 3600.0
    # The violations a change avoids (negative: adds), priced in money. With cost-optimal CPU sizing
    # the tier prices CPU as its sizing did: each violated step it can avoid (demand up to the
    # VM's maximum) at violation_cost vCPU-steps. Otherwise, and for memory, the expected
    # shortfall is priced at the tier's penalty.
    risk = 0.0
    if vm.cpu is not None:
        if w.tier.violation_cost is not None:
            risk += (violations_avoided(vm.cpu, cur.cpu_cores, w.cpu_target, float(vm.max_vcpus))
                     * w.tier.violation_cost * step_h * cost.price_vcpu_hour)
        else:
            risk += (shortfall_avoided(vm.cpu, cur.cpu_cores, w.cpu_target) * step_h * cost.price_vcpu_hour
                     * w.tier.penalty)
    if vm.memory is not None:
        risk += (shortfall_avoided(vm.memory, cur.memory_mib, w.memory_target) / 1024 * step_h
                 * cost.price_gib_hour * w.tier.penalty)
    w.benefit = max(risk, 0.0) - min(delta, 0.0) * hours
    w.action_cost = cost.resize_cost + max(delta, 0.0) * hours - min(risk, 0.0)
    if w.action_cost - w.benefit > cost.veto_threshold and not _floor_raise(w):  # safety floors: never vetoed
        _hold_back(w, f"vetoed by the cost model: costs {w.action_cost:.4f}, expected benefit {w.benefit:.4f}", "cost")


def action_for(w: _Work, config: PlannerConfig) -> Action | None:
    """The action for a VM whose target differs from what it has (or a vetoed one, for the record)."""
    vm, cur = w.vm, w.vm.current
    target = _allocation(vm, *(w.wanted if w.vetoed else (w.cpu_target, w.memory_target)))
    if not _differs(target, cur):
        return None
    delta = (target.cpu_cores - cur.cpu_cores) * config.cost.price_vcpu_hour + \
        (target.memory_mib - cur.memory_mib) / 1024 * config.cost.price_gib_hour
    reasons = [d.reason for d in (w.cpu, w.memory) if d is not None and d.kind] + w.notes
    confidence = max((d.confidence for d in (w.cpu, w.memory) if d is not None), default=0.0)
    return Action(vm.uuid, vm.host, w.kind or "presculpt", target, cur, "; ".join(reasons), confidence,
                  round(delta, 6), round(w.benefit, 6), w.vetoed, w.held_by if w.vetoed else "")


def resize_tokens(tier: TierPolicy, memory: VmMemory, config: PlannerConfig) -> float | None:
    """The resizes ``tier``'s budget allows the VM now: what it had, refilled for one planning step,
    at most :data:`BUDGET_HOURS` hours' worth (None: no budget)."""
    if tier.max_resizes_per_day is None:
        return None
    return _refill(memory.resize_tokens, tier.max_resizes_per_day, config.step_s)


def _refill(had: float | None, per_day: float, step_s: float) -> float:
    """A resize budget after one more planning step: what it had (None: a full bucket) plus the
    step's share of ``per_day``, at most :data:`BUDGET_HOURS` hours' worth (at least one resize)."""
    bucket = max(1.0, per_day * BUDGET_HOURS / 24)
    return min(bucket, (bucket if had is None else had) + per_day * step_s / 86400.0)


def hold_to_budget(w: _Work, tokens: float | None) -> None:
    """Hold back a resize the VM's budget has no token for (a raise to a safety floor goes anyway,
    its token is owed)."""
    if tokens is None or tokens >= 1 or w.vetoed or _floor_raise(w) or not _changes(w):
        return
    _hold_back(w, f"held back: the VM has spent its resize budget ({w.tier.max_resizes_per_day:g} a day)", "vm budget")


def host_resize_tokens(works: list[_Work], snapshot: Snapshot, config: PlannerConfig) -> dict[str, float]:
    """The resizes each host's budget allows now: what it had, refilled for one planning step, at
    most :data:`BUDGET_HOURS` hours' worth for the VMs it holds (empty: no budget)."""
    rate = config.host_resizes_per_vm_day
    if rate is None:
        return {}
    return {host: _refill(snapshot.resize_tokens.get(host), rate * vms, config.step_s)
            for host, vms in Counter(w.vm.host for w in works).items()}


def hold_to_host_budgets(works: list[_Work], tokens: dict[str, float], config: PlannerConfig) -> None:
    """On each host, hold back the resizes its budget has no token for, those worth least (expected
    benefit less cost) first; raises to a safety floor go anyway, their tokens owed."""
    by_host: dict[str, list[_Work]] = defaultdict(list)
    for w in works:
        if w.vm.host in tokens and not w.vetoed and _changes(w):
            by_host[w.vm.host].append(w)
    for host, wanting in by_host.items():
        left = tokens[host] - sum(1 for w in wanting if _floor_raise(w))
        for w in sorted((w for w in wanting if not _floor_raise(w)), key=lambda w: w.action_cost - w.benefit):
            if left >= 1:
                left -= 1
            else:
                _hold_back(w, f"held back: host {host} has spent its resize budget "
                              f"({config.host_resizes_per_vm_day:g} per VM-day); resizes worth more went first",
                           "host budget")


def _hold_back(w: _Work, note: str, by: str) -> None:
    """Keep the VM as it is, recording what it wanted (reported as a vetoed action), why, and what
    held it back (``by``: Action.held_by)."""
    w.vetoed, w.held_by = True, by
    w.wanted = (w.cpu_target, w.memory_target)
    w.cpu_target, w.memory_target = w.vm.current.cpu_cores, w.vm.current.memory_mib
    w.notes.append(note)


def plan(snapshot: Snapshot, config: PlannerConfig) -> Plan:
    """Decide every VM's allocation for the next steps (see the module docstring)."""
    works = [decide_vm(vm, snapshot.memory.get(vm.uuid, VmMemory()), snapshot.step, config) for vm in snapshot.vms]
    tokens = {w.vm.uuid: resize_tokens(w.tier, snapshot.memory.get(w.vm.uuid, VmMemory()), config) for w in works}
    for w in works:
        veto(w, config)
        hold_to_budget(w, tokens[w.vm.uuid])
    host_tokens = host_resize_tokens(works, snapshot, config)
    hold_to_host_budgets(works, host_tokens, config)
    unmet = apply_quotas(works, snapshot.quotas)
    by_host: dict[str, list[_Work]] = defaultdict(list)
    for w in works:
        by_host[w.vm.host].append(w)
    for host_id, group in by_host.items():
        if host_id in snapshot.hosts:
            unmet += apply_host_capacity(group, snapshot.hosts[host_id])
    actions = [a for a in (action_for(w, config) for w in works) if a is not None]
    acted = {a.vm for a in actions if not a.vetoed}
    memory: dict[str, VmMemory] = {}
    costs: dict[str, float] = {}
    customer_costs: dict[str, float] = defaultdict(float)
    final = {a.vm: a.target for a in actions if not a.vetoed}
    for w in works:
        old = snapshot.memory.get(w.vm.uuid, VmMemory())
        memory[w.vm.uuid] = VmMemory(
            cpu_below_steps=w.cpu.below_steps if w.cpu else 0,
            memory_below_steps=w.memory.below_steps if w.memory else 0,
            idle_steps=w.cpu.idle_steps if w.cpu else 0,
            last_resize_step=snapshot.step if w.vm.uuid in acted else old.last_resize_step,
            resize_tokens=None if tokens[w.vm.uuid] is None else tokens[w.vm.uuid] - (w.vm.uuid in acted))
        alloc = final.get(w.vm.uuid, w.vm.current)
        costs[w.vm.uuid] = alloc.cpu_cores * config.cost.price_vcpu_hour + alloc.memory_mib / 1024 * config.cost.price_gib_hour
        customer_costs[w.vm.customer or "(none)"] += costs[w.vm.uuid]
    sent = Counter(a.host for a in actions if not a.vetoed)  # swaps and safety raises too
    left = {host: had - sent[host] for host, had in host_tokens.items()}
    return Plan(tuple(actions), tuple(unmet), memory, costs, dict(customer_costs), left)


# -- helpers over the two metrics ---------------------------------------------------------------
def _target(w: _Work, attr: str) -> float:
    return w.cpu_target if attr == "cpu" else w.memory_target


def _set_target(w: _Work, attr: str, value: float) -> None:
    if attr == "cpu":
        w.cpu_target = value
    else:
        w.memory_target = value


def _current(w: _Work, attr: str) -> float:
    return w.vm.current.cpu_cores if attr == "cpu" else w.vm.current.memory_mib


def _need(w: _Work, attr: str) -> float:
    return w.cpu_need if attr == "cpu" else w.memory_need


def _floor(w: _Work, attr: str) -> float:
    return w.vm.floor_cores if attr == "cpu" else w.memory_floor


def _grows_attr(w: _Work, attr: str) -> bool:
    return _target(w, attr) > _current(w, attr) * 1.001


def _grows(w: _Work) -> bool:
    return _grows_attr(w, "cpu") or _grows_attr(w, "memory")


def _allocation(vm: VmSnapshot, cpu: float, memory: float) -> Allocation:
    """Targets as an action carries them: within the VM's maximum, quantised down (a thousandth
    of a core, whole MiB) so that what the passes fitted stays fitted."""
    cores = math.floor(min(max(cpu, 0.0), float(vm.max_vcpus)) * 1000 + 1e-6) / 1000
    mem = float(math.floor(min(memory, vm.max_memory_mib) + 1e-6))
    return Allocation(vcpus_for(cores, vm.max_vcpus), cores, mem)


def _differs(target: Allocation, current: Allocation) -> bool:
    return abs(target.cpu_cores - current.cpu_cores) >= 0.001 or abs(target.memory_mib - current.memory_mib) >= 1


def _changes(w: _Work) -> bool:
    """Its targets would make an action (they differ from what it has once quantised)."""
    return _differs(_allocation(w.vm, w.cpu_target, w.memory_target), w.vm.current)


def _floor_raise(w: _Work) -> bool:
    return any(d is not None and d.safety for d in (w.cpu, w.memory))


__all__ = ["plan", "decide_vm", "vcpus_for", "memory_floor"]
