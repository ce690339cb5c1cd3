"""plan(): the per-VM rules (pre-sculpt, graceful downgrade, reclaim, memory floor), customer quotas,
host shortages (swapping, tier order, unmet demand) and the cost model, on constant forecasts."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest

from presculpt.coordinator.planner import (
    Allocation, CostModel, CustomerQuota, Forecast, HostSnapshot, Plan, PlannerConfig, Snapshot, VmMemory,
    VmSnapshot, plan)
from presculpt.coordinator.planner.model import Pacing, TierPolicy
from presculpt.coordinator.planner.rules import exceedance, quantile_at

QUANTILES = (0.1, 0.5, 0.9, 0.99)
# The tiers these tests pin (the rules are tested, not the tuning of the shipped defaults).
DEFAULT_TIERS = {
    "gold": TierPolicy("gold", priority=3, quantile=0.995, margin=0.15, hold_steps=12, deadband=0.15,
                       max_step_down=0.30, grow_headroom=0.10, cooldown_steps=3),
    "silver": TierPolicy("silver", priority=2, quantile=0.99, margin=0.10, hold_steps=6, deadband=0.15,
                         max_step_down=0.30, grow_headroom=0.10, cooldown_steps=3),
    "bronze": TierPolicy("bronze", priority=1, quantile=0.95, margin=0.05, hold_steps=3, deadband=0.15,
                         max_step_down=0.30, grow_headroom=0.10, cooldown_steps=3),
}
CONFIG = PlannerConfig(tiers=DEFAULT_TIERS)

# CPU demand of about 3 cores, well above an allocation of 2 (P(demand > 2) = 1 - 0.1 * 2 / 2.5 = 0.92).
HIGH_CPU = (2.5, 3.0, 3.2, 3.3)
# CPU demand of at most 2 cores (p99 2.0; silver need 2.2), well below an allocation of 4.
LOW_CPU = (0.5, 1.0, 1.5, 2.0)


def fc(*values: float) -> Forecast:
    return Forecast(quantiles=QUANTILES, values=np.tile(np.asarray(values, dtype=float), (12, 1)))


def vm(uuid: str = "vm-1", cores: float = 2.0, memory_mib: float = 4096.0, *, tier: str = "silver",
       host: str = "h1", cpu: tuple | None = None, memory: tuple | None = None, max_vcpus: int = 8,
       max_memory_mib: float = 8192.0, **kwargs) -> VmSnapshot:
    return VmSnapshot(uuid=uuid, host=host, name=uuid,
                      current=Allocation(max(1, math.ceil(cores - 1e-9)), cores, memory_mib),
                      max_vcpus=max_vcpus, max_memory_mib=max_memory_mib, tier=tier,
                      cpu=fc(*cpu) if cpu else None, memory=fc(*memory) if memory else None, **kwargs)


def host(cores: float, memory_mib: float = 1e9, id: str = "h1") -> HostSnapshot:
    """A host whose CPU capacity is exactly ``cores`` (fractional capacities through the overcommit)."""
    return HostSnapshot(id, cpus=8, memory_mib=memory_mib, cpu_overcommit=cores / 8)


def only(p: Plan, uuid: str):
    found = [a for a in p.actions if a.vm == uuid]
    assert len(found) <= 1
    return found[0] if found else None


def grown_cores(forecast: tuple, tier: str) -> float:
    """What a pre-sculpt of an unconstrained VM goes to: the tier quantile + margin + headroom."""
    t = DEFAULT_TIERS[tier]
    return float(quantile_at(fc(*forecast), t.quantile)[0]) * (1 + t.margin) * (1 + t.grow_headroom)


def final(p: Plan, snapshot: Snapshot) -> dict[str, Allocation]:
    """Every VM's allocation once the plan is applied (vetoed actions are not)."""
    out = {v.uuid: v.current for v in snapshot.vms}
    out.update({a.vm: a.target for a in p.applied()})
    return out


def advance(snapshot: Snapshot, p: Plan) -> Snapshot:
    """The next run: one step later, the plan applied and its memory carried."""
    allocations = final(p, snapshot)
    vms = tuple(VmSnapshot(**{**v.__dict__, "current": allocations[v.uuid]}) for v in snapshot.vms)
    return Snapshot(snapshot.step + 1, vms, snapshot.hosts, snapshot.quotas, p.memory, p.resize_tokens)


# -- pre-sculpt ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tier", ["gold", "silver", "bronze"])
def test_presculpt_grows_to_the_tier_quantile_with_margin(tier):
    v = vm(cores=2.0, cpu=HIGH_CPU, tier=tier)
    p = plan(Snapshot(10, (v,)), CONFIG)
    a = only(p, v.uuid)
    t = DEFAULT_TIERS[tier]
    need = float(quantile_at(v.cpu, t.quantile)[0]) * (1 + t.margin)
    assert a is not None and a.kind == "presculpt" and not a.vetoed
    assert need <= a.target.cpu_cores <= v.max_vcpus
    assert a.target.cpu_cores == pytest.approx(need * (1 + t.grow_headroom), abs=1e-3)
    assert a.target.vcpus == math.ceil(a.target.cpu_cores)
    assert a.previous == v.current
    assert a.target.memory_mib == v.current.memory_mib  # no memory forecast: memory untouched


def test_presculpt_exact_silver_target_and_confidence():
    v = vm(cores=2.0, cpu=HIGH_CPU)
    a = only(plan(Snapshot(10, (v,)), CONFIG), v.uuid)
    assert a.target == Allocation(vcpus=4, cpu_cores=3.993, memory_mib=4096.0)  # 3.3 * 1.1 * 1.1
    assert a.confidence == pytest.approx(0.92)
    assert a.confidence == pytest.approx(float(exceedance(v.cpu, 2.0)[0]))
    assert "P(demand > allocation) = 0.92" in a.reason


