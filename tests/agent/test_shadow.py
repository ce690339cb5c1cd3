"""The shadow pool over the fake hypervisor (tests/lab/ activates real shadows)."""

from __future__ import annotations

import pytest

from presculpt.agent.config import GuardConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.agent.model import TargetShape
from presculpt.agent.resize import Resizer
from presculpt.agent.shadow import ShadowPool, ShadowPoolError, shadow_xml

TEMPLATE = """<domain type='kvm'>
  <name>template</name>
  <uuid>00000000-0000-0000-0000-000000000001</uuid>
  <memory unit='MiB'>1024</memory>
  <currentMemory unit='MiB'>512</currentMemory>
  <vcpu current='1'>4</vcpu>
  <devices><serial type='file'><source path='/var/log/{name}.log'/></serial></devices>
</domain>"""


@pytest.fixture
def hv() -> FakeHypervisor:
    hv = FakeHypervisor(clock=lambda: 5000.0)
    hv.connect()
    return hv


def pool(hv, name="default") -> ShadowPool:
    resizer = Resizer(hv, SafetyGuard(GuardConfig()), clock=lambda: 5000.0)
    return ShadowPool(hv, resizer, TEMPLATE, pool=name, wall_clock=lambda: 5000.0, sleep=lambda s: None)


def test_shadow_xml_names_the_domain_and_marks_it():
    xml = shadow_xml(TEMPLATE, "presculpt-shadow-default-1", "default", "paused")
    assert "<name>presculpt-shadow-default-1</name>" in xml
    assert "/var/log/presculpt-shadow-default-1.log" in xml
    assert "uuid" not in xml
    assert 'role="shadow"' in xml and 'warm_state="paused"' in xml


def test_template_must_be_a_domain():
    with pytest.raises(ShadowPoolError, match="not a libvirt <domain>"):
        shadow_xml("<network/>", "x", "p", "paused")


@pytest.mark.parametrize("state, libvirt_state", [("paused", "paused"), ("saved", "shutoff"), ("defined", "shutoff")])
def test_fill_keeps_each_warm_state(hv, state, libvirt_state):
    created = pool(hv).fill(2, state)
    assert [s.name for s in created] == ["presculpt-shadow-default-1", "presculpt-shadow-default-2"]
    assert {s.state for s in created} == {libvirt_state}
    assert pool(hv).fill(2, state) == []  # already full: nothing more
    if state == "saved":
        assert all(hv.domain_info(s.name).has_managed_save for s in created)


def test_pools_are_separate(hv):
    pool(hv, "a").fill(1, "paused")
    pool(hv, "b").fill(1, "paused")
    assert [s.name for s in pool(hv, "a").list()] == ["presculpt-shadow-a-1"]
    assert pool(hv, "b").drain() == ["presculpt-shadow-b-1"]
    assert len(pool(hv, "a").list()) == 1


def test_activation_prefers_the_warmest_and_hands_over(hv):
    p = pool(hv)
    p.fill(1, "defined")
    p.fill(1, "paused")
    activation = p.activate("web-7", TargetShape(vcpus=2, memory_mib=768), {"customer": "acme"})
    assert activation.warm_state == "paused"
    info = hv.domain_info(activation.shadow)
    assert info.state == "running"
    assert (info.vcpus, info.memory_mib) == (2, 768)
    assert info.metadata["role"] == "active"
    assert info.metadata["assigned_name"] == "web-7"
    assert info.metadata["customer"] == "acme"
    # The handed-out VM left the pool; the defined one is still there.
    assert [s.warm_state for s in p.list()] == ["defined"]


def test_activation_of_a_saved_shadow_restores_it(hv):
    p = pool(hv)
    p.fill(1, "saved")
    activation = p.activate("db-1", warm_state="saved")
    assert hv.domain_info(activation.shadow).state == "running"


def test_empty_pool_says_so(hv):
    with pytest.raises(ShadowPoolError, match="no shadow to activate; fill it first"):
        pool(hv).activate("x")
    pool(hv).fill(1, "defined")
    with pytest.raises(ShadowPoolError, match="no shadow in state paused"):
        pool(hv).activate("x", warm_state="paused")


def test_activation_with_an_impossible_shape_is_refused_before_handover(hv):
    from presculpt.agent.guard import GuardRefused

    p = pool(hv)
    p.fill(1, "paused")
    with pytest.raises(GuardRefused):
        p.activate("x", TargetShape(vcpus=9))
    info = hv.domain_info("presculpt-shadow-default-1")
    assert info.metadata["role"] == "shadow"
    assert info.state == "paused"


def test_drain_leaves_active_vms(hv):
    p = pool(hv)
    p.fill(2, "paused")
    active = p.activate("keep-me").shadow
    assert p.drain() == [n for n in ["presculpt-shadow-default-1", "presculpt-shadow-default-2"] if n != active]
    assert hv.domain_info(active).state == "running"
