"""Coordinator plus an agent on real lab guests: metrics of real load arrive, and a resize issued
through `presculpt resize` ends up visible inside the guest."""

from __future__ import annotations

import pytest

from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor

from .conftest import AgentThread, make_agent, wait_until
from .test_end_to_end import presculpt_json

pytestmark = pytest.mark.lab
DEADLINE_S = 120.0


@pytest.fixture
def lab_agent(lab_session, coordinator, tmp_path):
    hv = LibvirtHypervisor("qemu:///system")
    hv.connect()
    agent = AgentThread(make_agent(hv, coordinator.address, tmp_path / "spool.db", agent_id="lab-host",
                                   interval_s=1.0)).start()
    yield agent
    agent.stop()
    hv.close()


def wait_for_vm(capsys, coordinator, name: str) -> None:
    wait_until(lambda: name in {v["name"] for v in presculpt_json(capsys, coordinator, "vms")},
               timeout=DEADLINE_S, what=f"{name} in the coordinator's inventory")


def test_real_metrics_reach_the_coordinator(capsys, coordinator, lab_agent, lab_session):
    busy = lab_session.busy  # guestd there works half a core
    wait_for_vm(capsys, coordinator, busy)
    samples = wait_until(
        lambda: len(s := presculpt_json(capsys, coordinator, "metrics", busy)) >= 4 and s,
        timeout=DEADLINE_S, what="four samples of the busy guest")
    later = samples[1:]  # the first interval may straddle the agent's start
    assert max(s["cpu_cores"] for s in later) > 0.2
    assert all(s["memory_mib"] > 0 and s["memory_used_mib"] > 0 for s in later)
    vms = {v["name"]: v for v in presculpt_json(capsys, coordinator, "vms")}
    assert vms[busy]["host"] == "lab-host"


def test_resize_through_presculpt_is_seen_inside_the_guest(capsys, coordinator, lab_agent, lab_session):
    lab, name = lab_session.lab, lab_session.idle
    wait_for_vm(capsys, coordinator, name)
    info = lab.hypervisor.domain_info(name)
    total = lab.latest_report(name).mem_total_mib
    target = info.memory_mib - 64
    vcpus = min(info.max_vcpus, info.vcpus + 1)
    offset = lab.console_offset(name)
    result = presculpt_json(capsys, coordinator, "resize", name, "--memory-mib", str(target),
                            "--vcpus", str(vcpus), "--timeout", "60")
    assert result["status"] == "APPLIED", result
    seen = lab.wait_for_report(
        name, lambda r: r.online_cpus == vcpus and abs(r.mem_total_mib - (total - 64)) < 8,
        after_offset=offset, timeout_s=DEADLINE_S)
    assert seen.report.online_cpus == vcpus
    # And back, so the shared guest keeps its memory for the tests after this one.
    back = presculpt_json(capsys, coordinator, "resize", name, "--memory-mib", str(info.memory_mib),
                          "--timeout", "60")
    assert back["status"] == "APPLIED", back
