"""The agent's host and guest series: they follow the inventory and the samples, and a guest that
goes takes its series with it."""

from __future__ import annotations

import socket

import pytest

from presculpt.agent.commands import CommandApplier
from presculpt.agent.config import AgentConfig, StreamConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.agent.resize import Resizer
from presculpt.agent.runner import AgentRunner
from presculpt.agent.spool import BatchSpool
from presculpt.tls import TlsConfig
from presculpt.v1 import model_pb2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Monotonic:
    """The fake's monotonic clock, moved by hand (nanoseconds)."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def runner(tmp_path):
    hv = FakeHypervisor(cpus=8, memory_mib=32768, monotonic_ns=Monotonic())
    hv.add_domain("web-1", vcpus=2, max_vcpus=4, memory_mib=2048, max_memory_mib=4096, used_mib=700)
    hv.add_domain("web-2", vcpus=1, max_vcpus=2, memory_mib=1024, max_memory_mib=1024)
    hv.add_domain("off", vcpus=4, memory_mib=4096, max_memory_mib=4096, state="shutoff")
    hv.connect()
    cfg = AgentConfig(uri=hv.uri, interval_s=0.1, tls=TlsConfig(insecure=True),
                      stream=StreamConfig(agent_id="h1", reconnect_initial_s=5, reconnect_max_s=5))
    resizer = Resizer(hv, SafetyGuard(cfg.guard))
    r = AgentRunner(hv, cfg, resizer, CommandApplier(resizer), BatchSpool(tmp_path / "spool.db"),
                    f"127.0.0.1:{_closed_port()}")
    r.start()  # the coordinator is unreachable: the loop samples and spools
    yield r
    r.stop()


def value(runner: AgentRunner, name: str, **labels: str) -> float | None:
    return runner.metrics.registry.get_sample_value(name, labels)


def test_host_capacity_and_allocation_follow_the_inventory(runner):
    hv = runner.hypervisor
    vcpu_limit, memory_limit = runner.resizer.guard.host_limits(hv.host_info())
    assert value(runner, "presculpt_agent_host_cpus", host="h1") == 8
    assert value(runner, "presculpt_agent_host_memory_mib", host="h1") == 32768
    assert value(runner, "presculpt_agent_host_vcpu_limit", host="h1") == vcpu_limit
    assert value(runner, "presculpt_agent_host_memory_limit_mib", host="h1") == memory_limit
    assert value(runner, "presculpt_agent_info", host="h1", uri=hv.uri, hypervisor=hv.host_info().hypervisor,
                 version="0.1.0") == 1
    # Only active guests hold an allocation: the shut-off one has no series.
    assert value(runner, "presculpt_agent_host_guests", host="h1") == 2
    assert value(runner, "presculpt_agent_host_allocated_vcpus", host="h1") == 3
    assert value(runner, "presculpt_agent_host_allocated_memory_mib", host="h1") == 3072
    assert value(runner, "presculpt_agent_vm_max_memory_mib", host="h1", vm="web-1") == 4096
    assert value(runner, "presculpt_agent_vm_vcpus", host="h1", vm="off") is None

    hv.set_cpu_quota("web-1", 1.5)
    hv.destroy("web-2")
    hv.undefine("web-2")
    runner.refresh_inventory(force=True)
    assert value(runner, "presculpt_agent_vm_cpu_limit_cores", host="h1", vm="web-1") == 1.5
    assert value(runner, "presculpt_agent_host_allocated_cpu_cores", host="h1") == 1.5
    assert value(runner, "presculpt_agent_host_allocated_vcpus", host="h1") == 2
    for name in ("presculpt_agent_vm_vcpus", "presculpt_agent_vm_memory_mib", "presculpt_agent_vm_max_vcpus"):
        assert value(runner, name, host="h1", vm="web-2") is None


def test_usage_series_are_the_last_sample(runner):
    hv = runner.hypervisor
    runner.run_once()  # primes the counters
    hv.set_guest_usage("web-1", cpu_cores=1.25, used_mib=800)
    hv.advance_cpu(2.0)
    hv.monotonic_ns.ns += 2_000_000_000
    runner.run_once()
    assert value(runner, "presculpt_agent_vm_cpu_cores", host="h1", vm="web-1") == pytest.approx(1.25)
    assert value(runner, "presculpt_agent_vm_memory_used_mib", host="h1", vm="web-1") == pytest.approx(800, abs=1)
    assert value(runner, "presculpt_agent_host_memory_used_mib", host="h1") > 0
    hv.destroy("web-1")
    hv.monotonic_ns.ns += 2_000_000_000
    runner.run_once()
    assert value(runner, "presculpt_agent_vm_cpu_cores", host="h1", vm="web-1") is None
    assert value(runner, "presculpt_agent_vm_cpu_cores", host="h1", vm="web-2") is not None


def test_commands_are_counted_by_kind_and_outcome(runner):
    resize = model_pb2.Resize(vm="web-1", target=model_pb2.Shape(vcpus=3))
    runner._apply_command(model_pb2.Command(id="c1", resize=resize, deadline=9e9))
    runner._apply_command(model_pb2.Command(id="c2", resize=resize, deadline=9e9))
    too_big = model_pb2.Resize(vm="web-1", target=model_pb2.Shape(vcpus=64))
    runner._apply_command(model_pb2.Command(id="c3", resize=too_big, deadline=9e9))
    assert value(runner, "presculpt_agent_commands_total", kind="resize", status="APPLIED") == 1
    assert value(runner, "presculpt_agent_commands_total", kind="resize", status="UNCHANGED") == 1
    assert value(runner, "presculpt_agent_commands_total", kind="resize", status="REFUSED") == 1
    assert value(runner, "presculpt_agent_vm_vcpus", host="h1", vm="web-1") == 3
