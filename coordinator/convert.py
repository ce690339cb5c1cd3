"""Translation between protobuf messages of ``presculpt.v1`` and the coordinator's model types.

Validation of what agents and clients send happens here too: :class:`InvalidMessage` carries the
message of an INVALID_ARGUMENT status.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from presculpt.coordinator.accuracy import Accuracy
from presculpt.coordinator.forecast.anomaly import ABOVE, ForecastAnomaly
from presculpt.coordinator.forecast.base import QuantileForecast
from presculpt.coordinator.forecast_view import ForecastView
from presculpt.coordinator.model import (
    BatchStored,
    Command,
    HostRecord,
    HostSampleRow,
    MetricBatch,
    Outcome,
    RollupRow,
    SampleRow,
    Shape,
    Stat,
    VmRecord,
)
from presculpt.coordinator.planner.model import Allocation
from presculpt.coordinator.planning import PlanRun, UnmetDemand, command_kind
from presculpt.v1 import agent_pb2, api_pb2, model_pb2

if TYPE_CHECKING:  # the service module loads torch; these are only its result types
    from presculpt.coordinator.forecast.service import AccuracyReport, AggregateForecast


class InvalidMessage(ValueError):
    """A message is malformed; the text says what is wrong (for an INVALID_ARGUMENT status)."""


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise InvalidMessage(f"{what} must be a finite number, got {value}")
    return value


# -- agent -> coordinator ------------------------------------------------------------------------

def host_from_hello(hello: agent_pb2.Hello, now: float) -> HostRecord:
    agent_id = hello.agent_id.strip()
    if not agent_id:
        raise InvalidMessage("hello.agent_id is empty")
    if len(agent_id) > 255:
        raise InvalidMessage("hello.agent_id is longer than 255 characters")
    info = hello.host
    if info.cpus <= 0 or info.memory_mib <= 0:
        raise InvalidMessage("hello.host must give positive cpus and memory_mib")
    return HostRecord(id=agent_id, hostname=info.hostname or agent_id, uri=info.uri, cpus=info.cpus,
                      memory_mib=info.memory_mib, hypervisor=info.hypervisor,
                      libvirt_version=info.libvirt_version, last_seen=now)


def vm_from_pb(host: str, vm: model_pb2.VmInfo) -> VmRecord:
    if not vm.uuid or not vm.name:
        raise InvalidMessage("every VM in an inventory needs a name and a uuid")
    if vm.vcpus < 0 or vm.max_vcpus < vm.vcpus or vm.memory_mib < 0 or vm.max_memory_mib < 0:
        raise InvalidMessage(f"VM {vm.name!r} has inconsistent limits")
    return VmRecord(
        host=host, uuid=vm.uuid, name=vm.name, state=vm.state, vcpus=vm.vcpus, max_vcpus=vm.max_vcpus,
        cpu_quota_cores=vm.cpu_quota_cores if vm.HasField("cpu_quota_cores") else None,
        memory_mib=vm.memory_mib, max_memory_mib=vm.max_memory_mib, metadata=dict(vm.metadata),
    )


def inventory_from_pb(host: str, vms) -> list[VmRecord]:
    records = [vm_from_pb(host, vm) for vm in vms]
    if len({r.uuid for r in records}) != len(records):
        raise InvalidMessage("the inventory lists a VM uuid twice")
    return records


def batch_from_pb(agent_id: str, batch: agent_pb2.MetricBatch, max_samples: int) -> MetricBatch:
    """Validate a batch whole (any bad sample rejects it) and convert it."""
    if batch.seq <= 0:
        raise InvalidMessage("batch.seq must be positive")
    if len(batch.vms) > max_samples:
        raise InvalidMessage(f"batch {batch.seq} has {len(batch.vms)} samples (limit {max_samples})")
    rows = [
        SampleRow(
            s.uuid, s.ts, s.interval_s, s.cpu_cores, s.vcpus,
            s.cpu_quota_cores if s.HasField("cpu_quota_cores") else None,
            s.memory_mib,
            s.memory_used_mib if s.HasField("memory_used_mib") else None,
            s.memory_available_mib if s.HasField("memory_available_mib") else None,
            s.disk_read_bps, s.disk_write_bps, s.net_rx_bps, s.net_tx_bps,
        )
        for s in batch.vms
    ]
    if rows:
        # One pass over the whole batch (ingest runs tens of thousands of samples a second): any
        # NaN or infinity makes the sum non-finite, min() finds a negative value.
        numbers = [v for row in rows for v in row[1:] if v is not None]
        if (not math.isfinite(sum(numbers)) or min(numbers) < 0 or not all(row[0] for row in rows)
                or min(row[1] for row in rows) <= 0):
            bad = next((r for r in rows if not r[0] or r[1] <= 0 or not all(
                v is None or (math.isfinite(v) and v >= 0) for v in r[1:])), None)
            raise InvalidMessage(
                f"batch {batch.seq}: sample of {bad[0] or '(no uuid)'} has a missing uuid or a "
                f"negative, NaN or infinite value" if bad is not None
                else f"batch {batch.seq}: values too large to be real measurements"
            )
    host_sample = None
    if batch.HasField("host"):
        h = batch.host
        host_sample = HostSampleRow(h.ts, h.cpu_count, h.cpu_used_cores, h.memory_total_mib,
                                    h.memory_used_mib, h.memory_available_mib, h.load1)
        if not math.isfinite(sum(host_sample)):
            raise InvalidMessage(f"batch {batch.seq}: the host sample has NaN or infinite values")
    return MetricBatch(agent_id=agent_id, seq=batch.seq, samples=tuple(rows), host_sample=host_sample)


_STATUS_NAMES = {v: k for k, v in model_pb2.CommandOutcome.Status.items()}


def outcome_from_pb(host: str, o: model_pb2.CommandOutcome) -> Outcome:
    if not o.command_id:
        raise InvalidMessage("an outcome must name its command (command_id is empty)")
    status = _STATUS_NAMES.get(o.status, "STATUS_UNSPECIFIED")
    if status == "STATUS_UNSPECIFIED":
        raise InvalidMessage(f"outcome of {o.command_id} has no status")
    return Outcome(command_id=o.command_id, status=status, message=o.message, steps=tuple(o.steps),
                   vm=vm_from_pb(host, o.vm) if o.HasField("vm") else None, finished_at=o.finished_at)


# -- coordinator -> agent and clients ------------------------------------------------------------

def shape_to_pb(shape: Shape) -> model_pb2.Shape:
    msg = model_pb2.Shape()
    if shape.vcpus is not None:
        msg.vcpus = shape.vcpus
    if shape.cpu_cores is not None:
        msg.cpu_cores = shape.cpu_cores
    if shape.memory_mib is not None:
        msg.memory_mib = shape.memory_mib
    return msg


def shape_from_pb(msg: model_pb2.Shape) -> Shape:
    shape = Shape(
        vcpus=msg.vcpus if msg.HasField("vcpus") else None,
        cpu_cores=_finite(msg.cpu_cores, "cpu_cores") if msg.HasField("cpu_cores") else None,
        memory_mib=msg.memory_mib if msg.HasField("memory_mib") else None,
    )
    for name in ("vcpus", "cpu_cores", "memory_mib"):
        value = getattr(shape, name)
        if value is not None and value <= 0:
            raise InvalidMessage(f"target {name} must be above zero, got {value}")
    return shape


def command_to_pb(c: Command) -> model_pb2.Command:
    msg = model_pb2.Command(id=c.id, issued_at=c.issued_at, deadline=c.deadline)
    if c.kind == "resize":
        msg.resize.CopyFrom(model_pb2.Resize(vm=c.vm, target=shape_to_pb(c.target), reason=c.reason))
    elif c.kind == "presculpt":
        msg.presculpt.CopyFrom(model_pb2.PreSculpt(vm=c.vm, target=shape_to_pb(c.target),
                                                   demand_at=c.demand_at, reason=c.reason))
    elif c.kind == "downgrade":
        msg.downgrade.CopyFrom(model_pb2.GracefulDowngrade(vm=c.vm, target=shape_to_pb(c.target),
                                                           reason=c.reason))
    elif c.kind == "shadow_fill":
        msg.shadow_fill.CopyFrom(model_pb2.ShadowFill(pool=c.pool, size=c.pool_size, warm_state=c.warm_state))
    elif c.kind == "shadow_activate":
        msg.shadow_activate.CopyFrom(model_pb2.ShadowActivate(
            pool=c.pool, assigned_name=c.assigned_name, shape=shape_to_pb(c.target), metadata=c.metadata))
    elif c.kind == "shadow_drain":
        msg.shadow_drain.CopyFrom(model_pb2.ShadowDrain(pool=c.pool))
    else:
        raise ValueError(f"unknown command kind {c.kind!r}")
    return msg


def vm_to_pb(v: VmRecord) -> model_pb2.VmInfo:
    msg = model_pb2.VmInfo(name=v.name, uuid=v.uuid, state=v.state, vcpus=v.vcpus, max_vcpus=v.max_vcpus,
                           memory_mib=v.memory_mib, max_memory_mib=v.max_memory_mib, metadata=v.metadata)
    if v.cpu_quota_cores is not None:
        msg.cpu_quota_cores = v.cpu_quota_cores
    return msg


def outcome_to_pb(o: Outcome) -> model_pb2.CommandOutcome:
    msg = model_pb2.CommandOutcome(command_id=o.command_id, status=model_pb2.CommandOutcome.Status.Value(o.status),
                                   message=o.message, steps=o.steps, finished_at=o.finished_at)
    if o.vm is not None:
        msg.vm.CopyFrom(vm_to_pb(o.vm))
    return msg


def host_sample_to_pb(h: HostSampleRow) -> model_pb2.HostSample:
    return model_pb2.HostSample(**h._asdict())


def host_info_to_pb(h: HostRecord) -> model_pb2.HostInfo:
    return model_pb2.HostInfo(hostname=h.hostname, uri=h.uri, cpus=h.cpus, memory_mib=h.memory_mib,
                              hypervisor=h.hypervisor, libvirt_version=h.libvirt_version)


def rollup_to_pb(r: RollupRow) -> api_pb2.Rollup:
    def stat(s: Stat) -> api_pb2.Stat:
        return api_pb2.Stat(min=s.min or 0.0, mean=s.mean or 0.0, max=s.max or 0.0)

    return api_pb2.Rollup(start=r.start, duration_s=r.duration_s, count=r.count,
                          **{name: stat(value) for name, value in r.stats.items()})


def ack_to_pb(stored: BatchStored) -> agent_pb2.CoordinatorMessage:
    return agent_pb2.CoordinatorMessage(ack=agent_pb2.BatchAck(seq=stored.seq, duplicate=stored.duplicate))


def accuracy_to_pb(a: Accuracy) -> api_pb2.ForecastAccuracy:
    return api_pb2.ForecastAccuracy(pinball=a.pinball, coverage_p90=a.coverage_p90,
                                    coverage_p99=a.coverage_p99, count=a.count)


def forecast_view_to_pb(view: ForecastView) -> api_pb2.GetForecastResponse:
    msg = api_pb2.GetForecastResponse(host=view.vm.host, vm=vm_to_pb(view.vm), quantiles=view.quantiles,
                                      accuracy=accuracy_to_pb(view.accuracy))
    cpu = view.latest.get("cpu_cores") or next(iter(view.latest.values()), None)
    if cpu is not None:
        msg.model, msg.cold_start, msg.origin_ts, msg.step_s = cpu.model, cpu.cold_start, cpu.origin, cpu.step_s
    for metric, record in view.latest.items():
        msg.latest.append(api_pb2.MetricForecast(
            metric=metric,
            ts=[record.origin + h * record.step_s for h in range(len(record.values))],
            steps=[api_pb2.QuantileValues(values=step) for step in record.values],
        ))
    for point in view.past:
        p = api_pb2.ForecastPoint(ts=point.ts, metric=point.metric, values=point.values)
        if point.actual is not None:
            p.actual = point.actual
        msg.past.append(p)
    return msg


def accuracy_report_to_pb(report: "AccuracyReport", host: str = "") -> api_pb2.GetForecastAccuracyResponse:
    """Overall and per-VM accuracy, of ``host``'s VMs only when given."""
    msg = api_pb2.GetForecastAccuracyResponse(
        model=report.model, overall_cpu=accuracy_to_pb(report.overall("cpu_cores", host)),
        overall_memory=accuracy_to_pb(report.overall("memory_mib", host)), scored_at=report.scored_at,
        window_s=report.window_s)
    for entry in report.for_host(host):
        msg.vms.append(api_pb2.VmForecastAccuracy(host=entry.host, vm=entry.vm, metric=entry.metric,
                                                  accuracy=accuracy_to_pb(entry.accuracy)))
    return msg


