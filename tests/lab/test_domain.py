"""The domain XML of a lab guest."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from presculpt.agent.hypervisor.base import METADATA_NAMESPACE
from presculpt.lab.domain import LAB_ROLE, LabDomainSpec, domain_xml, is_lab_domain


def spec(**changes) -> LabDomainSpec:
    values = dict(
        name="presculpt-lab-1",
        kernel_path=Path("/img/vmlinuz"),
        initrd_path=Path("/img/guests/presculpt-lab-1.initrd.img"),
        console_path=Path("/img/console/presculpt-lab-1.log"),
        load_label="constant:1cores:0MiB",
    )
    values.update(changes)
    return LabDomainSpec(**values)


def test_default_lab_guest() -> None:
    root = ET.fromstring(domain_xml(spec()))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "presculpt-lab-1"
    vcpu = root.find("vcpu")
    assert vcpu is not None and vcpu.text == "4" and vcpu.get("current") == "1"
    assert root.findtext("memory") == "1024" and root.find("memory").get("unit") == "MiB"
    assert root.findtext("currentMemory") == "512"
    assert root.findtext("os/kernel") == "/img/vmlinuz"
    assert root.findtext("os/initrd") == "/img/guests/presculpt-lab-1.initrd.img"
    assert "console=ttyS0" in root.findtext("os/cmdline")
    assert root.find("features/acpi") is not None
    assert root.find("devices/disk") is None and root.find("devices/interface") is None
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == "/img/console/presculpt-lab-1.log"
    balloon = root.find("devices/memballoon")
    assert balloon.get("model") == "virtio" and balloon.find("stats").get("period") == "1"


def test_metadata_marks_the_guest_as_ours() -> None:
    root = ET.fromstring(domain_xml(spec()))
    marker = root.find(f"metadata/{{{METADATA_NAMESPACE}}}lab")
    assert marker is not None
    assert marker.attrib == {"role": LAB_ROLE, "accel": "tcg", "load": "constant:1cores:0MiB"}
    assert is_lab_domain(marker.attrib)
    assert not is_lab_domain({"role": "something-else"})
    assert not is_lab_domain({})


def test_kvm_and_sizes() -> None:
    root = ET.fromstring(
        domain_xml(spec(accel="kvm", vcpus=2, max_vcpus=2, memory_mib=256, max_memory_mib=256))
    )
    assert root.get("type") == "kvm"
    assert root.find("vcpu").get("current") == "2"
    assert root.findtext("currentMemory") == "256"


@pytest.mark.parametrize(
    "changes",
    [dict(accel="xen"), dict(vcpus=5), dict(vcpus=0), dict(memory_mib=2048), dict(memory_mib=32)],
)
def test_invalid_specs(changes) -> None:
    with pytest.raises(ValueError):
        spec(**changes)
