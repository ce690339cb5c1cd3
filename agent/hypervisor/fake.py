"""An in-memory hypervisor with the same contract as the libvirt one.

Used by unit tests of everything above the hypervisor layer, and by simulations. It keeps the
rules the real one enforces (limits, states, unknown domains) and raises the same typed errors.
Guests "use" memory as set through :meth:`FakeHypervisor.set_guest_usage`.
"""

from __future__ import annotations

import re
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

from presculpt.agent.hypervisor.base import (
    METADATA_NAMESPACE,
    DomainNotFound,
    HypervisorUnavailable,
    InvalidOperation,
)
from presculpt.agent.model import BalloonStats, DomainCounters, DomainInfo, HostInfo


@dataclass
class _Domain:
    name: str
    uuid: str
    max_vcpus: int
    vcpus: int
    max_memory_mib: int
    memory_mib: int
    state: str = "shutoff"
    quota: float | None = None
    used_mib: float = 100.0
    cpu_cores: float = 0.0  # simulated usage, integrated into cpu_time_ns by the clock
    cpu_time_ns: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    saved: bool = False
    xml: str = ""
    domain_type: str = "kvm"


class FakeHypervisor:
    """A host with ``cpus`` CPUs and ``memory_mib`` of memory, in memory."""

    def __init__(
        self,
        cpus: int = 8,
        memory_mib: int = 32768,
        uri: str = "fake:///host",
        clock: Callable[[], float] = time.time,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ):
        self.uri = uri
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.clock = clock
        self.monotonic_ns = monotonic_ns
        self.connected = False
        self.available = True
        self.calls: list[tuple[str, ...]] = []
        self._domains: dict[str, _Domain] = {}

    # -- test helpers --------------------------------------------------------------------------
    def add_domain(
        self,
        name: str,
        vcpus: int = 1,
        max_vcpus: int = 4,
        memory_mib: int = 1024,
        max_memory_mib: int = 2048,
        state: str = "running",
        used_mib: float = 100.0,
        metadata: dict[str, str] | None = None,
        domain_type: str = "kvm",
    ) -> None:
        self._domains[name] = _Domain(
            name=name,
            uuid=str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{self.uri}/{name}")),
            max_vcpus=max_vcpus,
            vcpus=vcpus,
            max_memory_mib=max_memory_mib,
            memory_mib=memory_mib,
            state=state,
            used_mib=used_mib,
            metadata=dict(metadata or {}),
            domain_type=domain_type,
        )

    def set_guest_usage(self, name: str, used_mib: float | None = None, cpu_cores: float | None = None) -> None:
        dom = self._get(name)
        if used_mib is not None:
            dom.used_mib = used_mib
        if cpu_cores is not None:
            dom.cpu_cores = cpu_cores

    def advance_cpu(self, seconds: float) -> None:
        """Accumulate CPU time for ``seconds`` of simulated wall time."""
        for dom in self._domains.values():
            if dom.state == "running":
                dom.cpu_time_ns += int(min(dom.cpu_cores, dom.quota or dom.vcpus) * seconds * 1e9)

    # -- connection ----------------------------------------------------------------------------
    def connect(self) -> None:
        if not self.available:
            raise HypervisorUnavailable(f"cannot connect to {self.uri}: unavailable")
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def _check(self) -> None:
        if not self.available:
            raise HypervisorUnavailable(f"{self.uri}: connection lost")
        self.connected = True

    def _get(self, name: str) -> _Domain:
        self._check()
        try:
            return self._domains[name]
        except KeyError:
            raise DomainNotFound(f"no domain named {name!r} on {self.uri}") from None

    # -- inventory -----------------------------------------------------------------------------
    def host_info(self) -> HostInfo:
        self._check()
        return HostInfo("fakehost", self.uri, self.cpus, self.memory_mib, "FAKE 1.0.0", "0.0.0")

    def list_domains(self) -> list[DomainInfo]:
        self._check()
        return [self._describe(d) for d in sorted(self._domains.values(), key=lambda d: d.name)]

    def domain_info(self, name: str) -> DomainInfo:
        return self._describe(self._get(name))

    def _balloon(self, dom: _Domain) -> BalloonStats | None:
        if dom.state not in ("running", "paused"):
            return None
        total = float(dom.memory_mib)
        return BalloonStats(
            actual_mib=total,
            unused_mib=max(0.0, total - dom.used_mib),
            available_mib=total,
            usable_mib=max(0.0, total - dom.used_mib),
            rss_mib=dom.used_mib,
            last_update=int(self.clock()),
        )

    def _describe(self, dom: _Domain) -> DomainInfo:
        return DomainInfo(
            name=dom.name,
            uuid=dom.uuid,
            state=dom.state,
            vcpus=dom.vcpus,
            max_vcpus=dom.max_vcpus,
            memory_mib=dom.memory_mib,
            max_memory_mib=dom.max_memory_mib,
            cpu_quota_cores=dom.quota if dom.state in ("running", "paused") else None,
            balloon=self._balloon(dom),
            metadata=dict(dom.metadata),
            has_managed_save=dom.saved,
            domain_type=dom.domain_type,
        )

    def domain_counters(self) -> list[DomainCounters]:
        self._check()
        now = self.monotonic_ns()
        return [
            DomainCounters(
                name=d.name,
                uuid=d.uuid,
                state=d.state,
                timestamp_ns=now,
                cpu_time_ns=d.cpu_time_ns,
                vcpus=d.vcpus,
                max_vcpus=d.max_vcpus,
                memory_mib=d.memory_mib,
                max_memory_mib=d.max_memory_mib,
                balloon=self._balloon(d),
            )
            for d in sorted(self._domains.values(), key=lambda d: d.name)
            if d.state in ("running", "paused")
        ]

    # -- live resize ---------------------------------------------------------------------------
    def _running(self, name: str, what: str) -> _Domain:
        dom = self._get(name)
        if dom.state not in ("running", "paused"):
            raise InvalidOperation(f"{what}: domain {name} is not running")
        return dom

    def set_vcpus(self, name: str, count: int) -> None:
        what = f"set vCPUs of {name} to {count}"
        dom = self._running(name, what)
        if not 1 <= count <= dom.max_vcpus:
            raise InvalidOperation(f"{what}: requested cpu amount exceeds maximum ({count} > {dom.max_vcpus})")
        self.calls.append(("set_vcpus", name, str(count)))
        dom.vcpus = count

    def set_cpu_quota(self, name: str, cores: float | None) -> None:
        dom = self._running(name, f"set CPU quota of {name}")
        self.calls.append(("set_cpu_quota", name, str(cores)))
        dom.quota = None if cores is None else round(cores, 4)

    def set_memory(self, name: str, memory_mib: int) -> None:
        what = f"set memory of {name} to {memory_mib} MiB"
        dom = self._running(name, what)
        if memory_mib > dom.max_memory_mib:
            raise InvalidOperation(f"{what}: cannot set memory higher than max memory")
        self.calls.append(("set_memory", name, str(memory_mib)))
        dom.memory_mib = int(memory_mib)

    # -- lifecycle -----------------------------------------------------------------------------
    def define(self, xml: str) -> str:
        self._check()
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as err:
            raise InvalidOperation(f"define domain: XML error: {err}") from None
        name = (root.findtext("name") or "").strip()
        if not name:
            raise InvalidOperation("define domain: missing name")
        vcpu = root.find("vcpu")
        max_vcpus = int(vcpu.text) if vcpu is not None and vcpu.text else 1
        vcpus = int(vcpu.get("current", max_vcpus)) if vcpu is not None else 1
        max_mem = _mib(root.find("memory"), 1024)
        cur_mem = _mib(root.find("currentMemory"), max_mem)
        metadata = {}
        md = root.find("metadata")
        if md is not None:
            for el in md:
                if el.tag.startswith(f"{{{METADATA_NAMESPACE}}}"):
                    metadata.update(el.attrib)
        self.calls.append(("define", name))
        if name in self._domains:
            dom = self._domains[name]
            dom.metadata = metadata or dom.metadata
        else:
            self.add_domain(name, vcpus, max_vcpus, cur_mem, max_mem, state="shutoff", metadata=metadata,
                            domain_type=root.get("type", "kvm"))
        self._domains[name].xml = xml
        return name

    def start(self, name: str, paused: bool = False) -> None:
        dom = self._get(name)
        if dom.state in ("running", "paused"):
            raise InvalidOperation(f"start {name}: domain is already running")
        self.calls.append(("start", name))
        dom.state = "paused" if paused else "running"
        dom.saved = False

    def pause(self, name: str) -> None:
        dom = self._running(name, f"pause {name}")
        self.calls.append(("pause", name))
        dom.state = "paused"

    def resume(self, name: str) -> None:
        dom = self._get(name)
        if dom.state != "paused":
            raise InvalidOperation(f"resume {name}: domain is not paused")
        self.calls.append(("resume", name))
        dom.state = "running"

    def inject_nmi(self, name: str) -> None:
        self._running(name, f"inject an NMI into {name}")
        self.calls.append(("inject_nmi", name))

    def managed_save(self, name: str) -> None:
        dom = self._running(name, f"save {name}")
        self.calls.append(("managed_save", name))
        dom.state, dom.saved = "shutoff", True

    def destroy(self, name: str) -> None:
        dom = self._get(name)
        self.calls.append(("destroy", name))
        if dom.state in ("running", "paused"):
            dom.state = "shutoff"

    def undefine(self, name: str) -> None:
        dom = self._get(name)
        if dom.state in ("running", "paused"):
            raise InvalidOperation(f"undefine {name}: domain is running")
        self.calls.append(("undefine", name))
        del self._domains[name]

    def domain_xml(self, name: str) -> str:
        return self._get(name).xml or f"<domain><name>{name}</name></domain>"

    def set_metadata(self, name: str, values: dict[str, str]) -> None:
        dom = self._get(name)
        for key in values:
            if not re.fullmatch(r"[A-Za-z_][\w.-]*", key):
                raise InvalidOperation(f"set metadata of {name}: invalid key {key!r}")
        self.calls.append(("set_metadata", name))
        dom.metadata = {**dom.metadata, **{k: str(v) for k, v in values.items()}}


def _mib(element: ET.Element | None, default: int) -> int:
    if element is None or not element.text:
        return default
    value = int(element.text)
    unit = element.get("unit", "KiB")
    factor = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}.get(unit, 1 / 1024)
    return int(value * factor)
