"""A trace on one time grid: every VM's CPU and memory demand as rows of (N, T) matrices.

Column ``t`` is the slot ``[start + t*300, start + (t+1)*300)`` of the whole trace. A VM's row is NaN
before its first and after its last sample; gaps inside are forward-filled by the trace reader
(the format's rule), memory from the last known value.
Each VM's first ``warmup_days`` (from its own first sample) are warm-up: policies may learn from
them, they are not scored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from presculpt.errors import UserError
from presculpt.lab.trace import GRID_S, TraceError, load_trace

STEP_S = GRID_S
DAY_STEPS = 86400 // STEP_S
CPU_FLOOR_CORES = 0.1  # the smallest CPU allocation of any policy (the replay's definition)
MEMORY_FLOOR_MIB = 256.0


@dataclass(frozen=True, eq=False)
class ReplayTrace:
    """Demand matrices and per-VM limits. ``memory`` rows are all NaN where the trace has none."""

    vm_ids: tuple[str, ...]
    start_ts: int
    cpu: np.ndarray  # (N, T) cores
    memory: np.ndarray  # (N, T) MiB
    max_vcpus: np.ndarray  # (N,)
    max_mem_mib: np.ndarray  # (N,), NaN where unknown
    first: np.ndarray  # (N,) index of each VM's first slot
    last: np.ndarray  # (N,) index of each VM's last slot (inclusive)
    warmup_steps: int

    @property
    def steps(self) -> int:
        return self.cpu.shape[1]

    def alive(self) -> np.ndarray:
        """(N, T) True from a VM's first to its last slot."""
        t = np.arange(self.steps)
        return (t >= self.first[:, None]) & (t <= self.last[:, None])

    def scored(self) -> np.ndarray:
        """(N, T) True on the slots that count: alive and past the VM's warm-up."""
        t = np.arange(self.steps)
        return self.alive() & (t >= (self.first + self.warmup_steps)[:, None])

    def has_memory(self) -> np.ndarray:
        """(N,) True where the VM has a memory size and memory samples."""
        return ~np.isnan(self.max_mem_mib) & ~np.all(np.isnan(self.memory), axis=1)


def trailing_peak(values: np.ndarray, window: int) -> np.ndarray:
    """``[i, t]``: the peak of ``values[i, t - window:t]`` (NaN where all of it is unknown)."""
    return _window_peak(values, window, ahead=False)


def peak_ahead(values: np.ndarray, window: int) -> np.ndarray:
    """``[i, t]``: the peak of ``values[i, t:t + window]`` (it reads the future: for bounds only)."""
    return _window_peak(values, window, ahead=True)


def _window_peak(values: np.ndarray, window: int, ahead: bool) -> np.ndarray:
    n, steps = values.shape
    pad = np.full((n, window - 1 if ahead else window), np.nan)
    padded = np.concatenate([values, pad] if ahead else [pad, values], axis=1)
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=1)[:, :steps]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window (outside the VM's samples)
        return np.nanmax(view, axis=2)


def load_replay_trace(trace_dir: str | Path, warmup_days: float = 7.0, vm_ids: list[str] | None = None,
                      max_days: float | None = None) -> ReplayTrace:
    """Read a canonical trace onto one grid (``max_days`` keeps only the first days of the trace)."""
    try:
        traces = load_trace(trace_dir, vm_ids)
    except TraceError as err:
        raise UserError(str(err)) from None
    traces = {k: v for k, v in traces.items() if len(v)}
    if not traces:
        raise UserError(f"{trace_dir}: the trace holds no samples")
    start = min(int(v.ts[0]) for v in traces.values())
    end = max(int(v.ts[-1]) for v in traces.values())
    steps = (end - start) // STEP_S + 1
    if max_days is not None:
        steps = min(steps, int(max_days * DAY_STEPS))
    n = len(traces)
    cpu = np.full((n, steps), np.nan)
    memory = np.full((n, steps), np.nan)
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    for i, t in enumerate(traces.values()):
        ts = np.asarray(t.ts, dtype=np.int64)
        slots = (ts - start) // STEP_S
        keep = slots < steps
        slots = slots[keep]
        if not len(slots):
            first[i], last[i] = steps, steps - 1
            continue
        cpu[i, slots] = np.asarray(t.cpu_cores)[keep]
        memory[i, slots] = np.asarray(t.mem_mib)[keep]
        first[i], last[i] = slots[0], slots[-1]
    max_mem = np.array([np.nan if v.max_mem_mib is None else float(v.max_mem_mib) for v in traces.values()])
    return ReplayTrace(tuple(traces), start, cpu, memory, np.array([float(v.max_vcpus) for v in traces.values()]),
                       max_mem, first, last, int(round(warmup_days * DAY_STEPS)))

