"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
from presculpt.lab.lab import Lab, ensure_libvirt_running
from presculpt.lab.loadspec import LoadSpec, constant_load

DATA = Path(__file__).parent / "data"


@pytest.fixture
def testnode_uri() -> str:
    """A private instance of libvirt's test driver with guest-a (1 of 4 vCPUs, 1024 of 2048 MiB)
    and guest-b (2 of 2 vCPUs, 1024 of 1024 MiB) on an 8-CPU, 32 GiB host."""
    return f"test://{DATA / 'testnode.xml'}"


def make_fake() -> FakeHypervisor:
    """The fake with the same host and guests as tests/data/testnode.xml."""
    hv = FakeHypervisor(cpus=8, memory_mib=32768)
    hv.add_domain("guest-a", vcpus=1, max_vcpus=4, memory_mib=1024, max_memory_mib=2048)
    hv.add_domain("guest-b", vcpus=2, max_vcpus=2, memory_mib=1024, max_memory_mib=1024)
    return hv


@pytest.fixture(params=["fake", "libvirt-test-driver"])
def hypervisor(request, testnode_uri):
    """The same contract suite runs over the fake and over libvirt's own test driver."""
    hv = make_fake() if request.param == "fake" else LibvirtHypervisor(testnode_uri)
    hv.connect()
    yield hv
    hv.close()


# -- real lab guests ---------------------------------------------------------------------------
# Two real guests booted once per test session and shared by every test marked ``lab`` (they
# need root, libvirtd and QEMU); removed when the session ends, whatever happened. Tests must
# not assume the shape they find: read it first, change it relative to that.

LAB_URI = "qemu:///system"
# presculpt-lab-1 works (half a core, 32 MiB); presculpt-lab-2 idles.
LAB_LOADS = (constant_load(0.5, 32), constant_load(0.0, 0))


@dataclass(frozen=True)
class LabSession:
    """The shared lab: ``busy`` and ``idle`` are guest names."""

    lab: Lab
    names: tuple[str, ...]
    loads: tuple[LoadSpec, ...]

    @property
    def busy(self) -> str:
        return self.names[0]

    @property
    def idle(self) -> str:
        return self.names[1]


@pytest.fixture(scope="session")
def lab_session() -> Iterator[LabSession]:
    ensure_libvirt_running(LAB_URI)
    hypervisor = LibvirtHypervisor(LAB_URI)
    hypervisor.connect()
    lab = Lab(hypervisor)
    try:
        names = lab.up(len(LAB_LOADS), accel="tcg", loads=list(LAB_LOADS))
        yield LabSession(lab, tuple(names), LAB_LOADS)
    finally:
        lab.down()
        hypervisor.close()