@pytest.mark.parametrize("current, forecast", [
    (2.0, HIGH_CPU), (3.5, HIGH_CPU), (3.35, HIGH_CPU), (1.0, (0.2, 0.4, 0.9, 1.5))])
def test_presculpt_confidence_is_the_probability_of_exceeding_the_current_allocation(current, forecast):
    v = vm(cores=current, cpu=forecast)
    a = only(plan(Snapshot(10, (v,)), CONFIG), v.uuid)
    assert a is not None and a.kind == "presculpt"
    assert 0 < a.confidence <= 1
    assert a.confidence == pytest.approx(float(exceedance(v.cpu, current)[0]))


def test_presculpt_of_memory():
    v = vm(memory_mib=2048.0, memory=(2000.0, 2500.0, 3000.0, 3500.0))
    a = only(plan(Snapshot(10, (v,)), CONFIG), v.uuid)
    assert a.kind == "presculpt"
    assert a.target.memory_mib == round(3500 * 1.1 * 1.1)
    assert a.target.cpu_cores == v.current.cpu_cores
    assert a.confidence == pytest.approx(1 - (0.1 + 0.4 * 48 / 500))


def test_presculpt_never_goes_above_the_ceiling():
    v = vm(cores=2.0, memory_mib=2048.0, cpu=(5.0, 8.0, 10.0, 12.0), memory=(4000.0, 6000.0, 9000.0, 12000.0),
           max_vcpus=3, max_memory_mib=3072.0)
    a = only(plan(Snapshot(10, (v,)), CONFIG), v.uuid)
    assert a.kind == "presculpt"
    assert a.target == Allocation(vcpus=3, cpu_cores=3.0, memory_mib=3072.0)


def test_no_presculpt_at_the_ceiling():
    v = vm(cores=3.0, memory_mib=3072.0, cpu=(5.0, 8.0, 10.0, 12.0), memory=(4000.0, 6000.0, 9000.0, 12000.0),
           max_vcpus=3, max_memory_mib=3072.0)
    p = plan(Snapshot(10, (v,)), CONFIG)
    assert p.actions == ()


def test_no_action_when_the_forecast_fits():
    v = vm(cores=3.0, cpu=(1.5, 2.0, 2.4, 2.6))  # need 2.86: inside the allocation, above the deadband
    p = plan(Snapshot(10, (v,)), CONFIG)
    assert p.actions == () and p.unmet == ()


def test_growing_both_metrics_is_one_presculpt():
    v = vm(cores=2.0, memory_mib=2048.0, cpu=HIGH_CPU, memory=(2000.0, 2500.0, 3000.0, 3500.0))
    p = plan(Snapshot(10, (v,)), CONFIG)
    assert len(p.actions) == 1
    a = p.actions[0]
    assert a.kind == "presculpt" and a.target.cpu_cores > 2.0 and a.target.memory_mib > 2048.0
    assert a.confidence == pytest.approx(0.92)  # the larger of the two metrics'


# -- graceful downgrade -------------------------------------------------------------------------
def test_downgrade_waits_hold_steps_then_steps_down_by_at_most_max_step_down():
    hold = DEFAULT_TIERS["silver"].hold_steps
    s = Snapshot(1, (vm(cores=4.0, cpu=LOW_CPU),))
    for run in range(1, hold):
        p = plan(s, CONFIG)
        assert p.actions == (), f"shrunk after only {run} low runs"
        assert p.memory["vm-1"].cpu_below_steps == run
        s = advance(s, p)
    p = plan(s, CONFIG)
    a = only(p, "vm-1")
    assert a.kind == "downgrade" and not a.vetoed
    assert a.target == Allocation(vcpus=3, cpu_cores=2.8, memory_mib=4096.0)  # 4 * (1 - 0.30), not 2.2 * 1.1
    assert p.memory["vm-1"].cpu_below_steps == 0
    assert p.memory["vm-1"].last_resize_step == s.step


def test_downgrade_converges_to_the_need_with_headroom_and_stops():
    s = Snapshot(1, (vm(cores=4.0, cpu=LOW_CPU),))
    history = []
    for _ in range(40):
        p = plan(s, CONFIG)
        history += [(s.step, a.kind, a.target.cpu_cores) for a in p.actions]
        s = advance(s, p)
    # 4 -> 2.8 after 6 low runs; -> max(2.2 * 1.1, 2.8 * 0.7) = 2.42 after 6 more; then inside the deadband.
    assert history == [(6, "downgrade", 2.8), (12, "downgrade", 2.42)]
    assert s.vms[0].current.cpu_cores == 2.42


def test_a_forecast_just_below_the_allocation_never_shrinks():
    # need = 2.0 * 1.1 = 2.2 = 0.88 of 2.5: inside the 15 % deadband
    s = Snapshot(1, (vm(cores=2.5, cpu=LOW_CPU),))
    for _ in range(30):
        p = plan(s, CONFIG)
        assert p.actions == ()
        assert p.memory["vm-1"].cpu_below_steps == 0
        s = advance(s, p)


def test_a_high_run_resets_the_hold():
    hold = DEFAULT_TIERS["silver"].hold_steps
    low, fits = vm(cores=4.0, cpu=LOW_CPU), vm(cores=4.0, cpu=(2.5, 3.0, 3.3, 3.5))
    p = plan(Snapshot(10, (low,), memory={"vm-1": VmMemory(cpu_below_steps=hold - 2)}), CONFIG)
    assert p.actions == () and p.memory["vm-1"].cpu_below_steps == hold - 1
    p = plan(Snapshot(11, (fits,), memory=p.memory), CONFIG)
    assert p.actions == () and p.memory["vm-1"].cpu_below_steps == 0
    p = plan(Snapshot(12, (low,), memory=p.memory), CONFIG)
    assert p.actions == () and p.memory["vm-1"].cpu_below_steps == 1


