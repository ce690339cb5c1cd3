"""``presculpt bench ingest``: sustained ingestion of a coordinator on this machine.

Starts a coordinator as a subprocess (its own store in a temporary folder, unless ``--coordinator``
names a running one) and simulates ``--agents`` agents over loopback, each with ``--vms-per-agent``
VMs, in this process. Each simulated agent holds one stream like a real one and sends one batch
(one sample of each of its VMs) at a steady pace, so that together they offer ``--rate`` VM-samples
per second (open loop, like real agents sampling on a clock; ``--rate 0`` sends as fast as
acknowledgements allow, with ``--window`` batches in flight per agent). It reports the VM-samples
per second acknowledged (stored durably) over the measured period and the batch-acknowledge
latency percentiles (from sending a batch to receiving its acknowledgement).

The simulated agents speak plain text (the coordinator it starts runs with ``--insecure``): they
have no certificates, and each announces an identity of its own. ``--coordinator`` must name a
coordinator running with ``--insecure`` too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from presculpt.clitools import positive_float, positive_int
from presculpt.errors import UserError
from presculpt.v1 import agent_pb2, agent_pb2_grpc, model_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    agents: int
    vms_per_agent: int
    offered_samples_per_second: float  # 0: closed loop
    duration_s: float
    samples_per_second: float  # acknowledged (stored durably) per second over the measured period
    batches_acked: int
    p50_ack_ms: float
    p99_ack_ms: float
    max_ack_ms: float
    stored_samples: int | None  # counted in the store afterwards (None with --coordinator)
    rejected_batches: int
    coordinator_cpu_cores: float | None  # CPU the coordinator process used (cores) while measured
    agents_cpu_cores: float  # CPU the simulated agents (this process) used while measured


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _SimAgent:
    def __init__(self, index: int, vms: int, batches_per_s: float, window: int, run_id: str):
        self.agent_id = f"bench-{run_id}-{index:04d}"
        self.uuids = [str(uuidlib.UUID(int=(index << 32) + v + 1)) for v in range(vms)]
        self.interval = 1 / batches_per_s if batches_per_s > 0 else 0.0
        self.window = window
        self.sent: dict[int, float] = {}
        self.latencies: list[tuple[float, float, int]] = []  # (ack time, latency s, samples)
        self.rejected = 0
        self.inflight = asyncio.Semaphore(window)

    def hello(self) -> agent_pb2.AgentMessage:
        vms = [model_pb2.VmInfo(name=f"vm-{i:03d}", uuid=u, state="running", vcpus=2, max_vcpus=4,
                                memory_mib=2048, max_memory_mib=4096) for i, u in enumerate(self.uuids)]
        return agent_pb2.AgentMessage(hello=agent_pb2.Hello(
            agent_id=self.agent_id, host=model_pb2.HostInfo(hostname=self.agent_id, uri="bench:///",
                                                             cpus=32, memory_mib=262144), vms=vms))

    async def run(self, address: str, stop_at: float) -> None:
        rng = random.Random(self.agent_id)
        template = agent_pb2.AgentMessage()
        batch = template.batch
        for u in self.uuids:
            batch.vms.add(uuid=u, interval_s=5.0, cpu_cores=rng.random() * 2, vcpus=2, memory_mib=2048,
                          memory_used_mib=rng.random() * 1500, memory_available_mib=2048,
                          disk_read_bps=rng.random() * 1e6, disk_write_bps=rng.random() * 1e6,
                          net_rx_bps=rng.random() * 1e5, net_tx_bps=rng.random() * 1e5)
        batch.host.CopyFrom(model_pb2.HostSample(cpu_count=32, cpu_used_cores=4, memory_total_mib=262144,
                                                 memory_used_mib=100000, memory_available_mib=162144))
        async with grpc.aio.insecure_channel(address) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            await call.write(self.hello())
            welcome = await call.read()
            assert welcome.WhichOneof("kind") == "welcome"
            reader = asyncio.create_task(self._read(call))
            seq = welcome.welcome.last_stored_seq
            loop = asyncio.get_running_loop()
            # Spread the agents' clocks over one interval, as real agents started at different times.
            next_send = loop.time() + rng.random() * self.interval
            base_ts = time.time()
            while loop.time() < stop_at:
                if self.interval:
                    delay = next_send - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_send += self.interval
                await self.inflight.acquire()
                seq += 1
                batch.seq = seq
                ts = base_ts + seq * 0.001  # unique per VM and batch
                for sample in batch.vms:
                    sample.ts = ts
                batch.host.ts = ts
                self.sent[seq] = time.perf_counter()
                await call.write(template)
            await call.done_writing()
            await reader

    async def _read(self, call) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            if msg.WhichOneof("kind") != "ack":
                continue
            ack = msg.ack
            sent = self.sent.pop(ack.seq, None)
            self.inflight.release()
            if ack.code:
                self.rejected += 1
                continue
            if sent is not None:
                now = time.perf_counter()
                self.latencies.append((now, now - sent, len(self.uuids)))


async def _simulate(address: str, agents: int, vms: int, rate: float, window: int, warmup_s: float,
                    duration_s: float, pid: int | None) -> tuple[list[_SimAgent], float, float, dict]:
    per_agent = rate / agents / vms if rate else 0.0
    run_id = uuidlib.uuid4().hex[:6]
    sims = [_SimAgent(i, vms, per_agent, window, run_id) for i in range(agents)]
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + warmup_s + duration_s
    measure_from = time.perf_counter() + warmup_s
    measure_to = measure_from + duration_s
    cpu: dict = {}

    async def measure_cpu() -> None:
        import psutil

        process = psutil.Process(pid) if pid else None
        await asyncio.sleep(warmup_s)
        own, theirs = time.process_time(), sum(process.cpu_times()[:2]) if process else 0.0
        await asyncio.sleep(duration_s)
        cpu["agents"] = (time.process_time() - own) / duration_s
        cpu["coordinator"] = (sum(process.cpu_times()[:2]) - theirs) / duration_s if process else None

    results = await asyncio.gather(measure_cpu(), *(s.run(address, stop_at) for s in sims),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise UserError(f"{len(errors)} simulated agents failed; first: {errors[0]!r}")
    return sims, measure_from, measure_to, cpu


def _wait_healthy(address: str, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise UserError(f"the coordinator exited with code {process.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise UserError(f"the coordinator did not become healthy within {timeout_s:g} s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ingest_bench(agents: int, vms_per_agent: int, rate: float, window: int, warmup_s: float,
                     duration_s: float, coordinator: str | None = None, workdir: Path | None = None,
                     coordinator_args: tuple[str, ...] = ()) -> IngestResult:
    process = None
    db = None
    tmp = None
    if coordinator is None:
        tmp = tempfile.TemporaryDirectory(prefix="presculpt-bench-")
        folder = workdir or Path(tmp.name)
        db = folder / "bench.db"
        coordinator = f"127.0.0.1:{_free_port()}"
        process = subprocess.Popen(
            [sys.executable, "-m", "presculpt.coordinator.cli", "serve", "--listen", coordinator,
             "--db", str(db), "--insecure", *coordinator_args],
            stdout=subprocess.DEVNULL, stderr=open(folder / "coordinator.log", "w"),
        )
    try:
        if process is not None:
            _wait_healthy(coordinator, process)
        sims, start, end, cpu = asyncio.run(_simulate(
            coordinator, agents, vms_per_agent, rate, window, warmup_s, duration_s,
            process.pid if process is not None else None))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    acked = [(t, lat, n) for s in sims for (t, lat, n) in s.latencies if start <= t < end]
    latencies_ms = [lat * 1e3 for _, lat, _ in acked]
    stored = None
    if db is not None:
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    if tmp is not None:
        tmp.cleanup()
    return IngestResult(
        agents=agents, vms_per_agent=vms_per_agent, offered_samples_per_second=rate, duration_s=duration_s,
        samples_per_second=round(sum(n for *_, n in acked) / duration_s, 1), batches_acked=len(acked),
        p50_ack_ms=round(_percentile(latencies_ms, 0.50), 2), p99_ack_ms=round(_percentile(latencies_ms, 0.99), 2),
        max_ack_ms=round(max(latencies_ms, default=float("nan")), 2), stored_samples=stored,
        rejected_batches=sum(s.rejected for s in sims),
        coordinator_cpu_cores=None if cpu.get("coordinator") is None else round(cpu["coordinator"], 2),
        agents_cpu_cores=round(cpu["agents"], 2),
    )


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    result = run_ingest_bench(args.agents, args.vms_per_agent, args.rate, args.window, args.warmup,
                              args.duration, coordinator=args.coordinator)
    print(f"ingest: {result.agents} agents x {result.vms_per_agent} VMs, "
          + (f"offered {result.offered_samples_per_second:,.0f} VM-samples/s" if result.offered_samples_per_second
             else f"closed loop, {args.window} batch(es) in flight per agent")
          + f", measured {result.duration_s:g} s after {args.warmup:g} s warm-up")
    print(f"  stored (acknowledged): {result.samples_per_second:,.0f} VM-samples/s "
          f"({result.batches_acked:,} batches)")
    print(f"  batch acknowledge latency: p50 {result.p50_ack_ms:.1f} ms, p99 {result.p99_ack_ms:.1f} ms, "
          f"max {result.max_ack_ms:.1f} ms")
    if result.stored_samples is not None:
        print(f"  samples in the store afterwards: {result.stored_samples:,}; rejected batches: {result.rejected_batches}")
    cores = "" if result.coordinator_cpu_cores is None else f"coordinator {result.coordinator_cpu_cores:.2f}, "
    print(f"  CPU used (cores): {cores}simulated agents {result.agents_cpu_cores:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0


def add_ingest_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``ingest`` to the ``presculpt bench`` subcommands."""
    p = bench_sub.add_parser("ingest", help="sustained metric ingestion of a coordinator (simulated agents)")
    p.add_argument("--agents", type=positive_int, default=200, help="simulated agents (default 200)")
    p.add_argument("--vms-per-agent", type=positive_int, default=30, help="VMs per agent (default 30)")
    p.add_argument("--rate", type=float, default=25_000.0,
                   help="VM-samples per second offered by all agents together (default 25000; 0: as fast as acknowledged)")
    p.add_argument("--window", type=positive_int, default=8, help="batches in flight per agent at most (default 8)")
    p.add_argument("--duration", type=positive_float, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    p.add_argument("--coordinator", metavar="ADDR", help="bench a running coordinator instead of starting one")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.set_defaults(func=cmd_bench_ingest, progress=True)
