"""Kill the coordinator with SIGKILL mid-stream, start it again: every acknowledged sample is stored,
nothing is stored twice, and the agent reconnects by itself."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.agent.spool import BatchSpool
from presculpt.v1 import agent_pb2

from .conftest import AgentThread, free_port, make_agent, wait_until


class RecordingSpool(BatchSpool):
    """A spool that remembers what each batch held and which batches were acknowledged."""

    def __init__(self, path):
        super().__init__(path)
        self.contents: dict[int, set[tuple[str, float]]] = {}
        self.acked: set[int] = set()
        self.guard = threading.Lock()

    def append(self, build):
        def recording(seq: int) -> bytes:
            payload = build(seq)
            batch = agent_pb2.MetricBatch.FromString(payload)
            with self.guard:
                self.contents[seq] = {(s.uuid, s.ts) for s in batch.vms}
            return payload

        return super().append(recording)

    def ack(self, seq: int) -> None:
        super().ack(seq)
        with self.guard:
            self.acked.add(seq)

    def acked_samples(self) -> set[tuple[str, float]]:
        with self.guard:
            return set().union(*(self.contents[s] for s in self.acked))


def start_coordinator(address: str, db: str, log) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "presculpt.coordinator.cli", "serve", "--listen", address, "--db", db, "--insecure"],
        stdout=log, stderr=log)

    def healthy() -> bool:
        assert process.poll() is None, "the coordinator exited"
        try:
            with grpc.insecure_channel(address) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
                return status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    try:
        wait_until(healthy, timeout=60, what="the coordinator to serve")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def test_sigkill_mid_ingestion_loses_no_acknowledged_sample(tmp_path):
    address, db = f"127.0.0.1:{free_port()}", str(tmp_path / "coordinator.db")
    hv = FakeHypervisor()
    for i in range(20):
        hv.add_domain(f"vm-{i:02d}")
    hv.connect()
    log = open(tmp_path / "coordinator.log", "w")
    spool = RecordingSpool(tmp_path / "spool.db")
    runner = make_agent(hv, address, tmp_path / "spool.db", interval_s=0.02, spool=spool)
    agent = AgentThread(runner)
    coordinator = start_coordinator(address, db, log)
    try:
        agent.start()
        wait_until(lambda: len(spool.acked) >= 100, what="100 acknowledged batches")
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(timeout=30)
        acked_before_kill = spool.acked_samples()
        wait_until(lambda: not runner.link.connected.is_set(), what="the agent to notice")
        sampled = len(spool.contents)
        wait_until(lambda: len(spool.contents) >= sampled + 20, what="the agent to keep sampling")
        coordinator = start_coordinator(address, db, log)
        # The agent reconnects by itself and sends what the dead coordinator never acknowledged.
        wait_until(lambda: runner.link.connected.is_set(), what="the agent to reconnect")
        last = max(spool.contents)
        wait_until(lambda: last in spool.acked and len(spool) < 5, what="the spool to drain")
    finally:
        agent.stop()
        coordinator.send_signal(signal.SIGTERM)
        coordinator.wait(timeout=30)
        log.close()
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT v.uuid, s.ts FROM samples s JOIN vms v ON v.id = s.vm_id").fetchall()
    stored_set = set(stored)
    assert len(stored) == len(stored_set)
    assert acked_before_kill <= stored_set, f"{len(acked_before_kill - stored_set)} acknowledged samples lost"
    assert spool.acked_samples() <= stored_set
    assert runner.metrics.errors.labels("batch_rejected")._value.get() == 0