def quantile_forecast_to_pb(metric: str, forecast: QuantileForecast) -> api_pb2.MetricForecast:
    return api_pb2.MetricForecast(
        metric=metric,
        ts=[forecast.origin + h * forecast.step_s for h in range(len(forecast.values))],
        steps=[api_pb2.QuantileValues(values=[float(v) for v in row]) for row in forecast.values],
    )


def aggregate_to_pb(aggregate: "AggregateForecast") -> api_pb2.AggregateForecast:
    msg = api_pb2.AggregateForecast(kind=aggregate.key.kind, name=aggregate.key.name,
                                    vms=aggregate.members.get("cpu_cores", 0),
                                    cpu_capacity_cores=aggregate.capacity.get("cpu_cores") or 0.0,
                                    memory_capacity_mib=aggregate.capacity.get("memory_mib") or 0.0)
    first = aggregate.forecasts.get("cpu_cores") or next(iter(aggregate.forecasts.values()), None)
    if first is not None:
        msg.model, msg.cold_start, msg.origin_ts, msg.step_s = first.model, first.cold_start, first.origin, first.step_s
        msg.quantiles.extend(first.quantiles)
    for metric, forecast in sorted(aggregate.forecasts.items()):
        msg.forecasts.append(quantile_forecast_to_pb(metric, forecast))
    return msg


