"""What the demo saw, step by step, and the figures it prints.

The :class:`Recorder` is fed from three sides: each guest's own reports (its console log),
libvirt's view of each guest's allocation, and the commands the coordinator sent with their
outcomes. At the end it folds them into one :class:`StepRecord` per guest and step, judges for
every applied command whether the guest itself then reported the new shape (:func:`judge_seen`),
and scores the run against static allocation (every guest at its maximum) over the same steps.

Figures (per guest and in total, over VM-steps):

- **violation**: the share of steps whose demand exceeded the allocation (CPU: the trace's cores
  against the vCPUs or the CPU cap; memory: what the guest uses plus what its trace asks to hold
  against its MemTotal);
- **slack**: the share of the allocation not used, ``sum(max(0, allocation - demand)) / sum(allocation)``;
- **actions**: commands the planner sent, and of them applied and seen inside the guest.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from presculpt.coordinator.model import Command, Event, ForecastRecord, Outcome
from presculpt.lab.console import Report, read_reports
from presculpt.lab.trace import GRID_S

CPU_TOLERANCE = 1e-3  # cores: demand this far above the allocation is not counted (rounding)
MEM_TOLERANCE_MIB = 1.0
MEMTOTAL_MATCH_MIB = 8.0  # a MemTotal this close to the expected one shows the balloon's new size
LOAD_WINDOW_S = 1.2  # guestd measures its load over the last second: a report this long after a change shows it
SEEN_REPORTS = 3  # periodic reports that may show a new CPU cap (the first may straddle the change)


@dataclass(frozen=True)
class AllocationSample:
    """libvirt's view of one guest at one moment."""

    wall: float  # time.monotonic()
    trace_ts: float
    vcpus: int
    cpu_cores: float  # the CPU cap, or the vCPUs when uncapped
    memory_mib: int


@dataclass
class ActionRecord:
    """One command the coordinator sent and what became of it."""

    command: Command
    sent_wall: float  # time.monotonic() when the coordinator sent it
    outcome: Outcome | None = None
    outcome_wall: float | None = None
    seen: bool | None = None
    seen_detail: str = ""
    seen_after_s: float | None = None

    @property
    def applied(self) -> bool:
        return self.outcome is not None and self.outcome.status == "APPLIED"

    @property
    def planner_kind(self) -> str:
        """The planner's action (presculpt, downgrade, reclaim...) from the command's reason."""
        m = re.match(r"planner (\w+):", self.command.reason)
        return m.group(1) if m else self.command.kind

    @property
    def reason(self) -> str:
        return re.sub(r"^planner \w+: ", "", self.command.reason)


@dataclass
class GuestTrack:
    """Everything recorded about one guest."""

    name: str
    vm_id: str
    uuid: str
    max_vcpus: int
    max_memory_mib: int
    gap_mib: float = 0.0  # libvirt's memory minus the guest's MemTotal (what its kernel keeps)
    base_mib: float = 0.0  # memory the guest uses of its own (kernel, initramfs, guestd)
    offset: int = 0  # console log read up to here
    reports: list[tuple[float, Report]] = field(default_factory=list)  # (wall seen, report)
    allocations: list[AllocationSample] = field(default_factory=list)

    def latest(self) -> Report | None:
        return self.reports[-1][1] if self.reports else None


@dataclass(frozen=True)
class StepRecord:
    """One guest during one step of the window."""

    step: int
    ts: float  # trace time of the step's start
    demand_cores: float
    alloc_cores: float | None  # mean over the step (None: no sample)
    load_cores: float | None  # what the guest measured itself
    demand_mem_mib: float  # base + what the trace asks the guest to hold
    alloc_mem_mib: float | None  # MemTotal the allocation gives (libvirt's memory minus the gap)
    used_mem_mib: float | None  # MemTotal - MemAvailable as the guest reported it
    mem_short: bool  # the guest reported holding less than its trace asked for
    cpu_forecast: tuple[float, ...] | None  # the forecast of this step, per quantile (lead 0 if any)
    mem_forecast: tuple[float, ...] | None


