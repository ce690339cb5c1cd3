"""The agent stream servicer: hello -> inventory stored -> batches stored and acknowledged, commands
down, outcomes up. It translates protobuf to model types and calls the store, the registry and the
dispatcher; nothing else.

A batch is acknowledged only once the store has committed it. A batch that is malformed or names
a VM its host does not report is acknowledged with a gRPC status code and a message and nothing of
it is stored; a malformed stream (no hello first, an empty message) ends with INVALID_ARGUMENT.
Over TLS an agent speaks only for itself: a hello whose ``agent_id`` is not a name of the agent's
certificate ends the stream with PERMISSION_DENIED before anything is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

import grpc

from presculpt import tls
from presculpt.coordinator import convert
from presculpt.coordinator.config import IngestConfig
from presculpt.coordinator.convert import InvalidMessage
from presculpt.coordinator.dispatch import Dispatcher
from presculpt.coordinator.events import EventBus
from presculpt.coordinator.metrics import CoordinatorMetrics
from presculpt.coordinator.model import AgentStatus, BatchStored, Command, Event, MetricBatch
from presculpt.coordinator.registry import AgentConnection, ConnectionRegistry
from presculpt.coordinator.store.base import BatchRejected, MetricStore, StoreError
from presculpt.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

COORDINATOR_VERSION = "0.1.0"
HELLO_TIMEOUT_S = 30.0
_END = object()


class AgentIngest(agent_pb2_grpc.AgentServiceServicer):
    """``presculpt.v1.AgentService``: one call per connected agent."""

    def __init__(
        self,
        store: MetricStore,
        registry: ConnectionRegistry,
        dispatcher: Dispatcher,
        events: EventBus,
        config: IngestConfig,
        metrics: CoordinatorMetrics,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.registry = registry
        self.dispatcher = dispatcher
        self.events = events
        self.config = config
        self.metrics = metrics
        self.clock = clock

    async def Connect(self, request_iterator, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        try:
            first = await asyncio.wait_for(context.read(), HELLO_TIMEOUT_S)
        except asyncio.TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no hello within {HELLO_TIMEOUT_S:g} s")
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("kind") != "hello":
            await self._invalid(context, "the first message of a stream must be a hello")
        try:
            host = convert.host_from_hello(first.hello, self.clock())
            vms = convert.inventory_from_pb(host.id, first.hello.vms)
        except InvalidMessage as err:
            await self._invalid(context, str(err))
        names = tls.peer_names(context.auth_context())
        if names is not None and host.id not in names:
            # TLS proved who holds the certificate; an agent speaks only for the host it names.
            self.metrics.errors.labels("identity").inc()
            message = (f"agent_id {host.id!r} is not a name of the agent's certificate "
                       f"({', '.join(names) or 'none'}); nothing stored")
            log.warning("agent stream from %s refused: %s", context.peer(), message)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        try:
            await asyncio.to_thread(self.store.upsert_inventory, host, vms)
            self.metrics.observe_inventory(host.id, vms)
            last_seq = await asyncio.to_thread(self.store.last_seq, host.id)
        except StoreError as err:
            self.metrics.errors.labels("store").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the coordinator's store failed: {err}")
        stream = _AgentStream(self, host.id, context)
        await context.write(agent_pb2.CoordinatorMessage(
            welcome=agent_pb2.Welcome(last_stored_seq=last_seq, coordinator_version=COORDINATOR_VERSION)))
        log.info("agent %s: hello with %d VMs; last stored batch %d", host.id, len(vms), last_seq)
        await stream.run()

    async def _invalid(self, context: grpc.aio.ServicerContext, message: str) -> None:
        self.metrics.errors.labels("invalid_message").inc()
        log.warning("agent stream from %s: %s", context.peer(), message)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


class _AgentStream:
    """The state of one agent's stream: its outbound queue, in-flight batches and writer task."""

    def __init__(self, ingest: AgentIngest, agent_id: str, context: grpc.aio.ServicerContext):
        self.ingest = ingest
        self.agent_id = agent_id
        self.context = context
        self.loop = asyncio.get_running_loop()
        self.out: asyncio.Queue = asyncio.Queue()
        self.inflight = asyncio.Semaphore(ingest.config.max_inflight_batches)
        self.pending_acks = 0
        self.drained = asyncio.Event()
        self.drained.set()
        self.task = asyncio.current_task()
        self.closed_reason = ""

    def send_command(self, command: Command) -> None:
        self.out.put_nowait(agent_pb2.CoordinatorMessage(command=convert.command_to_pb(command)))

    def close(self, reason: str) -> None:
        self.closed_reason = reason
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        ing = self.ingest
        conn = AgentConnection(self.agent_id, self.context.peer(), ing.clock(), self.send_command, self.close)
        ing.registry.register(conn)
        ing.dispatcher.connect(self.agent_id, conn.send)
        ing.metrics.connected_agents.set(len(ing.registry))
        ing.events.publish(Event(ing.clock(), self.agent_id, AgentStatus(True, f"connected from {conn.peer}")))
        writer = asyncio.create_task(self._write_loop())
        reason = "stream closed by the agent"
        try:
            while True:
                msg = await self.context.read()
                if msg is grpc.aio.EOF:
                    break
                await self._handle(msg)
            await self.drained.wait()  # acknowledge what was stored before closing
        except asyncio.CancelledError:
            reason = self.closed_reason or "stream cancelled"
            if not self.closed_reason:
                raise
            self.context.set_code(grpc.StatusCode.ABORTED)
            self.context.set_details(self.closed_reason)
        except grpc.aio.AbortError:
            reason = "stream aborted"
            raise
        finally:
            if ing.registry.unregister(conn):
                ing.dispatcher.disconnect(self.agent_id, conn.send)
            ing.metrics.connected_agents.set(len(ing.registry))
            ing.events.publish(Event(ing.clock(), self.agent_id, AgentStatus(False, reason)))
            self.out.put_nowait(_END)
            try:
                await asyncio.wait_for(writer, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                writer.cancel()

    async def _write_loop(self) -> None:
        while True:
            msg = await self.out.get()
            if msg is _END:
                return
            try:
                await self.context.write(msg)
            except Exception as err:  # noqa: BLE001 - the stream is gone; the read side ends too
                log.debug("agent %s: write failed: %s", self.agent_id, err)
                return

    async def _handle(self, msg: agent_pb2.AgentMessage) -> None:
        ing = self.ingest
        kind = msg.WhichOneof("kind")
        if kind == "batch":
            await self._on_batch(msg.batch)
        elif kind == "outcome":
            try:
                outcome = convert.outcome_from_pb(self.agent_id, msg.outcome)
            except InvalidMessage as err:
                await self._invalid(str(err))
            ing.dispatcher.record_outcome(self.agent_id, outcome)
            ing.events.publish(Event(ing.clock(), self.agent_id, outcome))
        elif kind == "inventory":
            try:
                vms = convert.inventory_from_pb(self.agent_id, msg.inventory.vms)
            except InvalidMessage as err:
                await self._invalid(str(err))
            host = next((h for h in await asyncio.to_thread(ing.store.hosts) if h.id == self.agent_id), None)
            assert host is not None  # stored by the hello
            await asyncio.to_thread(ing.store.upsert_inventory, host, vms)
            ing.metrics.observe_inventory(self.agent_id, vms)
            log.info("agent %s: inventory of %d VMs", self.agent_id, len(vms))
        elif kind == "hello":
            await self._invalid("hello sent twice on one stream")
        else:
            await self._invalid("empty message (no hello, batch, inventory or outcome)")

    async def _invalid(self, message: str) -> None:
        self.ingest.metrics.errors.labels("invalid_message").inc()
        log.warning("agent %s: %s", self.agent_id, message)
        await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    async def _on_batch(self, msg: agent_pb2.MetricBatch) -> None:
        ing = self.ingest
        received = time.perf_counter()
        try:
            batch = convert.batch_from_pb(self.agent_id, msg, ing.config.max_batch_samples)
        except InvalidMessage as err:
            ing.metrics.batches.labels("rejected").inc()
            ing.metrics.errors.labels("invalid_message").inc()
            log.warning("agent %s: batch %d rejected: %s", self.agent_id, msg.seq, err)
            self.out.put_nowait(_reject(msg.seq, grpc.StatusCode.INVALID_ARGUMENT, str(err)))
            return
        await self.inflight.acquire()
        self.pending_acks += 1
        self.drained.clear()
        future = ing.store.submit_batch(batch)
        future.add_done_callback(
            lambda f: self.loop.call_soon_threadsafe(self._acked, f, batch, received))

    def _acked(self, future: Future, batch: MetricBatch, received: float) -> None:
        ing = self.ingest
        self.inflight.release()
        self.pending_acks -= 1
        if not self.pending_acks:
            self.drained.set()
        try:
            stored: BatchStored = future.result()
        except BatchRejected as err:
            ing.metrics.batches.labels("rejected").inc()
            log.warning("agent %s: %s", self.agent_id, err)
            self.out.put_nowait(_reject(batch.seq, grpc.StatusCode.FAILED_PRECONDITION, str(err)))
            return
        except StoreError as err:
            ing.metrics.errors.labels("store").inc()
            self.out.put_nowait(_reject(batch.seq, grpc.StatusCode.UNAVAILABLE, str(err)))
            return
        self.out.put_nowait(convert.ack_to_pb(stored))
        ing.metrics.batch_ack_seconds.observe(time.perf_counter() - received)
        if stored.duplicate:
            ing.metrics.batches.labels("duplicate").inc()
            return
        ing.metrics.batches.labels("stored").inc()
        ing.metrics.samples_ingested.inc(stored.samples)
        if ing.events.active:
            ing.events.publish(Event(ing.clock(), self.agent_id, batch))


def _reject(seq: int, code: grpc.StatusCode, message: str) -> agent_pb2.CoordinatorMessage:
    return agent_pb2.CoordinatorMessage(ack=agent_pb2.BatchAck(seq=seq, code=code.value[0], message=message))
