"""Fixtures of the lab tests: two real lab guests booted once per session and shared.

Tests that use them are marked ``lab`` (they need root, libvirtd and QEMU; deselect with
``-m "not lab"``). The guests are removed when the session ends, whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from presculpt.lab.lab import Lab, ensure_libvirt_running
from presculpt.lab.loadspec import LoadSpec, constant_load

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
    from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor

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
