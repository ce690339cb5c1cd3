"""Mutual TLS between agents, operators and the coordinator, on loopback.

A good agent's metrics are stored; an agent without a certificate, with one from another CA or with
an expired one is refused during the TLS handshake, with a line in both daemons' logs, and nothing it
sends is stored; an agent may speak only for the host its certificate names. Plain text needs an
explicit --insecure, and is announced loudly.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from presculpt import tls
from presculpt.agent import cli as agent_cli
from presculpt.certs import build_certificate, cert_pem, init_ca, issue, key_pem, load_ca, new_key
from presculpt.cli import main as presculpt_main
from presculpt.coordinator import cli as coordinator_cli
from presculpt.tls import TlsConfig
from presculpt.v1 import api_pb2, api_pb2_grpc

from ..conftest import make_fake
from .conftest import AgentThread, CoordinatorThread, coordinator_config, free_port, make_agent, wait_until

STREAM_LOG = "presculpt.agent.stream"


@dataclass(frozen=True)
class Pki:
    coordinator: TlsConfig  # CA 1's coordinator certificate (127.0.0.1)
    agent: TlsConfig  # host-1, signed by CA 1
    operator: TlsConfig  # a client-only certificate signed by CA 1
    no_cert: TlsConfig  # trusts CA 1, presents nothing
    other_ca: TlsConfig  # trusts CA 1, presents host-1 signed by CA 2
    expired: TlsConfig  # trusts CA 1, presents host-1 signed by CA 1, expired yesterday
    foreign: TlsConfig  # trusts only CA 2 (and presents CA 2's host-1): must refuse the coordinator


def _files(issued) -> dict[str, str]:
    return {"cert": str(issued.cert_path), "key": str(issued.key_path)}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    one, two = tmp_path_factory.mktemp("ca1"), tmp_path_factory.mktemp("ca2")
    ca1, _ = init_ca(one)
    ca2, _ = init_ca(two, "Another CA")
    coordinator = issue(one, "coordinator", ips=["127.0.0.1"])
    agent, operator = issue(one, "host-1"), issue(one, "operator", client_only=True)
    stranger = issue(two, "host-1")
    # Expired: signed by the right CA, valid from ten days ago until yesterday.
    ca_key, ca_cert = load_ca(one)
    key = new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    old = build_certificate(ca_key, ca_cert, key, "host-1", ["host-1"], not_before=now - datetime.timedelta(days=10),
                            not_after=now - datetime.timedelta(days=1))
    expired_dir = tmp_path_factory.mktemp("expired")
    (expired_dir / "host-1.crt").write_bytes(cert_pem(old))
    (expired_dir / "host-1.key").write_bytes(key_pem(key))
    return Pki(
        coordinator=TlsConfig(ca=str(ca1), **_files(coordinator)),
        agent=TlsConfig(ca=str(ca1), **_files(agent)),
        operator=TlsConfig(ca=str(ca1), **_files(operator)),
        no_cert=TlsConfig(ca=str(ca1)),
        other_ca=TlsConfig(ca=str(ca1), **_files(stranger)),
        expired=TlsConfig(ca=str(ca1), cert=str(expired_dir / "host-1.crt"), key=str(expired_dir / "host-1.key")),
        foreign=TlsConfig(ca=str(ca2), **_files(stranger)),
    )


def operator_api(address: str, pki: Pki) -> tuple[grpc.Channel, api_pb2_grpc.CoordinatorServiceStub]:
    channel = tls.channel(address, tls.load_material(pki.operator, "test"))
    return channel, api_pb2_grpc.CoordinatorServiceStub(channel)


def tls_flags(config: TlsConfig) -> list[str]:
    return ["--ca", config.ca, "--cert", config.cert, "--key", config.key]


# -- a good agent ------------------------------------------------------------------------------------


def test_a_good_agent_is_stored_and_operators_see_it_over_mtls(tmp_path, pki, capsys, monkeypatch):
    coordinator = CoordinatorThread(coordinator_config(tmp_path, tls=pki.coordinator)).start()
    agent = AgentThread(make_agent(make_fake(), coordinator.address, tmp_path / "spool.db", tls=pki.agent)).start()
    try:
        store = coordinator.server.store
        wait_until(lambda: store.count_samples() >= 4, what="the agent's samples in the store")
        assert [h.id for h in store.hosts()] == ["host-1"]
        # The operator's command line: a client certificate from flags, from the environment, or
        # from the PKI folder; plain text and a missing certificate are refused in one line.
        flags = ["hosts", "--json", "--coordinator", coordinator.address]
        assert presculpt_main([*flags, *tls_flags(pki.operator)]) == 0
        (host,) = json.loads(capsys.readouterr().out)
        assert (host["id"], host["connected"]) == ("host-1", True)
        pki_dir = Path(pki.operator.cert).parent
        monkeypatch.setenv("PRESCULPT_PKI", str(pki_dir))
        assert presculpt_main(flags) == 0 and "host-1" in capsys.readouterr().out
        monkeypatch.setenv("PRESCULPT_PKI", str(tmp_path / "nothing-here"))
        assert presculpt_main(flags) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no TLS certificate to show the coordinator" in err
        assert "presculpt certs issue operator --client" in err
        assert presculpt_main([*flags, "--insecure"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot reach the coordinator at {coordinator.address}" in err
    finally:
        agent.stop()
        coordinator.stop()


# -- refused agents ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coordinator_process(pki, tmp_path_factory):
    """presculpt-coordinator serve with mutual TLS, as operators run it; its log (stderr, where gRPC
    core writes too) goes to a file the tests read."""
    folder = tmp_path_factory.mktemp("coordinator")
    address, log_path = f"127.0.0.1:{free_port()}", folder / "coordinator.log"
    # gRPC's default verbosity, as the unit runs it (the coordinator warns when GRPC_VERBOSITY hides it).
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "presculpt.coordinator.cli", "serve", "--listen", address,
             "--db", str(folder / "c.db"), *tls_flags(pki.coordinator)], stdout=log, stderr=log, env=env)
    channel, _ = operator_api(address, pki)

    def healthy() -> bool:
        assert process.poll() is None, f"the coordinator exited: {log_path.read_text()}"
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    try:
        wait_until(healthy, timeout=90, what="the coordinator to serve over TLS")
        yield address, log_path
    finally:
        channel.close()
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("case, agent_line, coordinator_line", [
    ("no_cert", "refused this agent's TLS handshake: it presents no client certificate",
     "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    ("other_ca", "refused this agent's TLS handshake: its certificate .* was issued by 'Another CA', not by the CA it trusts",
     "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"),
    ("expired", "refused this agent's TLS handshake: its certificate .* expired on",
     "CERTIFICATE_VERIFY_FAILED: certificate has expired"),
])
def test_an_agent_the_ca_did_not_vouch_for_is_refused(case, agent_line, coordinator_line, pki, coordinator_process,
                                                      tmp_path, caplog):
    address, log_path = coordinator_process
    caplog.set_level(logging.INFO, logger=STREAM_LOG)
    agent = AgentThread(make_agent(make_fake(), address, tmp_path / "spool.db", tls=getattr(pki, case))).start()
    try:
        # The agent's side: why, as far as the agent can tell (under TLS 1.3 it sees the server close).
        wait_until(lambda: any(r.levelno == logging.ERROR and re.search(agent_line, r.getMessage())
                               for r in caplog.records if r.name == STREAM_LOG), what="the agent's refusal line")
        # The coordinator's side: gRPC core's own line about the handshake it refused.
        wait_until(lambda: coordinator_line in log_path.read_text(), what="the coordinator's refusal line")
        # It keeps its metrics for later: they wait in its spool, never acknowledged.
        wait_until(lambda: len(agent.runner.spool) >= 3, what="batches the agent could not send")
    finally:
        agent.stop()
    assert not agent.runner.link.connected.is_set()
    channel, api = operator_api(address, pki)
    with channel:
        assert list(api.ListHosts(api_pb2.ListHostsRequest(), timeout=10).hosts) == []
        assert list(api.ListVms(api_pb2.ListVmsRequest(), timeout=10).vms) == []


def test_an_operator_with_an_expired_certificate_is_told_why(pki, coordinator_process, capsys):
    address, _ = coordinator_process
    assert presculpt_main(["hosts", "--coordinator", address, *tls_flags(pki.expired)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert re.match(rf"presculpt: error: the coordinator at {address} refused the TLS handshake: its certificate "
                    r"\S+host-1.crt expired on \d{4}-\d\d-\d\d", err), err


def test_an_agent_refuses_a_coordinator_its_ca_did_not_sign(pki, coordinator_process, tmp_path, caplog):
    address, _ = coordinator_process
    caplog.set_level(logging.INFO, logger=STREAM_LOG)
    agent = AgentThread(make_agent(make_fake(), address, tmp_path / "spool.db", tls=pki.foreign)).start()
    try:
        wait_until(lambda: any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() and "stream ended" in r.getMessage()
                               for r in caplog.records if r.name == STREAM_LOG), what="the agent's refusal")
    finally:
        agent.stop()
    channel, api = operator_api(address, pki)
    with channel:
        assert list(api.ListHosts(api_pb2.ListHostsRequest(), timeout=10).hosts) == []


def test_an_agent_speaks_only_for_the_host_its_certificate_names(tmp_path, pki, caplog):
    caplog.set_level(logging.INFO)
    coordinator = CoordinatorThread(coordinator_config(tmp_path, tls=pki.coordinator)).start()
    agent = AgentThread(make_agent(make_fake(), coordinator.address, tmp_path / "spool.db", agent_id="host-2",
                                   tls=pki.agent)).start()
    expected = "agent_id 'host-2' is not a name of the agent's certificate (host-1); nothing stored"
    try:
        def refused(logger: str, level: int) -> bool:
            return any(r.name == logger and r.levelno == level and expected in r.getMessage() for r in caplog.records)

        wait_until(lambda: refused("presculpt.coordinator.ingest", logging.WARNING), what="the coordinator's line")
        wait_until(lambda: refused(STREAM_LOG, logging.ERROR), what="the agent's line")
        assert coordinator.server.store.hosts() == [] and coordinator.server.store.count_samples() == 0
    finally:
        agent.stop()
        coordinator.stop()


# -- plain text only when asked ----------------------------------------------------------------------


def test_plain_text_is_loud(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    coordinator = CoordinatorThread(coordinator_config(tmp_path, tls=TlsConfig(insecure=True))).start()
    agent = make_agent(make_fake(), coordinator.address, tmp_path / "spool.db", tls=TlsConfig(insecure=True))
    try:
        agent.start()
        insecure = [r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage().startswith("INSECURE")]
        assert {r.name for r in insecure} == {"presculpt.coordinator.server", STREAM_LOG}
    finally:
        agent.stop()
        coordinator.stop()


def test_a_coordinator_without_tls_material_does_not_start(tmp_path):
    from presculpt.coordinator.server import CoordinatorServer

    server = CoordinatorServer(coordinator_config(tmp_path, tls=TlsConfig()))
    with pytest.raises(tls.TlsError, match="needs TLS material.*presculpt certs init.*--insecure"):
        asyncio.run(server.start())


@pytest.mark.parametrize("argv, message", [
    (["--listen", "127.0.0.1:0"], "the coordinator needs TLS material: give --ca, --cert and --key"),
    (["--ca", "/nonexistent/ca.crt", "--cert", "/nonexistent/c.crt", "--key", "/nonexistent/c.key"],
     "cannot read tls.ca /nonexistent/ca.crt: No such file or directory"),
    (["--cert", "/x.crt"], "tls.cert and tls.key go together"),
    (["--insecure", "--ca", "/x.crt"], "--insecure turns TLS off, yet TLS files are given"),
])
def test_coordinator_command_line_refuses_without_tls(tmp_path, capsys, argv, message):
    assert coordinator_cli.main(["serve", "--db", str(tmp_path / "c.db"), *argv]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("presculpt-coordinator: error: ") and message in err


def test_agent_command_line_refuses_without_tls(capsys, testnode_uri, pki):
    base = ["run", "--uri", testnode_uri, "--coordinator", "127.0.0.1:1"]
    assert agent_cli.main(base) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the agent needs TLS material: give --ca, --cert and --key" in err
    assert "presculpt certs issue HOST" in err and "--insecure" in err
    assert agent_cli.main([*base, "--ca", pki.agent.ca, "--cert", pki.agent.cert, "--key", pki.operator.key]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not the key of tls.cert" in err


def test_tls_config_mistakes_are_one_line(tmp_path):
    from presculpt.agent.config import load_agent_config
    from presculpt.config import ConfigError

    path = tmp_path / "agent.toml"
    for text, message in (("[tls]\ncert = 'a.crt'", "tls.cert and tls.key go together"),
                          ("[tls]\ninsecure = true\nca = 'ca.crt'", "tls.insecure turns TLS off"),
                          ("[tls]\ninsecure = 'yes'", "expected true or false")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as err:
            load_agent_config(path)
        assert "\n" not in str(err.value)
