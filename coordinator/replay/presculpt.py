"""The ``presculpt`` policy of a replay: the coordinator's planner, step by step, against a
simulated hypervisor that applies every action at once.

At step ``t`` the planner sees each VM's forecast made from data before ``t``, its allocation and
what the guest used at ``t - 1``, exactly the frozen snapshot it gets in production; the targets
of its actions are in force for the whole of step ``t``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import numpy as np

from presculpt.coordinator.planner.model import (
    Allocation,
    Forecast,
    PlannerConfig,
    Snapshot,
    VmMemory,
    VmSnapshot,
)
from presculpt.coordinator.planner.planner import plan
from presculpt.coordinator.replay.forecasts import CausalForecasts
from presculpt.coordinator.replay.trace import (
    CPU_FLOOR_CORES,
    DAY_STEPS,
    MEMORY_FLOOR_MIB,
    STEP_S,
    ReplayTrace,
    trailing_peak,
)

log = logging.getLogger(__name__)


def run_presculpt(trace: ReplayTrace, forecasts: CausalForecasts, config: PlannerConfig = PlannerConfig(),
                  progress: Callable[[str], None] = log.info) -> tuple[np.ndarray, np.ndarray, Counter]:
    """(cpu allocation, memory allocation, action counts by kind), allocations (N, T)."""
    n, steps = trace.cpu.shape
    cpu_alloc = np.full((n, steps), np.nan)
    mem_alloc = np.full((n, steps), np.nan)
    has_memory = trace.has_memory()
    max_mem = np.where(has_memory, trace.max_mem_mib, 0.0)
    current = [Allocation(int(trace.max_vcpus[i]), float(trace.max_vcpus[i]), float(max_mem[i])) for i in range(n)]
    memory: dict[str, VmMemory] = {}
    tokens: dict[str, float] = {}  # the host's resize budget (PlannerConfig.host_resizes_per_vm_day)
    kinds: Counter = Counter()
    cpu_levels, mem_levels = forecasts.levels("cpu_cores"), forecasts.levels("memory_mib")
    # Each VM's peak use over the planner's window before each step (the memory_peak_factor floor).
    peaks = trailing_peak(trace.memory, max(1, round(config.memory_peak_hours * 3600 / STEP_S)))
    for start in range(0, steps, DAY_STEPS):
        stop = min(steps, start + DAY_STEPS)
        block = forecasts.block(start, stop)
        cpu_fc, mem_fc = block["cpu_cores"], block["memory_mib"]
        for t in range(start, stop):
            alive = np.flatnonzero((trace.first <= t) & (trace.last >= t))
            vms = []
            for i in alive:
                k = t - start
                cpu = cpu_fc[i, k]
                mem = mem_fc[i, k] if has_memory[i] else None
                used = trace.memory[i, t - 1] if has_memory[i] and t > trace.first[i] else None
                peak = peaks[i, t] if used is not None else None
                vms.append(VmSnapshot(
                    uuid=trace.vm_ids[i], host="replay", name=trace.vm_ids[i], current=current[i],
                    max_vcpus=int(trace.max_vcpus[i]), max_memory_mib=float(max_mem[i]),
                    floor_cores=CPU_FLOOR_CORES, floor_memory_mib=MEMORY_FLOOR_MIB,
                    memory_used_mib=None if used is None or np.isnan(used) else float(used),
                    memory_peak_mib=None if peak is None or np.isnan(peak) else float(peak),
                    cpu=None if np.isnan(cpu[0, 0]) else Forecast(cpu_levels, cpu.astype(np.float64)),
                    memory=None if mem is None or np.isnan(mem[0, 0]) else Forecast(mem_levels, mem.astype(np.float64))))
            result = plan(Snapshot(t, tuple(vms), memory=memory, resize_tokens=tokens), config)
            memory, tokens = result.memory, result.resize_tokens
            index = {trace.vm_ids[i]: i for i in alive}
            for action in result.actions:
                if action.vetoed:  # by the cost model, or held back by a resize budget
                    kinds[f"vetoed {action.kind}" if action.held_by == "cost" else
                          f"held back ({action.held_by}) {action.kind}"] += 1
                    continue
                current[index[action.vm]] = action.target
                kinds[action.kind] += 1
            for i in alive:
                cpu_alloc[i, t] = current[i].cpu_cores
                if has_memory[i]:
                    mem_alloc[i, t] = current[i].memory_mib
        progress(f"presculpt: day {stop / DAY_STEPS:.0f} of {steps / DAY_STEPS:.0f} replayed")
    cpu_alloc = np.clip(cpu_alloc, CPU_FLOOR_CORES, trace.max_vcpus[:, None])
    mem_alloc = np.clip(mem_alloc, MEMORY_FLOOR_MIB, trace.max_mem_mib[:, None])
    return cpu_alloc, mem_alloc, kinds
