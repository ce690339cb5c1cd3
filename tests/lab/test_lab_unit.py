"""Lab on the in-memory fake hypervisor, with guests simulated by writing their console logs."""

from __future__ import annotations

import grp
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.lab.cpio import read_cpio
from presculpt.lab.image import GuestImage
from presculpt.lab.lab import Lab, LabError, ensure_kvm_device_access
from presculpt.lab.loadspec import SPEC_PATH_IN_GUEST, LoadSpec, constant_load

BASE = b"BASE-INITRD" + b"\0" * 501  # stands for a padded gzip archive (512 bytes)


class SimulatedGuests(FakeHypervisor):
    """The fake hypervisor whose started guests "print" reports to their serial log files."""

    def __init__(self, boots: bool = True) -> None:
        super().__init__()
        self.boots = boots
        self.seq: dict[str, int] = {}
        self.started: set[str] = set()

    def console(self, name: str) -> Path:
        root = ET.fromstring(self.domain_xml(name))
        return Path(root.find("devices/serial/source").get("path"))

    def start(self, name: str, paused: bool = False) -> None:
        super().start(name, paused)
        self.seq[name] = 0
        if self.boots:
            self.say(name, "PRESCULPT-READY", "ready")

    def say(self, name: str, tag: str = "PRESCULPT-REPORT", reason: str = "tick") -> None:
        info = self.domain_info(name)
        with self.console(name).open("a") as handle:
            handle.write(
                f"{tag} seq={self.seq[name]} reason={reason} online_cpus={info.vcpus} "
                f"mem_total_kib={info.memory_mib * 1024 - 65536} mem_available_kib=300000 "
                f"load_cores=0.5 work_rate=1000 demand_cores=0.5 demand_mem_mib=10 "
                f"mem_held_mib=10 step=0 started={int(name in self.started)}\n"
            )
        self.seq[name] += 1

    def inject_nmi(self, name: str) -> None:
        super().inject_nmi(name)
        self.started.add(name)
        self.say(name, reason="start")

    def tick(self) -> None:
        for info in self.list_domains():
            if info.state == "running" and self.boots and info.name in self.seq:
                self.say(info.name)


class FakeTime:
    def __init__(self, guests: SimulatedGuests) -> None:
        self.now = 0.0
        self.guests = guests

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.guests.tick()


@pytest.fixture
def guests() -> SimulatedGuests:
    hv = SimulatedGuests()
    hv.connect()
    return hv


def make_lab(guests: SimulatedGuests, tmp_path: Path, **options) -> tuple[Lab, FakeTime]:
    base = tmp_path / "base.img"
    base.write_bytes(BASE)
    image = GuestImage("9.9.9", tmp_path / "vmlinuz", base, "key", ("virtio",))
    fake_time = FakeTime(guests)
    lab = Lab(
        guests,
        cache_dir=tmp_path / "cache",
        image_provider=lambda _cache: image,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        **options,
    )
    return lab, fake_time


def test_up_boots_marked_guests_with_their_own_load(
    guests: SimulatedGuests, tmp_path: Path
) -> None:
    lab, _ = make_lab(guests, tmp_path)
    loads = [constant_load(0.5, 10), constant_load(1.0, 20)]
    names = lab.up(2, loads=loads)
    assert names == ["presculpt-lab-1", "presculpt-lab-2"]
    for name, load in zip(names, loads, strict=True):
        info = guests.domain_info(name)
        assert info.state == "running"
        assert info.metadata["role"] == "lab-guest" and info.metadata["load"] == load.label
        assert (info.vcpus, info.max_vcpus, info.memory_mib, info.max_memory_mib) == (
            1,
            4,
            512,
            1024,
        )
        initrd = lab.initrd_path(name).read_bytes()
        assert initrd.startswith(BASE)
        spec = {e.name: e.data for e in read_cpio(initrd[len(BASE) :])}[SPEC_PATH_IN_GUEST]
        assert LoadSpec.parse(spec.decode()) == load
        assert lab.latest_report(name) is not None


