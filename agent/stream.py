"""The agent's link to the coordinator: one bidirectional gRPC stream, held by a background thread.

Up: a hello (host, inventory), then every batch of the spool not yet acknowledged, inventory updates
and command outcomes. Down: a welcome (the last batch the coordinator has stored, so the spool drops
what is already safe), batch acknowledgements (the spool forgets each acknowledged batch) and
commands (handed to ``on_command``). When the stream fails the thread reconnects with exponential
backoff and jitter; batches stay in the spool meanwhile and are sent again after the welcome.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from presculpt import tls
from presculpt.agent.config import StreamConfig
from presculpt.agent.metrics import AgentMetrics
from presculpt.agent.spool import BatchSpool
from presculpt.v1 import agent_pb2, agent_pb2_grpc, model_pb2

log = logging.getLogger(__name__)

# Acks with these codes reject a batch for good (nothing of it was stored): drop it from the spool.
_FINAL_REJECTIONS = (grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.FAILED_PRECONDITION.value[0])
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class Backoff:
    """Exponential backoff with jitter: initial, doubling up to ``max_s``; each delay is drawn from
    ``[d * (1 - jitter), d]`` so that many agents do not retry in lockstep."""

    def __init__(self, initial_s: float, max_s: float, jitter: float,
                 rng: Callable[[], float] = random.random):
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.max_s, self.initial_s * 2 ** self.attempt)
        self.attempt = min(self.attempt + 1, 64)
        return delay * (1 - self.jitter * self.rng())

    def reset(self) -> None:
        self.attempt = 0


class _Session:
    """One stream attempt: what was sent and is awaiting its acknowledgement."""

    def __init__(self) -> None:
        self.welcomed = threading.Event()
        self.done = threading.Event()
        self.sent_through = 0
        self.inflight = 0
        self.call: grpc.Call | None = None


class CoordinatorLink:
    """Holds the stream to the coordinator in a background thread; ``start``/``stop`` explicitly."""

    def __init__(
        self,
        target: str,
        agent_id: str,
        spool: BatchSpool,
        hello: Callable[[], agent_pb2.Hello],
        on_command: Callable[[model_pb2.Command], None],
        config: StreamConfig,
        metrics: AgentMetrics,
        tls_config: tls.TlsConfig,
        rng: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """``tls_config``: the CA the coordinator must be signed by and this agent's certificate, or
        insecure; read by ``start``, which raises :class:`presculpt.tls.TlsError` when it is missing."""
        self.target = target
        self.tls_config = tls_config
        self._tls: tls.TlsMaterial | None = None
        self.agent_id = agent_id
        self.spool = spool
        self.hello = hello
        self.on_command = on_command
        self.config = config
        self.metrics = metrics
        self.monotonic = monotonic
        self.backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s, config.reconnect_jitter, rng)
        self._outbox: queue.Queue[agent_pb2.AgentMessage] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None
        self.connected = threading.Event()

    # -- public --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._tls = tls.load_material(self.tls_config, "the agent", need_cert=False)
        if self._tls is None:
            tls.warn_insecure(log, f"the stream to the coordinator {self.target}")
        self._stop.clear()
        self._down_since = self.monotonic()
        self._thread = threading.Thread(target=self._run, name="coordinator-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            session = self._session
        if session is not None:
            session.done.set()
            if session.call is not None:
                session.call.cancel()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def wake(self) -> None:
        """New batches are in the spool."""
        self._wake.set()

    def send(self, message: agent_pb2.AgentMessage) -> None:
        """Queue an outcome or inventory update; it goes out now or after the next welcome."""
        self._outbox.put(message)
        self._wake.set()

    def disconnected_for(self) -> float:
        """Seconds since the stream was last up (0 while it is up)."""
        since = self._down_since
        return 0.0 if since is None else self.monotonic() - since

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self.metrics.reconnects.inc()
            # The first failure after a good stream is a warning; the retries that follow are info.
            level = logging.WARNING if self.backoff.attempt == 0 else logging.INFO
            session = _Session()
            try:
                self._run_session(session)
            except grpc.RpcError as err:
                if not self._stop.is_set():
                    code = err.code() if hasattr(err, "code") else None
                    refused = self._refusal(session, code, err.details() if hasattr(err, "details") else "")
                    if refused:
                        log.error("coordinator %s refused this agent's TLS handshake: %s", self.target, refused)
                        self.metrics.errors.labels("tls_refused").inc()
                    elif code == grpc.StatusCode.PERMISSION_DENIED:
                        log.error("coordinator %s refused this agent: %s", self.target, err.details())
                    else:
                        log.log(level, "coordinator %s: stream ended (%s: %s)", self.target,
                                code.name if code is not None else "error",
                                err.details() if hasattr(err, "details") else err)
            except ConnectionError as err:
                log.log(level, "coordinator %s: stream ended (%s)", self.target, err)
            except Exception:  # noqa: BLE001 - keep reconnecting whatever happened
                log.exception("coordinator %s: stream failed", self.target)
                self.metrics.errors.labels("stream").inc()
            if self._stop.is_set():
                break
            delay = self.backoff.next()
            log.info("reconnecting to %s in %.2f s (%d batches spooled)", self.target, delay, len(self.spool))
            self._stop.wait(delay)

    def _refusal(self, session: _Session, code: grpc.StatusCode | None, details: str) -> str | None:
        """Why the coordinator refused the TLS handshake, when this agent's own certificate explains
        it; None otherwise. Under TLS 1.3 the client finishes its side of the handshake before the
        server checks the client's certificate, so a refusal reaches the agent only as UNAVAILABLE
        (the server closed the connection): the reason is found here, in what the agent presents."""
        if (self._tls is None or session.welcomed.is_set() or code != grpc.StatusCode.UNAVAILABLE
                or not tls.handshake_ended(details or "")):
            return None
        return tls.certificate_problem(self._tls)

    def _run_session(self, session: _Session) -> None:
        channel = tls.channel(self.target, self._tls, options=CHANNEL_OPTIONS)
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            call = stub.Connect(self._requests(session))
            session.call = call
            with self._lock:
                self._session = session
            if self._stop.is_set():
                return
            first = next(call)
            if first.WhichOneof("kind") != "welcome":
                raise RuntimeError("the coordinator did not answer the hello with a welcome")
            self.spool.acknowledge_through(first.welcome.last_stored_seq)
            session.welcomed.set()
            self._down_since = None
            self.connected.set()
            self.metrics.connected.set(1)
            self.backoff.reset()
            log.info("connected to coordinator %s (it has stored batches up to %d; %d to send)",
                     self.target, first.welcome.last_stored_seq, len(self.spool))
            for msg in call:
                self._handle(session, msg)
            log.warning("coordinator %s closed the stream", self.target)
        finally:
            session.done.set()
            self._wake.set()
            if self.connected.is_set():
                self._down_since = self.monotonic()
            self.connected.clear()
            self.metrics.connected.set(0)
            with self._lock:
                self._session = None
            channel.close()

    def _handle(self, session: _Session, msg: agent_pb2.CoordinatorMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "ack":
            ack = msg.ack
            if ack.code == 0:
                self.spool.ack(ack.seq)
                self.metrics.batches_acked.inc()
            elif ack.code in _FINAL_REJECTIONS:
                log.error("coordinator rejected batch %d for good: %s; dropping it", ack.seq, ack.message)
                self.metrics.errors.labels("batch_rejected").inc()
                self.spool.ack(ack.seq)
            else:
                log.warning("coordinator could not store batch %d (%s); reconnecting to resend it",
                            ack.seq, ack.message)
                raise ConnectionError(ack.message)
            self.metrics.spool_batches.set(len(self.spool))
            with self._lock:
                session.inflight = max(0, session.inflight - 1)
            self._wake.set()
        elif kind == "command":
            self.on_command(msg.command)
        else:
            log.warning("unexpected %s message from the coordinator ignored", kind)

    def _requests(self, session: _Session) -> Iterator[agent_pb2.AgentMessage]:
        """Runs in gRPC's sending thread: hello, then outbox messages and spooled batches."""
        yield agent_pb2.AgentMessage(hello=self.hello())
        while not session.welcomed.wait(0.2):
            if session.done.is_set():
                return
        window = self.config.max_inflight_batches
        while not session.done.is_set():
            self._wake.clear()  # cleared before looking, so a wake-up during the look is kept
            try:
                yield self._outbox.get_nowait()
                continue
            except queue.Empty:
                pass
            with self._lock:
                room = window - session.inflight
            if room > 0:
                batches = self.spool.pending(after_seq=session.sent_through, limit=room)
                if batches:
                    for seq, payload in batches:
                        with self._lock:
                            session.inflight += 1
                        session.sent_through = seq
                        yield agent_pb2.AgentMessage(batch=agent_pb2.MetricBatch.FromString(payload))
                    continue
            self._wake.wait(0.5)
