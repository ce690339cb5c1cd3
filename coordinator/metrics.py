"""The coordinator's Prometheus metrics, in a registry of its own (one per coordinator instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CoordinatorMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.samples_ingested = Counter(
            "presculpt_samples_ingested", "VM samples stored durably", registry=r)
        self.batches = Counter(
            "presculpt_batches", "Metric batches received, by result (stored, duplicate, rejected)",
            ["result"], registry=r)
        self.batch_ack_seconds = Histogram(
            "presculpt_batch_ack_seconds", "From receiving a batch to acknowledging it (durable)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.command_seconds = Histogram(
            "presculpt_command_latency_seconds", "From accepting a command to its outcome, by status",
            ["status"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.connected_agents = Gauge(
            "presculpt_connected_agents", "Agents with an open stream", registry=r)
        self.errors = Counter(
            "presculpt_errors", "Errors, by kind (invalid_message, store, stream)", ["kind"], registry=r)
