"""Coordinator plus agents against libvirt's test driver, operated through `presculpt` commands."""

from __future__ import annotations

import json
import threading
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
from presculpt.clitools import ArgumentParser, run
from presculpt.ops import add_operator_commands
from presculpt.v1 import api_pb2, api_pb2_grpc, model_pb2

from .conftest import AgentThread, make_agent, wait_until


def presculpt(capsys, coordinator, *argv: str) -> tuple[int, str, str]:
    parser = ArgumentParser(prog="presculpt")
    add_operator_commands(parser.add_subparsers(dest="command", parser_class=ArgumentParser))
    code = run("presculpt", parser, [*argv, "--coordinator", coordinator.address, "--insecure"])
    out, err = capsys.readouterr()
    return code, out, err


def presculpt_json(capsys, coordinator, *argv: str):
    code, out, err = presculpt(capsys, coordinator, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def hv(testnode_uri):
    h = LibvirtHypervisor(testnode_uri)
    h.connect()
    yield h
    h.close()


@pytest.fixture
def agent(hv, coordinator, tmp_path):
    a = AgentThread(make_agent(hv, coordinator.address, tmp_path / "spool.db")).start()
    yield a
    a.stop()


def test_hosts_vms_and_metrics(capsys, coordinator, agent):
    wait_until(lambda: presculpt_json(capsys, coordinator, "hosts"), what="the host")
    (host,) = presculpt_json(capsys, coordinator, "hosts")
    assert host["id"] == "host-1" and host["connected"] and host["cpus"] == 8 and host["vm_count"] == 2
    assert host["driver"] == "test" and host["hypervisor"].startswith("TEST")
    code, out, _ = presculpt(capsys, coordinator, "hosts")
    assert code == 0 and "test (no real guests)" in out.splitlines()[1]
    samples = wait_until(lambda: len(s := presculpt_json(capsys, coordinator, "metrics", "guest-a")) >= 3 and s,
                         what="three samples of guest-a")
    # (The test driver reports no CPU, vCPU or balloon counters in bulk stats: the values are zero.)
    assert all({"ts", "cpu_cores", "memory_mib", "memory_used_mib", "net_rx_bps"} <= set(s) for s in samples)
    assert [s["ts"] for s in samples] == sorted(s["ts"] for s in samples)
    vms = presculpt_json(capsys, coordinator, "vms")
    assert {(v["name"], v["host"]) for v in vms} == {("guest-a", "host-1"), ("guest-b", "host-1")}
    assert all(v["latest"] is not None for v in vms)
    code, out, _ = presculpt(capsys, coordinator, "vms")
    assert code == 0 and out.splitlines()[0].startswith("NAME") and "guest-b" in out


def test_resize_goes_through_the_agent(capsys, coordinator, agent, hv):
    wait_until(lambda: agent.runner.link.connected.is_set(), what="the agent to connect")
    result = presculpt_json(capsys, coordinator, "resize", "guest-a", "--vcpus", "3", "--memory-mib", "1536")
    assert result["status"] == "APPLIED" and result["host"] == "host-1"
    assert result["steps"] == ["vcpus 1->3", "memory 1024->1536 MiB"]
    assert result["state"]["vcpus"] == 3
    info = hv.domain_info("guest-a")
    assert (info.vcpus, info.memory_mib) == (3, 1536)
    again = presculpt_json(capsys, coordinator, "resize", "guest-a", "--vcpus", "3")
    assert again["status"] == "UNCHANGED"
    # The coordinator's inventory follows.
    wait_until(lambda: {v["name"]: v for v in presculpt_json(capsys, coordinator, "vms")}["guest-a"]["vcpus"] == 3,
               what="the inventory update")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resize", "guest-a", "--vcpus", "5"], "FAILED_PRECONDITION: 5 vCPUs exceeds the maximum of 4"),
        (["resize", "guest-a", "--memory-mib", "4096"], "FAILED_PRECONDITION: 4096 MiB exceeds the maximum of 2048"),
        (["resize", "nope", "--vcpus", "2"], "NOT_FOUND: no VM named 'nope'"),
        (["resize", "guest-a", "--host", "elsewhere", "--vcpus", "2"], "NOT_FOUND: no host 'elsewhere'"),
        (["metrics", "nope"], "NOT_FOUND: no VM named 'nope'"),
        (["vms", "--host", "elsewhere"], "NOT_FOUND: no host 'elsewhere'"),
        (["resize", "guest-a"], "nothing to change"),
    ],
)
def test_bad_requests_are_one_clear_line(capsys, coordinator, agent, hv, argv, message):
    wait_until(lambda: agent.runner.link.connected.is_set(), what="the agent to connect")
    code, out, err = presculpt(capsys, coordinator, *argv)
    assert code == 1 and out == ""
    assert err.startswith("presculpt: error: ") and message in err and err.count("\n") == 1
    assert hv.domain_info("guest-a").vcpus == 1  # nothing applied


