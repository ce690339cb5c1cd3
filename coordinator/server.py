"""The coordinator process: store, registry, dispatcher, forecaster, planner, the two gRPC services (plus
standard health checking and reflection), the scheduled jobs and the Prometheus endpoint, started
and stopped explicitly."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import grpc
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from presculpt import tls
from presculpt.coordinator.api import CoordinatorApi
from presculpt.coordinator.config import CoordinatorConfig
from presculpt.coordinator.dispatch import Dispatcher
from presculpt.coordinator.events import EventBus
from presculpt.coordinator.forecast.registry import ModelRegistry
from presculpt.coordinator.forecast.service import ForecastService
from presculpt.coordinator.ingest import AgentIngest
from presculpt.coordinator.metrics import CoordinatorMetrics
from presculpt.coordinator.planning import PlannerService
from presculpt.coordinator.registry import ConnectionRegistry
from presculpt.coordinator.routines import CoordinatorRoutines
from presculpt.coordinator.store.base import MetricStore
from presculpt.coordinator.store.sqlite import SqliteMetricStore
from presculpt.metrics import MetricsEndpoint, serve_metrics
from presculpt.v1 import agent_pb2, agent_pb2_grpc, api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)
# APScheduler logs every run of every job at INFO (the dispatch tick runs twice a second).
logging.getLogger("apscheduler").setLevel(logging.WARNING)

SERVICE_NAMES = (
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    api_pb2.DESCRIPTOR.services_by_name["CoordinatorService"].full_name,
)


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Find dead agents: ping idle connections and accept the agents' own pings.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class CoordinatorServer:
    """Everything the ``serve`` command runs. ``start`` binds and returns the gRPC port."""

    def __init__(
        self,
        config: CoordinatorConfig,
        store: MetricStore | None = None,
        clock: Callable[[], float] = time.time,
        schedule_clock: Callable[[], float] | None = None,
    ):
        """``clock`` is the coordinator's time; ``schedule_clock`` the wall clock its job triggers run
        on (default: ``clock``; they differ only when time is scaled, see presculpt.timescale)."""
        self.config = config
        self.clock = clock
        self.store: MetricStore = store or SqliteMetricStore(config.db, config.store)
        self.metrics = CoordinatorMetrics()
        self.registry = ConnectionRegistry()
        self.dispatcher = Dispatcher(config.dispatch, clock)
        self.events = EventBus(config.event_queue)
        self.models = ModelRegistry(config.model_dir(), config.forecast.keep_versions)
        self.forecasts = ForecastService(self.store, self.models, config.forecast, self.metrics, clock,
                                         config.store.rollup_bucket_s)
        # The planner's commands go through the API's submit (events and latency metrics, as the
        # operator's resizes); the API, built next, runs the planner's dry runs.
        self.planner = PlannerService(self.store, self.dispatcher, config.planner, self.metrics, clock,
                                      submit=lambda command: self.api.submit(command),
                                      command_timeout_s=config.dispatch.default_timeout_s)
        self.routines = CoordinatorRoutines(self.store, self.dispatcher, clock, self.forecasts, self.events,
                                            self.planner, schedule_clock)
        self.api = CoordinatorApi(self.store, self.registry, self.dispatcher, self.events, config,
                                  self.metrics, clock, self.forecasts, self.planner)
        self.port = 0
        self.metrics_endpoint: MetricsEndpoint | None = None
        self._server: grpc.aio.Server | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._health: health.aio.HealthServicer | None = None

    async def start(self) -> int:
        cfg = self.config
        # Read first: without TLS material (or an explicit insecure) nothing starts.
        material = tls.load_material(cfg.tls, "the coordinator")
        self.store.start()
        try:
            await asyncio.to_thread(self.forecasts.start)
        except BaseException:
            self.store.stop()
            raise
        server = grpc.aio.server(options=grpc_options(cfg.ingest.max_message_bytes))
        ingest = AgentIngest(self.store, self.registry, self.dispatcher, self.events, cfg.ingest,
                             self.metrics, self.clock)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(ingest, server)
        api_pb2_grpc.add_CoordinatorServiceServicer_to_server(self.api, server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        # A client the CA did not sign (no certificate, another CA's, an expired one) is refused by
        # BoringSSL inside gRPC during the handshake, before any Python code runs: gRPC's Python API
        # surfaces neither the failure nor the peer, and offers no hook to verify certificates
        # ourselves. The refusal's log line is therefore gRPC core's own, written to stderr (the
        # journal under systemd): "ssl_transport_security.cc] Handshake failed with error SSL_ERROR_SSL:
        # ... CERTIFICATE_VERIFY_FAILED: certificate has expired" (or PEER_DID_NOT_RETURN_A_CERTIFICATE,
        # "unable to get local issuer certificate"), which gRPC logs at its default verbosity. We keep
        # that real signal rather than terminate TLS in Python in front of gRPC: a proxy would put every
        # byte of ingest through Python and lose the peer's identity that the servicers check.
        # tests/coordinator/test_mtls.py holds gRPC to this line.
        try:
            if material is None:
                self.port = server.add_insecure_port(cfg.listen)
            else:
                if os.environ.get("GRPC_VERBOSITY", "").upper() in ("ERROR", "NONE"):
                    log.warning("GRPC_VERBOSITY=%s hides gRPC's log lines about refused TLS handshakes "
                                "(unset it to see them)", os.environ["GRPC_VERBOSITY"])
                self.port = server.add_secure_port(cfg.listen, tls.server_credentials(material))
        except RuntimeError as err:
            self.store.stop()
            raise OSError(f"cannot listen on {cfg.listen}: {err}") from None
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._scheduler = AsyncIOScheduler()
        self.routines.schedule(self._scheduler, cfg.jobs)
        self._scheduler.start()
        if cfg.metrics_listen:
            self.metrics_endpoint = serve_metrics(cfg.metrics_listen, self.metrics.registry)
        host = cfg.listen.rpartition(":")[0]
        log.info("coordinator listening on %s:%d (%s; store %s)", host, self.port,
                 "plain text" if material is None else "mutual TLS", cfg.db)
        if material is None:
            tls.warn_insecure(log, f"the coordinator's port {host}:{self.port}")
        return self.port

    def next_run(self, job_id: str) -> float | None:
        """When the scheduled job ``job_id`` (rollup, forecast, plan...) runs next, in Unix seconds of
        the schedule clock; None when it is not scheduled. Call on the event loop."""
        job = self._scheduler.get_job(job_id) if self._scheduler is not None else None
        return job.next_run_time.timestamp() if job is not None and job.next_run_time is not None else None

    async def stop(self, grace_s: float = 2.0) -> None:
        self.routines.stopping = True
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
            self.metrics_endpoint = None
        await asyncio.to_thread(self.store.stop)
        log.info("coordinator stopped")

    async def wait_for_termination(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()
