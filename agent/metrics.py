"""The agent's Prometheus metrics, in a registry of its own (one per agent instance).

Besides its own workings, the agent exports what it alone measures: the host's capacity and the
allocation of its guests (``presculpt_agent_host_*``), and each guest's shape and usage
(``presculpt_agent_vm_*``, labelled ``host`` and ``vm``). Those are snapshots replaced as a whole at
each inventory read or sample, so a guest that goes takes its series with it. ``host`` is the agent
id, the name the coordinator knows the host by, so dashboards can join both daemons' series.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from presculpt.agent.model import DomainInfo, HostInfo, HostSample, VmSample
from presculpt.metrics import SnapshotGauge

HOST = ("host",)
VM = ("host", "vm")


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.samples_taken = Counter("presculpt_agent_samples", "VM samples taken", registry=r)
        self.batches_acked = Counter(
            "presculpt_agent_batches_acked", "Batches the coordinator acknowledged as stored", registry=r)
        self.spool_batches = Gauge(
            "presculpt_agent_spool_batches", "Batches waiting in the spool for an acknowledgement", registry=r)
        self.connected = Gauge("presculpt_agent_connected", "1 while the coordinator stream is up", registry=r)
        self.reconnects = Counter("presculpt_agent_reconnects", "Stream (re)connection attempts", registry=r)
        self.commands = Counter("presculpt_agent_commands", "Commands handled, by kind and outcome status",
                                ["kind", "status"], registry=r)
        self.command_seconds = Histogram(
            "presculpt_agent_command_seconds", "Time to apply a command",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.errors = Counter("presculpt_agent_errors", "Errors, by kind", ["kind"], registry=r)
        self.info = Gauge("presculpt_agent_info", "1, labelled with the agent's host id, libvirt URI and hypervisor",
                          ["host", "uri", "hypervisor", "version"], registry=r)
        # The host: capacity (libvirt), the guard's limits, the guests' allocation, usage (psutil).
        self.host_cpus = SnapshotGauge("presculpt_agent_host_cpus", "The host's CPUs", HOST, r)
        self.host_memory_mib = SnapshotGauge("presculpt_agent_host_memory_mib", "The host's memory (MiB)", HOST, r)
        self.host_vcpu_limit = SnapshotGauge(
            "presculpt_agent_host_vcpu_limit", "vCPUs the safety guard lets active guests hold: CPUs x overcommit",
            HOST, r)
        self.host_memory_limit_mib = SnapshotGauge(
            "presculpt_agent_host_memory_limit_mib", "Guest memory the safety guard allows (MiB): (memory - "
            "reserved) x overcommit", HOST, r)
        self.host_guests = SnapshotGauge("presculpt_agent_host_guests", "Active guests (running or paused)", HOST, r)
        self.host_allocated_vcpus = SnapshotGauge(
            "presculpt_agent_host_allocated_vcpus", "vCPUs of the active guests, summed", HOST, r)
        self.host_allocated_cpu_cores = SnapshotGauge(
            "presculpt_agent_host_allocated_cpu_cores", "CPU the active guests may use (their quota, else their "
            "vCPUs), summed", HOST, r)
        self.host_allocated_memory_mib = SnapshotGauge(
            "presculpt_agent_host_allocated_memory_mib", "Memory of the active guests (balloon targets, MiB), summed",
            HOST, r)
        self.host_cpu_used_cores = SnapshotGauge(
            "presculpt_agent_host_cpu_used_cores", "CPU the whole host used over the last interval (cores)", HOST, r)
        self.host_memory_used_mib = SnapshotGauge(
            "presculpt_agent_host_memory_used_mib", "Memory the whole host uses (MiB)", HOST, r)
        # Each active guest: its shape (the inventory) and its usage (the last sample).
        self.vm_vcpus = SnapshotGauge("presculpt_agent_vm_vcpus", "A guest's vCPUs online", VM, r)
        self.vm_max_vcpus = SnapshotGauge("presculpt_agent_vm_max_vcpus", "A guest's maximum vCPUs", VM, r)
        self.vm_cpu_limit_cores = SnapshotGauge(
            "presculpt_agent_vm_cpu_limit_cores", "CPU a guest may use: its quota in cores, else its vCPUs", VM, r)
        self.vm_memory_mib = SnapshotGauge(
            "presculpt_agent_vm_memory_mib", "A guest's memory: its balloon target (MiB)", VM, r)
        self.vm_max_memory_mib = SnapshotGauge(
            "presculpt_agent_vm_max_memory_mib", "A guest's maximum memory (MiB)", VM, r)
        self.vm_cpu_cores = SnapshotGauge(
            "presculpt_agent_vm_cpu_cores", "CPU a guest used over the last interval (cores)", VM, r)
        self.vm_memory_used_mib = SnapshotGauge(
            "presculpt_agent_vm_memory_used_mib", "Memory the guest reports in use (MiB; absent until its balloon "
            "driver reports)", VM, r)

    def observe_host(self, host_id: str, host: HostInfo, vcpu_limit: float, memory_limit_mib: float,
                     version: str) -> None:
        """The host's identity and capacity, and the guard's limits on it."""
        self.info.clear()
        self.info.labels(host_id, host.uri, host.hypervisor, version).set(1)
        for gauge, value in ((self.host_cpus, host.cpus), (self.host_memory_mib, host.memory_mib),
                             (self.host_vcpu_limit, vcpu_limit), (self.host_memory_limit_mib, memory_limit_mib)):
            gauge.replace({(host_id,): value})

    def observe_guests(self, host_id: str, domains: Sequence[DomainInfo]) -> None:
        """Every active guest's shape and the host's allocation, from a fresh inventory."""
        active = [d for d in domains if d.active]
        shapes = {
            self.vm_vcpus: lambda d: d.vcpus,
            self.vm_max_vcpus: lambda d: d.max_vcpus,
            self.vm_cpu_limit_cores: lambda d: d.cpu_cores,
            self.vm_memory_mib: lambda d: d.memory_mib,
            self.vm_max_memory_mib: lambda d: d.max_memory_mib,
        }
        for gauge, value in shapes.items():
            gauge.replace({(host_id, d.name): value(d) for d in active})
        self.host_guests.replace({(host_id,): len(active)})
        self.host_allocated_vcpus.replace({(host_id,): sum(d.vcpus for d in active)})
        self.host_allocated_cpu_cores.replace({(host_id,): sum(d.cpu_cores for d in active)})
        self.host_allocated_memory_mib.replace({(host_id,): sum(d.memory_mib for d in active)})

    def observe_usage(self, host_id: str, vms: Sequence[VmSample], host: HostSample | None) -> None:
        """The last sample of every guest (those not sampled lose their usage series) and of the host."""
        self.vm_cpu_cores.replace({(host_id, s.name): s.cpu_cores for s in vms})
        self.vm_memory_used_mib.replace(
            {(host_id, s.name): s.memory_used_mib for s in vms if s.memory_used_mib is not None})
        if host is not None:
            self.host_cpu_used_cores.replace({(host_id,): host.cpu_used_cores})
            self.host_memory_used_mib.replace({(host_id,): host.memory_used_mib})
