"""Real lab guests under QEMU/TCG: boot, report, and see live resizes from inside.

Under TCG on a 2-core host everything is slow and noisy: every wait has a generous deadline.
vCPU hot-unplug is not exercised: QEMU 7.2's TCG mishandles it (see lab/README.md).
"""

from __future__ import annotations

import statistics
import time

import pytest

from presculpt.lab.console import read_reports

pytestmark = pytest.mark.lab

DEADLINE_S = 120.0


def ticks(session, name: str, count: int) -> list:
    """The next ``count`` periodic reports of guest ``name``."""
    lab = session.lab
    offset = lab.console_offset(name)
    reports = []
    for _ in range(count):
        seen = lab.wait_for_report(
            name, lambda r: r.reason == "tick", after_offset=offset, timeout_s=DEADLINE_S
        )
        offset = seen.offset
        reports.append(seen.report)
    return reports


def test_guests_are_ready_and_marked(lab_session) -> None:
    assert lab_session.names == ("presculpt-lab-1", "presculpt-lab-2")
    assert lab_session.lab.guests() == list(lab_session.names)
    for name, load in zip(lab_session.names, lab_session.loads, strict=True):
        reports, _ = read_reports(lab_session.lab.console_path(name))
        ready = reports[0]
        assert ready.kind == "ready"
        assert ready.fields["label"] == load.label
        info = lab_session.lab.hypervisor.domain_info(name)
        assert info.metadata["role"] == "lab-guest" and info.metadata["accel"] == "tcg"


def test_status_joins_libvirt_and_guest_views(lab_session) -> None:
    rows = {row["name"]: row for row in lab_session.lab.status()}
    assert set(rows) == set(lab_session.names)
    for name, load in zip(lab_session.names, lab_session.loads, strict=True):
        row = rows[name]
        assert row["state"] == "running"
        assert row["vcpus"] >= 1 and row["guest_cpus"] == row["vcpus"]
        assert row["memory_mib"] == 512 and row["max_memory_mib"] == 1024
        # the guest's MemTotal is its balloon size minus what its kernel keeps for itself
        assert 350 < row["guest_mem_total_mib"] <= 512
        assert row["demand_cores"] == pytest.approx(load.steps[0].cpu_cores)
        assert row["report_age_s"] < 30


def test_busy_guest_generates_its_load(lab_session) -> None:
    reports = ticks(lab_session, lab_session.busy, 3)
    assert statistics.median(r.load_cores for r in reports) == pytest.approx(0.5, abs=0.25)
    assert all(r.mem_held_mib == 32 for r in reports)
    assert all(r.work_rate > 0 for r in reports)


def test_vcpu_hotplug_is_seen_inside(lab_session) -> None:
    lab, name = lab_session.lab, lab_session.idle
    before = lab.hypervisor.domain_info(name).vcpus
    offset = lab.console_offset(name)
    start = time.monotonic()
    lab.hypervisor.set_vcpus(name, before + 1)
    seen = lab.wait_for_report(
        name, lambda r: r.online_cpus == before + 1, after_offset=offset, timeout_s=DEADLINE_S
    )
    print(f"vCPU {before}->{before + 1} seen inside after {seen.seen_at - start:.2f} s")
    assert seen.report.reason == "cpus"  # reported at once, not on the next tick
    row = {r["name"]: r for r in lab.status()}[name]
    assert row["vcpus"] == row["guest_cpus"] == before + 1


def test_balloon_is_seen_inside(lab_session) -> None:
    lab, name = lab_session.lab, lab_session.idle
    total = lab.latest_report(name).mem_total_mib
    for target, expected in ((384, total - 128), (512, total)):
        offset = lab.console_offset(name)
        lab.hypervisor.set_memory(name, target)
        seen = lab.wait_for_report(
            name,
            lambda r, expected=expected: abs(r.mem_total_mib - expected) < 8,
            after_offset=offset,
            timeout_s=DEADLINE_S,
        )
        assert seen.report.mem_total_mib == pytest.approx(expected, abs=8)


def test_cpu_quota_shows_as_lower_work_rate(lab_session) -> None:
    lab, name = lab_session.lab, lab_session.busy
    baseline = statistics.median(r.work_rate for r in ticks(lab_session, name, 3))
    lab.hypervisor.set_cpu_quota(name, 0.15)
    try:
        ticks(lab_session, name, 1)  # the tick that straddles the change
        capped = statistics.median(r.work_rate for r in ticks(lab_session, name, 3))
    finally:
        lab.hypervisor.set_cpu_quota(name, None)
    assert capped < 0.7 * baseline
