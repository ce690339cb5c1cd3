"""What the demo replays: which trace VMs drive the guests, over which window, at what scale.

Pure: the trace reader, numpy and load specs; no libvirt, no coordinator.

- **Window.** ``origin`` is ``start_days`` after the trace's first midnight (UTC); the
  window is the ``steps`` steps that follow. Everything before ``origin`` is history: the forecaster
  trains on it and the coordinator's store is seeded with it, so that the first forecast already
  knows each VM's last week.
- **Which VMs.** Unless named, the VMs with the most demand variation in the window that also
  repeats the same hours a day earlier (standard deviation times the correlation with the day
  before): a VM that never moves, or moves at random, shows little of forecasting. Only VMs with
  memory data, the history the forecaster needs, and a mean demand (at the guest's scale) of at most
  ``host_cpus / (guests + 1)`` cores qualify, so that the guests together leave the host some room.
- **Scale.** A trace VM's CPU is mapped by its share of its own vCPUs onto the guest's maximum
  vCPUs (``cores / max_vcpus * guest max vCPUs``), its memory by its share of its own memory onto
  the guest's memory budget (half the guest's maximum by default: the guest's kernel and
  initramfs use about 100 MiB of their own). This is :func:`presculpt.lab.loadspec.trace_load`'s
  mapping, used for the load and for the seeded history alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from presculpt.errors import UserError
from presculpt.lab.loadspec import LoadSpec, trace_load
from presculpt.lab.trace import GRID_S, VmTrace

DEFAULT_START_DAYS = 14.25  # two weeks of history; 06:00 UTC, the start of a European working day
HISTORY_DAYS = 8.0  # seeded into the store: the forecaster reads a week and a day (features.LOOKBACK)
# What a lab guest's kernel, initramfs and guestd use of their own (measured 94-104 MiB). The guest
# reports its used memory, this plus what its trace VM asks it to hold; the forecaster trains on
# series of that shape (each guest's own figure is measured when the demo seeds the store).
GUEST_OWN_MEMORY_MIB = 100.0


@dataclass(frozen=True)
class GuestScale:
    """The size of the lab guests the trace VMs are mapped onto (vCPUs, MiB)."""

    vcpus: int = 1
    max_vcpus: int = 4
    memory_mib: int = 512
    max_memory_mib: int = 1024
    memory_budget_mib: int = 512  # a trace VM using all of its memory holds this much in the guest

    def describe(self) -> str:
        return (f"CPU: share of the VM's vCPUs x {self.max_vcpus} guest vCPUs; memory: share of the VM's "
                f"memory x {self.memory_budget_mib} MiB")


@dataclass(frozen=True, eq=False)
class DemoVm:
    """One trace VM at the guest's scale: ``cpu_cores`` and ``mem_mib`` (what guestd holds) on the
    trace grid ``ts``, from the history's start to the window's end."""

    vm_id: str
    max_vcpus: int
    max_mem_mib: float | None
    ts: np.ndarray  # int64 Unix seconds
    cpu_cores: np.ndarray
    mem_mib: np.ndarray
    load: LoadSpec  # the window, as the guest generates it

    def index(self, ts: float) -> int:
        return int(np.searchsorted(self.ts, ts))


@dataclass(frozen=True)
class Scenario:
    trace_dir: Path
    origin: float  # Unix seconds: the start of the replayed window (the first step)
    steps: int  # steps in the window
    step_seconds: float  # wall seconds per 5-minute step
    scale: GuestScale
    vms: tuple[DemoVm, ...]

    @property
    def speedup(self) -> float:
        """Trace seconds per wall second."""
        return GRID_S / self.step_seconds

    @property
    def end(self) -> float:
        return self.origin + self.steps * GRID_S

    def step_start(self, step: int) -> float:
        return self.origin + step * GRID_S

    def demand(self, vm: int) -> tuple[np.ndarray, np.ndarray]:
        """The window's demand of guest ``vm``: (cores, MiB held) per step, as its load spec says."""
        steps = self.vms[vm].load.steps[: self.steps]
        return (np.array([s.cpu_cores for s in steps]), np.array([float(s.mem_mib) for s in steps]))

    def history(self, vm: int, days: float = HISTORY_DAYS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ts, cores, MiB held) of the ``days`` before the window, at the guest's scale."""
        v = self.vms[vm]
        end = v.index(self.origin)
        start = max(0, end - int(round(days * 86400 / GRID_S)))
        return v.ts[start:end], v.cpu_cores[start:end], v.mem_mib[start:end]


def guest_arrays(trace: VmTrace, scale: GuestScale) -> tuple[np.ndarray, np.ndarray]:
    """The trace VM's CPU (cores) and memory (MiB held; 0 where unknown) at the guest's scale, the
    mapping of :func:`presculpt.lab.loadspec.trace_load`."""
    cores = np.clip(np.asarray(trace.cpu_cores) * scale.max_vcpus / max(1, trace.max_vcpus), 0.0, scale.max_vcpus)
    mem = np.asarray(trace.mem_mib, dtype=np.float64)
    share = scale.memory_budget_mib / trace.max_mem_mib if trace.max_mem_mib else 0.0
    return cores, np.clip(np.nan_to_num(mem * share, nan=0.0), 0.0, scale.memory_budget_mib)


