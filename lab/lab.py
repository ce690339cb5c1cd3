"""The local lab: a few tiny real guests that run guestd, for tests, benchmarks and the demo.

:class:`Lab` boots guests named ``presculpt-lab-1..N`` (or ``<name_prefix>1..N``) through a
:class:`Hypervisor` (passed in; this module never imports libvirt), marks them with Presculpt
metadata so :meth:`Lab.down` removes only its own, and reads what each guest reports about itself
on its serial console.
"""

from __future__ import annotations

import grp
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presculpt.agent.hypervisor.base import DomainNotFound, Hypervisor
from presculpt.agent.model import DomainInfo
from presculpt.errors import UserError
from presculpt.lab.console import (
    Report,
    ReportTimeout,
    SeenReport,
    console_offset,
    latest_report,
    read_reports,
    wait_for_report,
)
from presculpt.lab.domain import LabDomainSpec, domain_xml, is_lab_domain
from presculpt.lab.image import DEFAULT_CACHE_DIR, GuestImage, ensure_image
from presculpt.lab.loadspec import LoadSpec, constant_load

log = logging.getLogger(__name__)

NAME_PREFIX = "presculpt-lab-"
DEFAULT_START_TIMEOUT_S = 60.0  # a start signal reaches a guest in milliseconds; this is for a busy host
DEFAULT_READY_TIMEOUT_S = 300.0  # TCG guests on a busy 2-core host boot slowly
LOCAL_URIS = ("qemu:///system", "qemu:///session")
READY_POLL_S = 0.05
BALLOON_SLACK_MIB = 2
KVM_DEVICE = Path("/dev/kvm")
KVM_GROUP = "kvm"
SHADOW_INITRD = "presculpt-shadows"  # the initramfs every lab shadow VM boots


class LabError(UserError):
    """The lab cannot do what was asked (a foreign domain in the way, a guest that never booted)."""


@dataclass(frozen=True)
class GuestShape:
    """The size every lab guest boots with (MiB); vCPUs and memory can be changed live up to the
    maxima."""

    vcpus: int = 1
    max_vcpus: int = 4
    memory_mib: int = 512
    max_memory_mib: int = 1024