@pytest.mark.parametrize("since_resize, shrinks", [(1, False), (2, False), (3, True), (10, True)])
def test_no_downgrade_during_the_cooldown_after_a_resize(since_resize, shrinks):
    step = 100
    memory = {"vm-1": VmMemory(cpu_below_steps=20, last_resize_step=step - since_resize)}
    p = plan(Snapshot(step, (vm(cores=4.0, cpu=LOW_CPU),), memory=memory), CONFIG)
    if shrinks:
        assert only(p, "vm-1").kind == "downgrade"
    else:
        assert p.actions == ()
        assert p.memory["vm-1"].cpu_below_steps == 21  # the hold keeps counting
        assert p.memory["vm-1"].last_resize_step == step - since_resize


def test_a_presculpt_starts_a_cooldown():
    s = Snapshot(10, (vm(cores=2.0, cpu=HIGH_CPU),))
    p = plan(s, CONFIG)
    assert only(p, "vm-1").kind == "presculpt"
    assert p.memory["vm-1"].last_resize_step == 10
    # the demand drops at once, and has been low for long: still no shrink within cooldown_steps
    grown = VmSnapshot(**{**s.vms[0].__dict__, "current": only(p, "vm-1").target, "cpu": fc(*LOW_CPU)})
    memory = {"vm-1": VmMemory(cpu_below_steps=50, last_resize_step=10)}
    assert plan(Snapshot(12, (grown,), memory=memory), CONFIG).actions == ()
    assert only(plan(Snapshot(13, (grown,), memory=memory), CONFIG), "vm-1").kind == "downgrade"


# -- memory floor -------------------------------------------------------------------------------
USED = 2000.0
FLOOR = USED * (1 + CONFIG.memory_margin_fraction) + CONFIG.memory_margin_mib  # 2328 MiB


def test_memory_never_shrinks_below_what_the_guest_uses_plus_the_margin():
    v = vm(memory_mib=4096.0, memory=(100.0, 200.0, 300.0, 400.0), memory_used_mib=USED)
    s = Snapshot(1, (v,), memory={"vm-1": VmMemory(memory_below_steps=100)})
    config = PlannerConfig(tiers=DEFAULT_TIERS, cost=CostModel(resize_cost=0.0))  # let every small shrink through
    seen = []
    for _ in range(60):
        p = plan(s, config)
        seen += [a.target.memory_mib for a in p.applied()]
        s = advance(s, p)
    assert seen == [math.floor(4096 * 0.7), math.floor(FLOOR * 1.1)]  # 2867, then the floor plus the grow headroom (whole MiB, rounded down)
    assert min(seen) >= FLOOR  # the forecast (at most 440 MiB) would allow far less


def test_memory_below_the_guest_floor_is_raised():
    v = vm(memory_mib=2000.0, memory=(100.0, 200.0, 300.0, 400.0), memory_used_mib=USED)
    for config in (CONFIG, PlannerConfig(tiers=DEFAULT_TIERS, cost=CostModel(resize_cost=1000.0))):  # a safety raise is never vetoed
        a = only(plan(Snapshot(5, (v,)), config), "vm-1")
        assert a.kind == "presculpt" and not a.vetoed
        assert a.target.memory_mib == math.floor(FLOOR * 1.1)  # the floor plus silver's memory grow headroom
        assert a.confidence == 1.0
        assert "what the guest uses" in a.reason
    # The guest then uses a few MiB more: its floor creeps up, but stays under the raised memory.
    raised = replace(v, current=replace(v.current, memory_mib=a.target.memory_mib), memory_used_mib=USED + 8)
    assert not [x for x in plan(Snapshot(6, (raised,)), CONFIG).actions if x.vm == "vm-1" and x.target.memory_mib != x.previous.memory_mib]


def test_swapping_respects_the_memory_floor():
    giver = vm("giver", memory_mib=4096.0, memory=(100.0, 200.0, 300.0, 400.0), memory_used_mib=USED)
    taker = vm("taker", memory_mib=2048.0, memory=(3000.0, 4000.0, 5000.0, 6000.0), tier="gold")
    p = plan(Snapshot(5, (giver, taker), hosts={"h1": host(64, memory_mib=4096.0 + 2048.0)}), CONFIG)
    assert only(p, "giver").kind == "swap"
    assert only(p, "giver").target.memory_mib == FLOOR
    assert only(p, "taker").target.memory_mib == 4096.0 + 2048.0 - FLOOR
    assert [(u.vm, u.memory_mib > 0) for u in p.unmet] == [("taker", True)]


def test_memory_never_shrinks_below_the_tier_factor_of_its_peak():
    # The forecast asks for at most 440 MiB, the guest now uses 300, but it used 3000 within the
    # peak window: with memory_peak_factor 1.2 memory stays at 3600 MiB or more.
    tier = replace(DEFAULT_TIERS["silver"], memory_peak_factor=1.2)
    config = PlannerConfig(tiers={**DEFAULT_TIERS, "silver": tier}, cost=CostModel(resize_cost=0.0))
    v = vm(memory_mib=8192.0, memory=(100.0, 200.0, 300.0, 400.0), memory_used_mib=300.0, memory_peak_mib=3000.0)
    s = Snapshot(1, (v,), memory={"vm-1": VmMemory(memory_below_steps=100)})
    seen = []
    for _ in range(40):
        p = plan(s, config)
        seen += [a.target.memory_mib for a in p.applied()]
        s = advance(s, p)
    assert min(seen) >= 3600.0
    assert final(p, s)["vm-1"].memory_mib <= 3600.0 / (1 - tier.deadband)  # stepped down to the floor's dead band
    # Without the factor (or without a known peak) the forecast and what the guest uses decide.
    without_factor = PlannerConfig(tiers=DEFAULT_TIERS, cost=CostModel(resize_cost=0.0))
    for other, guest in ((without_factor, v), (config, replace(v, memory_peak_mib=None))):
        s = Snapshot(1, (guest,), memory={"vm-1": VmMemory(memory_below_steps=100)})
        for _ in range(40):
            s = advance(s, plan(s, other))
        assert s.vms[0].current.memory_mib < 1000.0


