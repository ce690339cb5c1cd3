"""The one interface through which Presculpt touches a hypervisor.

Everything above this layer (collectors, the safety guard, the shadow pool, the lab, the CLI) speaks
to a :class:`Hypervisor`; only :mod:`presculpt.agent.hypervisor.libvirt` imports libvirt, and it maps
every libvirt error to one of the typed exceptions below.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from presculpt.agent.model import DomainCounters, DomainInfo, HostInfo

# Domain metadata lives in its own XML namespace inside the domain definition.
METADATA_NAMESPACE = "https://presculpt.dev/xmlns/domain/1"
METADATA_PREFIX = "presculpt"


class HypervisorError(Exception):
    """Base of every error the hypervisor layer raises; its message is one readable line."""


class HypervisorUnavailable(HypervisorError):
    """The hypervisor cannot be reached (libvirtd down, bad URI, permission denied)."""


class DomainNotFound(HypervisorError):
    """No domain of that name exists on this host."""


class InvalidOperation(HypervisorError):
    """The hypervisor refused the request as invalid for the domain's state or limits."""


class OperationFailed(HypervisorError):
    """The request was valid but the hypervisor failed to carry it out."""


@runtime_checkable
class Hypervisor(Protocol):
    """A host's hypervisor. Methods raise :class:`HypervisorError` subclasses, never return None
    to signal failure. Live changes affect the running domain only (not its persistent config)."""

    uri: str

    # -- lifecycle of the connection ---------------------------------------------------------
    def connect(self) -> None: ...
    def close(self) -> None: ...

    # -- inventory and metrics ---------------------------------------------------------------
    def host_info(self) -> HostInfo: ...
    def list_domains(self) -> list[DomainInfo]: ...
    def domain_info(self, name: str) -> DomainInfo: ...
    def domain_counters(self) -> list[DomainCounters]:
        """Cumulative counters of every active domain in one bulk call."""
        ...

    # -- live resize -------------------------------------------------------------------------
    def set_vcpus(self, name: str, count: int) -> None: ...
    def set_cpu_quota(self, name: str, cores: float | None) -> None:
        """Cap the domain at ``cores`` in total, spread evenly over its current vCPUs
        (None removes the cap)."""
        ...

    def set_memory(self, name: str, memory_mib: int) -> None:
        """Set the balloon target of a running domain."""
        ...

    # -- domain lifecycle (lab and shadow pool) ------------------------------------------
    def define(self, xml: str) -> str:
        """Define a persistent domain from XML; returns its name."""
        ...

    def start(self, name: str, paused: bool = False) -> None:
        """Boot a defined domain (restores a managed save image when one exists)."""
        ...

    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...
    def inject_nmi(self, name: str) -> None:
        """Send a non-maskable interrupt to the running domain (the lab uses it as a start signal)."""
        ...

    def managed_save(self, name: str) -> None:
        """Save a running domain's memory to the host's managed-save image and stop it."""
        ...

    def destroy(self, name: str) -> None:
        """Stop the domain at once (no-op when it is not running)."""
        ...

    def undefine(self, name: str) -> None:
        """Remove the definition (and any managed-save image); the domain must be stopped."""
        ...

    def domain_xml(self, name: str) -> str: ...
    def set_metadata(self, name: str, values: dict[str, str]) -> None:
        """Store string key/values in the domain's Presculpt metadata (live and persistent)."""
        ...
