"""The demo's closing figures, per guest and in total, next to static allocation; and its JSON."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from presculpt.clitools import format_table
from presculpt.demo.record import ActionRecord, Score, StepRecord, score

SUMMARY_COLUMNS = (
    ("guest", "GUEST"), ("vm", "TRACE VM"), ("policy", "POLICY"), ("steps", "STEPS"), ("violation", "CPU VIOL"),
    ("slack", "CPU SLACK"), ("memory_violation", "MEM VIOL"), ("memory_slack", "MEM SLACK"),
    ("actions", "ACTIONS"), ("applied", "APPLIED"), ("seen", "SEEN IN GUEST"),
)


@dataclass(frozen=True)
class GuestResult:
    name: str
    vm_id: str
    max_vcpus: int
    static_mem_mib: float  # MemTotal at the guest's maximum memory
    steps: tuple[StepRecord, ...]
    actions: tuple[ActionRecord, ...]


def _arrays(results: Sequence[GuestResult]) -> tuple[np.ndarray, ...]:
    rows = [(r, s) for r in results for s in r.steps if s.alloc_cores is not None and s.alloc_mem_mib is not None]
    return (np.array([s.demand_cores for _, s in rows]), np.array([s.alloc_cores for _, s in rows]),
            np.array([s.demand_mem_mib for _, s in rows]), np.array([s.alloc_mem_mib for _, s in rows]),
            np.array([float(r.max_vcpus) for r, _ in rows]), np.array([r.static_mem_mib for r, _ in rows]))


def scores(results: Sequence[GuestResult]) -> tuple[Score, Score]:
    """(presculpt, static) pooled over the VM-steps of ``results``."""
    d_cpu, a_cpu, d_mem, a_mem, static_cpu, static_mem = _arrays(results)
    return score(d_cpu, a_cpu, d_mem, a_mem), score(d_cpu, static_cpu, d_mem, static_mem)


def action_counts(actions: Sequence[ActionRecord]) -> dict[str, int]:
    return {"actions": len(actions), "applied": sum(a.applied for a in actions),
            "seen": sum(a.seen is True for a in actions), "not_seen": sum(a.seen is False for a in actions)}


def action_json(a: ActionRecord, vm_of: dict[str, str], origin: float, step_s: float) -> dict[str, Any]:
    c, o = a.command, a.outcome
    after = None
    if o is not None and o.vm is not None:
        after = {"vcpus": o.vm.vcpus, "cpu_quota_cores": o.vm.cpu_quota_cores, "memory_mib": o.vm.memory_mib}
    return {
        "vm": c.vm, "trace_vm": vm_of.get(c.vm, ""), "kind": a.planner_kind, "command": c.kind, "id": c.id,
        "step": int((c.issued_at - origin) // step_s),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.issued_at)),
        "target": {"vcpus": c.target.vcpus, "cpu_cores": c.target.cpu_cores, "memory_mib": c.target.memory_mib},
        "reason": a.reason, "status": o.status if o else "NO OUTCOME", "applied": a.applied,
        "steps": list(o.steps) if o else [], "message": o.message if o else "", "after": after,
        "guest_seen": a.seen, "seen": a.seen_detail, "seen_after_s": a.seen_after_s,
    }


def build_summary(results: Sequence[GuestResult]) -> dict[str, Any]:
    """``{"presculpt": {...}, "static": {...}, "guests": {name: {...}}}`` (see the JSON in the README)."""
    presculpt, static = scores(results)
    total_actions = [a for r in results for a in r.actions]
    summary: dict[str, Any] = {
        "steps": max((len(r.steps) for r in results), default=0),
        "presculpt": {**presculpt.as_dict(), **action_counts(total_actions)},
        "static": {**static.as_dict(), "actions": 0},
        "guests": {},
    }
    for r in results:
        p, s = scores([r])
        summary["guests"][r.name] = {"trace_vm": r.vm_id, "presculpt": {**p.as_dict(), **action_counts(r.actions)},
                                     "static": {**s.as_dict(), "actions": 0}}
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    rows = []

    def add(guest: str, vm: str, policy: str, figures: dict[str, Any]) -> None:
        rows.append({"guest": guest, "vm": vm, "policy": policy, "steps": figures.get("steps"),
                     **{k: _pct(figures.get(k)) for k in ("violation", "slack", "memory_violation", "memory_slack")},
                     "actions": figures.get("actions"), "applied": figures.get("applied", "-"),
                     "seen": figures.get("seen", "-")})

    for name, g in summary["guests"].items():
        add(name, g["trace_vm"], "presculpt", g["presculpt"])
        add("", "", "static", g["static"])
    add("total", "", "presculpt", summary["presculpt"])
    add("", "", "static", summary["static"])
    return format_table(rows, SUMMARY_COLUMNS)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