def test_a_new_memory_peak_raises_memory_at_once_and_is_never_vetoed():
    tier = replace(DEFAULT_TIERS["silver"], memory_peak_factor=1.2)
    for cost in (CostModel(), CostModel(resize_cost=1000.0)):
        config = PlannerConfig(tiers={**DEFAULT_TIERS, "silver": tier}, cost=cost)
        v = vm(memory_mib=2048.0, memory=(100.0, 200.0, 300.0, 400.0), memory_used_mib=300.0, memory_peak_mib=2500.0)
        a = only(plan(Snapshot(5, (v,)), config), "vm-1")
        assert a.kind == "presculpt" and not a.vetoed
        assert a.target.memory_mib == math.floor(2500.0 * 1.2 * 1.1)  # past the floor by the grow headroom
        assert "1.2x its 24-hour peak" in a.reason
        # Capped at the VM's maximum.
        a = only(plan(Snapshot(5, (replace(v, memory_peak_mib=7900.0),)), config), "vm-1")
        assert a.target.memory_mib == 8192.0
    with pytest.raises(ValueError, match="memory_peak_factor must be positive"):
        TierPolicy("t", memory_peak_factor=0.0)


# -- opt-out and reclaim ------------------------------------------------------------------------
def test_opted_out_vms_get_no_action():
    vms = (vm("grow", cores=2.0, cpu=HIGH_CPU, opted_in=False),
           vm("shrink", cores=4.0, cpu=LOW_CPU, opted_in=False),
           vm("low-memory", memory_mib=1000.0, memory=(100.0, 200.0, 300.0, 400.0), memory_used_mib=USED,
              opted_in=False))
    memory = {v.uuid: VmMemory(cpu_below_steps=100, memory_below_steps=100, idle_steps=100) for v in vms}
    p = plan(Snapshot(50, vms, hosts={"h1": host(9.0)}, memory=memory), PlannerConfig(tiers=DEFAULT_TIERS, reclaim_idle_steps=3))
    assert p.actions == () and p.unmet == ()


def test_an_idle_vm_is_reclaimed_after_reclaim_idle_steps():
    config = PlannerConfig(tiers=DEFAULT_TIERS, reclaim_idle_steps=3)
    # p99 0.1 -> need max(0.11, floor 0.1) = 0.11 < 5 % of 4 vCPUs
    s = Snapshot(1, (vm(cores=2.0, cpu=(0.01, 0.02, 0.05, 0.1), max_vcpus=4),))
    for run in (1, 2):
        p = plan(s, config)
        assert p.actions == ()
        assert p.memory["vm-1"].idle_steps == run
        s = advance(s, p)
    a = only(plan(s, config), "vm-1")
    assert a.kind == "reclaim" and not a.vetoed
    assert a.target == Allocation(vcpus=1, cpu_cores=0.11, memory_mib=4096.0)


def test_a_busy_vm_is_not_reclaimed():
    config = PlannerConfig(tiers=DEFAULT_TIERS, reclaim_idle_steps=3)
    v = vm(cores=2.0, cpu=(0.1, 0.2, 0.3, 0.5), max_vcpus=4)  # need 0.55 >= 5 % of 4
    p = plan(Snapshot(10, (v,), memory={"vm-1": VmMemory(idle_steps=10)}), config)
    assert all(a.kind != "reclaim" for a in p.actions)
    assert p.memory["vm-1"].idle_steps == 0


# -- host shortage ------------------------------------------------------------------------------
GOLD_TARGET = grown_cores(HIGH_CPU, "gold")      # ~4.289
BRONZE_TARGET = grown_cores(HIGH_CPU, "bronze")  # ~3.760


@pytest.mark.parametrize("order", [("g", "b"), ("b", "g")])
def test_shortage_cuts_the_lower_tier_first(order):
    vms = {"g": vm("g", cores=2.0, cpu=HIGH_CPU, tier="gold"), "b": vm("b", cores=2.0, cpu=HIGH_CPU, tier="bronze")}
    s = Snapshot(10, tuple(vms[k] for k in order), hosts={"h1": host(7.0)})
    p = plan(s, CONFIG)
    g, b = only(p, "g"), only(p, "b")
    assert g.target.cpu_cores == pytest.approx(GOLD_TARGET, abs=1e-3)  # gold gets all of its growth
    assert b.target.cpu_cores == pytest.approx(7.0 - GOLD_TARGET, abs=1e-3)  # bronze the rest
    assert b.target.cpu_cores < BRONZE_TARGET
    assert [u.vm for u in p.unmet] == ["b"]
    assert p.unmet[0].cpu_cores == pytest.approx(GOLD_TARGET + BRONZE_TARGET - 7.0, abs=1e-6)
    assert p.unmet[0].memory_mib == 0.0
    assert sum(x.cpu_cores for x in final(p, s).values()) <= 7.0 + 1e-3


def test_a_deep_shortage_cuts_all_bronze_growth_then_gold():
    vms = (vm("g", cores=2.0, cpu=HIGH_CPU, tier="gold"), vm("b", cores=2.0, cpu=HIGH_CPU, tier="bronze"))
    s = Snapshot(10, vms, hosts={"h1": host(5.0)})
    p = plan(s, CONFIG)
    assert only(p, "b") is None  # no growth left at all
    assert only(p, "g").target.cpu_cores == pytest.approx(3.0)
    unmet = {u.vm: u.cpu_cores for u in p.unmet}
    assert unmet == pytest.approx({"b": BRONZE_TARGET - 2.0, "g": GOLD_TARGET - 3.0}, abs=1e-6)
    assert sum(x.cpu_cores for x in final(p, s).values()) <= 5.0 + 1e-3