class Lab:
    """Lab guests on one hypervisor. Files live under ``cache_dir`` (readable by QEMU).

    The lab manages the lab guests named ``name_prefix`` followed by a number, and only those: the
    default lab (``presculpt-lab-1``...) and the demo's (``presculpt-lab-demo-1``...) leave each
    other's guests alone, so that a test run never removes a running demo's guests or vice versa.
    """

    def __init__(
        self,
        hypervisor: Hypervisor,
        *,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        image_provider: Callable[[Path], GuestImage] = ensure_image,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        name_prefix: str = NAME_PREFIX,
    ) -> None:
        if not name_prefix.startswith(NAME_PREFIX):
            raise ValueError(f"a lab's name prefix must start with {NAME_PREFIX!r}, got {name_prefix!r}")
        self.hypervisor = hypervisor
        self.cache_dir = Path(cache_dir)
        self.name_prefix = name_prefix
        self._image_provider = image_provider
        self._clock = clock
        self._sleep = sleep

    # -- files of one guest ------------------------------------------------------------------
    def console_path(self, name: str) -> Path:
        """The serial console log of guest ``name``."""
        return self.cache_dir / "console" / f"{name}.log"

    def initrd_path(self, name: str) -> Path:
        """The guest's initramfs: the base image followed by its load spec archive."""
        return self.cache_dir / "guests" / f"{name}.initrd.img"

    # -- lifecycle ---------------------------------------------------------------------------
    def up(
        self,
        count: int,
        *,
        accel: str = "tcg",
        loads: LoadSpec | Sequence[LoadSpec] | None = None,
        shape: GuestShape = GuestShape(),
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ) -> list[str]:
        """Replace any lab guests by ``count`` new ones and wait until each reports READY.

        ``loads`` is one spec for every guest or one per guest (default: idle).
        Returns the guest names, ``presculpt-lab-1`` to ``presculpt-lab-<count>`` (with the
        lab's ``name_prefix``).
        """
        if count < 1:
            raise LabError("the lab needs at least one guest")
        specs = self._loads_per_guest(count, loads)
        names = [f"{self.name_prefix}{i}" for i in range(1, count + 1)]
        self._check_names_free(names)
        image = self._image_provider(self.cache_dir)
        self.down()
        for directory in (self.cache_dir / "guests", self.cache_dir / "console"):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o755)
        base = image.initrd_path.read_bytes()
        started: dict[str, float] = {}
        for name, spec in zip(names, specs, strict=True):
            self._write_initrd(name, base, spec)
            self.console_path(name).unlink(missing_ok=True)
            xml = domain_xml(
                LabDomainSpec(
                    name=name,
                    kernel_path=image.kernel_path,
                    initrd_path=self.initrd_path(name),
                    console_path=self.console_path(name),
                    accel=accel,
                    vcpus=shape.vcpus,
                    max_vcpus=shape.max_vcpus,
                    memory_mib=shape.memory_mib,
                    max_memory_mib=shape.max_memory_mib,
                    load_label=spec.label,
                )
            )
            self.hypervisor.define(xml)
            self.hypervisor.start(name)
            started[name] = self._clock()
            log.info("started %s (%s, load %s)", name, accel, spec.label)
        ready = self._wait_all_ready(started, ready_timeout_s)
        for name in names:
            log.info("%s ready in %.1f s", name, ready[name] - started[name])
        for name in names:
            self._wait_balloon_settled(name, shape.memory_mib, started[name] + ready_timeout_s)
        return names

    def down(self) -> list[str]:
        """Destroy and undefine every lab guest and remove its files; returns their names."""
        removed = []
        for info in self._lab_domains():
            try:
                self.hypervisor.destroy(info.name)
                self.hypervisor.undefine(info.name)
            except DomainNotFound:
                pass
            removed.append(info.name)
            log.info("removed %s", info.name)
        for directory, suffix in (
            (self.cache_dir / "guests", ".initrd.img"),
            (self.cache_dir / "console", ".log"),
        ):
            if directory.is_dir():
                for path in directory.glob(f"{self.name_prefix}*{suffix}"):
                    if self.owns(path.name.removesuffix(suffix)):
                        path.unlink(missing_ok=True)
        return removed

    def shadow_template(
        self, *, accel: str = "tcg", shape: GuestShape = GuestShape(), load: LoadSpec | None = None
    ) -> str:
        """Domain XML for shadow VMs of the lab guest: ``{name}`` stands in its name and console
        path (the shadow pool fills it in). All shadows share one initramfs (idle by default)."""
        image = self._image_provider(self.cache_dir)
        for directory in (self.cache_dir / "guests", self.cache_dir / "console"):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o755)
        self._write_initrd(SHADOW_INITRD, image.initrd_path.read_bytes(), load or constant_load())
        return domain_xml(
            LabDomainSpec(
                name="{name}",
                kernel_path=image.kernel_path,
                initrd_path=self.initrd_path(SHADOW_INITRD),
                console_path=self.cache_dir / "console" / "{name}.log",
                accel=accel,
                vcpus=shape.vcpus,
                max_vcpus=shape.max_vcpus,
                memory_mib=shape.memory_mib,
                max_memory_mib=shape.max_memory_mib,
                load_label="shadow",
            )
        )

    def guests(self) -> list[str]:
        """Names of the lab guests defined now."""
        return [info.name for info in self._lab_domains()]

    # -- what the guests say -----------------------------------------------------------------
    def latest_report(self, name: str) -> Report | None:
        """The guest's most recent report about itself."""
        return latest_report(self.console_path(name))

    def console_offset(self, name: str) -> int:
        """The current end of the guest's console log (to wait only for later reports)."""
        return console_offset(self.console_path(name))

    def wait_for_report(
        self,
        name: str,
        predicate: Callable[[Report], bool],
        *,
        after_offset: int = 0,
        timeout_s: float = 120.0,
    ) -> SeenReport:
        """Wait until guest ``name`` reports something satisfying ``predicate``."""
        return wait_for_report(
            self.console_path(name), predicate, after_offset=after_offset, timeout_s=timeout_s
        )

    def start_loads(
        self, names: Sequence[str], *, timeout_s: float = DEFAULT_START_TIMEOUT_S
    ) -> dict[str, SeenReport]:
        """Start the loads of guests booted with ``start_on_nmi`` specs at one instant: inject an
        NMI into each (back to back), then wait until each reports its start. Returns each
        guest's first started report; ``seen_at`` tells how late the host saw it."""
        offsets = {name: self.console_offset(name) for name in names}
        for name in names:
            self.hypervisor.inject_nmi(name)
        seen = {}
        for name in names:
            try:
                seen[name] = self.wait_for_report(
                    name, lambda r: bool(r.started), after_offset=offsets[name], timeout_s=timeout_s
                )
            except ReportTimeout:
                raise LabError(
                    f"{name} did not report the start of its load within {timeout_s:.0f} s "
                    f"(see {self.console_path(name)})"
                ) from None
        return seen

    def wait_ready(self, name: str, *, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> SeenReport:
        """Wait for the guest's READY line."""
        try:
            return self.wait_for_report(name, lambda r: r.kind == "ready", timeout_s=timeout_s)
        except ReportTimeout:
            raise self._not_ready(name, timeout_s) from None

    def _not_ready(self, name: str, timeout_s: float) -> LabError:
        return LabError(
            f"{name} did not report READY within {timeout_s:.0f} s (see {self.console_path(name)})"
        )

    def _wait_all_ready(self, started: dict[str, float], timeout_s: float) -> dict[str, float]:
        """Poll every booting guest's log at once; returns when each printed READY."""
        offsets = dict.fromkeys(started, 0)
        ready: dict[str, float] = {}
        while len(ready) < len(started):
            for name in started:
                if name in ready:
                    continue
                reports, offsets[name] = read_reports(self.console_path(name), offsets[name])
                now = self._clock()
                if any(r.kind == "ready" for r in reports):
                    ready[name] = now
                elif now > started[name] + timeout_s:
                    raise self._not_ready(name, timeout_s)
            self._sleep(READY_POLL_S)
        return ready

    def _wait_balloon_settled(self, name: str, memory_mib: int, deadline: float) -> None:
        """Wait until the balloon holds the guest at ``memory_mib`` (guests boot with their
        maximum) and the guest has reported since, so a fresh lab shows its settled size."""
        while self.hypervisor.domain_info(name).memory_mib > memory_mib + BALLOON_SLACK_MIB:
            if self._clock() > deadline:
                raise LabError(f"{name}: the balloon did not reach {memory_mib} MiB in time")
            self._sleep(READY_POLL_S * 2)
        offset = self.console_offset(name)
        try:
            wait_for_report(
                self.console_path(name),
                lambda r: r.kind == "report",
                after_offset=offset,
                timeout_s=max(1.0, deadline - self._clock()),
                clock=self._clock,
                sleep=self._sleep,
            )
        except ReportTimeout:
            raise LabError(f"{name} stopped reporting (see {self.console_path(name)})") from None

    def status(self) -> list[dict[str, Any]]:
        """One row per lab guest: libvirt's view (``vcpus``, ``memory_mib``...) beside the
        guest's own latest report (``guest_cpus``, ``guest_mem_total_mib``, ``load_cores``...)."""
        rows = []
        for info in self._lab_domains():
            path = self.console_path(info.name)
            report = latest_report(path) if info.active else None
            rows.append(_status_row(info, report, _age_s(path) if report else None))
        return rows

    # -- helpers -----------------------------------------------------------------------------
    def owns(self, name: str) -> bool:
        """Whether guest ``name`` belongs to this lab: the prefix followed by a number."""
        return name.startswith(self.name_prefix) and name[len(self.name_prefix):].isdigit()

    def _lab_domains(self) -> list[DomainInfo]:
        return [d for d in self.hypervisor.list_domains()
                if is_lab_domain(d.metadata) and self.owns(d.name)]

    def _check_names_free(self, names: Sequence[str]) -> None:
        foreign = {
            d.name for d in self.hypervisor.list_domains() if not is_lab_domain(d.metadata)
        } & set(names)
        if foreign:
            raise LabError(
                f"domain {sorted(foreign)[0]} exists and is not a lab guest; rename or remove it"
            )

    @staticmethod
    def _loads_per_guest(count: int, loads: LoadSpec | Sequence[LoadSpec] | None) -> list[LoadSpec]:
        if loads is None:
            return [constant_load()] * count
        if isinstance(loads, LoadSpec):
            return [loads] * count
        if len(loads) != count:
            raise LabError(f"got {len(loads)} load specs for {count} guests")
        return list(loads)

    def _write_initrd(self, name: str, base: bytes, spec: LoadSpec) -> None:
        path = self.initrd_path(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(base + spec.archive())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def _status_row(info: DomainInfo, report: Report | None, age_s: float | None) -> dict[str, Any]:
    balloon = info.balloon
    return {
        "name": info.name,
        "state": info.state,
        "vcpus": info.vcpus,
        "max_vcpus": info.max_vcpus,
        "memory_mib": info.memory_mib,
        "max_memory_mib": info.max_memory_mib,
        "cpu_quota_cores": info.cpu_quota_cores,
        "balloon_actual_mib": balloon.actual_mib if balloon else None,
        "guest_cpus": report.online_cpus if report else None,
        "guest_mem_total_mib": _round(report.mem_total_mib) if report else None,
        "guest_mem_available_mib": _round(report.mem_available_mib) if report else None,
        "load_cores": report.load_cores if report else None,
        "work_rate": _int(report.work_rate) if report else None,
        "demand_cores": report.demand_cores if report else None,
        "demand_mem_mib": report.demand_mem_mib if report else None,
        "mem_held_mib": report.mem_held_mib if report else None,
        "step": report.step if report else None,
        "report_age_s": _round(age_s),
        "load": info.metadata.get("load"),
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _age_s(path: Path) -> float | None:
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None


# -- the libvirt daemons -------------------------------------------------------------------------


def libvirt_reachable(uri: str = "qemu:///system") -> bool:
    """True when ``virsh -c URI version`` can talk to the daemon."""
    try:
        done = subprocess.run(
            ["virsh", "-c", uri, "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_libvirt_running(
    uri: str = "qemu:///system",
    *,
    timeout_s: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Prepare a local host for lab guests: /dev/kvm access (see :func:`ensure_kvm_device_access`),
    and virtlogd and libvirtd started as daemons when the URI is not reachable (machines
    without systemd). Remote URIs are only checked. Raises :class:`LabError`.
    """
    if uri in LOCAL_URIS:
        ensure_kvm_device_access()
    if libvirt_reachable(uri):
        return
    if uri not in LOCAL_URIS:
        raise LabError(f"cannot reach libvirt at {uri}")
    for daemon in ("virtlogd", "libvirtd"):
        if _daemon_running(daemon):
            continue
        if shutil.which(daemon) is None and not Path(f"/usr/sbin/{daemon}").exists():
            raise LabError(f"{daemon} is not installed (apt-get install libvirt-daemon-system)")
        log.info("starting %s", daemon)
        subprocess.run([shutil.which(daemon) or f"/usr/sbin/{daemon}", "-d"], check=False)
    deadline = clock() + timeout_s
    while not libvirt_reachable(uri):
        if clock() >= deadline:
            raise LabError(f"libvirtd started but {uri} is not reachable after {timeout_s:.0f} s")
        sleep(0.5)


def ensure_kvm_device_access(device: Path = KVM_DEVICE, group: str = KVM_GROUP) -> bool:
    """Give /dev/kvm the owner and mode udev gives it on a normal host (root:kvm 0660).

    Without udev the device stays root-only. libvirt then finds KVM present when it probes QEMU
    but unusable by the ``libvirt-qemu`` user afterwards, throws its capability cache away on
    every call and re-probes QEMU (some 40 s per define on a 2-core host), even for TCG guests.
    Returns True when it changed something.
    """
    try:
        info = device.stat()
        gid = grp.getgrnam(group).gr_gid
    except (FileNotFoundError, KeyError):
        return False
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o006 == 0o006 or (info.st_gid == gid and mode & 0o060 == 0o060):
        return False
    log.warning(
        "giving %s group %s and mode 0660 (as udev would) so libvirt can cache QEMU's capabilities",
        device,
        group,
    )
    try:
        os.chown(device, -1, gid)
        os.chmod(device, mode | 0o060)
    except OSError as err:
        log.warning("cannot change %s (%s): defining guests will be slow", device, err)
        return False
    return True


def _daemon_running(name: str) -> bool:
    try:
        pid = int(Path(f"/run/{name}.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True
