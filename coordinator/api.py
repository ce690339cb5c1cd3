"""The client API servicer (``presculpt.v1.CoordinatorService``): translates protobuf to model types,
calls the store and the dispatcher, and maps failures to gRPC status codes with a clear message.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from presculpt.coordinator import convert
from presculpt.coordinator.config import CoordinatorConfig
from presculpt.coordinator.convert import InvalidMessage
from presculpt.coordinator.dispatch import Dispatcher, DispatchRejected, PendingCommand
from presculpt.coordinator.events import EventBus
from presculpt.coordinator.forecast.aggregate import AGGREGATE_KINDS, AggregateKey
from presculpt.coordinator.forecast.anomaly import ForecastAnomaly
from presculpt.coordinator.forecast_view import forecast_view
from presculpt.coordinator.metrics import CoordinatorMetrics
from presculpt.coordinator.model import (
    AgentStatus,
    Command,
    Event,
    MetricBatch,
    Outcome,
    Shape,
    VmRecord,
)
from presculpt.coordinator.planning import PlannerService, UnmetDemand
from presculpt.coordinator.registry import ConnectionRegistry
from presculpt.coordinator.store.base import MetricStore, StoreError
from presculpt.v1 import api_pb2, api_pb2_grpc
from presculpt.wire import vm_sample_pb

if TYPE_CHECKING:  # the service module loads torch; the server hands an instance in
    from presculpt.coordinator.forecast.service import AggregateForecast, ForecastService

MAX_TIMEOUT_S = 3600.0
DEFAULT_FORECAST_WINDOW_S = 6 * 3600.0  # past forecasts shown by GetForecast
# Outcome statuses that end ResizeVm with an error status instead of a response.
_OUTCOME_ERRORS = {
    "REFUSED": grpc.StatusCode.FAILED_PRECONDITION,
    "FAILED": grpc.StatusCode.ABORTED,
    "EXPIRED": grpc.StatusCode.DEADLINE_EXCEEDED,
}


class CoordinatorApi(api_pb2_grpc.CoordinatorServiceServicer):
    def __init__(
        self,
        store: MetricStore,
        registry: ConnectionRegistry,
        dispatcher: Dispatcher,
        events: EventBus,
        config: CoordinatorConfig,
        metrics: CoordinatorMetrics,
        clock: Callable[[], float] = time.time,
        forecasts: "ForecastService | None" = None,
        planner: PlannerService | None = None,
    ):
        self.store = store
        self.registry = registry
        self.dispatcher = dispatcher
        self.events = events
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.forecasts = forecasts
        self.planner = planner

    async def _read(self, context: grpc.aio.ServicerContext, func, *args):
        try:
            return await asyncio.to_thread(func, *args)
        except StoreError as err:
            self.metrics.errors.labels("store").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the coordinator's store failed: {err}")

    async def _known_host(self, context: grpc.aio.ServicerContext, host: str) -> None:
        if host and host not in {h.id for h in await self._read(context, self.store.hosts)}:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no host {host!r}")

    async def _find_vm(self, context: grpc.aio.ServicerContext, name: str, host: str) -> VmRecord:
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give a VM name")
        await self._known_host(context, host)
        vms = await self._read(context, self.store.vms, host or None)
        matches = [v for v in vms if v.name == name] or [v for v in vms if v.uuid == name]
        if not matches:
            where = f" on host {host!r}" if host else ""
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no VM named {name!r}{where}")
        if len(matches) > 1:
            hosts = ", ".join(sorted(v.host for v in matches))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"VM {name!r} exists on several hosts ({hosts}); name the host")
        return matches[0]

    # -- reads ---------------------------------------------------------------------------
    async def ListHosts(self, request, context):  # noqa: N802
        hosts = await self._read(context, self.store.hosts)
        vms = await self._read(context, self.store.vms, None)
        latest = await self._read(context, self.store.latest_host_samples)
        counts: dict[str, int] = {}
        for vm in vms:
            counts[vm.host] = counts.get(vm.host, 0) + 1
        out = []
        for h in hosts:
            msg = api_pb2.Host(id=h.id, info=convert.host_info_to_pb(h), connected=self.registry.get(h.id) is not None,
                               last_seen=h.last_seen, vm_count=counts.get(h.id, 0),
                               pending_commands=self.dispatcher.pending_count(h.id))
            if h.id in latest:
                msg.latest.CopyFrom(convert.host_sample_to_pb(latest[h.id]))
            out.append(msg)
        return api_pb2.ListHostsResponse(hosts=out)

    async def ListVms(self, request, context):  # noqa: N802
        await self._known_host(context, request.host)
        vms = await self._read(context, self.store.vms, request.host or None)
        latest = await self._read(context, self.store.latest_samples, request.host or None)
        out = []
        for vm in vms:
            msg = api_pb2.Vm(host=vm.host, info=convert.vm_to_pb(vm))
            sample = latest.get((vm.host, vm.uuid))
            if sample is not None:
                msg.latest.CopyFrom(vm_sample_pb(sample))
            out.append(msg)
        return api_pb2.ListVmsResponse(vms=out)

    async def GetVmHistory(self, request, context):  # noqa: N802
        now = self.clock()
        start, end = request.start, request.end or now
        if not (math.isfinite(start) and math.isfinite(end)) or start > end:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"invalid time range: start {start} must not be after end {end}")
        if request.limit < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "limit must not be negative")
        vm = await self._find_vm(context, request.vm, request.host)
        resolution = request.resolution
        if resolution == api_pb2.RESOLUTION_AUTO:
            raw_from = now - self.config.store.raw_retention_s
            resolution = api_pb2.RESOLUTION_RAW if start >= raw_from else api_pb2.RESOLUTION_ROLLUP
        response = api_pb2.GetVmHistoryResponse(host=vm.host, vm=convert.vm_to_pb(vm))
        if resolution == api_pb2.RESOLUTION_RAW:
            rows = await self._read(context, self.store.samples, vm.host, vm.uuid, start, end, request.limit)
            response.samples.extend(vm_sample_pb(r) for r in rows)
        else:
            rows = await self._read(context, self.store.rollups, vm.host, vm.uuid, start, end)
            response.rollups.extend(convert.rollup_to_pb(r) for r in rows)
        return response

    async def GetForecast(self, request, context):  # noqa: N802
        since = request.since_s or DEFAULT_FORECAST_WINDOW_S
        lead = request.lead_steps or 1
        if not math.isfinite(since) or since < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"since_s must be positive, got {since}")
        if lead < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"lead_steps must be at least 1, got {lead}")
        vm = await self._find_vm(context, request.vm, request.host)
        view = await self._read(context, forecast_view, self.store, vm, self.clock(), since, lead)
        if not view.latest and not view.past:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"no forecast for {vm.name} yet: the forecaster has not run since it appeared")
        return convert.forecast_view_to_pb(view)

    async def _forecaster(self, context: grpc.aio.ServicerContext) -> "ForecastService":
        if self.forecasts is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this coordinator runs no forecaster")
        return self.forecasts

    def _not_run_yet(self, what: str) -> str:
        every = self.config.jobs.forecast_every_s
        when = f"it runs every {every:g} s" if every else "it is disabled (jobs.forecast_every_s = 0)"
        return f"no {what} yet: the forecast job has not run since the coordinator started ({when})"

    async def GetForecastAccuracy(self, request, context):  # noqa: N802
        forecasts = await self._forecaster(context)
        await self._known_host(context, request.host)
        report = forecasts.accuracy()
        if report is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self._not_run_yet("forecast accuracy"))
        return convert.accuracy_report_to_pb(report, request.host)

    async def _aggregates(self, context: grpc.aio.ServicerContext, kind: str
                          ) -> "dict[AggregateKey, AggregateForecast]":
        """The latest aggregate forecasts (of every kind); ``kind`` (empty: any) is checked first."""
        if kind and kind not in AGGREGATE_KINDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"kind must be {' or '.join(map(repr, AGGREGATE_KINDS))}, got {kind!r}")
        aggregates = (await self._forecaster(context)).aggregates()
        if aggregates is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self._not_run_yet("aggregate forecasts"))
        return aggregates

    async def GetAggregateForecast(self, request, context):  # noqa: N802
        kind, name = request.kind, request.name
        if not kind:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"give the kind of aggregate: {' or '.join(map(repr, AGGREGATE_KINDS))}")
        aggregates = await self._aggregates(context, kind)
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"give a {kind} name")
        found = aggregates.get(AggregateKey(kind, name))
        if found is None:
            known = sorted(k.name for k in aggregates if k.kind == kind)
            hint = (f"known: {', '.join(known[:10])}{', ...' if len(known) > 10 else ''}" if known
                    else f"no VM with recent data has {kind!r} in its metadata")
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no {kind} {name!r} ({hint})")
        return convert.aggregate_to_pb(found)

    async def ListAggregateForecasts(self, request, context):  # noqa: N802
        aggregates = await self._aggregates(context, request.kind)
        return api_pb2.ListAggregateForecastsResponse(aggregates=[
            convert.aggregate_to_pb(a) for key, a in sorted(aggregates.items())
            if not request.kind or key.kind == request.kind])

    # -- the planner ---------------------------------------------------------------------
    async def GetPlan(self, request, context):  # noqa: N802
        """A dry run of the planner now: nothing is sent and its memory is left as it is."""
        if self.planner is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this coordinator runs no planner")
        await self._known_host(context, request.host)
        run = await self._read(context, self.planner.plan_once, self.clock(), True)
        return convert.plan_to_pb(run, self.planner.config.step_s, request.host)

    # -- commands ------------------------------------------------------------------------
    async def ResizeVm(self, request, context):  # noqa: N802
        try:
            target = convert.shape_from_pb(request.target)
        except InvalidMessage as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if target.is_empty():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "nothing to change: give vcpus, cpu_cores or memory_mib")
        timeout = request.timeout_s or self.config.dispatch.default_timeout_s
        if not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT_S:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}], got {timeout}")
        vm = await self._find_vm(context, request.vm, request.host)
        problem = limits_problem(vm, target)
        if problem:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)
        now = self.clock()
        command = Command(id=request.command_id or uuidlib.uuid4().hex, host=vm.host, kind="resize",
                          issued_at=now, deadline=now + timeout, vm=vm.name, target=target,
                          reason=request.reason or "operator resize")
        try:
            pending = self.submit(command)
        except DispatchRejected as err:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
        outcome = await wait_outcome(pending, timeout + 5 * self.config.jobs.dispatch_tick_s + 1)
        if outcome.status in _OUTCOME_ERRORS:
            await context.abort(_OUTCOME_ERRORS[outcome.status], f"{vm.name} on {vm.host}: {outcome.message}")
        return api_pb2.ResizeVmResponse(host=vm.host, command_id=command.id,
                                        outcome=convert.outcome_to_pb(outcome))

    def submit(self, command: Command) -> PendingCommand:
        """Hand a command to the dispatcher, with its event and its latency metric."""
        existing = self.dispatcher.find(command.id)
        pending = self.dispatcher.submit(command)
        if existing is None:
            self.events.publish(Event(self.clock(), command.host, command))
            self.metrics.commands_submitted.labels(command.host, command.kind).inc()

            def finished(p: PendingCommand) -> None:
                assert p.outcome is not None
                self.metrics.command_seconds.labels(p.outcome.status).observe(self.clock() - p.submitted_at)
                self.metrics.command_outcomes.labels(command.host, command.kind, p.outcome.status).inc()
                if p.outcome.status == "EXPIRED":  # agents report the others themselves
                    self.events.publish(Event(self.clock(), command.host, p.outcome))

            pending.add_done_callback(finished)
        return pending

    async def WatchEvents(self, request, context):  # noqa: N802
        await self._known_host(context, request.host)
        sub = self.events.subscribe(request.host)
        try:
            while True:
                yield event_to_pb(await sub.get())
        finally:
            self.events.unsubscribe(sub)


def limits_problem(vm: VmRecord, target: Shape) -> str:
    """Why ``target`` is past the VM's limits (empty when it is within them)."""
    if target.vcpus is not None and target.vcpus > vm.max_vcpus:
        return f"{target.vcpus} vCPUs exceeds the maximum of {vm.max_vcpus} for {vm.name}"
    cores_room = target.vcpus if target.vcpus is not None else vm.max_vcpus
    if target.cpu_cores is not None and target.cpu_cores > cores_room + 1e-6:
        return f"{target.cpu_cores:g} CPU cores do not fit in {cores_room} vCPUs of {vm.name}"
    if target.memory_mib is not None and target.memory_mib > vm.max_memory_mib:
        return f"{target.memory_mib} MiB exceeds the maximum of {vm.max_memory_mib} MiB for {vm.name}"
    return ""