def test_excess_is_swapped_before_growth_is_cut():
    taker = vm("taker", cores=2.0, cpu=HIGH_CPU, tier="gold")
    cheap = vm("cheap", cores=2.0, cpu=HIGH_CPU, tier="bronze")
    giver = vm("giver", cores=4.0, cpu=LOW_CPU, tier="silver")  # needs 2.2, not held long enough to shrink
    capacity = 8.0 + (GOLD_TARGET - 2.0) + (BRONZE_TARGET - 2.0) - 1.5
    s = Snapshot(10, (cheap, giver, taker), hosts={"h1": host(capacity)})
    p = plan(s, CONFIG)
    assert only(p, "giver").kind == "swap" and not only(p, "giver").vetoed
    assert only(p, "giver").target.cpu_cores == pytest.approx(2.5, abs=1e-3)
    assert only(p, "taker").target.cpu_cores == pytest.approx(GOLD_TARGET, abs=1e-3)
    assert only(p, "cheap").target.cpu_cores == pytest.approx(BRONZE_TARGET, abs=1e-3)  # not cut at all
    assert p.unmet == ()
    assert "forecast not to need" in only(p, "giver").reason


def test_swap_gives_down_to_the_need_then_growth_is_cut_and_reported():
    taker = vm("taker", cores=2.0, cpu=HIGH_CPU, tier="gold")
    giver = vm("giver", cores=4.0, cpu=LOW_CPU, tier="silver")
    s = Snapshot(10, (giver, taker), hosts={"h1": host(6.0)})
    p = plan(s, CONFIG)
    assert only(p, "giver").kind == "swap"
    assert only(p, "giver").target.cpu_cores == pytest.approx(2.2)  # its need, no lower
    assert only(p, "taker").target.cpu_cores == pytest.approx(3.8)
    assert [u.vm for u in p.unmet] == ["taker"]
    assert p.unmet[0].cpu_cores == pytest.approx(GOLD_TARGET - 3.8, abs=1e-6)


SCENARIOS = [
    # (cores, forecast, tier, below_steps) per VM, host capacity
    ([(2.0, HIGH_CPU, "gold", 0), (2.0, HIGH_CPU, "bronze", 0), (3.0, LOW_CPU, "silver", 0)], 8.0),
    ([(1.0, HIGH_CPU, "silver", 0), (1.0, (1.0, 1.5, 2.0, 2.5), "bronze", 0), (4.0, LOW_CPU, "gold", 0)], 6.5),
    ([(2.0, HIGH_CPU, "gold", 0), (2.0, HIGH_CPU, "gold", 0), (2.0, HIGH_CPU, "silver", 0)], 6.0),
    ([(0.5, HIGH_CPU, "bronze", 0), (3.0, (0.1, 0.2, 0.3, 0.4), "silver", 0), (2.0, HIGH_CPU, "gold", 0)], 5.6),
    ([(2.0, HIGH_CPU, "silver", 0), (4.0, LOW_CPU, "bronze", 5), (1.0, (3.0, 4.0, 5.0, 6.0), "gold", 0)], 9.0),
]


@pytest.mark.parametrize("vms, capacity", SCENARIOS)
def test_targets_never_exceed_the_host_capacity(vms, capacity):
    snapshot_vms = tuple(vm(f"vm-{i}", cores=c, cpu=f, tier=t) for i, (c, f, t, _) in enumerate(vms))
    memory = {f"vm-{i}": VmMemory(cpu_below_steps=b) for i, (_, _, _, b) in enumerate(vms)}
    assert sum(c for c, *_ in vms) <= capacity
    s = Snapshot(10, snapshot_vms, hosts={"h1": host(capacity)}, memory=memory)
    p = plan(s, CONFIG)
    assert p.actions or p.unmet, "the scenario should make the planner act"
    assert sum(a.cpu_cores for a in final(p, s).values()) <= capacity + 1e-3 * len(vms)  # 3-decimal rounding
    for a in p.actions:
        assert a.target.cpu_cores <= next(v for v in snapshot_vms if v.uuid == a.vm).max_vcpus


def test_vms_on_other_hosts_are_not_constrained():
    here = vm("here", cores=2.0, cpu=HIGH_CPU, host="h1")
    there = vm("there", cores=2.0, cpu=HIGH_CPU, host="h2")
    p = plan(Snapshot(10, (here, there), hosts={"h1": host(2.0), "h2": host(64.0, id="h2")}), CONFIG)
    assert only(p, "here") is None
    assert only(p, "there").target.cpu_cores == pytest.approx(3.993)
    assert [u.vm for u in p.unmet] == ["here"]


def test_a_vetoed_shrink_does_not_leave_the_host_overcommitted():
    # giver's own downgrade (4 -> 2.8) is vetoed by the cost model; the host pass must not count it,
    # and the capacity gold needs comes from a swap (never vetoed) instead.
    giver = vm("giver", cores=4.0, cpu=(0.1, 0.2, 0.3, 0.4))
    taker = vm("taker", cores=2.0, cpu=HIGH_CPU, tier="gold")
    dear = PlannerConfig(tiers=DEFAULT_TIERS, cost=CostModel(resize_cost=0.5))
    alone = plan(Snapshot(10, (giver,), memory={"giver": VmMemory(cpu_below_steps=5)}), dear)
    assert only(alone, "giver").vetoed  # the premise
    s = Snapshot(10, (giver, taker), hosts={"h1": host(6.0)}, memory={"giver": VmMemory(cpu_below_steps=5)})
    p = plan(s, dear)
    assert not only(p, "taker").vetoed
    assert only(p, "giver").kind == "swap" and not only(p, "giver").vetoed
    assert sum(a.cpu_cores for a in final(p, s).values()) <= 6.0 + 1e-3


