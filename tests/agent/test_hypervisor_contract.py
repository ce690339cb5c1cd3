"""The hypervisor contract, run over the fake and over libvirt's test driver.

The real lab guests run the live-resize half of this contract in tests/lab/.
"""

from __future__ import annotations

import pytest

from presculpt.agent.hypervisor.base import (
    DomainNotFound,
    Hypervisor,
    HypervisorUnavailable,
    InvalidOperation,
)
from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor

SHADOW_XML = """<domain type='test'>
  <name>extra</name>
  <memory unit='MiB'>512</memory>
  <vcpu current='1'>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <metadata><presculpt:vm xmlns:presculpt='https://presculpt.dev/xmlns/domain/1' role='shadow' pool='p'/></metadata>
</domain>"""


def test_is_a_hypervisor(hypervisor):
    assert isinstance(hypervisor, Hypervisor)


def test_host_info(hypervisor):
    host = hypervisor.host_info()
    assert host.cpus == 8
    assert host.memory_mib == 32768


def test_inventory(hypervisor):
    domains = {d.name: d for d in hypervisor.list_domains()}
    assert set(domains) == {"guest-a", "guest-b"}
    a = domains["guest-a"]
    assert (a.state, a.vcpus, a.max_vcpus, a.memory_mib, a.max_memory_mib) == ("running", 1, 4, 1024, 2048)
    assert a.balloon is not None and a.balloon.reported
    assert hypervisor.domain_info("guest-b").max_vcpus == 2


def test_unknown_domain_is_typed(hypervisor):
    with pytest.raises(DomainNotFound, match="nope"):
        hypervisor.domain_info("nope")
    with pytest.raises(DomainNotFound):
        hypervisor.set_vcpus("nope", 1)


def test_vcpus_up_and_down(hypervisor):
    hypervisor.set_vcpus("guest-a", 3)
    assert hypervisor.domain_info("guest-a").vcpus == 3
    hypervisor.set_vcpus("guest-a", 2)
    assert hypervisor.domain_info("guest-a").vcpus == 2


def test_vcpus_past_maximum_is_refused(hypervisor):
    with pytest.raises(InvalidOperation, match="exceeds maximum"):
        hypervisor.set_vcpus("guest-a", 5)
    assert hypervisor.domain_info("guest-a").vcpus == 1


def test_memory(hypervisor):
    hypervisor.set_memory("guest-a", 1536)
    assert hypervisor.domain_info("guest-a").memory_mib == 1536
    with pytest.raises(InvalidOperation):
        hypervisor.set_memory("guest-a", 4096)
    assert hypervisor.domain_info("guest-a").memory_mib == 1536


def test_lifecycle_and_metadata(hypervisor):
    assert hypervisor.define(SHADOW_XML) == "extra"
    info = hypervisor.domain_info("extra")
    assert info.state == "shutoff"
    assert info.metadata == {"role": "shadow", "pool": "p"}
    hypervisor.start("extra", paused=True)
    assert hypervisor.domain_info("extra").state == "paused"
    hypervisor.resume("extra")
    assert hypervisor.domain_info("extra").state == "running"
    hypervisor.set_metadata("extra", {"role": "active", "assigned_name": "web-1"})
    assert hypervisor.domain_info("extra").metadata == {"role": "active", "pool": "p", "assigned_name": "web-1"}
    hypervisor.managed_save("extra")
    saved = hypervisor.domain_info("extra")
    assert saved.state == "shutoff" and saved.has_managed_save
    hypervisor.start("extra")
    assert hypervisor.domain_info("extra").state == "running"
    hypervisor.destroy("extra")
    hypervisor.destroy("extra")  # idempotent
    hypervisor.undefine("extra")
    with pytest.raises(DomainNotFound):
        hypervisor.domain_info("extra")


def test_nmi_reaches_running_domains_only(hypervisor):
    hypervisor.inject_nmi("guest-a")
    hypervisor.destroy("guest-b")
    with pytest.raises(InvalidOperation):
        hypervisor.inject_nmi("guest-b")
    with pytest.raises(DomainNotFound):
        hypervisor.inject_nmi("nope")


def test_counters_cover_active_domains(hypervisor):
    names = {c.name for c in hypervisor.domain_counters()}
    assert names == {"guest-a", "guest-b"}


def test_unreachable_libvirt_is_typed():
    hv = LibvirtHypervisor("qemu+tcp://127.0.0.1:1/system")
    with pytest.raises(HypervisorUnavailable, match="cannot connect"):
        hv.connect()


def test_libvirt_reconnects_after_losing_the_connection(testnode_uri):
    hv = LibvirtHypervisor(testnode_uri)
    hv.connect()
    hv._conn.close()  # what a libvirtd restart looks like from here
    assert hv.host_info().cpus == 8
    hv.close()
