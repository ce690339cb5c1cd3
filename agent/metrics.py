"""The agent's Prometheus metrics, in a registry of its own (one per agent instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.commands = Counter("presculpt_agent_commands", "Commands handled, by outcome status",
                                ["status"], registry=r)
        self.command_seconds = Histogram(
            "presculpt_agent_command_seconds", "Time to apply a command",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.errors = Counter("presculpt_agent_errors", "Errors, by kind", ["kind"], registry=r)