def anomaly_to_pb(anomaly: ForecastAnomaly) -> api_pb2.ForecastAnomaly:
    return api_pb2.ForecastAnomaly(
        vm=anomaly.vm, uuid=anomaly.uuid, metric=anomaly.metric, direction=anomaly.direction,
        quantile=anomaly.quantile, model=anomaly.model, ts=[s.ts for s in anomaly.steps],
        actual=[s.actual for s in anomaly.steps],
        bound=[s.high if anomaly.direction == ABOVE else s.low for s in anomaly.steps])


def allocation_to_pb(a: Allocation) -> model_pb2.Shape:
    return model_pb2.Shape(vcpus=a.vcpus, cpu_cores=a.cpu_cores, memory_mib=int(round(a.memory_mib)))


def unmet_to_pb(u: UnmetDemand) -> api_pb2.UnmetDemand:
    return api_pb2.UnmetDemand(host=u.host, vm=u.vm, uuid=u.uuid, cpu_cores=u.cpu_cores, memory_mib=u.memory_mib,
                               reason=u.reason)


def plan_to_pb(run: PlanRun, step_s: float, host: str = "") -> api_pb2.GetPlanResponse:
    """A planning run's actions and unmet demand (of ``host``'s VMs only, when given)."""
    msg = api_pb2.GetPlanResponse(mode=run.mode, planned_at=run.at, step=run.step, step_s=step_s, vms=run.vms,
                                  forecast_vms=run.forecast_vms, cost_per_hour=run.cost_per_hour,
                                  customer_cost_per_hour=run.plan.customer_cost_per_hour)
    for a in run.plan.actions:
        if host and a.host != host:
            continue
        msg.actions.append(api_pb2.PlannedAction(
            vm=run.name(a), uuid=a.vm, host=a.host, kind=a.kind, previous=allocation_to_pb(a.previous),
            target=allocation_to_pb(a.target), reason=a.reason, confidence=a.confidence,
            cost_per_hour=a.cost_per_hour, expected_benefit=a.expected_benefit, vetoed=a.vetoed,
            command="" if a.vetoed else command_kind(a)))
    msg.unmet.extend(unmet_to_pb(u) for u in run.unmet if not host or u.host == host)
    return msg
