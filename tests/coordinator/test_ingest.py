"""The agent stream's handling of bad input: a clear status, nothing partially stored."""

from __future__ import annotations

import math
import queue

import grpc
import pytest

from presculpt.coordinator.config import IngestConfig
from presculpt.v1 import agent_pb2, agent_pb2_grpc, model_pb2

from .conftest import CoordinatorThread, coordinator_config

UUID_A, UUID_B = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"


def hello(agent_id: str = "h1") -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(hello=agent_pb2.Hello(
        agent_id=agent_id, host=model_pb2.HostInfo(hostname=agent_id, cpus=4, memory_mib=8192),
        vms=[model_pb2.VmInfo(name="a", uuid=UUID_A, state="running", vcpus=1, max_vcpus=2,
                              memory_mib=512, max_memory_mib=1024)]))


def batch(seq: int, *samples: tuple[str, float]) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(batch=agent_pb2.MetricBatch(
        seq=seq, vms=[model_pb2.VmSample(uuid=u, ts=ts, interval_s=1, cpu_cores=0.5, vcpus=1, memory_mib=512)
                      for u, ts in samples]))


class Stream:
    """A raw agent stream: put messages, read replies."""

    def __init__(self, address: str):
        self.channel = grpc.insecure_channel(address)
        self.outbox: queue.Queue = queue.Queue()
        self.call = agent_pb2_grpc.AgentServiceStub(self.channel).Connect(iter(self.outbox.get, None), timeout=30)

    def send(self, msg: agent_pb2.AgentMessage) -> None:
        self.outbox.put(msg)

    def read(self) -> agent_pb2.CoordinatorMessage:
        return next(self.call)

    def close(self) -> None:
        self.outbox.put(None)
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def coordinator(tmp_path):
    c = CoordinatorThread(coordinator_config(tmp_path, ingest=IngestConfig(max_message_bytes=64 * 1024))).start()
    yield c
    c.stop()


@pytest.fixture
def stream(coordinator):
    s = Stream(coordinator.address)
    yield s
    s.close()


def stored(coordinator) -> int:
    return coordinator.server.store.count_samples()


def test_welcome_then_acks_and_duplicates(coordinator, stream):
    stream.send(hello())
    assert stream.read().welcome.last_stored_seq == 0
    stream.send(batch(1, (UUID_A, 10.0)))
    assert stream.read().ack == agent_pb2.BatchAck(seq=1)
    stream.send(batch(1, (UUID_A, 10.0)))
    assert stream.read().ack == agent_pb2.BatchAck(seq=1, duplicate=True)
    assert stored(coordinator) == 1


def test_a_reconnecting_agent_learns_what_is_stored(coordinator, stream):
    stream.send(hello())
    stream.read()
    stream.send(batch(5, (UUID_A, 10.0)))
    stream.read()
    again = Stream(coordinator.address)
    try:
        again.send(hello())
        assert again.read().welcome.last_stored_seq == 5
    finally:
        again.close()


@pytest.mark.parametrize(
    "message, status, text",
    [
        (batch(1, (UUID_A, 1.0)), grpc.StatusCode.INVALID_ARGUMENT, "first message of a stream must be a hello"),
        (agent_pb2.AgentMessage(), grpc.StatusCode.INVALID_ARGUMENT, "first message of a stream must be a hello"),
        (agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="x")), grpc.StatusCode.INVALID_ARGUMENT,
         "positive cpus and memory_mib"),
        (agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id=" ")), grpc.StatusCode.INVALID_ARGUMENT,
         "agent_id is empty"),
    ],
)
def test_bad_hello_ends_the_stream(coordinator, stream, message, status, text):
    stream.send(message)
    with pytest.raises(grpc.RpcError) as err:
        stream.read()
    assert err.value.code() == status and text in err.value.details()
    assert coordinator.server.store.hosts() == []


def test_second_hello_or_empty_message_ends_the_stream(coordinator, stream):
    stream.send(hello())
    stream.read()
    stream.send(agent_pb2.AgentMessage())
    with pytest.raises(grpc.RpcError) as err:
        stream.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty message" in err.value.details()


@pytest.mark.parametrize(
    "bad, code, text",
    [
        (batch(1, (UUID_A, 1.0), (UUID_B, 1.0)), grpc.StatusCode.FAILED_PRECONDITION, "not in its inventory"),
        (batch(1, (UUID_A, 1.0), (UUID_A, math.nan)), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        (batch(1, (UUID_A, 1.0), ("", 2.0)), grpc.StatusCode.INVALID_ARGUMENT, "missing uuid"),
        (batch(0, (UUID_A, 1.0)), grpc.StatusCode.INVALID_ARGUMENT, "seq must be positive"),
    ],
)
def test_bad_batch_is_rejected_whole_and_the_stream_goes_on(coordinator, stream, bad, code, text):
    stream.send(hello())
    stream.read()
    stream.send(bad)
    ack = stream.read().ack
    assert ack.code == code.value[0] and text in ack.message
    assert stored(coordinator) == 0
    stream.send(batch(2, (UUID_A, 5.0)))
    assert stream.read().ack == agent_pb2.BatchAck(seq=2)
    assert stored(coordinator) == 1


def test_oversized_message_is_refused(coordinator, stream):
    stream.send(hello())
    stream.read()
    stream.send(batch(1, *[(UUID_A, float(ts)) for ts in range(1, 5000)]))  # > 64 KiB
    with pytest.raises(grpc.RpcError) as err:
        stream.read()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stored(coordinator) == 0


def test_a_newer_stream_of_the_same_agent_replaces_the_older(coordinator, stream):
    stream.send(hello())
    stream.read()
    newer = Stream(coordinator.address)
    try:
        newer.send(hello())
        newer.read()
        with pytest.raises(grpc.RpcError) as err:
            stream.read()
        assert err.value.code() == grpc.StatusCode.ABORTED and "replaced by a newer stream" in err.value.details()
        newer.send(batch(1, (UUID_A, 1.0)))
        assert newer.read().ack == agent_pb2.BatchAck(seq=1)
        assert coordinator.call(lambda: coordinator.server.registry.connected()) == ["h1"]
    finally:
        newer.close()