async def wait_outcome(pending: PendingCommand, timeout_s: float) -> Outcome:
    """Wait for a command's outcome (the dispatcher expires it at its deadline)."""
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    pending.add_done_callback(lambda p: future.done() or future.set_result(p.outcome))
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout_s)
    except asyncio.TimeoutError:
        return Outcome(pending.command.id, "EXPIRED", "no outcome before the deadline", finished_at=time.time())


def event_to_pb(event: Event) -> api_pb2.Event:
    msg = api_pb2.Event(ts=event.ts, host=event.host)
    p = event.payload
    if isinstance(p, MetricBatch):
        msg.metrics.seq = p.seq
        msg.metrics.vms.extend(vm_sample_pb(s) for s in p.samples)
        if p.host_sample is not None:
            msg.metrics.host_sample.CopyFrom(convert.host_sample_to_pb(p.host_sample))
    elif isinstance(p, Command):
        msg.command.CopyFrom(convert.command_to_pb(p))
    elif isinstance(p, Outcome):
        msg.outcome.CopyFrom(convert.outcome_to_pb(p))
    elif isinstance(p, AgentStatus):
        msg.agent.CopyFrom(api_pb2.AgentStatus(connected=p.connected, message=p.message))
    elif isinstance(p, ForecastAnomaly):
        msg.anomaly.CopyFrom(convert.anomaly_to_pb(p))
    elif isinstance(p, UnmetDemand):
        msg.unmet.CopyFrom(convert.unmet_to_pb(p))
    return msg