def test_a_small_swap_is_not_dropped_after_being_counted():
    giver = vm("giver", cores=4.0, cpu=(3.0, 3.3, 3.5, 3.6091))  # need 3.97: 0.03 to give, < 1 % of 4
    taker = vm("taker", cores=2.0, cpu=HIGH_CPU, tier="gold")
    capacity = 4.0 + 4.213 - 0.03
    s = Snapshot(10, (giver, taker), hosts={"h1": host(capacity)})
    p = plan(s, CONFIG)
    assert only(p, "taker").target.cpu_cores == pytest.approx(4.213, abs=2e-3)  # the premise
    assert sum(a.cpu_cores for a in final(p, s).values()) <= capacity + 1e-3  # 8.213 > 8.183


def test_rounding_does_not_exceed_the_host_memory():
    def grows(uuid, target, tier):  # a memory pre-sculpt to ``target`` MiB (p99 * 1.1 margin * 1.1 headroom)
        t = DEFAULT_TIERS[tier]
        p99 = target / (1 + t.margin) / (1 + t.grow_headroom)
        return vm(uuid, memory_mib=1000.0, memory=(p99 * 0.5, p99 * 0.8, p99 * 0.9, p99), max_memory_mib=16384.0,
                  tier=tier)
    vms = (grows("s1", 2000.6, "silver"), grows("s2", 2000.6, "silver"), grows("b", 2867.0, "bronze"))
    capacity = 2000.6 + 2000.6 + 1500.8  # bronze is cut to 1500.8; all three round up
    s = Snapshot(10, vms, hosts={"h1": HostSnapshot("h1", cpus=64, memory_mib=capacity)})
    p = plan(s, CONFIG)
    assert sum(a.memory_mib for a in final(p, s).values()) <= capacity  # 5503 > 5502


# -- customer quotas ----------------------------------------------------------------------------
def test_growth_beyond_the_customer_quota_is_throttled_lowest_tier_first():
    vms = (vm("s", cores=2.0, cpu=HIGH_CPU, tier="silver", customer="acme"),
           vm("b", cores=2.0, cpu=HIGH_CPU, tier="bronze", customer="acme"),
           vm("other", cores=2.0, cpu=HIGH_CPU, tier="bronze", customer="zeta"))
    s = Snapshot(10, vms, quotas={"acme": CustomerQuota("acme", max_cores=6.5)})
    p = plan(s, CONFIG)
    assert only(p, "s").target.cpu_cores == pytest.approx(3.993)  # untouched
    assert only(p, "b").target.cpu_cores == pytest.approx(6.5 - 3.993, abs=1e-3)
    assert "throttled" in only(p, "b").reason and "acme" in only(p, "b").reason
    assert only(p, "other").target.cpu_cores == pytest.approx(BRONZE_TARGET, abs=1e-3)  # another customer
    acme = [a for u, a in final(p, s).items() if u in ("s", "b")]
    assert sum(a.cpu_cores for a in acme) <= 6.5 + 1e-3


def test_memory_quota_throttles_memory_growth():
    v = vm(memory_mib=2048.0, memory=(2000.0, 2500.0, 3000.0, 3500.0), customer="acme")
    p = plan(Snapshot(10, (v,), quotas={"acme": CustomerQuota("acme", max_memory_mib=3000.0)}), CONFIG)
    assert only(p, "vm-1").target.memory_mib == 3000.0


def test_a_fully_throttled_growth_is_reported():
    v = vm(cores=2.0, cpu=HIGH_CPU, customer="acme")
    p = plan(Snapshot(10, (v,), quotas={"acme": CustomerQuota("acme", max_cores=2.0)}), CONFIG)
    assert p.actions == ()  # nothing to send: the VM keeps its 2 cores
    assert [u.vm for u in p.unmet] == ["vm-1"] and "quota" in p.unmet[0].reason
    assert p.unmet[0].cpu_cores == pytest.approx(3.993 - 2.0, abs=1e-3)


# -- cost model ---------------------------------------------------------------------------------
def test_a_huge_resize_cost_vetoes_the_action():
    s = Snapshot(10, (vm(cores=2.0, cpu=HIGH_CPU),))
    p = plan(s, PlannerConfig(tiers=DEFAULT_TIERS, cost=CostModel(resize_cost=1000.0)))
    a = only(p, "vm-1")
    assert a.kind == "presculpt" and a.vetoed and a.held_by == "cost"
    assert "vetoed by the cost model" in a.reason
    assert p.applied() == ()
    assert p.memory["vm-1"].last_resize_step == VmMemory().last_resize_step  # nothing was resized
    assert p.cost_per_hour["vm-1"] == pytest.approx(2.0 * 0.04 + 4.0 * 0.005)  # the current allocation


def test_a_free_resize_is_not_vetoed():
    s = Snapshot(10, (vm(cores=2.0, cpu=HIGH_CPU),))
    p = plan(s, PlannerConfig(tiers=DEFAULT_TIERS, cost=CostModel(resize_cost=0.0)))
    a = only(p, "vm-1")
    assert a.kind == "presculpt" and not a.vetoed
    assert "vetoed" not in a.reason
    assert p.applied() == (a,)
    assert a.cost_per_hour == pytest.approx((3.993 - 2.0) * 0.04)
    assert a.expected_benefit > 0
    assert p.cost_per_hour["vm-1"] == pytest.approx(3.993 * 0.04 + 4.0 * 0.005)


