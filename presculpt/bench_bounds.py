"""``presculpt bench peak-bound``: how far rules of today's kind (a trailing peak times a factor)
could go on a trace if each VM had the window and factor that suit it best, chosen with hindsight.

For CPU and memory separately it prints the least slack such per-VM rules reach within a violation
budget (memory: the issue's 0.05%; CPU: autopilot's rate on the same trace, unless given), the
reference autoscalers' figures on the same steps, and the frontier of violation against slack. See
:mod:`presculpt.coordinator.replay.frontier`. Seconds, no forecaster.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from presculpt.clitools import format_table, positive_float, to_jsonable
from presculpt.errors import UserError

REFERENCES = ("vpa", "autopilot")


def fraction(text: str) -> float:
    """A share as a fraction (0.0005) or a percent (0.05%), in (0, 1)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction (0.0005) or a percent (0.05%), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a share above 0 and below 100%, got {text}")
    return value


def budget(text: str) -> float | str:
    """A share (see :func:`fraction`), or "autopilot": autopilot's violation rate on the trace."""
    if text == "autopilot":
        return text
    try:
        float(text[:-1] if text.endswith("%") else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction (0.0005), a percent (0.05%) or autopilot, "
                                         f"got {text!r}") from None
    return fraction(text)


def add_peak_bound_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "peak-bound", help="the best trailing-peak rule per VM, chosen with hindsight (a bound)",
        description="For every VM, every rule 'factor x the peak of the last WINDOW' (windows 1 h to "
                    "7 days, factors 1 to 6, or the maximum) is scored on the trace as the replay scores "
                    "policies; each VM then gets the rule that suits it best over the whole trace, at the "
                    "fleet's violation budget. No choice of one such rule per VM does better at that "
                    "violation rate; it is a bound, not a policy.")
    p.add_argument("--trace", required=True, metavar="DIR", help="a trace directory (vms.csv and usage.csv.gz)")
    p.add_argument("--memory-violation", type=fraction, default=0.0005, metavar="SHARE",
                   help="memory's violation budget, as 0.0005 or 0.05%% (default 0.05%%)")
    p.add_argument("--cpu-violation", type=budget, default="autopilot", metavar="SHARE",
                   help="CPU's violation budget, or 'autopilot' (default): autopilot's rate on the trace")
    p.add_argument("--warmup-days", type=positive_float, default=7.0, metavar="DAYS",
                   help="each VM's first days, not scored (default 7)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.set_defaults(func=cmd_peak_bound, plot=None)


def peak_bounds(trace_dir: str | Path, memory_budget: float = 0.0005, cpu_budget: float | str = "autopilot",
                warmup_days: float = 7.0) -> dict[str, Any]:
    """Per metric: the budget, the best per-VM rules within it, the references and the frontier."""
    from presculpt.coordinator.replay.run import baseline_allocations
    from presculpt.coordinator.replay.trace import CPU_FLOOR_CORES, MEMORY_FLOOR_MIB, load_replay_trace

    trace = load_replay_trace(trace_dir, warmup_days=warmup_days)
    scored = trace.scored()
    if not scored.any():
        raise UserError(f"{trace_dir}: no VM has data after its first {warmup_days:g} days of warm-up to score")
    references = {name: baseline_allocations(name, trace) for name in REFERENCES}
    out: dict[str, Any] = {"trace": str(trace_dir), "vms": len(trace.vm_ids), "metrics": {}}
    out["metrics"]["cpu"] = _metric_bound("cores", trace.cpu, trace.max_vcpus, CPU_FLOOR_CORES, scored,
                                          {name: cpu for name, (cpu, _) in references.items()}, cpu_budget)
    rows = trace.has_memory()
    if rows.any():
        out["metrics"]["memory"] = _metric_bound(
            "MiB", trace.memory[rows], trace.max_mem_mib[rows], MEMORY_FLOOR_MIB, scored[rows],
            {name: memory[rows] for name, (_, memory) in references.items()}, memory_budget)
    return out


def _metric_bound(unit: str, demand: np.ndarray, maximum: np.ndarray, floor: float, scored: np.ndarray,
                  references: dict[str, np.ndarray], share: float | str) -> dict[str, Any]:
    from presculpt.coordinator.replay import frontier
    from presculpt.coordinator.replay.score import score

    refs = {name: score(demand, np.clip(alloc, floor, maximum[:, None]), scored) for name, alloc in references.items()}
    limit = refs["autopilot"]["violation"] if share == "autopilot" else float(share)
    costs = frontier.rule_costs(demand, maximum, floor, scored)
    return {"unit": unit, "budget": limit, "budget_from": "autopilot" if share == "autopilot" else "given",
            "best": frontier.best_within(costs, limit), "references": refs, "frontier": frontier.frontier(costs)}


def report(result: dict[str, Any]) -> str:
    lines = [f"{result['vms']} VMs of {result['trace']}: each VM's best rule 'factor x the trailing peak', "
             f"chosen with hindsight (a bound on such rules, not a policy)"]
    for metric, m in result["metrics"].items():
        lines.append("")
        source = " (autopilot's)" if m["budget_from"] == "autopilot" else ""
        lines.append(f"{metric} ({m['unit']}), violation at most {m['budget']:.4%}{source}:")
        best = m["best"]
        lines.append(f"  per-VM best rules: slack {best.slack:.1%} at {best.violation:.4%} violation, "
                     f"{best.resizes_per_vm_day:.2f} resizes/VM-day" if best is not None else
                     "  per-VM best rules: none within the budget (even every VM at its maximum is over it)")
        for name, r in m["references"].items():
            lines.append(f"  {name}: slack {r['slack']:.1%} at {r['violation']:.4%} violation")
        lines.append("  frontier:")
        table = format_table([{"v": f"{p.violation:.4%}", "s": f"{p.slack:.1%}", "r": f"{p.resizes_per_vm_day:.2f}"}
                              for p in m["frontier"]], (("v", "VIOLATION"), ("s", "SLACK"), ("r", "RESIZES/VM-DAY")))
        lines += ["    " + line for line in table.splitlines()]
    return "\n".join(lines)


def cmd_peak_bound(args: argparse.Namespace) -> int:
    from presculpt.forecast_cli import check_paths

    check_paths(args, outputs=("json",))
    result = peak_bounds(args.trace, args.memory_violation, args.cpu_violation, args.warmup_days)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0