class Recorder:
    """Collects the run. ``on_event`` is called on the coordinator's loop; the rest on the demo's
    main thread."""

    def __init__(self, tracks: Sequence[GuestTrack], console_path, hypervisor, clock, origin: float):
        self.tracks = list(tracks)
        self.console_path = console_path  # name -> Path
        self.hypervisor = hypervisor
        self.clock = clock
        self.origin = origin
        self._lock = threading.Lock()
        self._actions: dict[str, ActionRecord] = {}

    # -- feeding ------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """A command the coordinator sent, or an agent's outcome (on the coordinator's loop)."""
        now = time.monotonic()
        with self._lock:
            payload = event.payload
            if isinstance(payload, Command) and payload.vm:
                self._actions.setdefault(payload.id, ActionRecord(payload, now))
            elif isinstance(payload, Outcome) and payload.command_id in self._actions:
                record = self._actions[payload.command_id]
                if record.outcome is None:
                    record.outcome, record.outcome_wall = payload, now

    def actions(self) -> list[ActionRecord]:
        with self._lock:
            return sorted(self._actions.values(), key=lambda a: a.sent_wall)

    def read_consoles(self) -> None:
        """Take in every report the guests printed since the last call."""
        now = time.monotonic()
        for t in self.tracks:
            reports, t.offset = read_reports(self.console_path(t.name), t.offset)
            t.reports.extend((now, r) for r in reports if r.kind != "event")

    def sample_allocations(self) -> None:
        """libvirt's view of every guest now."""
        now, trace_ts = time.monotonic(), self.clock()
        for t in self.tracks:
            info = self.hypervisor.domain_info(t.name)
            cores = float(info.vcpus) if info.cpu_quota_cores is None else min(info.cpu_quota_cores, info.vcpus)
            t.allocations.append(AllocationSample(now, trace_ts, info.vcpus, cores, info.memory_mib))

    # -- folding ------------------------------------------------------------------------------
    def judge_actions(self, window_s: float) -> None:
        """Decide ``seen`` for every applied action: at once when the guest shows it, otherwise
        once ``window_s`` has passed since it was sent (0: now, with what there is)."""
        now = time.monotonic()
        by_name = {t.name: t for t in self.tracks}
        for a in self.actions():
            if not a.applied or a.seen is not None or a.seen_detail:
                continue
            track = by_name.get(a.command.vm)
            if track is None:
                continue
            after = [(w, r) for w, r in track.reports if w >= a.sent_wall]
            assert a.outcome is not None
            verdict = judge_seen(a.outcome.steps, after, a.sent_wall, track.gap_mib)
            if (verdict.seen is True and not verdict.pending) or not window_s or now - a.sent_wall >= window_s:
                a.seen, a.seen_detail, a.seen_after_s = verdict.seen, verdict.detail, verdict.after_s

    def steps(self, track: GuestTrack, demand_cores: np.ndarray, demand_mem: np.ndarray,
              forecasts: dict[str, list[ForecastRecord]], count: int) -> list[StepRecord]:
        """One record per step of the window that the run reached."""
        out = []
        for k in range(count):
            start = self.origin + k * GRID_S
            end = start + GRID_S
            allocs = [s for s in track.allocations if start <= s.trace_ts < end]
            if not allocs:
                continue
            reports = [r for _, r in track.reports if r.step == k and r.started]
            loads = [r.load_cores for r in reports if r.reason == "tick" and r.load_cores is not None]
            used = [r.mem_total_mib - r.mem_available_mib for r in reports
                    if r.mem_total_mib is not None and r.mem_available_mib is not None]
            held = [r for r in reports if r.mem_held_mib is not None and r.demand_mem_mib is not None]
            short = bool(held) and held[-1].mem_held_mib < held[-1].demand_mem_mib - MEM_TOLERANCE_MIB
            out.append(StepRecord(
                step=k, ts=start, demand_cores=float(demand_cores[k]),
                alloc_cores=float(np.mean([s.cpu_cores for s in allocs])), load_cores=_mean(loads),
                demand_mem_mib=track.base_mib + float(demand_mem[k]),
                alloc_mem_mib=float(np.mean([s.memory_mib for s in allocs])) - track.gap_mib,
                used_mem_mib=_mean(used), mem_short=short,
                cpu_forecast=forecast_at(forecasts.get("cpu_cores", []), start),
                mem_forecast=forecast_at(forecasts.get("memory_mib", []), start)))
        return out


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def forecast_at(records: Sequence[ForecastRecord], ts: float) -> tuple[float, ...] | None:
    """The quantiles forecast for the step starting at ``ts`` by the newest forecast made at or
    before it (the one the planner had)."""
    best = None
    for r in records:
        if r.origin <= ts + 1e-6 and (best is None or r.origin > best.origin):
            lead = int(round((ts - r.origin) / r.step_s))
            if lead < len(r.values):
                best = r
    if best is None:
        return None
    return tuple(best.values[int(round((ts - best.origin) / best.step_s))])


