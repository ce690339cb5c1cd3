"""The agent's own path on real lab guests: presculpt-agent resize, the guard and the shadow pool,
each change checked from inside the guest (its console report)."""

from __future__ import annotations

import json
import time

import pytest

from presculpt.agent import cli
from presculpt.agent.config import GuardConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.model import TargetShape
from presculpt.agent.resize import Resizer
from presculpt.agent.shadow import ShadowPool

pytestmark = pytest.mark.lab

URI = "qemu:///system"
DEADLINE_S = 120.0


def agent(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = cli.main([*argv, "--uri", URI])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip().startswith("{") else None), err


def test_inventory_sees_the_lab(capsys, lab_session):
    code, data, _ = agent(capsys, "inventory", "--json")
    assert code == 0
    rows = {d["name"]: d for d in data["domains"]}
    for name in lab_session.names:
        assert rows[name]["state"] == "running"
        assert rows[name]["max_vcpus"] == 4
        assert rows[name]["guest_mem_total_mib"] > 0  # the balloon driver reports


def test_fractional_cpu_through_the_cli_is_seen_inside(capsys, lab_session):
    lab, name = lab_session.lab, lab_session.busy
    vcpus = lab.hypervisor.domain_info(name).vcpus
    target_vcpus = min(4, vcpus + 1)
    cores = target_vcpus - 0.5
    offset = lab.console_offset(name)
    code, data, err = agent(capsys, "resize", name, "--cpu-cores", str(cores), "--json")
    assert code == 0, err
    assert data["state"]["vcpus"] == target_vcpus
    assert data["state"]["cpu_quota_cores"] == pytest.approx(cores, abs=0.01)
    seen = lab.wait_for_report(name, lambda r: r.online_cpus == target_vcpus, after_offset=offset,
                               timeout_s=DEADLINE_S)
    assert seen.report.online_cpus == target_vcpus
    # Lowering CPU on a TCG guest keeps the vCPUs and tightens the quota instead.
    code, data, err = agent(capsys, "resize", name, "--cpu-cores", "0.5", "--json")
    assert code == 0, err
    assert data["state"]["vcpus"] == target_vcpus
    assert data["state"]["cpu_quota_cores"] == pytest.approx(0.5, abs=0.01)
    code, _, err = agent(capsys, "resize", name, "--cpu-cores", str(target_vcpus))  # uncap again
    assert code == 0, err


def test_vcpu_unplug_under_tcg_is_refused_with_a_clear_line(capsys, lab_session):
    lab, name = lab_session.lab, lab_session.idle
    lab.hypervisor.set_vcpus(name, max(2, lab.hypervisor.domain_info(name).vcpus))
    before = lab.hypervisor.domain_info(name).vcpus
    code, _, err = agent(capsys, "resize", name, "--vcpus", "1")
    assert code == 1
    assert err.count("\n") == 1 and "software emulation (TCG)" in err
    assert lab.hypervisor.domain_info(name).vcpus == before


def test_balloon_down_and_up_through_the_cli_is_seen_inside(capsys, lab_session):
    lab, name = lab_session.lab, lab_session.idle
    current = lab.hypervisor.domain_info(name).memory_mib
    total = lab.latest_report(name).mem_total_mib
    for target in (current - 96, current):
        expected = total + (target - current)
        offset = lab.console_offset(name)
        code, data, err = agent(capsys, "resize", name, "--memory-mib", str(target), "--json")
        assert code == 0, err
        seen = lab.wait_for_report(name, lambda r, e=expected: abs(r.mem_total_mib - e) < 8,
                                   after_offset=offset, timeout_s=DEADLINE_S)
        assert seen.report.mem_total_mib == pytest.approx(expected, abs=8)


def test_a_resize_right_after_a_balloon_change_reads_the_new_size(lab_session):
    """libvirt's info() learns a balloon's new size from QEMU's events, about a second late; a resize
    back made in that second was read as already done, and nothing happened (seen as a flaky test
    above). The agent reads the balloon's size now."""
    lab, name = lab_session.lab, lab_session.idle
    hv = lab.hypervisor
    resizer = Resizer(hv, SafetyGuard(GuardConfig()))
    current = hv.domain_info(name).memory_mib
    try:
        resizer.apply(name, TargetShape(memory_mib=current - 64))
        deadline = time.monotonic() + DEADLINE_S
        while hv.domain_info(name).balloon.actual_mib != current - 64:  # QEMU's balloon got there
            assert time.monotonic() < deadline, "the balloon did not inflate"
            time.sleep(0.02)
        assert hv.domain_info(name).memory_mib == current - 64
        back = resizer.apply(name, TargetShape(memory_mib=current))
        assert back.steps == (f"memory {current - 64}->{current} MiB",)
    finally:
        hv.set_memory(name, current)
        deadline = time.monotonic() + DEADLINE_S
        while hv.domain_info(name).memory_mib != current and time.monotonic() < deadline:
            time.sleep(0.05)


def test_guard_refuses_ballooning_below_use_plus_margin(capsys, lab_session, tmp_path):
    lab, name = lab_session.lab, lab_session.busy  # holds 32 MiB and runs guestd
    config = tmp_path / "agent.toml"
    config.write_text("[guard]\nmin_memory_mib = 64\nmax_memory_shrink_fraction = 1.0\n")
    info = lab.hypervisor.domain_info(name)
    floor = SafetyGuard(GuardConfig(min_memory_mib=64)).memory_floor_mib(info, now=time.time())
    assert floor > 64 + 32  # in use (guestd and its 32 MiB) plus the margin
    code, _, err = agent(capsys, "resize", name, "--memory-mib", str(floor - 8), "--config", str(config))
    assert code == 1 and err.count("\n") == 1 and "safe floor" in err
    assert lab.hypervisor.domain_info(name).memory_mib == info.memory_mib


def test_shadow_activation_on_real_guests(lab_session):
    lab = lab_session.lab
    hv = lab.hypervisor
    resizer = Resizer(hv, SafetyGuard(GuardConfig()))
    pool = ShadowPool(hv, resizer, lab.shadow_template(), pool="test", ready_timeout_s=180)
    activated = None
    try:
        (shadow,) = pool.fill(1, "paused")
        assert hv.domain_info(shadow.name).state == "paused"
        offset = lab.console_offset(shadow.name)
        activation = pool.activate("tenant-vm", TargetShape(vcpus=2), {"customer": "acme"})
        activated = activation.shadow
        info = hv.domain_info(activated)
        assert info.state == "running" and info.vcpus == 2
        assert info.metadata["assigned_name"] == "tenant-vm" and info.metadata["customer"] == "acme"
        seen = lab.wait_for_report(activated, lambda r: r.online_cpus == 2, after_offset=offset,
                                   timeout_s=DEADLINE_S)
        assert seen.report.online_cpus == 2
        assert pool.list() == []  # handed over: no longer a shadow
    finally:
        pool.drain()
        if activated:
            hv.destroy(activated)
            hv.undefine(activated)
            lab.console_path(activated).unlink(missing_ok=True)
