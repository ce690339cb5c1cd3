"""Both daemons scraped by a real Prometheus server (Debian's ``prometheus``), read back through its
own query API; and every query of the Grafana dashboard run against it.

One stack per module: a coordinator in-process (embedded store in a temporary folder, its metric
endpoint on a free loopback port), an agent on libvirt's test driver connected to it, and a
Prometheus scraping both every second from its own temporary storage. The coordinator's store is
seeded with four hours of the test guests' demand before the agent connects, and the forecaster is
run over it (an hour ago, then now), so the forecast band and its online accuracy are real too.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from presculpt.agent.commands import CommandApplier
from presculpt.agent.config import AgentConfig, StreamConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
from presculpt.agent.metrics import AgentMetrics
from presculpt.agent.resize import Resizer
from presculpt.agent.runner import AgentRunner
from presculpt.agent.spool import BatchSpool
from presculpt.coordinator.config import JobsConfig, StoreConfig
from presculpt.coordinator.metrics import CoordinatorMetrics
from presculpt.coordinator.model import HostRecord, MetricBatch, SampleRow, VmRecord
from presculpt.metrics import MetricsEndpoint, serve_metrics
from presculpt.tls import TlsConfig
from presculpt.v1 import api_pb2, api_pb2_grpc, model_pb2

from ..coordinator.conftest import AgentThread, CoordinatorThread, coordinator_config, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "presculpt-dashboard.json"
TESTNODE_URI = f"test://{ROOT / 'tests' / 'data' / 'testnode.xml'}"
HOST = "host-1"
# The guests of tests/data/testnode.xml: name -> (uuid, vcpus, max vcpus, memory MiB, max memory MiB).
GUESTS = {
    "guest-a": ("11111111-2222-3333-4444-555555555555", 1, 4, 1024, 2048),
    "guest-b": ("11111111-2222-3333-4444-666666666666", 2, 2, 1024, 1024),
}
STEP = 300.0
JOBS = {"coordinator": "presculpt-coordinator", "agent": "presculpt-agent"}
DEADLINE_S = 90.0
PLAINTEXT = TlsConfig(insecure=True)  # both daemons on loopback; mutual TLS has tests of its own


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the prometheus binary is missing in CI: scripts/install.sh installs Debian's prometheus")
        pytest.skip("Debian's prometheus is not installed (scripts/install.sh installs it; CI runs this test)")
    return path


@dataclass
class Prometheus:
    """A Prometheus server on a loopback port; ``query`` runs an instant query through its HTTP API."""

    process: subprocess.Popen
    url: str
    log: Path

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:  # a bad query: 400 with the error in the body
            return json.load(err)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('errorType')}: {answer.get('error')}"
        return answer["data"]["result"]

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant vector as {sorted labels without __name__: value}."""
        return {tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(r["value"][1])
                for r in self.query(expr)}

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (None while it has no series)."""
        found = list(self.values(expr).values())
        assert len(found) <= 1, f"{expr}: {len(found)} series"
        return found[0] if found else None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_prometheus(binary: str, folder: Path, targets: dict[str, int]) -> Prometheus:
    """Start Prometheus scraping ``targets`` (job name -> loopback port) every second; wait until ready."""
    jobs = "\n".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']"
                     for job, port in targets.items())
    config = folder / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                      f"scrape_configs:\n{jobs}\n")
    port = free_port()
    log = folder / "prometheus.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=60, what="prometheus to be ready")
    except BaseException:
        prometheus.stop()
        raise
    return prometheus


def seed_history(store, now: float) -> float:
    """The test guests' inventory and four hours of 5-minute samples before ``now``'s step, rolled
    up; returns the step's start. CPU and memory follow a slow wave, so forecasts have something to miss."""
    step = math.floor(now / STEP) * STEP
    store.upsert_inventory(HostRecord(HOST, HOST, TESTNODE_URI, 8, 32768),
                           [VmRecord(HOST, uuid, name, "running", vcpus, max_vcpus, None, memory, max_memory)
                            for name, (uuid, vcpus, max_vcpus, memory, max_memory) in GUESTS.items()])
    rows = []
    for i in range(48):
        ts = step - (48 - i) * STEP
        wave = math.sin(i / 6)
        for k, (uuid, vcpus, _, memory, _) in enumerate(GUESTS.values()):
            cpu = (0.3 + 0.2 * wave) * (k + 1)
            rows.append(SampleRow(uuid, ts + STEP / 2, STEP, cpu, vcpus, None, memory, 400 + 100 * wave, None,
                                  0, 0, 0, 0))
    store.store_batch(MetricBatch(HOST, store.last_seq(HOST) + 1, tuple(rows)))
    store.compute_rollups(step)
    return step