_STEP_PATTERNS = {
    "vcpus": re.compile(r"^vcpus (\d+)->(\d+)$"),
    "quota": re.compile(r"^cpu quota (\S+)->(\S+)$"),
    "memory": re.compile(r"^memory (\d+)->(\d+) MiB$"),
}


def parse_steps(steps: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """The agent's resize steps ("vcpus 1->2", "cpu quota none->0.5", "memory 512->400 MiB") as
    ``{"vcpus": (1, 2), "quota": (None, 0.5), "memory": (512, 400)}``."""
    out: dict[str, tuple[Any, Any]] = {}
    for step in steps:
        for key, pattern in _STEP_PATTERNS.items():
            m = pattern.match(step.strip())
            if not m:
                continue
            a, b = m.groups()
            if key == "quota":
                out[key] = (None if a == "none" else float(a), None if b == "none" else float(b))
            else:
                out[key] = (int(a), int(b))
    return out


@dataclass(frozen=True)
class Verdict:
    """Whether the guest showed a resize: ``seen`` None when nothing of it is observable inside;
    ``pending`` while a part still waits for the report that could show it."""

    seen: bool | None
    detail: str
    after_s: float | None = None  # seconds from the command to the last report that showed it
    pending: bool = False


def judge_seen(steps: Sequence[str], reports: Sequence[tuple[float, Report]], applied_wall: float,
               gap_mib: float) -> Verdict:
    """Did the guest itself report the shape a resize gave it? ``reports`` are the guest's reports
    from the resize on, with the wall time each was seen.

    - vCPUs: a report with that many CPUs online;
    - memory: a report whose MemTotal is the new balloon size less what the kernel keeps (``gap_mib``);
    - a new CPU cap: visible only through the guest's measured load, and only where a cap binds
      (the demand exceeds the old or the new one): a periodic report a full second after the
      change whose load is the demand capped at the new cap (within 0.1 core or 25%). A cap that
      binds neither before nor after is invisible inside the guest: not judged.

    """
    parsed = parse_steps(steps)
    verdicts: list[bool] = []
    details: list[str] = []
    latest = None
    pending = False

    def first(predicate) -> tuple[float, Report] | None:
        return next(((w, r) for w, r in reports if predicate(r)), None)

    vcpus = parsed.get("vcpus")
    if vcpus:
        hit = first(lambda r: r.online_cpus == vcpus[1])
        verdicts.append(hit is not None)
        details.append(f"{vcpus[1]} CPUs online" if hit else f"never {vcpus[1]} CPUs online")
        if hit:
            latest = max(latest or 0.0, hit[0] - applied_wall)
    memory = parsed.get("memory")
    if memory:
        expected = memory[1] - gap_mib
        hit = first(lambda r: r.mem_total_mib is not None and abs(r.mem_total_mib - expected) <= MEMTOTAL_MATCH_MIB)
        verdicts.append(hit is not None)
        details.append(f"MemTotal {hit[1].mem_total_mib:.0f} MiB" if hit else f"MemTotal never near {expected:.0f} MiB")
        if hit:
            latest = max(latest or 0.0, hit[0] - applied_wall)
    quota = parsed.get("quota")
    if quota:
        cpus = vcpus[1] if vcpus else None
        ticks = [(w, r) for w, r in reports if r.reason == "tick" and w >= applied_wall + LOAD_WINDOW_S
                 and r.load_cores is not None and r.demand_cores is not None][:SEEN_REPORTS]
        if ticks:
            cpus = cpus or ticks[0][1].online_cpus or 1
            old_cap = quota[0] if quota[0] is not None else float(vcpus[0] if vcpus else cpus)
            new_cap = quota[1] if quota[1] is not None else float(cpus)
            demand = ticks[0][1].demand_cores
            if demand <= min(old_cap, new_cap) + 0.05:
                details.append(f"cap {new_cap:g} not binding (demand {demand:.2f} cores): invisible inside")
            else:
                hit = None
                for w, r in ticks:
                    expected = min(r.demand_cores, new_cap, float(r.online_cpus or cpus))
                    if abs(r.load_cores - expected) <= max(0.1, 0.25 * expected):
                        hit = (w, r, expected)
                        break
                verdicts.append(hit is not None)
                if hit:
                    details.append(f"load {hit[1].load_cores:.2f} cores at the {new_cap:g}-core cap")
                    latest = max(latest or 0.0, hit[0] - applied_wall)
                else:
                    r = ticks[-1][1]
                    details.append(f"load {r.load_cores:.2f} cores, not the {new_cap:g}-core cap's "
                                   f"{min(r.demand_cores, new_cap):.2f}")
        else:
            pending = True
            details.append("no report a second after the new cap")
    if not verdicts:
        return Verdict(None, "; ".join(details) or "nothing observable", None, pending)
    seen = all(verdicts)
    return Verdict(seen, "; ".join(details), round(latest or 0.0, 2) if seen else None, pending)


# -- scores -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    steps: int
    violation: float | None  # share of steps with CPU demand above the allocation
    slack: float | None  # share of the CPU allocation not used
    memory_violation: float | None
    memory_slack: float | None
    cpu_core_steps: float  # allocation summed over the steps (cores x steps)
    memory_mib_steps: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


def score(demand_cores: np.ndarray, alloc_cores: np.ndarray, demand_mem: np.ndarray,
          alloc_mem: np.ndarray) -> Score:
    """Violation and slack of one allocation against one demand (arrays over VM-steps)."""
    n = len(demand_cores)
    if n == 0:
        return Score(0, None, None, None, None, 0.0, 0.0)
    cpu_short = demand_cores > alloc_cores + CPU_TOLERANCE
    mem_short = demand_mem > alloc_mem + MEM_TOLERANCE_MIB

    def slack(demand: np.ndarray, alloc: np.ndarray) -> float | None:
        total = float(alloc.sum())
        return float(np.maximum(alloc - demand, 0.0).sum() / total) if total > 0 else None

    return Score(n, float(cpu_short.mean()), slack(demand_cores, alloc_cores), float(mem_short.mean()),
                 slack(demand_mem, alloc_mem), float(alloc_cores.sum()), float(alloc_mem.sum()))


def scores(records: Sequence[StepRecord], max_vcpus: int, static_mem_mib: float) -> tuple[Score, Score]:
    """(presculpt, static) over the steps with an allocation; static holds every guest at its maximum."""
    rows = [r for r in records if r.alloc_cores is not None and r.alloc_mem_mib is not None]
    d_cpu = np.array([r.demand_cores for r in rows])
    d_mem = np.array([r.demand_mem_mib for r in rows])
    presculpt = score(d_cpu, np.array([r.alloc_cores for r in rows]), d_mem, np.array([r.alloc_mem_mib for r in rows]))
    static = score(d_cpu, np.full(len(rows), float(max_vcpus)), d_mem, np.full(len(rows), static_mem_mib))
    return presculpt, static