def test_status_shows_libvirt_and_guest_views(guests: SimulatedGuests, tmp_path: Path) -> None:
    lab, _ = make_lab(guests, tmp_path)
    lab.up(1)
    guests.set_vcpus("presculpt-lab-1", 3)
    guests.tick()
    (row,) = lab.status()
    assert row["name"] == "presculpt-lab-1" and row["state"] == "running"
    assert row["vcpus"] == 3 and row["guest_cpus"] == 3
    assert row["memory_mib"] == 512 and row["guest_mem_total_mib"] == 448.0
    assert row["load_cores"] == 0.5 and row["work_rate"] == 1000
    assert row["load"] == "constant:0cores:0MiB"


def test_up_replaces_lab_guests_and_down_removes_only_ours(
    guests: SimulatedGuests, tmp_path: Path
) -> None:
    guests.add_domain("production-db", metadata={"role": "other"})
    lab, _ = make_lab(guests, tmp_path)
    lab.up(3)
    lab.up(1)
    assert lab.guests() == ["presculpt-lab-1"]
    assert not lab.console_path("presculpt-lab-3").exists()
    assert lab.down() == ["presculpt-lab-1"]
    assert [d.name for d in guests.list_domains()] == ["production-db"]
    assert not lab.initrd_path("presculpt-lab-1").exists()
    assert not lab.console_path("presculpt-lab-1").exists()
    assert lab.status() == []


def test_a_lab_with_its_own_prefix_leaves_other_labs_alone(
    guests: SimulatedGuests, tmp_path: Path
) -> None:
    lab, _ = make_lab(guests, tmp_path)
    demo, _ = make_lab(guests, tmp_path, name_prefix="presculpt-lab-demo-")
    lab.up(1)
    assert demo.up(2) == ["presculpt-lab-demo-1", "presculpt-lab-demo-2"]
    assert lab.guests() == ["presculpt-lab-1"]
    assert lab.down() == ["presculpt-lab-1"]
    assert demo.guests() == ["presculpt-lab-demo-1", "presculpt-lab-demo-2"]
    assert demo.console_path("presculpt-lab-demo-1").exists()
    lab.up(1)
    assert demo.down() == ["presculpt-lab-demo-1", "presculpt-lab-demo-2"]
    assert lab.guests() == ["presculpt-lab-1"] and lab.console_path("presculpt-lab-1").exists()
    with pytest.raises(ValueError, match="must start with"):
        make_lab(guests, tmp_path, name_prefix="other-")


def test_start_loads_signals_every_guest_and_waits_for_its_start(
    guests: SimulatedGuests, tmp_path: Path
) -> None:
    lab, _ = make_lab(guests, tmp_path)
    names = lab.up(2)
    seen = lab.start_loads(names)
    assert [c for c in guests.calls if c[0] == "inject_nmi"] == [("inject_nmi", n) for n in names]
    assert all(seen[n].report.started and seen[n].report.reason == "start" for n in names)


def test_up_refuses_to_replace_a_foreign_domain(guests: SimulatedGuests, tmp_path: Path) -> None:
    guests.add_domain("presculpt-lab-1")
    lab, _ = make_lab(guests, tmp_path)
    with pytest.raises(LabError, match="not a lab guest"):
        lab.up(1)
    assert guests.domain_info("presculpt-lab-1").state == "running"


def test_a_guest_that_never_reports_fails_with_its_log(tmp_path: Path) -> None:
    silent = SimulatedGuests(boots=False)
    silent.connect()
    lab, fake_time = make_lab(silent, tmp_path)
    with pytest.raises(
        LabError,
        match=r"presculpt-lab-1 did not report READY within 30 s \(see .*presculpt-lab-1.log\)",
    ):
        lab.up(1, ready_timeout_s=30)
    assert 30 <= fake_time.now < 31


def test_load_count_must_match(guests: SimulatedGuests, tmp_path: Path) -> None:
    lab, _ = make_lab(guests, tmp_path)
    with pytest.raises(LabError, match="2 load specs for 3 guests"):
        lab.up(3, loads=[constant_load(), constant_load()])
    with pytest.raises(LabError):
        lab.up(0)


def test_kvm_device_gets_group_access_once(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    device.chmod(0o600)
    group = grp.getgrgid(os.getgid()).gr_name
    assert ensure_kvm_device_access(device, group) is True
    assert stat.S_IMODE(device.stat().st_mode) == 0o660
    assert ensure_kvm_device_access(device, group) is False
    assert ensure_kvm_device_access(tmp_path / "missing", group) is False