def window_origin(traces: dict[str, VmTrace], start_days: float) -> float:
    """``start_days`` after the first midnight (UTC) of the trace, on its grid: the fraction of a
    day is the time of day."""
    first = min(int(t.ts[0]) for t in traces.values() if len(t))
    midnight = math.ceil(first / 86400) * 86400
    return float(math.floor((midnight + start_days * 86400) / GRID_S) * GRID_S)


def guest_series(trace: VmTrace, scale: GuestScale, start: float, end: float) -> tuple[np.ndarray, LoadSpec]:
    """The trace VM's samples in ``[start, end)`` at the guest's scale, as a load spec (its steps hold
    the values) and their timestamps. The trace must cover the range."""
    ts = np.asarray(trace.ts, dtype=np.int64)
    first = int(np.searchsorted(ts, start))
    last = int(np.searchsorted(ts, end))
    spec = trace_load(trace, seconds_per_step=1.0, guest_max_vcpus=scale.max_vcpus,
                      guest_mem_budget_mib=scale.memory_budget_mib, start_offset_s=float(ts[first] - ts[0]),
                      max_steps=last - first)
    return ts[first:last], spec


def covers(trace: VmTrace, start: float, end: float) -> bool:
    """True when the trace has every grid slot of ``[start, end)`` (gaps are filled when read)."""
    return len(trace) > 0 and trace.ts[0] <= start and trace.ts[-1] >= end - GRID_S


def selection_score(window: np.ndarray, day_before: np.ndarray) -> float:
    """Demand variation that repeats: the window's standard deviation times its correlation with the
    same hours a day earlier (0 when it does not repeat, or does not move)."""
    if window.std() < 1e-9 or day_before.std() < 1e-9:
        return 0.0
    correlation = float(np.corrcoef(window, day_before)[0, 1])
    return float(window.std()) * max(correlation, 0.0)


def pick_vms(traces: dict[str, VmTrace], origin: float, steps: int, count: int, scale: GuestScale,
             host_cpus: int, history_days: float = HISTORY_DAYS) -> list[str]:
    """The ``count`` VMs that show the most (see the module docstring), best first."""
    start, end = origin - max(history_days, 1.0) * 86400, origin + steps * GRID_S
    most_mean = host_cpus / (count + 1)
    ranked = []
    for vm_id, trace in traces.items():
        if not trace.has_memory or not covers(trace, start, end):
            continue
        ts = np.asarray(trace.ts)
        i = int(np.searchsorted(ts, origin))
        cores, _ = guest_arrays(trace, scale)
        window, day_before = cores[i:i + steps], cores[i - 288:i - 288 + steps]
        if window.mean() > most_mean:
            continue
        ranked.append((-selection_score(window, day_before), vm_id))
    if len(ranked) < count:
        raise UserError(f"only {len(ranked)} VM(s) of the trace have memory data, {history_days:g} days of history "
                        f"before the window and the window itself; ask for fewer guests or another --start-days")
    return [vm_id for _, vm_id in sorted(ranked)[:count]]


def build_scenario(trace_dir: Path, traces: dict[str, VmTrace], vm_ids: list[str], origin: float, steps: int,
                   step_seconds: float, scale: GuestScale = GuestScale(),
                   history_days: float = HISTORY_DAYS) -> Scenario:
    """The scenario of ``vm_ids`` (each drives one guest, in order) over ``steps`` steps from ``origin``.

    Each guest's load is the window plus a few steps to spare, held at its last step, and waits
    for its start signal (the demo starts every guest's load at one instant)."""
    history_start = origin - history_days * 86400
    end = origin + steps * GRID_S
    vms = []
    for vm_id in vm_ids:
        trace = traces.get(vm_id)
        if trace is None:
            raise UserError(f"VM {vm_id!r} is not in the trace {trace_dir}")
        if not covers(trace, history_start, end):
            raise UserError(f"VM {vm_id!r} does not cover the window and the {history_days:g} days before it "
                            f"({_utc(history_start)} to {_utc(end)})")
        ts, spec = guest_series(trace, scale, history_start, end)
        window = spec.steps[len(ts) - steps:]
        spare = window + (window[-1],) * 3
        load = LoadSpec(spare, seconds_per_step=step_seconds, label=spec.label.replace(
            f"@{int(ts[0])}", f"@{int(origin)}"), start_on_nmi=True)
        vms.append(DemoVm(vm_id, trace.max_vcpus, trace.max_mem_mib, ts,
                          np.array([s.cpu_cores for s in spec.steps]), np.array([float(s.mem_mib) for s in spec.steps]),
                          load))
    return Scenario(trace_dir, origin, steps, step_seconds, scale, tuple(vms))


def _utc(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