@dataclass
class Stack:
    coordinator: CoordinatorThread
    agent: AgentThread
    agent_endpoint: MetricsEndpoint
    prometheus: Prometheus
    api: api_pb2_grpc.CoordinatorServiceStub


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    binary = prometheus_binary()
    folder = tmp_path_factory.mktemp("prometheus")
    config = coordinator_config(
        folder, metrics_listen="127.0.0.1:0", store=StoreConfig(rollup_settle_s=0, synchronous="NORMAL"),
        jobs=JobsConfig(dispatch_tick_s=0.1, forecast_every_s=0, retrain_every_s=0), tls=PLAINTEXT)
    coordinator = CoordinatorThread(config).start()
    hv = LibvirtHypervisor(TESTNODE_URI)
    agent = endpoint = prometheus = channel = None
    try:
        server = coordinator.server
        step = seed_history(server.store, time.time())
        server.forecasts.forecast_once(step - 12 * STEP)  # scored by the next run
        server.forecasts.forecast_once()
        hv.connect()
        agent_config = AgentConfig(uri=TESTNODE_URI, interval_s=0.2, tls=PLAINTEXT, stream=StreamConfig(
            agent_id=HOST, reconnect_initial_s=0.05, reconnect_max_s=0.5))
        resizer = Resizer(hv, SafetyGuard(agent_config.guard))
        runner = AgentRunner(hv, agent_config, resizer, CommandApplier(resizer), BatchSpool(folder / "spool.db"),
                             coordinator.address)
        endpoint = serve_metrics("127.0.0.1:0", runner.metrics.registry)
        agent = AgentThread(runner).start()
        prometheus = start_prometheus(binary, folder, {JOBS["coordinator"]: server.metrics_endpoint.port,
                                                       JOBS["agent"]: endpoint.port})
        channel = grpc.insecure_channel(coordinator.address)
        yield Stack(coordinator, agent, endpoint, prometheus, api_pb2_grpc.CoordinatorServiceStub(channel))
    finally:
        for stop in (channel and channel.close, prometheus and prometheus.stop, agent and agent.stop,
                     endpoint and endpoint.stop, coordinator.stop, hv.close):
            if stop:
                stop()


@pytest.fixture(scope="module")
def resized(stack) -> Stack:
    """Two resizes through the client API: one the guard applies (guest-a to 2 vCPUs), one it refuses
    (the test driver's guests report no memory in use, so no shrink can be proved safe)."""
    wait_until(lambda: stack.agent.runner.link.connected.is_set(), timeout=DEADLINE_S, what="the agent to connect")
    applied = stack.api.ResizeVm(api_pb2.ResizeVmRequest(vm="guest-a", target=model_pb2.Shape(vcpus=2)), timeout=30)
    assert applied.outcome.status == model_pb2.CommandOutcome.APPLIED
    with pytest.raises(grpc.RpcError) as refused:
        stack.api.ResizeVm(api_pb2.ResizeVmRequest(vm="guest-b", target=model_pb2.Shape(memory_mib=512)), timeout=30)
    assert "shrink" in refused.value.details()
    return stack