def test_guard_refusal_is_reported(capsys, coordinator, agent):
    wait_until(lambda: agent.runner.link.connected.is_set(), what="the agent to connect")
    # 1024 -> 256 MiB shrinks by 75%, past the guard's 50% per step.
    code, _, err = presculpt(capsys, coordinator, "resize", "guest-a", "--memory-mib", "256")
    assert code == 1 and "FAILED_PRECONDITION" in err and "exceeds the limit of 50% per step" in err


def test_unreachable_coordinator(capsys, tmp_path):
    class Nowhere:
        address = "127.0.0.1:1"

    code, _, err = presculpt(capsys, Nowhere, "hosts")
    assert code == 1 and err.startswith("presculpt: error: cannot reach the coordinator at 127.0.0.1:1")


def test_events_follow_commands_and_metrics(capsys, coordinator, agent):
    wait_until(lambda: agent.runner.link.connected.is_set(), what="the agent to connect")
    channel = grpc.insecure_channel(coordinator.address)
    api = api_pb2_grpc.CoordinatorServiceStub(channel)
    events = api.WatchEvents(api_pb2.WatchEventsRequest())
    kinds: list[str] = []
    seen = threading.Event()

    def follow():
        for event in events:
            kinds.append(event.WhichOneof("kind"))
            if "outcome" in kinds and "metrics" in kinds:
                seen.set()
                return

    threading.Thread(target=follow, daemon=True).start()
    wait_until(lambda: "metrics" in kinds, what="a metrics event")
    api.ResizeVm(api_pb2.ResizeVmRequest(vm="guest-a", target=model_pb2.Shape(vcpus=2)), timeout=30)
    assert seen.wait(30)
    assert kinds.index("command") < kinds.index("outcome")
    events.cancel()
    channel.close()


def test_command_for_an_offline_agent_is_held_and_delivered(coordinator, hv, tmp_path):
    agent = AgentThread(make_agent(hv, coordinator.address, tmp_path / "spool.db")).start()
    wait_until(lambda: agent.runner.link.connected.is_set(), what="the agent to connect")
    agent.stop()
    wait_until(lambda: not coordinator.call(lambda: coordinator.server.dispatcher.connected("host-1")),
               what="the coordinator to see the agent leave")
    channel = grpc.insecure_channel(coordinator.address)
    api = api_pb2_grpc.CoordinatorServiceStub(channel)
    future = api.ResizeVm.future(api_pb2.ResizeVmRequest(vm="guest-a", target=model_pb2.Shape(vcpus=4),
                                                         timeout_s=30), timeout=60)
    wait_until(lambda: coordinator.call(lambda: coordinator.server.dispatcher.pending_count("host-1")) == 1,
               what="the command to be held")
    agent = AgentThread(make_agent(hv, coordinator.address, tmp_path / "spool.db")).start()
    try:
        response = future.result()
        assert model_pb2.CommandOutcome.Status.Name(response.outcome.status) == "APPLIED"
        assert hv.domain_info("guest-a").vcpus == 4
    finally:
        agent.stop()
        channel.close()


def test_command_for_an_offline_agent_expires(capsys, coordinator, hv, tmp_path):
    agent = AgentThread(make_agent(hv, coordinator.address, tmp_path / "spool.db")).start()
    wait_until(lambda: agent.runner.link.connected.is_set(), what="the agent to connect")
    agent.stop()
    wait_until(lambda: not coordinator.call(lambda: coordinator.server.dispatcher.connected("host-1")),
               what="the coordinator to see the agent leave")
    code, _, err = presculpt(capsys, coordinator, "resize", "guest-a", "--vcpus", "2", "--timeout", "0.5")
    assert code == 1 and "DEADLINE_EXCEEDED" in err and "never delivered" in err
    assert hv.domain_info("guest-a").vcpus == 1


