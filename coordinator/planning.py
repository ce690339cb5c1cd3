"""The planner served by the coordinator: named steps from the store to the dispatcher.

``plan_once`` takes a frozen snapshot of the store (``load_snapshot``: inventory, hosts, the newest
stored forecasts and memory use), runs the pure planner (``coordinator/planner``), remembers what
the planner keeps between runs, logs one line per action and exports the metrics. ``enforce`` then
sends one command per applied action, in enforce mode only. The two are separate because the
dispatcher is loop-only: the scheduled job runs ``plan_once`` in a worker thread and ``enforce`` on
the event loop; ``GetPlan`` runs ``plan_once(dry_run=True)``, which neither remembers nor sends.

VM metadata read (the keys the forecaster and ``presculpt forecast aggregate`` already use, plus
two of the planner's): ``tier`` (an SLA tier of ``[planner.tiers]``; none or unknown: the default
tier), ``customer`` (for quotas), ``segment``, and ``opt_in`` (``false``, ``no``, ``off`` or ``0``
leave the VM as it is; it still counts in its host's capacity).

One planning step is one forecast step (5 minutes): a run repeated within the same step starts
from the same remembered state and gives the same command ids (``plan-<step>-<uuid>``), so it
sends nothing twice.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from presculpt.coordinator.config import PlannerSettings
from presculpt.coordinator.dispatch import Dispatcher, DispatchRejected, PendingCommand
from presculpt.coordinator.metrics import CoordinatorMetrics
from presculpt.coordinator.model import Command, ForecastRecord, HostRecord, SampleRow, Shape, VmRecord
from presculpt.coordinator.planner.model import (
    Action,
    Allocation,
    CustomerQuota,
    Forecast,
    HostSnapshot,
    Plan,
    PlannerConfig,
    Snapshot,
    VmMemory,
    VmSnapshot,
)
from presculpt.coordinator.planner.planner import plan
from presculpt.coordinator.store.base import MetricStore

log = logging.getLogger(__name__)

TIER_KEY, CUSTOMER_KEY, SEGMENT_KEY, OPT_IN_KEY = "tier", "customer", "segment", "opt_in"
OPT_OUT_VALUES = ("false", "no", "off", "0")
CPU_METRIC, MEMORY_METRIC = "cpu_cores", "memory_mib"
PLANNED_STATES = ("running", "blocked")
# Guests in these states are not resized but still hold their host's memory (and their CPU once resumed).
HELD_STATES = ("paused", "pmsuspended")
# Forecasts made longer ago than this have no step left to plan from (the forecaster's horizon).
MAX_FORECAST_AGE_STEPS = 12
# Planner actions as the agents' commands: growth is a pre-sculpt; everything that only gives
# resources back goes one guarded step at a time (the agent's graceful downgrade).
COMMAND_KIND = {"presculpt": "presculpt", "downgrade": "downgrade", "reclaim": "downgrade", "swap": "downgrade",
                "throttle": "downgrade"}


@dataclass(frozen=True)
class UnmetDemand:
    """Forecast demand of a VM that its host cannot give it (an event for watchers)."""

    host: str
    uuid: str
    vm: str  # the VM's name
    cpu_cores: float
    memory_mib: float
    reason: str


@dataclass(frozen=True)
class PlanRun:
    """What one ``plan_once`` decided."""

    at: float  # when it planned (Unix seconds)
    step: int  # the forecast step planned for: floor(at / step_s)
    mode: str  # observe or enforce (the configured mode, also for dry runs)
    dry_run: bool
    plan: Plan
    names: dict[tuple[str, str], str]  # (host, uuid) -> VM name, of every planned VM
    forecast_vms: int  # planned VMs with at least one fresh forecast
    unmet: tuple[UnmetDemand, ...]
    new_unmet: tuple[UnmetDemand, ...]  # unmet demand that was not unmet at the previous run (events)
    seconds: float
    repeat: bool = False  # another run of a step already planned (decides the same; not counted again)

    @property
    def vms(self) -> int:
        return len(self.names)

    @property
    def cost_per_hour(self) -> float:
        return float(sum(self.plan.cost_per_hour.values()))

    def name(self, action: Action) -> str:
        return self.names.get((action.host, action.vm), action.vm)


def command_kind(action: Action) -> str:
    """The command an applied action becomes (one of the coordinator's COMMAND_KINDS)."""
    kind = COMMAND_KIND.get(action.kind, "resize")
    t, p = action.target, action.previous
    if kind == "downgrade" and (t.vcpus > p.vcpus or t.cpu_cores > p.cpu_cores + 1e-9
                                or t.memory_mib > p.memory_mib):
        return "resize"  # not a pure shrink: a downgrade would step it as one
    return kind


def target_shape(action: Action) -> Shape:
    """The command's target. Fewer vCPUs are not named: the agent then picks ceil(cores) vCPUs, as the
    planner does, or, where it cannot unplug vCPUs live (TCG), keeps them and caps them through the
    quota; naming them would make its guard refuse the whole command."""
    t, p = action.target, action.previous
    return Shape(vcpus=t.vcpus if t.vcpus >= p.vcpus else None, cpu_cores=round(t.cpu_cores, 3),
                 memory_mib=int(round(t.memory_mib)))


class PlannerService:
    """Plans from the store and sends the actions through the dispatcher (in enforce mode).

    The planner's memory between runs (hold times, cooldowns; ``Plan.memory``; the hosts' resize
    budgets, ``Plan.resize_tokens``) is kept in this object only: a restarted coordinator starts
    afresh, so downgrades wait their hold time again, the cooldown is forgotten (the planner's first
    run after a restart may resize a VM sooner than the cooldown after its last resize) and each
    host's resize budget starts full."""

    def __init__(
        self,
        store: MetricStore,
        dispatcher: Dispatcher,
        settings: PlannerSettings = PlannerSettings(),
        metrics: CoordinatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        submit: Callable[[Command], PendingCommand] | None = None,
        command_timeout_s: float = 30.0,
    ):
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.config: PlannerConfig = settings.planner_config()
        self.metrics = metrics or CoordinatorMetrics()
        self.clock = clock
        self.submit = submit or dispatcher.submit
        self.command_timeout_s = command_timeout_s
        self._lock = threading.Lock()
        self._step: int | None = None  # the step of the last (not dry) run
        self._base: dict[str, VmMemory] = {}  # the memory that run started from
        self._memory: dict[str, VmMemory] = {}  # the memory it left
        self._base_tokens: dict[str, float] = {}  # the hosts' resize budgets that run started from
        self._tokens: dict[str, float] = {}  # and what it left of them
        self._unmet: frozenset[tuple[str, str]] = frozenset()
        self._warned_tiers: set[str] = set()

    @property
    def mode(self) -> str:
        return self.config.mode

    # -- the planning step --------------------------------------------------------------------
    def plan_once(self, now: float | None = None, dry_run: bool = False) -> PlanRun:
        """Plan from the store as it is at ``now``. A dry run remembers nothing and counts nothing."""
        started = time.monotonic()
        now = self.clock() if now is None else now
        step = int(math.floor(now / self.config.step_s))
        memory, tokens = self.memory_for(step), self.tokens_for(step)
        snapshot, names, forecast_vms = self.load_snapshot(now, step, memory, tokens)
        result = plan(snapshot, self.config)
        unmet = self.describe_unmet(result, names)
        keys = frozenset((u.host, u.uuid) for u in unmet)
        with self._lock:
            new_unmet = tuple(u for u in unmet if (u.host, u.uuid) not in self._unmet)
            repeat = step == self._step
            if not dry_run:
                self._step, self._base, self._memory, self._unmet = step, memory, result.memory, keys
                self._base_tokens, self._tokens = tokens, result.resize_tokens
        run = PlanRun(now, step, self.mode, dry_run, result, names, forecast_vms, unmet,
                      () if dry_run else new_unmet, time.monotonic() - started, repeat)
        self.report(run)
        return run

    def memory_for(self, step: int) -> dict[str, VmMemory]:
        """The planner's memory to start ``step`` from: what the last run left, or, when that run
        was of the same step, what it started from (so a repeated run decides the same)."""
        with self._lock:
            return dict(self._base if step == self._step else self._memory)

    def tokens_for(self, step: int) -> dict[str, float]:
        """The hosts' resize budgets to start ``step`` from, as :meth:`memory_for`."""
        with self._lock:
            return dict(self._base_tokens if step == self._step else self._tokens)

    def load_snapshot(self, now: float, step: int, memory: dict[str, VmMemory],
                      resize_tokens: dict[str, float] | None = None
                      ) -> tuple[Snapshot, dict[tuple[str, str], str], int]:
        """The frozen snapshot of ``step``: running VMs with their allocation, newest forecasts and
        memory use (paused ones too, left as they are, for their hosts' capacity); hosts with their
        capacity; customer quotas. Also the VMs' names and how many have a forecast."""
        step_start = step * self.config.step_s
        hosts = self.store.hosts()
        vms = [v for v in self.store.vms()
               if v.state in (*PLANNED_STATES, *HELD_STATES) and v.max_vcpus > 0 and v.max_memory_mib > 0]
        records = self.store.latest_forecasts(step_start - MAX_FORECAST_AGE_STEPS * self.config.step_s,
                                              step_start + self.config.step_s)
        forecasts = {(r.host, r.uuid, r.metric): f for r in records
                     if (f := self.fresh_forecast(r, step_start)) is not None}
        samples = self.store.latest_samples()
        peaks = self.store.rollup_peaks("memory_used_mib", now - self.config.memory_peak_hours * 3600, now)
        hosts_of = Counter(v.uuid for v in vms)
        snapshots, names, with_forecast = [], {}, 0
        for vm in vms:
            if hosts_of[vm.uuid] > 1:
                log.warning("VM %s (%s) is in the inventory of several hosts (migrating?): not planned this run",
                            vm.name, vm.uuid)
                continue
            snap = self.vm_snapshot(vm, forecasts.get((vm.host, vm.uuid, CPU_METRIC)),
                                    forecasts.get((vm.host, vm.uuid, MEMORY_METRIC)), samples.get((vm.host, vm.uuid)),
                                    now, peaks.get((vm.host, vm.uuid)))
            if vm.state not in PLANNED_STATES:
                snap = dataclasses.replace(snap, opted_in=False, cpu=None, memory=None)
            snapshots.append(snap)
            names[(vm.host, vm.uuid)] = vm.name
            with_forecast += snap.cpu is not None or snap.memory is not None
        snapshot = Snapshot(step, tuple(snapshots), self.host_snapshots(hosts), self.quotas(), memory,
                            resize_tokens or {})
        return snapshot, names, with_forecast

    def fresh_forecast(self, record: ForecastRecord, step_start: float) -> Forecast | None:
        """The part of a stored forecast from ``step_start`` on (None when nothing is left)."""
        if record.step_s != self.config.step_s or len(record.quantiles) < 2 or not record.values:
            return None
        offset = max(int(round((step_start - record.origin) / record.step_s)), 0)
        values = np.asarray(record.values, dtype=np.float64)[offset:]
        if not len(values) or not np.isfinite(values).all():
            return None
        return Forecast(tuple(record.quantiles), values)

    def vm_snapshot(self, vm: VmRecord, cpu: Forecast | None, memory: Forecast | None, sample: SampleRow | None,
                    now: float, memory_peak: float | None = None) -> VmSnapshot:
        meta = vm.metadata
        tier = meta.get(TIER_KEY, "").strip()
        if tier and tier not in self.config.tiers and tier not in self._warned_tiers:
            self._warned_tiers.add(tier)
            log.warning("VM %s names tier %r, which is not configured: planned as %s (known: %s)", vm.name, tier,
                        self.config.default_tier, ", ".join(sorted(self.config.tiers)))
        cores = float(vm.vcpus) if vm.cpu_quota_cores is None else min(vm.cpu_quota_cores, float(vm.vcpus))
        max_age = MAX_FORECAST_AGE_STEPS * self.config.step_s
        used = sample.memory_used_mib if sample is not None and now - sample.ts <= max_age else None
        return VmSnapshot(
            uuid=vm.uuid, host=vm.host, name=vm.name, current=Allocation(vm.vcpus, cores, float(vm.memory_mib)),
            max_vcpus=vm.max_vcpus, max_memory_mib=float(vm.max_memory_mib), floor_cores=self.config.cpu_floor_cores,
            floor_memory_mib=self.config.memory_floor_mib, memory_used_mib=used, memory_peak_mib=memory_peak, tier=tier,
            customer=meta.get(CUSTOMER_KEY, "").strip(), segment=meta.get(SEGMENT_KEY, "").strip(),
            opted_in=meta.get(OPT_IN_KEY, "").strip().lower() not in OPT_OUT_VALUES, cpu=cpu, memory=memory)

    def host_snapshots(self, hosts: Sequence[HostRecord]) -> dict[str, HostSnapshot]:
        s = self.settings
        return {h.id: HostSnapshot(h.id, h.cpus, float(h.memory_mib), s.cpu_overcommit, s.memory_overcommit,
                                   s.reserved_cores, s.reserved_memory_mib) for h in hosts}

    def quotas(self) -> dict[str, CustomerQuota]:
        return {name: CustomerQuota(name, q.max_cores or None, q.max_memory_mib or None)
                for name, q in self.settings.quotas.items()}

    def describe_unmet(self, result: Plan, names: dict[tuple[str, str], str]) -> tuple[UnmetDemand, ...]:
        """The plan's unmet demand, one entry per VM (a VM short of CPU and memory is one entry)."""
        merged: dict[tuple[str, str], UnmetDemand] = {}
        for u in result.unmet:
            key = (u.host, u.vm)
            old = merged.get(key)
            if old is None:
                merged[key] = UnmetDemand(u.host, u.vm, names.get(key, u.vm), u.cpu_cores, u.memory_mib, u.reason)
            else:
                merged[key] = UnmetDemand(u.host, u.vm, old.vm, old.cpu_cores + u.cpu_cores,
                                          old.memory_mib + u.memory_mib, f"{old.reason}; {u.reason}")
        return tuple(merged.values())

    def report(self, run: PlanRun) -> None:
        """One log line per action and one for the run; metrics (not for dry runs)."""
        level = logging.DEBUG if run.dry_run else logging.INFO
        what = "dry run" if run.dry_run else run.mode
        for a in run.plan.actions:
            p, t = a.previous, a.target
            # A vetoed action is usually proposed again each run while its forecast holds: debug only.
            log.log(logging.DEBUG if a.vetoed else level, "plan (%s) %s %s on %s: %d vCPU %.3g cores %.0f MiB -> %d vCPU %.3g cores %.0f MiB%s: %s",
                    what, a.kind, run.name(a), a.host, p.vcpus, p.cpu_cores, p.memory_mib, t.vcpus, t.cpu_cores,
                    t.memory_mib, " (vetoed)" if a.vetoed else "", a.reason)
        for u in run.new_unmet:
            log.warning("unmet demand: %s on %s: %s", u.vm, u.host, u.reason)
        vetoed = sum(1 for a in run.plan.actions if a.vetoed)
        log.log(level, "plan (%s) of %d VMs (%d with forecasts): %d action(s), %d vetoed, %d VM(s) with unmet "
                "demand, %.4f per hour, %.2f s", what, run.vms, run.forecast_vms, len(run.plan.actions) - vetoed,
                vetoed, len(run.unmet), run.cost_per_hour, run.seconds)
        if run.dry_run:
            return
        m = self.metrics
        m.planner_cost_per_hour.set(run.cost_per_hour)
        m.planner_seconds.observe(run.seconds)
        if run.repeat:
            return
        for a in run.plan.actions:
            if a.vetoed:
                m.planner_vetoed.labels(a.kind, a.held_by).inc()
            else:
                m.planner_actions.labels(a.kind, run.mode).inc()
        if run.new_unmet:
            m.planner_unmet.inc(len(run.new_unmet))

    # -- the enforce step (event loop only) ---------------------------------------------------
    def commands(self, run: PlanRun) -> list[Command]:
        """The commands of a run: one per applied action in enforce mode; none in observe mode or
        for a dry run. Ids are ``plan-<step>-<uuid>``: the same for a repeated run of the step."""
        if run.dry_run or run.mode != "enforce":
            return []
        step_s = self.config.step_s
        out = []
        for a in run.plan.applied():
            kind = command_kind(a)
            out.append(Command(id=f"plan-{run.step}-{a.vm}", host=a.host, kind=kind, issued_at=run.at,
                               deadline=run.at + self.command_timeout_s, vm=run.name(a), target=target_shape(a),
                               reason=f"planner {a.kind}: {a.reason}",
                               demand_at=(run.step + 1) * step_s if kind == "presculpt" else 0.0))
        return out

    def enforce(self, run: PlanRun) -> list[PendingCommand]:
        """Send the run's commands (enforce mode); a command already sent is not sent again.
        Returns the commands submitted now. Call on the event loop (the dispatcher is loop-only)."""
        sent = []
        for command in self.commands(run):
            if self.dispatcher.find(command.id) is not None:
                continue
            try:
                sent.append(self.submit(command))
            except DispatchRejected as err:
                log.warning("planner command %s for %s not sent: %s", command.id, command.vm, err)
        if sent:
            log.info("planner sent %d command(s)", len(sent))
        return sent
