"""The planner's frozen inputs and outputs. Pure values: no libvirt, gRPC, SQL or torch.

Units are in the names: ``*_cores`` (CPU time per second; fractional), ``*_mib``, ``*_steps`` (one
step = the forecast step, 5 minutes by default), prices per hour.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

Mode = Literal["observe", "enforce"]
MODES = ("observe", "enforce")
ACTION_KINDS = ("presculpt", "downgrade", "reclaim", "throttle", "swap")
# The default resize budget of a host, per VM-day (PlannerConfig.host_resizes_per_vm_day). It costs
# next to nothing where the fleet resizes about that often anyway (Bitbrains replay: CPU resizes
# 19.3 -> 18.3 per VM-day, slack 30.43% -> 30.46%, violation 2.586% -> 2.588%; at 16 on cached
# forecasts 15.4, 30.65%, 2.602%), and it holds a burstier or noisier fleet to it (the trace's odd
# rows: 22.7 -> 18.9 at the same slack and violation; white noise: 40.7 -> 19.8).
HOST_RESIZES_PER_VM_DAY = 20.0


@dataclass(frozen=True)
class Pacing:
    """How closely an allocation follows its forecast: a tier's lead, hold, window, bands and steps
    (the fields of :class:`TierPolicy` of the same names). Memory may have its own."""

    lead_steps: int = 1
    hold_steps: int = 3
    shrink_window_steps: int = 3
    deadband: float = 0.10
    max_step_down: float = 0.50
    grow_headroom: float = 0.05
    cooldown_steps: int = 3


@dataclass(frozen=True)
class TierPolicy:
    """How one SLA tier is provisioned. Higher ``priority`` is served first under a shortage."""

    name: str
    priority: int = 1
    quantile: float = 0.99  # the forecast quantile to provision for (above 0.99: extrapolated tail)
    margin: float = 0.05  # safety margin on top of that quantile (fraction)
    lead_steps: int = 1  # grow this many steps before the forecast need (covers resize latency)
    hold_steps: int = 3  # the upper forecast must stay below the allocation this long before shrinking
    # A downgrade provisions for the peak of the upper forecast over this many steps (a rise beyond
    # them is met by a pre-sculpt when the forecast sees it coming); 0: the whole horizon.
    shrink_window_steps: int = 3
    deadband: float = 0.10  # shrink only when the upper forecast is this far below the allocation
    max_step_down: float = 0.50  # at most this fraction of the allocation per downgrade
    grow_headroom: float = 0.05  # a grow goes this far past the need, so the next rise needs no resize
    cooldown_steps: int = 3  # no downgrade this soon after any resize of the VM
    # Memory short of demand means swapping or an OOM kill, not a slower step: memory may be
    # provisioned at its own quantile and margin (None: the same as CPU).
    memory_quantile: float | None = None
    memory_margin: float | None = None
    # Memory's own pacing (None: the fields above). A CPU shortfall costs a slower step and is over
    # when the allocation catches up; memory is better moved rarely and held longer.
    memory_pacing: Pacing | None = None
    # The cost model's price of unmet demand, as a multiple of the price of the same allocation.
    # None: quantile / (1 - quantile), the ratio under which provisioning the quantile is optimal.
    violation_penalty: float | None = None
    # Cost-optimal sizing (CPU): each step provisions the forecast level that minimises allocation +
    # violation_cost x P(allocation < demand <= ceiling), a step of demand above the allocation
    # costing as much as holding this many vCPUs for a step, whatever the VM's size (a violation
    # is one VM-step on a small VM as on a large one; priced by the VM's size, large VMs bought
    # their rare bursts with many idle cores and small ones were left short). Each step then gets
    # the level its forecast's shape warrants: a high one where the tail is short, a lower one
    # where covering it would cost more than the violations it avoids. None: ``quantile``.
    violation_cost: float | None = None
    # Cost-optimal sizing never picks a level below this one: no step is planned to fall short more
    # often than 1 - min_level. Where the forecast is uncertain (a young model, a VM it knows little
    # of) the price alone gives up more of the tail, so the violation rate would rise with the
    # uncertainty; this floor turns that uncertainty into allocation instead. (Bitbrains replay:
    # at p95 with a violation cost of 30 instead of 34, the same slack and violation on the whole
    # trace, less unmet demand, and a little less violation in its first scored days and on one
    # half of the VMs replayed alone.) None: any level of the sizing grid (from the median).
    min_level: float | None = None
    # Memory never below this times the VM's peak use over the last ``memory_peak_hours`` (the
    # planner's): the forecast follows the day, the peak remembers jumps the last hours do not show.
    # None: off.
    memory_peak_factor: float | None = None
    # At most this many resizes of a VM per day on average (a bucket of tokens refilled at this
    # rate, holding six hours' worth): a resize past it waits, except a raise back to a safety
    # floor. A guard against churn, not a way to save resizes: the VMs that resize most are the
    # bursty ones where following demand pays most (Bitbrains replay: silver at 22 a day cut
    # resizes from 20 to 10 per VM-day and raised CPU violation from 2.57% to 3.0%). None: no limit.
    max_resizes_per_day: float | None = None

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"tier {self.name!r}: quantile must be in [0.5, 1), got {self.quantile}")
        if self.margin < 0 or self.deadband < 0 or self.grow_headroom < 0:
            raise ValueError(f"tier {self.name!r}: margin, deadband and grow_headroom must not be negative")
        if not 0 < self.max_step_down <= 1:
            raise ValueError(f"tier {self.name!r}: max_step_down must be in (0, 1], got {self.max_step_down}")
        if min(self.lead_steps, self.hold_steps, self.cooldown_steps, self.shrink_window_steps) < 0:
            raise ValueError(f"tier {self.name!r}: step counts must not be negative")
        if self.memory_quantile is not None and not 0.5 <= self.memory_quantile < 1.0:
            raise ValueError(f"tier {self.name!r}: memory_quantile must be in [0.5, 1), got {self.memory_quantile}")
        if self.memory_margin is not None and self.memory_margin < 0:
            raise ValueError(f"tier {self.name!r}: memory_margin must not be negative")
        if self.violation_penalty is not None and self.violation_penalty < 0:
            raise ValueError(f"tier {self.name!r}: violation_penalty must not be negative")
        if self.violation_cost is not None and not self.violation_cost > 0:
            raise ValueError(f"tier {self.name!r}: violation_cost must be positive, got {self.violation_cost}")
        if self.min_level is not None and not 0.5 <= self.min_level < 1.0:
            raise ValueError(f"tier {self.name!r}: min_level must be in [0.5, 1), got {self.min_level}")
        if self.max_resizes_per_day is not None and not self.max_resizes_per_day > 0:
            raise ValueError(f"tier {self.name!r}: max_resizes_per_day must be positive, got {self.max_resizes_per_day}")
        if self.memory_peak_factor is not None and not self.memory_peak_factor > 0:
            raise ValueError(f"tier {self.name!r}: memory_peak_factor must be positive, got {self.memory_peak_factor}")
        if self.memory_pacing is not None:
            try:
                self.for_memory  # noqa: B018 - checks memory's pacing with the same rules
            except ValueError as err:
                raise ValueError(f"{err} (memory_pacing)") from None

    @functools.cached_property
    def for_memory(self) -> "TierPolicy":
        """This tier as it provisions memory."""
        pacing = asdict(self.memory_pacing) if self.memory_pacing is not None else {}
        return replace(self, quantile=self.memory_quantile or self.quantile,
                       margin=self.margin if self.memory_margin is None else self.memory_margin,
                       memory_quantile=None, memory_margin=None, violation_cost=None, min_level=None,
                       memory_pacing=None, **pacing)

    @property
    def penalty(self) -> float:
        if self.violation_penalty is not None:
            return self.violation_penalty
        return self.quantile / (1 - self.quantile)


DEFAULT_TIERS: dict[str, TierPolicy] = {
    "gold": TierPolicy("gold", priority=3, quantile=0.995, margin=0.10, hold_steps=6, shrink_window_steps=6,
                       memory_quantile=0.9999, memory_margin=0.10, memory_peak_factor=1.5,
                       memory_pacing=Pacing(hold_steps=6, shrink_window_steps=6)),
    # Measured on the Bitbrains trace (`presculpt replay`): CPU at the cost-optimal level of each step,
    # followed closely (a violated step costs 31 vCPU-steps, never below p95, a dead band of 8%); memory at
    # p99.95 + 30% of its learned upper tail and never below its 24-hour peak, paced slowly.
    "silver": TierPolicy("silver", priority=2, margin=0.0, violation_cost=31.0, min_level=0.95, lead_steps=0,
                         hold_steps=1, shrink_window_steps=1, deadband=0.08, max_step_down=1.0, grow_headroom=0.0,
                         cooldown_steps=1, memory_quantile=0.9995, memory_margin=0.30, memory_peak_factor=1.0,
                         memory_pacing=Pacing()),
    "bronze": TierPolicy("bronze", priority=1, quantile=0.95, hold_steps=2, shrink_window_steps=2,
                         memory_quantile=0.99, memory_margin=0.05,
                         memory_pacing=Pacing(hold_steps=2, shrink_window_steps=2)),
}


@dataclass(frozen=True)
class CostModel:
    """Prices of allocation and of a resize. An action whose cost exceeds its expected benefit by
    more than ``veto_threshold`` is vetoed (reported, not sent)."""

    price_vcpu_hour: float = 0.04
    price_gib_hour: float = 0.005
    # Per resize: the guest's disturbance and the control traffic (about 9 vCPU-minutes). Bitbrains
    # replay, silver: 0.002 / 0.006 / 0.008 left 30.1% / 30.4% / 30.5% CPU slack at 26 / 19 / 17
    # resizes per VM-day.
    resize_cost: float = 0.006
    veto_threshold: float = 0.0
    benefit_hours: float = 4.0  # how long a change is expected to last, to price what it adds or frees

    def __post_init__(self) -> None:
        if min(self.price_vcpu_hour, self.price_gib_hour, self.resize_cost) < 0:
            raise ValueError("cost model prices must not be negative")
        if not self.benefit_hours > 0:
            raise ValueError("cost model benefit_hours must be positive")


@dataclass(frozen=True)
class PlannerConfig:
    mode: Mode = "observe"
    step_s: float = 300.0
    tiers: dict[str, TierPolicy] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    default_tier: str = "silver"
    memory_margin_fraction: float = 0.10  # never balloon below used * (1 + this) ...
    memory_margin_mib: float = 128.0  # ... plus this
    memory_floor_mib: float = 256.0
    memory_peak_hours: float = 24.0  # the window of VmSnapshot.memory_peak_mib (a tier's memory_peak_factor)
    cpu_floor_cores: float = 0.1
    reclaim_idle_steps: int = 36  # an opted-in VM whose upper forecast stayed under idle_fraction ...
    idle_fraction: float = 0.05  # ... of its maximum this long is reclaimed down to its floor
    cost: CostModel = field(default_factory=CostModel)
    # Each host's resizes at most this many per VM-day on average, from a bucket of six hours'
    # worth refilled every step; when more are wanted, those worth most (benefit less cost) go
    # first and safety raises always go. None: no limit.
    host_resizes_per_vm_day: float | None = HOST_RESIZES_PER_VM_DAY

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"planner mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.default_tier not in self.tiers:
            raise ValueError(f"planner default_tier {self.default_tier!r} is not a configured tier "
                             f"({', '.join(sorted(self.tiers))})")
        if self.step_s <= 0 or self.memory_margin_fraction < 0 or self.memory_margin_mib < 0:
            raise ValueError("planner step_s must be positive and memory margins not negative")
        if not self.memory_peak_hours > 0:
            raise ValueError(f"planner memory_peak_hours must be positive, got {self.memory_peak_hours:g}")
        if self.host_resizes_per_vm_day is not None and not self.host_resizes_per_vm_day > 0:
            raise ValueError(f"planner host_resizes_per_vm_day must be positive, got {self.host_resizes_per_vm_day:g}")

    def tier(self, name: str) -> TierPolicy:
        return self.tiers.get(name) or self.tiers[self.default_tier]


@dataclass(frozen=True, eq=False)
class Forecast:
    """Quantile forecast of one metric: ``values[h, q]`` for step ``h`` (0 = the next step)."""

    quantiles: tuple[float, ...]
    values: np.ndarray  # (horizon, len(quantiles)), non-decreasing along q

    @property
    def horizon(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Allocation:
    """A VM's CPU and memory allocation. ``cpu_cores`` is the effective CPU (the quota when one is
    set, else the vCPUs)."""

    vcpus: int
    cpu_cores: float
    memory_mib: float


@dataclass(frozen=True)
class VmSnapshot:
    uuid: str
    host: str
    name: str
    current: Allocation
    max_vcpus: int
    max_memory_mib: float
    floor_cores: float = 0.1
    floor_memory_mib: float = 256.0
    memory_used_mib: float | None = None  # what the guest uses (balloon stats); None: unknown
    memory_peak_mib: float | None = None  # the most it used over PlannerConfig.memory_peak_hours; None: unknown
    tier: str = ""
    customer: str = ""
    segment: str = ""
    opted_in: bool = True
    cpu: Forecast | None = None
    memory: Forecast | None = None


@dataclass(frozen=True)
class HostSnapshot:
    id: str
    cpus: int
    memory_mib: float
    cpu_overcommit: float = 1.0  # allocated cores may reach cpus * this
    memory_overcommit: float = 1.0
    reserved_cores: float = 0.0  # kept for the host itself
    reserved_memory_mib: float = 0.0

    @property
    def cpu_capacity(self) -> float:
        return max(self.cpus * self.cpu_overcommit - self.reserved_cores, 0.0)

    @property
    def memory_capacity_mib(self) -> float:
        return max(self.memory_mib * self.memory_overcommit - self.reserved_memory_mib, 0.0)


@dataclass(frozen=True)
class CustomerQuota:
    customer: str
    max_cores: float | None = None
    max_memory_mib: float | None = None


@dataclass(frozen=True)
class VmMemory:
    """What the planner remembers about a VM between runs (hold times, cooldowns)."""

    cpu_below_steps: int = 0
    memory_below_steps: int = 0
    idle_steps: int = 0
    last_resize_step: int = -(10**9)
    resize_tokens: float | None = None  # resizes the tier's budget still allows now (None: a full bucket)


@dataclass(frozen=True)
class Snapshot:
    """Everything one planning run looks at, frozen at ``step`` (a counter of planning steps)."""

    step: int
    vms: tuple[VmSnapshot, ...]
    hosts: dict[str, HostSnapshot] = field(default_factory=dict)
    quotas: dict[str, CustomerQuota] = field(default_factory=dict)
    memory: dict[str, VmMemory] = field(default_factory=dict)  # by VM uuid
    resize_tokens: dict[str, float] = field(default_factory=dict)  # by host: its resize budget left (missing: full)


@dataclass(frozen=True)
class Action:
    """One change the planner wants: ``target`` is the VM's whole new allocation."""

    vm: str
    host: str
    kind: str  # one of ACTION_KINDS
    target: Allocation
    previous: Allocation
    reason: str
    confidence: float = 0.0  # forecast probability that demand exceeds the previous allocation
    cost_per_hour: float = 0.0  # change in allocation cost per hour (negative: saving)
    expected_benefit: float = 0.0
    vetoed: bool = False
    held_by: str = ""  # what held a vetoed action back: "cost" (the veto), "vm budget" or "host budget"


@dataclass(frozen=True)
class Unmet:
    """Demand a host cannot meet (an event; a later stage places it elsewhere)."""

    host: str
    vm: str
    cpu_cores: float
    memory_mib: float
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    unmet: tuple[Unmet, ...]
    memory: dict[str, VmMemory]
    cost_per_hour: dict[str, float]  # by VM uuid, after the plan
    customer_cost_per_hour: dict[str, float]
    resize_tokens: dict[str, float] = field(default_factory=dict)  # by host, for the next run (Snapshot.resize_tokens)

    def applied(self) -> tuple[Action, ...]:
        """The actions to send (not vetoed)."""
        return tuple(a for a in self.actions if not a.vetoed)