def test_health_reflection_and_prometheus(tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from .conftest import CoordinatorThread, coordinator_config, free_port

    c = CoordinatorThread(coordinator_config(tmp_path, metrics_listen=f"127.0.0.1:{free_port()}")).start()
    try:
        with grpc.insecure_channel(c.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "presculpt.v1.AgentService", "presculpt.v1.CoordinatorService"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                assert status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            (response,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for s in response.list_services_response.service}
            assert {"presculpt.v1.AgentService", "presculpt.v1.CoordinatorService", "grpc.health.v1.Health"} <= names
        port = c.server.metrics_endpoint.port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for name in ("presculpt_samples_ingested_total", "presculpt_batch_ack_seconds_bucket",
                     "presculpt_command_latency_seconds", "presculpt_connected_agents", "presculpt_errors"):
            assert name in text
    finally:
        c.stop()


def test_history_as_rollups(capsys, coordinator, agent):
    wait_until(lambda: agent.runner.link.connected.is_set(), what="the agent to connect")
    wait_until(lambda: len(presculpt_json(capsys, coordinator, "metrics", "guest-a")) >= 2, what="samples")
    import time

    assert coordinator.server.store.compute_rollups(time.time() + 3600) > 0
    rows = presculpt_json(capsys, coordinator, "metrics", "guest-a", "--rollup")
    assert rows and {"ts", "count", "cpu_cores_min", "cpu_cores_mean", "cpu_cores_max"} <= set(rows[0])
    code, out, _ = presculpt(capsys, coordinator, "metrics", "guest-a", "--rollup")
    assert code == 0 and "roll-ups" in out.splitlines()[0]


def test_daemons_from_their_command_lines(tmp_path, testnode_uri):
    """presculpt-coordinator serve and presculpt-agent run as processes; SIGTERM stops both cleanly."""
    import signal
    import subprocess
    import sys

    from .conftest import free_port
    from .test_crash import start_coordinator

    address, agent_metrics = f"127.0.0.1:{free_port()}", free_port()
    log = open(tmp_path / "daemons.log", "w")
    coordinator = start_coordinator(address, str(tmp_path / "c.db"), log)
    agent = subprocess.Popen(
        [sys.executable, "-m", "presculpt.agent.cli", "run", "--uri", testnode_uri, "--coordinator", address,
         "--interval", "0.2", "--agent-id", "cli-host", "--spool", str(tmp_path / "spool.db"),
         "--metrics-listen", f"127.0.0.1:{agent_metrics}", "--insecure"], stdout=log, stderr=log)
    try:
        with grpc.insecure_channel(address) as channel:
            api = api_pb2_grpc.CoordinatorServiceStub(channel)

            def sampled() -> bool:
                vms = api.ListVms(api_pb2.ListVmsRequest(), timeout=5).vms
                return len(vms) == 2 and all(v.HasField("latest") and v.host == "cli-host" for v in vms)

            wait_until(sampled, what="samples of both guests")
        text = wait_until(lambda: _get(f"http://127.0.0.1:{agent_metrics}/metrics"), what="agent metrics")
        assert "presculpt_agent_batches_acked_total" in text and "presculpt_agent_connected 1.0" in text
    finally:
        for process in (agent, coordinator):
            process.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        assert coordinator.wait(timeout=30) == 0
        log.close()


def _get(url: str) -> str | None:
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None


def test_events_command_follows_the_stream(capsys, coordinator, agent):
    wait_until(lambda: agent.runner.link.connected.is_set(), what="the agent to connect")
    code, out, err = presculpt(capsys, coordinator, "events", "--count", "2", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 2 and all(e["host"] == "host-1" and e["kind"] == "metrics" for e in events)
    assert all(int(e["metrics"]["seq"]) >= 1 for e in events)
    code, out, _ = presculpt(capsys, coordinator, "events", "--count", "1")
    assert code == 0 and "host-1 batch" in out and "VM samples" in out