def test_prometheus_scrapes_both_daemons(stack, resized):
    prom = stack.prometheus
    up = wait_until(lambda: len(v := prom.values("up == 1")) == 2 and v, timeout=DEADLINE_S,
                    what="up == 1 for both jobs")
    assert {dict(k)["job"] for k in up} == set(JOBS.values())

    # Host capacity and allocation, from the agent (8 CPUs, 32 GiB; guest-a 1 vCPU and guest-b 2).
    wait_until(lambda: prom.value(f'presculpt_agent_host_cpus{{host="{HOST}"}}') == 8, timeout=DEADLINE_S,
               what="the agent's host capacity")
    assert prom.value(f'presculpt_agent_host_memory_mib{{host="{HOST}"}}') == 32768
    assert prom.value(f'presculpt_agent_host_vcpu_limit{{host="{HOST}"}}') >= 8
    assert prom.value(f'presculpt_agent_host_guests{{host="{HOST}"}}') == 2
    assert prom.value(f'presculpt_agent_host_allocated_memory_mib{{host="{HOST}"}}') == 2048
    assert prom.value('presculpt_agent_vm_max_vcpus{vm="guest-a"}') == 4
    assert prom.value(f'presculpt_agent_info{{host="{HOST}", uri="{TESTNODE_URI}"}}') == 1

    # Samples flow from the agent into the coordinator's store.
    wait_until(lambda: (prom.value("presculpt_samples_ingested_total") or 0) > 0, timeout=DEADLINE_S,
               what="ingested samples")
    assert prom.value('presculpt_batches_total{result="stored"}') > 0
    assert prom.value("presculpt_agent_batches_acked_total") > 0
    assert prom.value("presculpt_connected_agents") == 1

    # The resize the guard applied and the one it refused, by kind and outcome on both sides.
    outcomes = {"APPLIED": 1, "REFUSED": 1}
    for status, count in outcomes.items():
        wait_until(lambda: prom.value(f'presculpt_command_outcomes_total{{host="{HOST}", kind="resize", '
                                      f'status="{status}"}}') == count, timeout=DEADLINE_S,
                   what=f"the coordinator's {status} resize")
        wait_until(lambda: prom.value(f'presculpt_agent_commands_total{{kind="resize", status="{status}"}}') == count,
                   timeout=DEADLINE_S, what=f"the agent's {status} resize")
    assert prom.value(f'presculpt_commands_submitted_total{{host="{HOST}", kind="resize"}}') == 2
    assert prom.value('presculpt_command_latency_seconds_count{status="APPLIED"}') == 1

    # The new shape, as the agent measures it and as the coordinator's inventory holds it: both
    # daemons label it alike, so the two join on (host, vm).
    wait_until(lambda: prom.value('presculpt_agent_vm_vcpus{vm="guest-a"}') == 2, timeout=DEADLINE_S,
               what="guest-a's new shape on the agent")
    assert prom.value(f'presculpt_agent_host_allocated_vcpus{{host="{HOST}"}}') == 4
    wait_until(lambda: prom.value(f'presculpt_vm_allocation{{host="{HOST}", vm="guest-a", metric="cpu_cores"}}') == 2,
               timeout=DEADLINE_S, what="guest-a's new allocation on the coordinator")
    assert prom.value(f'presculpt_vm_allocation{{host="{HOST}", vm="guest-b", metric="memory_mib"}}') == 1024
    joined = prom.values('presculpt_agent_vm_cpu_limit_cores - on (host, vm) presculpt_vm_allocation{metric="cpu_cores"}')
    assert sorted(dict(k)["vm"] for k in joined) == ["guest-a", "guest-b"] and set(joined.values()) == {0.0}

    # The forecast band of the current step, per VM, ordered p10 <= p50 <= p90 <= p99; and the online
    # accuracy of the forecasts made an hour ago.
    band = prom.values('presculpt_vm_forecast{vm="guest-b", metric="cpu_cores"}')
    by_quantile = {dict(k)["quantile"]: v for k, v in band.items()}
    assert sorted(by_quantile) == ["0.1", "0.5", "0.9", "0.99"]
    assert by_quantile["0.1"] <= by_quantile["0.5"] <= by_quantile["0.9"] <= by_quantile["0.99"]
    assert 0 < by_quantile["0.5"] <= 2  # guest-b's seeded load: 0.2-1.0 cores of its 2 vCPUs
    assert len(prom.values('presculpt_vm_forecast{metric="memory_mib"}')) == 2 * 4
    assert prom.value('presculpt_forecast_pinball{metric="cpu_cores"}') > 0
    assert 0 <= prom.value('presculpt_forecast_coverage{metric="memory_mib", quantile="0.9"}') <= 1
    assert set(dict(k)["vm"] for k in prom.values("presculpt_forecast_vm_pinball")) == set(GUESTS)


