"""``presculpt bench resize``: how long a live resize takes until the guest itself sees it.

Boots lab guests, then times, from the resize call to the first console report in which the guest
shows the new shape:

- vCPU hot-plug (1 -> 2 -> ... -> max on each guest; also unplug where the accelerator allows it),
- memory through the balloon (down and up by a quarter), until MemTotal moved by the requested amount,
- shadow activation per warm state (paused, saved, defined) and a cold boot of a new domain, until
  the guest's first report after the call.

Every change goes through the same Resizer and SafetyGuard the agent uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from presculpt.agent.config import GuardConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.hypervisor.base import HypervisorError
from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
from presculpt.agent.model import TargetShape
from presculpt.agent.resize import Resizer
from presculpt.agent.shadow import ShadowPool, shadow_xml
from presculpt.clitools import format_table, positive_int
from presculpt.errors import UserError
from presculpt.lab.console import Report, ReportTimeout
from presculpt.lab.image import DEFAULT_CACHE_DIR
from presculpt.lab.lab import Lab, ensure_libvirt_running

log = logging.getLogger(__name__)

MEMORY_TOLERANCE_MIB = 4.0
BENCH_POOL = "bench"
COLD_NAME = "presculpt-bench-cold"


@dataclass
class Series:
    """Latencies of one kind of change, in seconds."""

    samples: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"n": 0, "median_ms": None, "p95_ms": None}
        ordered = sorted(self.samples)
        p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]
        return {
            "n": len(ordered),
            "median_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(p95 * 1000, 1),
            "samples_ms": [round(s * 1000, 1) for s in self.samples],
        }


def _timed_change(lab: Lab, name: str, change: Callable[[], None], seen: Callable[[Report], bool],
                  timeout_s: float) -> float:
    """Seconds from calling ``change`` until guest ``name`` reports something ``seen`` accepts."""
    offset = lab.console_offset(name)
    started = time.monotonic()
    change()
    return lab.wait_for_report(name, seen, after_offset=offset, timeout_s=timeout_s).seen_at - started


def bench_vcpus(lab: Lab, resizer: Resizer, names: list[str], timeout_s: float) -> tuple[Series, Series]:
    up, down = Series(), Series()
    for name in names:
        info = resizer.hypervisor.domain_info(name)
        for target in range(info.vcpus + 1, info.max_vcpus + 1):
            up.samples.append(_timed_change(
                lab, name, lambda t=target: resizer.apply(name, TargetShape(vcpus=t)),
                lambda r, t=target: r.online_cpus == t, timeout_s))
            log.info("%s: hot-plugged to %d vCPUs in %.0f ms", name, target, up.samples[-1] * 1000)
        if info.can_unplug_vcpus:
            for target in range(info.max_vcpus - 1, info.vcpus - 1, -1):
                down.samples.append(_timed_change(
                    lab, name, lambda t=target: resizer.apply(name, TargetShape(vcpus=t)),
                    lambda r, t=target: r.online_cpus == t, timeout_s))
        else:
            log.info("%s runs under TCG: vCPU unplug is not measured (QEMU cannot do it there)", name)
    return up, down


def bench_memory(lab: Lab, resizer: Resizer, names: list[str], rounds: int,
                 timeout_s: float) -> tuple[Series, Series]:
    shrink, grow = Series(), Series()
    for name in names:
        base = resizer.hypervisor.domain_info(name).memory_mib  # settled by Lab.up
        low = base - base // 4
        current = base  # the last target the guest was seen at (libvirt's own figure lags)
        for _ in range(rounds):
            for target, series in ((low, shrink), (base, grow)):
                before = lab.latest_report(name)
                assert before is not None and before.mem_total_mib is not None
                expected = before.mem_total_mib + (target - current)
                current = target
                series.samples.append(_timed_change(
                    lab, name, lambda t=target: resizer.apply(name, TargetShape(memory_mib=t)),
                    lambda r, e=expected: r.mem_total_mib is not None
                    and abs(r.mem_total_mib - e) <= MEMORY_TOLERANCE_MIB,
                    timeout_s))
                log.info("%s: memory -> %d MiB seen in %.0f ms", name, target, series.samples[-1] * 1000)
    return shrink, grow


def bench_shadows(lab: Lab, hv: LibvirtHypervisor, resizer: Resizer, template: str, repeats: int,
                  timeout_s: float) -> dict[str, dict[str, Series]]:
    """Activation latency per warm state, and a cold boot, each measured twice: until the
    activation call returned (guest running, balloon reporting) and until the guest reported."""
    pool = ShadowPool(hv, resizer, template, pool=BENCH_POOL, ready_timeout_s=timeout_s)
    results: dict[str, dict[str, Series]] = {}
    for state in ("paused", "saved", "defined"):
        call, seen = Series(), Series()
        for i in range(repeats):
            (shadow,) = pool.fill(1, state)
            offset = lab.console_offset(shadow.name) if state != "defined" else 0
            started = time.monotonic()
            activation = pool.activate(f"bench-{state}-{i}", warm_state=state)
            call.samples.append(time.monotonic() - started)
            report = lab.wait_for_report(activation.shadow, lambda r: r.kind in ("report", "ready"),
                                         after_offset=offset, timeout_s=timeout_s)
            seen.samples.append(report.seen_at - started)
            log.info("%s shadow: activated in %.2f s, guest reported after %.2f s",
                     state, call.samples[-1], seen.samples[-1])
            _remove(hv, activation.shadow)
        results[state] = {"activate_call": call, "guest_seen": seen}
    call, seen = Series(), Series()
    for _ in range(repeats):
        xml = shadow_xml(template, COLD_NAME, BENCH_POOL + "-cold", "defined")
        started = time.monotonic()
        hv.define(xml)
        hv.start(COLD_NAME)
        report = lab.wait_for_report(COLD_NAME, lambda r: r.kind == "ready", timeout_s=timeout_s)
        seen.samples.append(report.seen_at - started)
        call.samples.append(seen.samples[-1])
        log.info("cold boot: guest ready after %.2f s", seen.samples[-1])
        _remove(hv, COLD_NAME)
        lab.console_path(COLD_NAME).unlink(missing_ok=True)
    results["cold_boot"] = {"activate_call": call, "guest_seen": seen}
    pool.drain()
    return results


def _remove(hv: LibvirtHypervisor, name: str) -> None:
    try:
        hv.destroy(name)
        hv.undefine(name)
    except HypervisorError as err:
        log.warning("could not remove %s: %s", name, err)


def run_resize_bench(uri: str, guests: int, memory_rounds: int, shadow_repeats: int, accel: str,
                     cache_dir: Path, timeout_s: float = 180.0) -> dict[str, Any]:
    ensure_libvirt_running(uri)
    hv = LibvirtHypervisor(uri)
    hv.connect()
    lab = Lab(hv, cache_dir=cache_dir)
    resizer = Resizer(hv, SafetyGuard(GuardConfig()))
    leftovers = ShadowPool(hv, resizer, "", pool=BENCH_POOL)
    try:
        names = lab.up(guests, accel=accel)
        up, down = bench_vcpus(lab, resizer, names, timeout_s)
        shrink, grow = bench_memory(lab, resizer, names, memory_rounds, timeout_s)
        lab.down()
        template = lab.shadow_template(accel=accel)
        shadows = bench_shadows(lab, hv, resizer, template, shadow_repeats, timeout_s)
    finally:
        leftovers.drain()
        for info in hv.list_domains():
            if info.metadata.get("pool", "").startswith(BENCH_POOL) or info.name == COLD_NAME:
                _remove(hv, info.name)
        lab.down()
        hv.close()
    return {
        "accel": accel,
        "guests": guests,
        "vcpu_hotplug": up.summary(),
        "vcpu_unplug": down.summary(),
        "memory_shrink": shrink.summary(),
        "memory_grow": grow.summary(),
        "shadow_activation": {
            state: {kind: series.summary() for kind, series in kinds.items()}
            for state, kinds in shadows.items()
        },
    }


def format_result(result: dict[str, Any]) -> str:
    rows = []
    for key, label in (("vcpu_hotplug", "vCPU hot-plug"), ("vcpu_unplug", "vCPU unplug"),
                       ("memory_shrink", "memory shrink (balloon)"), ("memory_grow", "memory grow (balloon)")):
        s = result[key]
        rows.append({"what": label, "n": s["n"], "median": s["median_ms"], "p95": s["p95_ms"], "call": None})
    for state, kinds in result["shadow_activation"].items():
        seen, call = kinds["guest_seen"], kinds["activate_call"]
        label = "cold boot (define + start)" if state == "cold_boot" else f"shadow activation ({state})"
        rows.append({"what": label, "n": seen["n"], "median": seen["median_ms"], "p95": seen["p95_ms"],
                     "call": call["median_ms"]})
    note = "" if result["vcpu_unplug"]["n"] else "\n(vCPU unplug is not measured under TCG: QEMU 7.2 cannot do it there)"
    return format_table(rows, [("what", "CHANGE (call -> guest sees it)"), ("n", "N"),
                               ("median", "MEDIAN MS"), ("p95", "P95 MS"), ("call", "CALL RETURNS MS")]) + note


def cmd_bench_resize(args: argparse.Namespace) -> int:
    try:
        result = run_resize_bench(args.uri, args.guests, args.memory_rounds, args.shadow_repeats,
                                  args.accel, Path(args.cache_dir))
    except ReportTimeout as err:
        raise UserError(f"a guest did not show a change in time: {err}") from None
    print(f"resize latency on {args.uri} ({args.accel}), from the call to the guest's own report:")
    print(format_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_resize_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("resize", help="live resize and shadow activation latency on real lab guests")
    p.add_argument("--uri", default="qemu:///system", help="libvirt URI (default qemu:///system)")
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="guest acceleration (default tcg)")
    p.add_argument("--guests", type=positive_int, default=2, help="lab guests to measure on (default 2)")
    p.add_argument("--memory-rounds", type=positive_int, default=3,
                   help="balloon down-and-up rounds per guest (default 3)")
    p.add_argument("--shadow-repeats", type=positive_int, default=2,
                   help="activations per warm state and cold boots (default 2)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="where the lab keeps its files")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_bench_resize, progress=True)