def test_a_downgrade_that_saves_less_than_it_costs_is_vetoed():
    s = Snapshot(10, (vm(cores=4.0, cpu=LOW_CPU),), memory={"vm-1": VmMemory(cpu_below_steps=5)})
    cheap, dear = plan(s, CONFIG), plan(s, PlannerConfig(tiers=DEFAULT_TIERS, cost=CostModel(resize_cost=0.5)))
    assert only(cheap, "vm-1").kind == "downgrade" and not only(cheap, "vm-1").vetoed
    assert only(dear, "vm-1").vetoed  # saves 1.2 cores * 0.04 per hour over benefit_hours (4) = 0.192 < 0.5


# -- purity -------------------------------------------------------------------------------------
def test_plan_is_pure():
    vms = (vm("g", cores=2.0, memory_mib=2048.0, cpu=HIGH_CPU, memory=(2000.0, 2500.0, 3000.0, 3500.0),
              tier="gold", customer="acme"),
           vm("b", cores=2.0, cpu=HIGH_CPU, tier="bronze", customer="acme"),
           vm("s", cores=4.0, cpu=LOW_CPU, memory_mib=4096.0, memory=(100.0, 200.0, 300.0, 400.0),
              memory_used_mib=USED))
    for v in vms:
        for f in (v.cpu, v.memory):
            if f is not None:
                f.values.flags.writeable = False  # any in-place change raises
    hosts = {"h1": host(7.0, memory_mib=8192.0)}
    quotas = {"acme": CustomerQuota("acme", max_cores=7.5)}
    memory = {"s": VmMemory(cpu_below_steps=5, memory_below_steps=5)}
    s = Snapshot(10, vms, hosts, quotas, memory)
    before = copy.deepcopy((hosts, quotas, memory, [(v.uuid, v.current, v.cpu.values.copy()) for v in vms]))
    first, second = plan(s, CONFIG), plan(s, CONFIG)
    assert first == second
    assert first.actions and first.unmet  # a run that does something
    assert (s.hosts, s.quotas, s.memory) == before[:3]
    for v, (uuid, current, values) in zip(s.vms, before[3]):
        assert (v.uuid, v.current) == (uuid, current)
        np.testing.assert_array_equal(v.cpu.values, values)
    assert first.memory is not s.memory


def test_memory_is_provisioned_at_the_tier_memory_quantile_and_margin():
    tier = TierPolicy("silver", quantile=0.9, margin=0.0, grow_headroom=0.0, memory_quantile=0.999, memory_margin=0.2)
    config = PlannerConfig(tiers={"silver": tier})
    forecast = (1000.0, 1500.0, 2000.0, 2500.0)
    p = plan(Snapshot(10, (vm(cores=8.0, memory_mib=1024.0, memory=forecast),)), config)
    expected = float(quantile_at(fc(*forecast), 0.999)[0]) * 1.2  # the extrapolated tail, not the CPU's p90
    assert only(p, "vm-1").target.memory_mib == pytest.approx(math.floor(expected), abs=1)
    assert expected > 2500 * 1.2


def test_memory_quantile_is_validated():
    with pytest.raises(ValueError, match="memory_quantile"):
        TierPolicy("t", memory_quantile=1.0)


def test_memory_keeps_its_own_pacing():
    # CPU shrinks after one low run; memory, paced by its own hold of 3, waits.
    tier = replace(DEFAULT_TIERS["silver"], hold_steps=1, cooldown_steps=0,
                   memory_pacing=Pacing(hold_steps=3, cooldown_steps=0))
    config = PlannerConfig(tiers={**DEFAULT_TIERS, "silver": tier})
    s = Snapshot(1, (vm(cores=4.0, cpu=LOW_CPU, memory=(900.0, 1000.0, 1100.0, 1200.0)),))
    p = plan(s, config)
    a = only(p, "vm-1")
    assert a.kind == "downgrade" and a.target.cpu_cores < 4.0 and a.target.memory_mib == 4096.0
    assert p.memory["vm-1"].memory_below_steps == 1
    for _ in range(2):
        s = advance(s, p)
        p = plan(s, config)
    assert final(p, s)["vm-1"].memory_mib < 4096.0  # the third low run
    with pytest.raises(ValueError, match=r"hold_steps.*\(memory_pacing\)|step counts.*\(memory_pacing\)"):
        TierPolicy("t", memory_pacing=Pacing(hold_steps=-1))


def test_the_veto_prices_cost_optimal_cpu_as_its_sizing_does():
    # After a burst: p99 0.7 cores for the next step, 3.05 cores allocated of 4. The sizing steps
    # down to about p99 (the next steps' need is met when they come); pricing the hour's shortfall
    # at p99's penalty (99x) would veto that, though a violated step costs the tier 20 vCPU-steps.
    tier = TierPolicy("silver", margin=0.0, violation_cost=20.0, hold_steps=1, cooldown_steps=0, grow_headroom=0.0,
                      max_step_down=1.0, shrink_window_steps=1, lead_steps=0)
    config = PlannerConfig(tiers={"silver": tier})
    # ... and later in the hour the tail fattens (it is the VM's own: bursts come back).
    later = np.tile([0.1, 0.3, 3.0, 3.5, 4.0], (11, 1))
    tail = Forecast((0.5, 0.9, 0.99, 0.995, 0.999), np.vstack([[0.1, 0.2, 0.7, 1.5, 3.0], later]))
    s = Snapshot(1, (replace(vm(cores=3.05, max_vcpus=4), cpu=tail),))
    a = only(plan(s, config), "vm-1")
    assert a.kind == "downgrade" and not a.vetoed, a.reason
    assert a.target.cpu_cores == pytest.approx(0.7, abs=0.05)


