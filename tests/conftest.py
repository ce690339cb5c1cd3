"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor

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