# -- the dashboard ---------------------------------------------------------------------------------

def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested ones too (rows themselves left out)."""
    out = []
    for panel in dashboard["panels"]:
        out.extend(p for p in panel.get("panels", []) if p["type"] != "row")
        if panel["type"] != "row":
            out.append(panel)
    return out


def exported_names(*registries: CollectorRegistry) -> set[str]:
    """The series names our daemons' registries can expose (a labelled counter that never counted
    exports nothing yet, so its name is derived from its type)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
                "summary": ("_count", "_sum", ""), "info": ("_info",)}
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def concrete(expr: str) -> str:
    """A panel's PromQL with Grafana's variables as Grafana would fill them in (every host and VM)."""
    expr = re.sub(r"\$\{?(host|vm)(:regex)?\}?", ".*", expr)
    return re.sub(r"\$\{?__rate_interval\}?|\$\{?__interval\}?|\$\{?__range\}?", "1m", expr)


def test_the_dashboard_is_importable_and_templated():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and {"host", "vm"} <= set(variables)
    assert dashboard["schemaVersion"] >= 36 and dashboard["id"] is None and dashboard["uid"]
    panels = dashboard_panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])
    titles = " | ".join(p["title"] for p in panels)
    for wanted in ("Host CPU", "Host memory", "CPU of $vm", "Memory of $vm", "Commands by kind and outcome",
                   "Failed commands", "Pinball loss", "Coverage"):
        assert wanted in titles
    vm_panels = [p for p in panels if p.get("repeat") == "vm"]
    assert len(vm_panels) == 2
    for panel in vm_panels:  # demand, the p10..p90 band (filled between), allocation
        legends = {t["legendFormat"] for t in panel["targets"]}
        assert {"demand", "p10", "p50", "p90", "allocation"} <= legends
        fill = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "p90"]
        assert {"id": "custom.fillBelowTo", "value": "p10"} in fill[0]["properties"]


def test_every_dashboard_query_runs_on_the_live_prometheus(stack, resized):
    """Each panel's PromQL (and each variable's) is valid on the Prometheus that scrapes our daemons
    and names only metrics they export; the panels of capacity, allocation, demand, forecast band,
    commands and accuracy show data."""
    prom = stack.prometheus
    wait_until(lambda: len(prom.values("up == 1")) == 2, timeout=DEADLINE_S, what="up == 1 for both jobs")
    # Rates need two samples of a series: wait until the resizes' counters have been scraped twice.
    wait_until(lambda: prom.values("count_over_time(presculpt_command_outcomes_total[1h]) >= 2"),
               timeout=DEADLINE_S, what="the resizes counted")
    known = exported_names(AgentMetrics().registry, CoordinatorMetrics().registry) | {"up"}
    dashboard = json.loads(DASHBOARD.read_text())
    with_data = set()
    checked = 0
    for panel in dashboard_panels(dashboard):
        for target in panel["targets"]:
            expr = concrete(target["expr"])
            names = set(re.findall(r"\b(presculpt_\w+|up)\b", expr))
            assert names, f"{panel['title']}: {expr} reads none of our metrics"
            assert names <= known, f"{panel['title']}: {sorted(names - known)} are not exported by our daemons"
            if prom.query(expr):  # asserts the API answered success
                with_data.add(panel["title"])
            checked += 1
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            selector, label = concrete(match[1]), match[2]
            assert set(re.findall(r"presculpt_\w+", selector)) <= known
            answer = prom.api("series", **{"match[]": selector})
            assert answer["status"] == "success", answer
            assert any(label in s for s in answer["data"]), f"no {label} values for ${variable['name']}"
    assert checked >= 30
    for title in ("Host CPU", "Host memory", "vCPUs allocated / limit", "CPU of $vm", "Memory of $vm",
                  "Commands by kind and outcome (per hour)", "Failed commands (per hour)", "Pinball loss", "Coverage",
                  "Pinball loss by VM", "Ingest"):
        assert title in with_data, f"the panel {title!r} shows no data"
