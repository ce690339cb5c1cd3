"""``presculpt replay``: every policy on one trace, scored the same way.

:func:`run_replay` loads the trace, runs each policy asked for (the baselines take seconds; the
``presculpt`` policy trains and retrains the forecaster causally and runs the planner at every
step) and returns ``{"policies": {NAME: {"cpu": scores, "memory": scores}}, ...}`` with the scores
of :mod:`presculpt.coordinator.replay.score` as fractions.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from presculpt.coordinator.planner.model import PlannerConfig
from presculpt.coordinator.replay import baselines
from presculpt.coordinator.replay.score import score
from presculpt.coordinator.replay.trace import (
    CPU_FLOOR_CORES,
    DAY_STEPS,
    MEMORY_FLOOR_MIB,
    STEP_S,
    ReplayTrace,
    load_replay_trace,
)
from presculpt.errors import UserError

log = logging.getLogger(__name__)

POLICIES = ("presculpt", "static", "reactive", "vpa", "autopilot")
# hindsight-DURATION: the bound that sees DURATION ahead (baselines.hindsight); named, never in ``all``
HINDSIGHT = re.compile(r"hindsight-(\d+)([mh])")


def parse_policies(text: str) -> list[str]:
    """``all`` or a comma-separated list of policy names (and hindsight bounds)."""
    if text.strip() == "all":
        return list(POLICIES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES and not HINDSIGHT.fullmatch(n)]
    if unknown or not names:
        raise UserError(f"unknown policy {unknown[0] if unknown else text!r}: choose from "
                        f"{', '.join(POLICIES)} or all (or a bound such as hindsight-30m)")
    for name in names:
        hindsight_steps(name)  # checks the window
    return list(dict.fromkeys(names))


def hindsight_steps(name: str) -> int | None:
    """The steps a ``hindsight-DURATION`` bound sees (None for a policy)."""
    match = HINDSIGHT.fullmatch(name)
    if match is None:
        return None
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 3600)
    if seconds < STEP_S or seconds % STEP_S:
        raise UserError(f"{name}: the window must be a whole number of {STEP_S // 60}-minute steps, at least one")
    return seconds // STEP_S


def baseline_allocations(name: str, trace: ReplayTrace) -> tuple[np.ndarray, np.ndarray]:
    """(cpu, memory) allocations of a reference policy, unclamped."""
    mem_max = np.nan_to_num(trace.max_mem_mib, nan=MEMORY_FLOOR_MIB)
    if name == "static":
        return baselines.static(trace.cpu, trace.max_vcpus), baselines.static(trace.memory, mem_max)
    if name == "reactive":
        return (baselines.reactive(trace.cpu, trace.max_vcpus, CPU_FLOOR_CORES),
                baselines.reactive(trace.memory, mem_max, MEMORY_FLOOR_MIB))
    if name == "vpa":
        return baselines.vpa_cpu(trace.cpu, trace.max_vcpus), baselines.vpa_memory(trace.memory, mem_max, trace.first)
    if name == "autopilot":
        return baselines.autopilot_cpu(trace.cpu, trace.max_vcpus), baselines.autopilot_memory(trace.memory, mem_max)
    steps = hindsight_steps(name)
    if steps is not None:
        return baselines.hindsight(trace.cpu, steps), baselines.hindsight(trace.memory, steps)
    raise UserError(f"unknown policy {name!r}")


def run_replay(trace_dir: str | Path, policies: Sequence[str] = POLICIES, *, warmup_days: float = 7.0,
               max_days: float | None = None, planner: PlannerConfig | None = None,
               forecast_config: Any = None, initial_model: str | Path | None = None,
               plot: str | Path | None = None, progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    started = time.monotonic()
    trace = load_replay_trace(trace_dir, warmup_days=warmup_days, max_days=max_days)
    scored = trace.scored()
    if not scored.any():
        raise UserError(f"{trace_dir}: no VM has data after its first {warmup_days:g} days of warm-up to score")
    memory_rows = trace.has_memory()
    progress(f"{len(trace.vm_ids)} VMs over {trace.steps / DAY_STEPS:.1f} days "
             f"({int(memory_rows.sum())} with memory); scoring after each VM's first {warmup_days:g} days")
    result: dict[str, Any] = {"trace": str(trace_dir), "vms": len(trace.vm_ids), "days": trace.steps / DAY_STEPS,
                              "warmup_days": warmup_days, "step_s": STEP_S, "policies": {}, "seconds": {}}
    allocations: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in policies:
        t0 = time.monotonic()
        if name == "presculpt":
            cpu, mem, details = _run_presculpt(trace, planner, forecast_config, initial_model, progress)
            result["presculpt"] = details
        else:
            cpu, mem = baseline_allocations(name, trace)
            cpu = np.clip(cpu, CPU_FLOOR_CORES, trace.max_vcpus[:, None])
            mem = np.clip(mem, MEMORY_FLOOR_MIB, trace.max_mem_mib[:, None])
        allocations[name] = (cpu, mem)
        entry = {"cpu": score(trace.cpu, cpu, scored)}
        if memory_rows.any():
            entry["memory"] = score(trace.memory[memory_rows], mem[memory_rows], scored[memory_rows])
        result["policies"][name] = entry
        result["seconds"][name] = round(time.monotonic() - t0, 1)
        progress(f"{name}: CPU violation {entry['cpu']['violation']:.2%}, slack {entry['cpu']['slack']:.1%} "
                 f"({result['seconds'][name]:.0f} s)")
    above = scored & (trace.cpu > trace.max_vcpus[:, None])
    result["cpu_demand_above_maximum"] = float(above.sum() / scored.sum())
    result["total_seconds"] = round(time.monotonic() - started, 1)
    if plot:
        draw(trace, allocations, plot)
    return result


def _run_presculpt(trace: ReplayTrace, planner: PlannerConfig | None, forecast_config: Any,
                   initial_model: str | Path | None, progress: Callable[[str], None]
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    # torch is imported only for this policy
    from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster
    from presculpt.coordinator.replay.forecasts import CausalForecasts, ReplayForecastConfig
    from presculpt.coordinator.replay.presculpt import run_presculpt

    model = None
    if initial_model:
        try:
            model = LstmForecaster.load(initial_model)
        except (OSError, ValueError) as err:
            raise UserError(f"--model {initial_model}: {err}") from None
    forecasts = CausalForecasts(trace, forecast_config or ReplayForecastConfig(), model, progress)
    cpu, mem, kinds = run_presculpt(trace, forecasts, planner or PlannerConfig(mode="enforce"), progress)
    details = {"actions": dict(sorted(kinds.items())), "trainings": forecasts.trainings,
               "train_seconds": round(forecasts.train_seconds, 1)}
    return cpu, mem, details


def draw(trace: ReplayTrace, allocations: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
         count: int = 4) -> None:
    """CPU demand against each policy's allocation over two scored days, for the VMs with the most demand."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = trace.scored()
    totals = np.where(scored, trace.cpu, 0.0).sum(axis=1)
    rows = [int(i) for i in np.argsort(-totals)[:count] if totals[i] > 0]
    fig, axes = plt.subplots(len(rows) or 1, 1, figsize=(11, 2.6 * max(1, len(rows))), squeeze=False)
    for ax, i in zip(axes[:, 0], rows):
        steps = np.flatnonzero(scored[i])
        window = steps[-2 * DAY_STEPS:]
        hours = (window - window[0]) * STEP_S / 3600
        ax.plot(hours, trace.cpu[i, window], color="black", lw=0.8, label="demand")
        for name, (cpu, _) in allocations.items():
            ax.step(hours, cpu[i, window], where="post", lw=0.9, label=name)
        ax.set_title(f"{trace.vm_ids[i]} (max {trace.max_vcpus[i]:g} vCPUs): CPU demand and allocation", fontsize=9)
        ax.set_ylabel("cores")
    axes[-1, 0].set_xlabel("hours")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