# -- resize budget --------------------------------------------------------------------------------
def churn(budget: float | None, days: float) -> tuple[int, list[str]]:
    """Resizes a VM makes whose forecast swings between high and low every step, under a tier that
    follows it at once; and the reasons of the resizes held back."""
    tier = TierPolicy("silver", quantile=0.99, margin=0.0, hold_steps=1, cooldown_steps=0, deadband=0.0,
                      max_step_down=1.0, grow_headroom=0.0, max_resizes_per_day=budget)
    config = PlannerConfig(tiers={"silver": tier}, cost=CostModel(veto_threshold=1e9), host_resizes_per_vm_day=None)
    s = Snapshot(0, (vm(cores=2.0, cpu=HIGH_CPU),))
    applied, held = 0, []
    for step in range(int(days * 288)):
        s = replace(s, vms=(replace(s.vms[0], cpu=fc(*(HIGH_CPU if step % 2 == 0 else LOW_CPU))),))
        p = plan(s, config)
        applied += len(p.applied())
        held += [f"{a.held_by}: {a.reason}" for a in p.actions if a.vetoed]
        s = advance(s, p)
    return applied, held


def test_a_resize_budget_holds_a_churning_vm_to_its_rate():
    free, _ = churn(None, 2)
    assert free == 2 * 288  # it follows every swing
    applied, held = churn(24.0, 2)
    # a full bucket (six hours' worth) and 24 a day after it
    assert 2 * 24 <= applied <= 6 + 2 * 24
    assert held and all(r.startswith("vm budget: ") and "spent its resize budget (24 a day)" in r for r in held)


def test_a_safety_raise_goes_through_a_spent_budget():
    tier = TierPolicy("silver", max_resizes_per_day=24.0)
    spent = VmMemory(resize_tokens=0.0)
    v = vm(memory_mib=2000.0, memory=(100.0, 200.0, 300.0, 400.0), memory_used_mib=USED)
    p = plan(Snapshot(5, (v,), memory={"vm-1": spent}), PlannerConfig(tiers={"silver": tier}))
    a = only(p, "vm-1")
    assert a.kind == "presculpt" and not a.vetoed and "what the guest uses" in a.reason
    assert p.memory["vm-1"].resize_tokens < 0  # owed: the refill pays it back before the next resize
    with pytest.raises(ValueError, match="max_resizes_per_day must be positive"):
        TierPolicy("t", max_resizes_per_day=0.0)


# -- a host's resize budget -------------------------------------------------------------------------
FOLLOW = TierPolicy("silver", quantile=0.99, margin=0.0, hold_steps=1, cooldown_steps=0, deadband=0.0,
                    max_step_down=1.0, grow_headroom=0.0)


def test_a_host_budget_sends_the_resizes_worth_most_first():
    config = PlannerConfig(tiers={"silver": FOLLOW}, cost=CostModel(veto_threshold=1e9), host_resizes_per_vm_day=20.0)
    big = vm("big", cores=2.0, cpu=HIGH_CPU)  # demand about 3 cores: P(demand > 2) = 0.92
    small = vm("small", cores=2.0, cpu=(1.5, 1.8, 1.95, 2.05))  # just past 2 in its tail
    one = {"h1": 1.0}  # one token, and one step's refill for two VMs (20 x 2 / 288) short of a second
    p = plan(Snapshot(5, (small, big), resize_tokens=one), config)
    assert not only(p, "big").vetoed and only(p, "big").expected_benefit > only(p, "small").expected_benefit
    held = only(p, "small")
    assert held.vetoed and held.held_by == "host budget"
    assert "host h1 has spent its resize budget (20 per VM-day)" in held.reason
    assert only(p, "big").held_by == ""
    assert p.resize_tokens["h1"] == pytest.approx(1.0 + 20 * 2 / 288 - 1)
    both = plan(Snapshot(5, (small, big)), config)  # no token count yet: a full bucket (5 x 2 VMs / 4)
    assert len(both.applied()) == 2 and both.resize_tokens["h1"] == pytest.approx(20 * 2 / 4 - 2)


def test_a_host_budget_holds_a_churning_host_to_its_rate():
    """Two VMs whose forecasts swing every step on one host of budget 20 per VM-day: about 40
    resizes a day after the first full bucket (ten), instead of 576."""
    config = PlannerConfig(tiers={"silver": FOLLOW}, cost=CostModel(veto_threshold=1e9), host_resizes_per_vm_day=20.0)
    s = Snapshot(0, (vm("a", cores=2.0, cpu=HIGH_CPU), vm("b", cores=2.0, cpu=LOW_CPU)))
    applied = 0
    for step in range(2 * 288):
        flip = (HIGH_CPU, LOW_CPU) if step % 2 == 0 else (LOW_CPU, HIGH_CPU)
        s = replace(s, vms=tuple(replace(v, cpu=fc(*f)) for v, f in zip(s.vms, flip)))
        p = plan(s, config)
        applied += len(p.applied())
        s = advance(s, p)
    assert 2 * 40 - 1 <= applied <= 10 + 2 * 40


def test_a_safety_raise_goes_through_a_spent_host_budget():
    config = PlannerConfig(tiers={"silver": TierPolicy("silver")}, host_resizes_per_vm_day=20.0)
    v = vm(memory_mib=2000.0, memory=(100.0, 200.0, 300.0, 400.0), memory_used_mib=USED)
    p = plan(Snapshot(5, (v,), resize_tokens={"h1": -3.0}), config)
    a = only(p, "vm-1")
    assert a.kind == "presculpt" and not a.vetoed and "what the guest uses" in a.reason
    assert p.resize_tokens["h1"] == pytest.approx(-3.0 + 20 / 288 - 1)  # owed
    with pytest.raises(ValueError, match="host_resizes_per_vm_day must be positive"):
        PlannerConfig(host_resizes_per_vm_day=0.0)
