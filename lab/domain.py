"""The libvirt domain XML of a lab guest: direct kernel boot, a balloon, a serial log, no disk."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from presculpt.agent.hypervisor.base import METADATA_NAMESPACE, METADATA_PREFIX

LAB_ROLE = "lab-guest"
LAB_METADATA_TAG = "lab"
ACCELERATORS = {"tcg": "qemu", "kvm": "kvm"}
# quiet: keep kernel messages off the console guestd reports on; panic=-1 with
# on_reboot=destroy turns a dead guest into a stopped domain instead of a hung one.
BASE_CMDLINE = "console=ttyS0 quiet panic=-1 mitigations=off"


@dataclass(frozen=True)
class LabDomainSpec:
    """What a lab guest looks like. Sizes in MiB; ``accel`` is ``tcg`` or ``kvm``."""

    name: str
    kernel_path: Path
    initrd_path: Path
    console_path: Path
    accel: str = "tcg"
    vcpus: int = 1
    max_vcpus: int = 4
    memory_mib: int = 512
    max_memory_mib: int = 1024
    balloon_period_s: int = 1
    load_label: str = ""
    extra_cmdline: str = ""

    def __post_init__(self) -> None:
        if self.accel not in ACCELERATORS:
            raise ValueError(f"accel must be one of {', '.join(ACCELERATORS)}, got {self.accel!r}")
        if not 1 <= self.vcpus <= self.max_vcpus:
            raise ValueError(f"need 1 <= vcpus ({self.vcpus}) <= max_vcpus ({self.max_vcpus})")
        if not 64 <= self.memory_mib <= self.max_memory_mib:
            raise ValueError(
                f"need 64 <= memory_mib ({self.memory_mib}) "
                f"<= max_memory_mib ({self.max_memory_mib})"
            )


def is_lab_domain(metadata: Mapping[str, str]) -> bool:
    """True for a domain whose Presculpt metadata marks it as a lab guest."""
    return metadata.get("role") == LAB_ROLE


def domain_xml(spec: LabDomainSpec) -> str:
    """The persistent definition of a lab guest."""
    ET.register_namespace(METADATA_PREFIX, METADATA_NAMESPACE)
    domain = ET.Element("domain", type=ACCELERATORS[spec.accel])
    ET.SubElement(domain, "name").text = spec.name
    ET.SubElement(domain, "description").text = "Presculpt lab guest (presculpt lab up)"
    metadata = ET.SubElement(domain, "metadata")
    marker = {"role": LAB_ROLE, "accel": spec.accel}
    if spec.load_label:
        marker["load"] = spec.load_label
    ET.SubElement(metadata, f"{{{METADATA_NAMESPACE}}}{LAB_METADATA_TAG}", marker)
    ET.SubElement(domain, "memory", unit="MiB").text = str(spec.max_memory_mib)
    ET.SubElement(domain, "currentMemory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(domain, "vcpu", placement="static", current=str(spec.vcpus)).text = str(
        spec.max_vcpus
    )
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(spec.kernel_path)
    ET.SubElement(os_el, "initrd").text = str(spec.initrd_path)
    ET.SubElement(os_el, "cmdline").text = f"{BASE_CMDLINE} {spec.extra_cmdline}".strip()
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    for event, action in (
        ("on_poweroff", "destroy"),
        ("on_reboot", "destroy"),
        ("on_crash", "destroy"),
    ):
        ET.SubElement(domain, event).text = action
    devices = ET.SubElement(domain, "devices")
    ET.SubElement(devices, "controller", type="usb", model="none")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(spec.console_path), append="off")
    ET.SubElement(serial, "target", port="0")
    balloon = ET.SubElement(devices, "memballoon", model="virtio")
    ET.SubElement(balloon, "stats", period=str(spec.balloon_period_s))
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")
