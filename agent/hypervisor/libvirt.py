"""The libvirt implementation of :class:`~presculpt.agent.hypervisor.base.Hypervisor`.

This is the only module of Presculpt that imports ``libvirt``. Every libvirt error is mapped here,
in :func:`_translate`, to one of the typed errors of ``base``; callers never see ``libvirtError``.
A lost connection (libvirtd restarted) is reopened transparently and the call retried once: every
operation here either reads or sets a target state, so a retry is harmless.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from presculpt.agent.hypervisor.base import (
    METADATA_NAMESPACE,
    METADATA_PREFIX,
    DomainNotFound,
    HypervisorError,
    HypervisorUnavailable,
    InvalidOperation,
    OperationFailed,
)
from presculpt.agent.model import BalloonStats, DomainCounters, DomainInfo, HostInfo

log = logging.getLogger(__name__)

T = TypeVar("T")

KIB_PER_MIB = 1024
CPU_PERIOD_US = 100_000  # the CFS period used with vcpu_quota (libvirt's default)
MIN_QUOTA_US = 1_000  # the smallest vcpu_quota libvirt accepts

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

_BULK_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)

_INVALID_CODES = {
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_OPERATION_DENIED,
    libvirt.VIR_ERR_DOM_EXIST,
}
_UNAVAILABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_RPC,
}
_UNAVAILABLE_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}


def _silence_default_error_handler() -> None:
    # libvirt prints every error on stderr by default; we raise typed errors instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _translate(err: libvirt.libvirtError, what: str) -> HypervisorError:
    """Map a libvirt error to the typed error of the same meaning, with a one-line message."""
    code = err.get_error_code()
    message = (err.get_error_message() or str(err)).strip().splitlines()[0]
    text = f"{what}: {message}"
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(text)
    if code in _UNAVAILABLE_CODES or err.get_error_domain() in _UNAVAILABLE_DOMAINS:
        return HypervisorUnavailable(text)
    if code in _INVALID_CODES:
        return InvalidOperation(text)
    return OperationFailed(text)


def _mib(kib: int | float | None) -> float | None:
    return None if kib is None else kib / KIB_PER_MIB


class LibvirtHypervisor:
    """A libvirt connection to one host (``qemu:///system`` on a KVM host).

    Nothing happens until :meth:`connect`; :meth:`close` releases the connection.
    """

    def __init__(self, uri: str = "qemu:///system", *, clock: Callable[[], int] = time.monotonic_ns):
        self.uri = uri
        self._clock = clock
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()

    # -- connection ---------------------------------------------------------------------------
    def connect(self) -> None:
        with self._lock:
            if self._conn is not None and self._alive():
                return
            _silence_default_error_handler()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as err:
                self._conn = None
                message = (err.get_error_message() or str(err)).strip().splitlines()[0]
                raise HypervisorUnavailable(f"cannot connect to {self.uri}: {message}") from None
            log.info("connected to %s", self.uri)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def _alive(self) -> bool:
        try:
            return bool(self._conn is not None and self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _call(self, what: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run ``fn(conn)``, reconnecting and retrying once if the connection was lost."""
        for attempt in (1, 2):
            with self._lock:
                if self._conn is None or not self._alive():
                    if self._conn is not None:
                        log.warning("connection to %s lost; reconnecting", self.uri)
                        self._conn = None
                    self.connect()
                conn = self._conn
            assert conn is not None
            try:
                return fn(conn)
            except libvirt.libvirtError as err:
                typed = _translate(err, what)
                if isinstance(typed, HypervisorUnavailable) and attempt == 1:
                    log.warning("%s; reconnecting and retrying once", typed)
                    with self._lock:
                        self._conn = None
                    continue
                raise typed from None
        raise AssertionError("unreachable")

    def _domain(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"no domain named {name!r} on {self.uri}") from None
            raise

    # -- inventory ----------------------------------------------------------------------------
    def host_info(self) -> HostInfo:
        def read(conn: libvirt.virConnect) -> HostInfo:
            info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
            hv_version = conn.getVersion()
            lib_version = conn.getLibVersion()
            try:
                hostname = conn.getHostname()
            except libvirt.libvirtError:
                hostname = socket.gethostname()
            return HostInfo(
                hostname=hostname,
                uri=self.uri,
                cpus=int(info[2]),
                memory_mib=int(info[1]),
                hypervisor=f"{conn.getType()} {_version(hv_version)}",
                libvirt_version=_version(lib_version),
            )

        return self._call("host info", read)

    def list_domains(self) -> list[DomainInfo]:
        def read(conn: libvirt.virConnect) -> list[DomainInfo]:
            result = []
            for dom in conn.listAllDomains(0):
                try:
                    result.append(self._describe(dom))
                except libvirt.libvirtError as err:
                    if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        continue  # vanished between listing and reading
                    raise
            return sorted(result, key=lambda d: d.name)

        return self._call("list domains", read)

    def domain_info(self, name: str) -> DomainInfo:
        return self._call(f"domain {name}", lambda conn: self._describe(self._domain(conn, name)))

    def _describe(self, dom: libvirt.virDomain) -> DomainInfo:
        state_code, max_kib, cur_kib, _nr_vcpus, _cpu_time = dom.info()
        state = _STATE_NAMES.get(state_code, "unknown")
        active = bool(dom.isActive())
        scope = libvirt.VIR_DOMAIN_AFFECT_LIVE if active else libvirt.VIR_DOMAIN_AFFECT_CONFIG
        vcpus = dom.vcpusFlags(scope)
        max_vcpus = dom.vcpusFlags(scope | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        balloon = None
        quota = None
        if active:
            balloon = _balloon_from_kib(dom.memoryStats(), default_actual_kib=cur_kib)
            quota = self._quota_cores(dom, vcpus)
        return DomainInfo(
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=state,
            vcpus=int(vcpus),
            max_vcpus=int(max_vcpus),
            # A running guest's memory is its balloon's size now, as QEMU reports it (memoryStats):
            # info()'s value follows QEMU's balloon events, which trail a change by about a second,
            # and a resize read against it could take a new size for the old one and do nothing.
            memory_mib=int(balloon.actual_mib) if balloon is not None else int(cur_kib // KIB_PER_MIB),
            max_memory_mib=int(max_kib // KIB_PER_MIB),
            cpu_quota_cores=quota,
            balloon=balloon,
            metadata=_read_metadata(dom),
            has_managed_save=bool(dom.hasManagedSaveImage(0)),
            domain_type=ET.fromstring(dom.XMLDesc(0)).get("type", ""),
        )

    def _quota_cores(self, dom: libvirt.virDomain, vcpus: int) -> float | None:
        try:
            params = dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as err:
            if err.get_error_code() in _INVALID_CODES:
                return None  # drivers without CFS quota (e.g. the test driver)
            raise
        quota = params.get("vcpu_quota")
        period = params.get("vcpu_period") or CPU_PERIOD_US
        if quota is None or quota <= 0 or quota >= 2**40:
            return None
        return round(quota / period * vcpus, 4)

    # -- metrics ------------------------------------------------------------------------------
    def domain_counters(self) -> list[DomainCounters]:
        def read(conn: libvirt.virConnect) -> list[DomainCounters]:
            records = conn.getAllDomainStats(
                _BULK_STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            )
            now = self._clock()
            return [_counters(dom, stats, now) for dom, stats in records]

        return self._call("bulk domain stats", read)

    # -- live resize --------------------------------------------------------------------------
    def set_vcpus(self, name: str, count: int) -> None:
        def apply(conn: libvirt.virConnect) -> None:
            self._domain(conn, name).setVcpusFlags(int(count), libvirt.VIR_DOMAIN_AFFECT_LIVE)

        self._call(f"set vCPUs of {name} to {count}", apply)

    def set_cpu_quota(self, name: str, cores: float | None) -> None:
        def apply(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, name)
            vcpus = dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
            if cores is None:
                quota = -1  # negative: no limit
            else:
                quota = max(MIN_QUOTA_US, int(math.floor(cores / vcpus * CPU_PERIOD_US)))
            dom.setSchedulerParametersFlags(
                {"vcpu_period": CPU_PERIOD_US, "vcpu_quota": quota}, libvirt.VIR_DOMAIN_AFFECT_LIVE
            )

        limit = "no limit" if cores is None else f"{cores:g} cores"
        self._call(f"set CPU quota of {name} to {limit}", apply)

    def set_memory(self, name: str, memory_mib: int) -> None:
        def apply(conn: libvirt.virConnect) -> None:
            self._domain(conn, name).setMemoryFlags(
                int(memory_mib) * KIB_PER_MIB, libvirt.VIR_DOMAIN_AFFECT_LIVE
            )

        self._call(f"set memory of {name} to {memory_mib} MiB", apply)

    # -- domain lifecycle ---------------------------------------------------------------------
    def define(self, xml: str) -> str:
        return self._call("define domain", lambda conn: conn.defineXML(xml).name())

    def start(self, name: str, paused: bool = False) -> None:
        def apply(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, name)
            if not paused:
                dom.createWithFlags(0)
                return
            try:
                dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            except libvirt.libvirtError as err:
                if err.get_error_code() not in _INVALID_CODES or dom.isActive():
                    raise
                dom.createWithFlags(0)  # drivers without START_PAUSED (the test driver)
                dom.suspend()

        self._call(f"start {name}", apply)

    def pause(self, name: str) -> None:
        self._call(f"pause {name}", lambda conn: self._domain(conn, name).suspend())

    def resume(self, name: str) -> None:
        self._call(f"resume {name}", lambda conn: self._domain(conn, name).resume())

    def inject_nmi(self, name: str) -> None:
        self._call(f"inject an NMI into {name}", lambda conn: self._domain(conn, name).injectNMI(0))

    def managed_save(self, name: str) -> None:
        self._call(f"save {name}", lambda conn: self._domain(conn, name).managedSave(0))

    def destroy(self, name: str) -> None:
        def apply(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, name)
            if dom.isActive():
                dom.destroy()

        self._call(f"destroy {name}", apply)

    def undefine(self, name: str) -> None:
        def apply(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, name)
            flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as err:
                if err.get_error_code() not in _INVALID_CODES:
                    raise
                dom.undefine()  # drivers that know no flags

        self._call(f"undefine {name}", apply)

    def domain_xml(self, name: str) -> str:
        return self._call(f"read XML of {name}", lambda conn: self._domain(conn, name).XMLDesc(0))

    def set_metadata(self, name: str, values: dict[str, str]) -> None:
        def apply(conn: libvirt.virConnect) -> None:
            dom = self._domain(conn, name)
            tag, merged = _metadata_element(dom)
            merged.update({k: str(v) for k, v in values.items()})
            element = ET.Element(tag, {k: v for k, v in sorted(merged.items())})
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                ET.tostring(element, encoding="unicode"),
                METADATA_PREFIX,
                METADATA_NAMESPACE,
                flags,
            )

        self._call(f"set metadata of {name}", apply)


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _metadata_element(dom: libvirt.virDomain) -> tuple[str, dict[str, str]]:
    """The tag and attributes of the domain's Presculpt metadata element (``("vm", {})`` if none)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NAMESPACE, 0)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return "vm", {}
        raise
    try:
        element = ET.fromstring(text)
    except ET.ParseError:
        log.warning("ignoring unreadable Presculpt metadata on %s", dom.name())
        return "vm", {}
    tag = element.tag.rpartition("}")[2]
    return tag, dict(element.attrib)


def _read_metadata(dom: libvirt.virDomain) -> dict[str, str]:
    return _metadata_element(dom)[1]


def _balloon_from_kib(stats: dict[str, int], default_actual_kib: int) -> BalloonStats:
    """Balloon statistics from ``memoryStats()`` (KiB) to MiB."""
    last_update = stats.get("last_update") or None
    reported = last_update is not None
    return BalloonStats(
        actual_mib=_mib(stats.get("actual", default_actual_kib)) or 0.0,
        unused_mib=_mib(stats.get("unused")) if reported else None,
        available_mib=_mib(stats.get("available")) if reported else None,
        usable_mib=_mib(stats.get("usable")) if reported else None,
        rss_mib=_mib(stats.get("rss")),
        last_update=last_update,
    )


def _counters(dom: libvirt.virDomain, stats: dict[str, Any], now_ns: int) -> DomainCounters:
    """One record of ``getAllDomainStats`` to raw counters (bulk stats use KiB for memory)."""
    balloon = _balloon_from_kib(
        {
            key.removeprefix("balloon.").replace("-", "_"): value
            for key, value in stats.items()
            if key.startswith("balloon.")
        },
        default_actual_kib=stats.get("balloon.current", 0),
    )
    block = int(stats.get("block.count", 0))
    net = int(stats.get("net.count", 0))
    return DomainCounters(
        name=dom.name(),
        uuid=dom.UUIDString(),
        state=_STATE_NAMES.get(stats.get("state.state", 0), "unknown"),
        timestamp_ns=now_ns,
        cpu_time_ns=int(stats.get("cpu.time", 0)),
        vcpus=int(stats.get("vcpu.current", 0)),
        max_vcpus=int(stats.get("vcpu.maximum", 0)),
        memory_mib=int(stats.get("balloon.current", 0) // KIB_PER_MIB),
        max_memory_mib=int(stats.get("balloon.maximum", 0) // KIB_PER_MIB),
        balloon=balloon,
        block_read_bytes=sum(int(stats.get(f"block.{i}.rd.bytes", 0)) for i in range(block)),
        block_write_bytes=sum(int(stats.get(f"block.{i}.wr.bytes", 0)) for i in range(block)),
        net_rx_bytes=sum(int(stats.get(f"net.{i}.rx.bytes", 0)) for i in range(net)),
        net_tx_bytes=sum(int(stats.get(f"net.{i}.tx.bytes", 0)) for i in range(net)),
    )
