"""``presculpt demo``: the main job, run on this machine with real guests.

For now: boot a lab of real guests (each driven by a real VM of the trace when one is found),
then reshape one live through the agent's guarded resizer, printing what libvirt says next to
what the guest itself reports, and how long the guest took to see each change. Later issues add
the coordinator, the forecaster and the planner to this loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presculpt.agent.config import GuardConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
from presculpt.agent.model import TargetShape
from presculpt.agent.resize import Resizer
from presculpt.clitools import format_table, positive_float, positive_int
from presculpt.lab.console import Report
from presculpt.lab.image import DEFAULT_CACHE_DIR
from presculpt.lab.lab import Lab, ensure_libvirt_running
from presculpt.lab.loadspec import LoadSpec, constant_load, trace_load
from presculpt.lab.trace import load_trace, read_vms

log = logging.getLogger(__name__)

DEFAULT_TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "bitbrains-rnd-2013-08"
STATUS_COLUMNS = [
    ("name", "GUEST"), ("vcpus", "VCPUS"), ("cpu_quota_cores", "CPU CAP"), ("guest_cpus", "GUEST CPUS"),
    ("memory_mib", "MEM MIB"), ("guest_mem_total_mib", "GUEST MEMTOTAL"), ("load_cores", "LOAD"),
    ("load", "DRIVEN BY"),
]


@dataclass(frozen=True)
class Step:
    """One live change of the demo and how the guest saw it."""

    guest: str
    change: str
    target: TargetShape
    seen: Any  # predicate on the guest's report


def demo_loads(trace_dir: Path | None, guests: int, seconds_per_step: float) -> list[LoadSpec]:
    """One real trace VM per guest (the busiest ones first), or a steady load without a trace."""
    if trace_dir is None or not (trace_dir / "vms.csv").exists():
        log.info("no trace found: the guests run a steady load")
        return [constant_load(0.3, 32)] * guests
    vms = sorted(read_vms(trace_dir), key=lambda v: v.vm_id)[:guests]
    traces = load_trace(trace_dir, [v.vm_id for v in vms])
    return [trace_load(traces[v.vm_id], seconds_per_step=seconds_per_step, max_steps=2000, repeat=True)
            for v in vms]


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    ensure_libvirt_running(args.uri)
    hv = LibvirtHypervisor(args.uri)
    hv.connect()
    lab = Lab(hv, cache_dir=Path(args.cache_dir))
    resizer = Resizer(hv, SafetyGuard(GuardConfig()))
    trace = Path(args.trace) if args.trace else (DEFAULT_TRACE if DEFAULT_TRACE.exists() else None)
    actions: list[dict[str, Any]] = []
    try:
        started = time.monotonic()
        names = lab.up(args.guests, accel=args.accel,
                       loads=demo_loads(trace, args.guests, args.seconds_per_step))
        print(f"booted {len(names)} real guests in {time.monotonic() - started:.1f} s\n")
        print(format_table(lab.status(), STATUS_COLUMNS) + "\n")
        guest = names[0]
        info = hv.domain_info(guest)
        total = lab.latest_report(guest).mem_total_mib
        smaller = info.memory_mib - 128
        steps = [
            Step(guest, "pre-sculpt CPU: 2 vCPUs capped at 1.5 cores", TargetShape(cpu_cores=1.5),
                 lambda r: r.online_cpus == 2),
            Step(guest, "grow to 3 whole vCPUs", TargetShape(cpu_cores=3), lambda r: r.online_cpus == 3),
            Step(guest, f"balloon down to {smaller} MiB", TargetShape(memory_mib=smaller),
                 lambda r: abs(r.mem_total_mib - (total - 128)) < 8),
            Step(guest, f"balloon back to {info.memory_mib} MiB", TargetShape(memory_mib=info.memory_mib),
                 lambda r: abs(r.mem_total_mib - total) < 8),
            Step(guest, "graceful downgrade: cap at 0.5 cores (vCPUs kept)", TargetShape(cpu_cores=0.5),
                 lambda r: r.kind == "report"),
        ]
        for step in steps:
            offset = lab.console_offset(step.guest)
            t0 = time.monotonic()
            result = resizer.apply(step.guest, step.target)
            seen = lab.wait_for_report(step.guest, step.seen, after_offset=offset, timeout_s=120)
            report: Report = seen.report
            actions.append({
                "vm": step.guest, "kind": step.change, "applied": list(result.steps),
                "guest_seen": True, "seen_after_ms": round((seen.seen_at - t0) * 1000, 1),
                "guest_cpus": report.online_cpus, "guest_mem_total_mib": report.mem_total_mib,
            })
            print(f"{step.guest}: {step.change}: {'; '.join(result.steps) or 'already there'} "
                  f"-> guest sees {report.online_cpus} CPUs, {report.mem_total_mib:.0f} MiB "
                  f"after {(seen.seen_at - t0) * 1000:.0f} ms")
        deadline = time.monotonic() + args.watch
        while time.monotonic() < deadline:
            time.sleep(min(args.refresh, max(0.0, deadline - time.monotonic())))
            print("\n" + format_table(lab.status(), STATUS_COLUMNS))
        status = lab.status()
    finally:
        if args.keep:
            print("\nkept the lab: `presculpt lab status`, `presculpt lab down` to remove it")
        else:
            lab.down()
        hv.close()
    return {"actions": actions, "status": status}


def cmd_demo(args: argparse.Namespace) -> int:
    result = run_demo(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: real guests reshaped live on this machine")
    p.add_argument("--uri", default="qemu:///system", help="libvirt URI (default qemu:///system)")
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="guest acceleration (default tcg)")
    p.add_argument("--guests", type=positive_int, default=3, help="lab guests to boot (default 3)")
    p.add_argument("--trace", help="trace directory in the canonical format (default: the shared Bitbrains trace)")
    p.add_argument("--seconds-per-step", type=positive_float, default=2.0,
                   help="wall seconds per 5-minute trace step (default 2)")
    p.add_argument("--watch", type=float, default=10.0, help="seconds to show live status at the end (default 10)")
    p.add_argument("--refresh", type=positive_float, default=5.0, help="status refresh in seconds (default 5)")
    p.add_argument("--keep", action="store_true", help="leave the guests running at the end")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="where the lab keeps its files")
    p.add_argument("--json", metavar="FILE", help="write the actions and final status to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_demo, progress=True)
