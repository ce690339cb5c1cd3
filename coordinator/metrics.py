"""The coordinator's Prometheus metrics, in a registry of its own (one per coordinator instance).

Per VM (labels ``host`` and ``vm``, the names agents report) it exports what it alone knows: each
VM's allocation as its host's latest inventory states it, and the quantiles the last forecast run
gave for the current step, in the same units (``metric`` cpu_cores or memory_mib). Both are
snapshots: a VM its host no longer reports, or the forecaster no longer forecasts (no data in the
last hour), loses its series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from presculpt.coordinator.model import VmRecord
from presculpt.metrics import SnapshotGauge


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
        self.commands_submitted = Counter(
            "presculpt_commands_submitted", "Commands accepted for an agent (operator's and planner's), by host "
            "and kind", ["host", "kind"], registry=r)
        self.command_outcomes = Counter(
            "presculpt_command_outcomes", "Commands finished, by host, kind and outcome status (APPLIED, UNCHANGED, "
            "REFUSED, FAILED, EXPIRED)", ["host", "kind", "status"], registry=r)
        # Per VM: the allocation (inventory) next to the forecast band of the current step.
        self.vm_allocation = SnapshotGauge(
            "presculpt_vm_allocation", "A VM's allocation by its host's latest inventory: cpu_cores (its quota, "
            "else its vCPUs) and memory_mib (its balloon target)", ("host", "vm", "metric"), r)
        self.vm_forecast = SnapshotGauge(
            "presculpt_vm_forecast", "The last forecast run's quantiles of a VM's demand over the current step "
            "(cpu_cores; memory_mib: memory in use)", ("host", "vm", "metric", "quantile"), r)
        self.errors = Counter(
            "presculpt_errors", "Errors, by kind (invalid_message, store, stream, forecast, plan)", ["kind"],
            registry=r)
        # The forecaster (coordinator.forecast.service).
        self.model_info = Gauge(
            "presculpt_forecast_model_info", "The model version serving forecasts (1; none during cold start)",
            ["version"], registry=r)
        self.forecast_series = Gauge(
            "presculpt_forecast_series", "VM series forecast by the last run, by kind (model, cold_start; "
            "next_step: of the model's, those whose upper tail a learned next-step model gave)",
            ["kind"], registry=r)
        self.forecast_seconds = Histogram(
            "presculpt_forecast_seconds", "Duration of a forecast run (read, score, forecast, store)",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.forecast_pinball = Gauge(
            "presculpt_forecast_pinball",
            "Mean pinball loss of the forecasts made in the accuracy window, in the metric's units",
            ["metric"], registry=r)
        self.forecast_coverage = Gauge(
            "presculpt_forecast_coverage", "Share of outcomes at or below the forecast quantile (calibrated: the "
            "quantile itself)", ["metric", "quantile"], registry=r)
        self.forecast_vm_pinball = SnapshotGauge(
            "presculpt_forecast_vm_pinball", "Mean pinball loss of one VM's forecasts in the accuracy window",
            ("host", "vm", "metric"), r)
        self.forecast_anomalies = Counter(
            "presculpt_forecast_anomalies", "Anomaly episodes: demand outside the forecast band, by direction",
            ["metric", "direction"], registry=r)
        self.retrains = Counter(
            "presculpt_model_retrains", "Retrains, by result (promoted, kept_aside, skipped, failed)",
            ["result"], registry=r)
        # The planner (coordinator.planning); dry runs (GetPlan) are not counted.
        self.planner_actions = Counter(
            "presculpt_planner_actions", "Actions planned and not vetoed, by kind and mode (observe: reported "
            "only; enforce: sent)", ["kind", "mode"], registry=r)
        self.planner_vetoed = Counter(
            "presculpt_planner_vetoed", "Actions held back, by kind and by what held them: cost (the cost model's "
            "veto: cost above expected benefit), vm budget (a tier's resizes per VM), host budget (a host's "
            "resizes per VM-day)", ["kind", "by"], registry=r)
        self.planner_unmet = Counter(
            "presculpt_planner_unmet", "Unmet demand events: a host could not give a VM its forecast need", registry=r)
        self.planner_cost_per_hour = Gauge(
            "presculpt_planner_cost_per_hour", "Allocation cost per hour of the planned VMs after the last plan "
            "(the cost model's prices)", registry=r)
        self.planner_seconds = Histogram(
            "presculpt_planner_seconds", "Duration of a planning run (snapshot and plan)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)

    def observe_inventory(self, host: str, vms: Sequence[VmRecord]) -> None:
        """``host``'s VMs are now ``vms`` (its whole inventory): their allocation."""
        values: dict[tuple[str, ...], float] = {}
        for vm in vms:
            cores = vm.cpu_quota_cores if vm.cpu_quota_cores is not None else float(vm.vcpus)
            values[(host, vm.name, "cpu_cores")] = cores
            values[(host, vm.name, "memory_mib")] = float(vm.memory_mib)
        self.vm_allocation.replace(values, part=host)

    def observe_forecasts(self, rows: Iterable[tuple[VmRecord, str, Sequence[float], Sequence[float]]]) -> None:
        """The last forecast run's current step: (VM, metric, quantile levels, values) per series; the
        series of VMs not in ``rows`` go."""
        self.vm_forecast.replace({(vm.host, vm.name, metric, f"{q:g}"): float(v)
                                  for vm, metric, levels, values in rows for q, v in zip(levels, values)})
