"""``presculpt forecast accuracy``, ``presculpt forecast aggregate`` and anomaly events, against a real
coordinator on loopback whose store holds a day of synthetic roll-ups and two forecast runs."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from presculpt import cli
from presculpt.coordinator.config import JobsConfig, StoreConfig
from presculpt.coordinator.forecast.anomaly import ABOVE, BandStep, ForecastAnomaly
from presculpt.coordinator.forecast.base import HORIZON, QUANTILES
from presculpt.coordinator.model import Event, HostRecord, MetricBatch, SampleRow, VmRecord
from presculpt.ops import event_dict, event_line
from presculpt.v1 import api_pb2

from ..coordinator.conftest import CoordinatorThread, coordinator_config, free_port, wait_until

DAY = 86400.0
STEP = 300.0
T = 19675 * DAY  # midnight UTC: the first forecast run
LEVELS = [f"p{round(q * 100):02d}" for q in QUANTILES]


def vm(host: str, uuid: str, name: str, **metadata: str) -> VmRecord:
    return VmRecord(host=host, uuid=uuid, name=name, state="running", vcpus=2, max_vcpus=4, cpu_quota_cores=None,
                    memory_mib=4096, max_memory_mib=8192, metadata=metadata)


VMS = [
    vm("h1", "u-web1", "web-1", customer="acme", segment="web"),
    vm("h1", "u-web2", "web-2", customer="acme", segment="web"),
    vm("h2", "u-db1", "db-1", customer="globex", segment="db"),
]
# (cpu_cores, memory_used_mib) before T, and in the hour after it: web-1 keeps its load, web-2
# rises by one core and db-1 by two, so their CPU pinball losses are 0 < web-2 < db-1.
BEFORE = {"u-web1": (1.0, 1000.0), "u-web2": (2.0, 3000.0), "u-db1": (0.5, 500.0)}
AFTER = {"u-web1": (1.0, 1000.0), "u-web2": (3.0, 3000.0), "u-db1": (2.5, 500.0)}


def fill(store, start: float, end: float, load: dict[str, tuple[float, float]]) -> None:
    """One sample per 5-minute step in [start, end) for every VM, then the roll-ups."""
    for host in ("h1", "h2"):
        rows = []
        for k in range(int((end - start) / STEP)):
            ts = start + k * STEP
            for v in VMS:
                if v.host == host:
                    cpu, used = load[v.uuid]
                    rows.append(SampleRow(v.uuid, ts + STEP / 2, STEP, cpu, 2, None, 4096, used, 1000.0, 0, 0, 0, 0))
        store.store_batch(MetricBatch(host, store.last_seq(host) + 1, tuple(rows)))
    store.compute_rollups(end)


def start_coordinator(tmp_path) -> CoordinatorThread:
    """A coordinator whose scheduled forecast job never runs: the tests run it themselves."""
    config = coordinator_config(tmp_path, store=StoreConfig(rollup_settle_s=0, synchronous="NORMAL"),
                                jobs=JobsConfig(dispatch_tick_s=0.1, forecast_every_s=0, retrain_every_s=0))
    c = CoordinatorThread(config).start()
    for host in ("h1", "h2"):
        c.server.store.upsert_inventory(HostRecord(host, host, "test:///default", 16, 65536),
                                        [v for v in VMS if v.host == host])
    return c


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    """Cold-start forecasts at T from a steady day, then an hour of the new load, scored at the next run."""
    c = start_coordinator(tmp_path_factory.mktemp("coordinator"))
    try:
        fill(c.server.store, T - DAY, T, BEFORE)
        c.server.forecasts.forecast_once(T)
        fill(c.server.store, T, T + HORIZON * STEP, AFTER)
        c.server.forecasts.forecast_once(T + HORIZON * STEP)
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def plain_text_client(monkeypatch):
    """The coordinators here run in plain text (--insecure); the operator's commands say so too."""
    monkeypatch.setenv("PRESCULPT_INSECURE", "1")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, ""), err
    assert err.count("\n") == 1 and err.startswith("presculpt: error: ")
    return err.removeprefix("presculpt: error: ").rstrip("\n")


# -- accuracy -------------------------------------------------------------------------------------

def test_accuracy_json_is_overall_and_per_vm_worst_first(coordinator, capsys):
    code, out, err = run(capsys, "forecast", "accuracy", "--json", "--coordinator", coordinator.address)
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == "cold-start:recent-percentile" and data["host"] is None
    assert data["scored_at"] == T + HORIZON * STEP and data["window_s"] > 0
    cpu, memory = data["overall"]["cpu_cores"], data["overall"]["memory_mib"]
    mean_level = sum(QUANTILES) / len(QUANTILES)
    # Every quantile of a steady day is its level: web-2 misses by 1 core, db-1 by 2, web-1 not at all.
    assert cpu["count"] == 3 * HORIZON and cpu["pinball"] == pytest.approx(mean_level * (0 + 1 + 2) / 3)
    assert cpu["coverage_p90"] == pytest.approx(1 / 3) and cpu["coverage_p99"] == pytest.approx(1 / 3)
    assert memory == {"pinball": 0.0, "coverage_p90": 1.0, "coverage_p99": 1.0, "count": 3 * HORIZON}
    assert [(v["host"], v["vm"]) for v in data["vms"]] == [("h2", "db-1"), ("h1", "web-2"), ("h1", "web-1")]
    db1 = data["vms"][0]
    assert db1["cpu_cores"]["pinball"] == pytest.approx(2 * mean_level) and db1["cpu_cores"]["count"] == HORIZON
    assert db1["memory_mib"]["pinball"] == 0.0


def test_accuracy_of_one_host_and_the_top(coordinator, capsys):
    code, out, _ = run(capsys, "forecast", "accuracy", "--json", "--host", "h2", "--coordinator",
                       coordinator.address)
    data = json.loads(out)
    assert code == 0 and data["host"] == "h2" and data["overall"]["cpu_cores"]["count"] == HORIZON
    assert [v["vm"] for v in data["vms"]] == ["db-1"]
    code, out, _ = run(capsys, "forecast", "accuracy", "--json", "--top", "1", "--coordinator", coordinator.address)
    assert code == 0 and [v["vm"] for v in json.loads(out)["vms"]] == ["db-1"]


def test_accuracy_text(coordinator, capsys):
    code, out, err = run(capsys, "forecast", "accuracy", "--top", "2", "--coordinator", coordinator.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("forecast accuracy on all hosts, model cold-start:recent-percentile: "
                               "forecasts made in the 24h before ")
    assert lines[1].startswith("  CPU:    pinball ") and lines[1].endswith(f"({3 * HORIZON} steps)")
    assert lines[2] == f"  memory: pinball 0 MiB, coverage p90 1.00, p99 1.00 ({3 * HORIZON} steps)"
    assert "the 2 VMs of 3 with the highest CPU pinball loss:" in lines
    header = lines.index("the 2 VMs of 3 with the highest CPU pinball loss:") + 1
    assert lines[header].split() == ["HOST", "VM", "CPU", "PINBALL", "CPU", "P90", "CPU", "P99", "MEM", "PINBALL",
                                     "MIB", "MEM", "P90", "MEM", "P99", "STEPS"]
    assert [line.split()[:2] for line in lines[header + 1:]] == [["h2", "db-1"], ["h1", "web-2"]]
    assert lines[header + 1].split()[2:] == [f"{2 * sum(QUANTILES) / len(QUANTILES):.4f}", "0.00", "0.00",
                                             "0.0", "1.00", "1.00", str(HORIZON)]


def test_accuracy_errors_are_one_line(coordinator, capsys):
    assert one_line_error(capsys, "forecast", "accuracy", "--host", "nope", "--coordinator",
                          coordinator.address) == "NOT_FOUND: no host 'nope'"
    closed = f"127.0.0.1:{free_port()}"
    assert one_line_error(capsys, "forecast", "accuracy", "--coordinator", closed).startswith(
        f"cannot reach the coordinator at {closed} (")


def test_a_server_without_the_request_is_one_line(capsys):
    server = grpc.server(ThreadPoolExecutor(max_workers=1))  # a gRPC server offering no service at all
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert one_line_error(capsys, "forecast", "aggregate", "--coordinator", f"127.0.0.1:{port}") == (
            f"the coordinator at 127.0.0.1:{port} does not offer this request (it runs an older version)")
    finally:
        server.stop(grace=None)


def test_before_the_forecast_job_has_run(tmp_path, capsys):
    c = start_coordinator(tmp_path)
    try:
        for argv in (["accuracy"], ["aggregate"], ["aggregate", "--segment", "web"]):
            message = one_line_error(capsys, "forecast", *argv, "--coordinator", c.address)
            assert message.startswith("FAILED_PRECONDITION: no ") and "the forecast job has not run" in message
    finally:
        c.stop()


# -- aggregates -----------------------------------------------------------------------------------

def test_aggregate_list_json(coordinator, capsys):
    code, out, err = run(capsys, "forecast", "aggregate", "--json", "--coordinator", coordinator.address)
    assert code == 0, err
    data = json.loads(out)
    assert [(a["kind"], a["name"], a["vms"]) for a in data] == [
        ("customer", "acme", 2), ("customer", "globex", 1), ("segment", "db", 1), ("segment", "web", 2)]
    acme = data[0]
    assert acme["model"] == "cold-start:recent-percentile" and acme["cold_start"]
    assert acme["quantiles"] == list(QUANTILES) and acme["origin_ts"] == T + HORIZON * STEP
    assert (acme["cpu_capacity_cores"], acme["memory_capacity_mib"]) == (8.0, 16384.0)
    cpu, memory = acme["first_step"]["cpu_cores"], acme["first_step"]["memory_mib"]
    assert cpu["ts"] == T + HORIZON * STEP and set(cpu) == {"ts", *LEVELS}
    # Quantiles of the last day's sums: 3 cores before T, 4 after; 4000 MiB throughout.
    band = [cpu[level] for level in LEVELS]
    assert band == sorted(band) and 3.0 <= band[0] and band[-1] == pytest.approx(4.0)
    assert [memory[level] for level in LEVELS] == pytest.approx([4000.0] * len(LEVELS))


def test_aggregate_list_text(coordinator, capsys):
    code, out, err = run(capsys, "forecast", "aggregate", "--coordinator", coordinator.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("the summed demand of each customer and segment, forecast for the 5 min from ")
    assert lines[1].split() == ["KIND", "NAME", "VMS", "MODEL", "CPU", "P50", "CPU", "P90", "MEM", "P50", "MIB",
                                "MEM", "P90", "MIB"]
    rows = [line.split() for line in lines[2:]]
    assert [r[:4] for r in rows] == [["customer", "acme", "2", "cold-start:recent-percentile"],
                                     ["customer", "globex", "1", "cold-start:recent-percentile"],
                                     ["segment", "db", "1", "cold-start:recent-percentile"],
                                     ["segment", "web", "2", "cold-start:recent-percentile"]]
    assert rows[0][-2:] == ["4000.00", "4000.00"]


def test_one_aggregate_json_and_text(coordinator, capsys):
    code, out, err = run(capsys, "forecast", "aggregate", "--customer", "acme", "--json",
                         "--coordinator", coordinator.address)
    assert code == 0, err
    data = json.loads(out)
    assert (data["kind"], data["name"], data["vms"]) == ("customer", "acme", 2)
    for metric in ("cpu_cores", "memory_mib"):
        steps = [r for r in data["latest"] if r["metric"] == metric]
        assert [r["ts"] for r in steps] == [T + (HORIZON + h) * STEP for h in range(HORIZON)]
        assert all(set(r) == {"ts", "metric", *LEVELS} for r in steps)

    code, out, err = run(capsys, "forecast", "aggregate", "--segment", "db", "--coordinator", coordinator.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "segment db: 1 VM (4 vCPUs and 8192 MiB at most), forecast by cold-start:recent-percentile"
    for metric in ("cpu_cores", "memory_mib"):
        start = lines.index(f"{metric}: the forecast of the summed demand")
        assert lines[start + 1].split() == ["TIME", *[level.upper() for level in LEVELS]]
        assert len(lines[start + 2:start + 2 + HORIZON]) == HORIZON
    memory_row = lines[lines.index("memory_mib: the forecast of the summed demand") + 2].split()
    assert memory_row[1:] == ["500.00"] * len(LEVELS)


def test_unknown_aggregate_is_one_line(coordinator, capsys):
    assert one_line_error(capsys, "forecast", "aggregate", "--customer", "initech", "--coordinator",
                          coordinator.address) == "NOT_FOUND: no customer 'initech' (known: acme, globex)"
    assert one_line_error(capsys, "forecast", "aggregate", "--segment", "batch", "--coordinator",
                          coordinator.address) == "NOT_FOUND: no segment 'batch' (known: db, web)"


def test_a_vm_named_like_anything_else_is_still_show(coordinator, capsys):
    message = one_line_error(capsys, "forecast", "acme", "--coordinator", coordinator.address)
    assert message == "NOT_FOUND: no VM named 'acme'"


# -- anomaly events -------------------------------------------------------------------------------

def anomaly_event(direction: str = "above", steps: int = 6) -> api_pb2.Event:
    event = api_pb2.Event(ts=T + 5, host="host-a")
    event.anomaly.CopyFrom(api_pb2.ForecastAnomaly(
        vm="web-1", uuid="u-web1", metric="cpu_cores", direction=direction,
        quantile=0.99 if direction == "above" else 0.1, model="lstm-20231114-0000",
        ts=[T - (steps - i) * STEP for i in range(steps)], actual=[3.0] * (steps - 1) + [3.2],
        bound=[2.0] * (steps - 1) + [2.1]))
    return event


def test_event_line_of_an_anomaly():
    when = time.strftime("%H:%M:%S", time.localtime(T + 5))
    assert event_line(anomaly_event()) == (f"{when} host-a anomaly: web-1 cpu_cores above p99 for 6 steps "
                                           "(last 3.2 vs bound 2.1, model lstm-20231114-0000)")
    assert event_line(anomaly_event("below", steps=1)) == (f"{when} host-a anomaly: web-1 cpu_cores below p10 for "
                                                           "1 step (last 3.2 vs bound 2.1, model lstm-20231114-0000)")
    memory = anomaly_event()
    memory.anomaly.metric = "memory_mib"
    memory.anomaly.actual[-1], memory.anomaly.bound[-1] = 6144.4, 4096.0
    assert "memory_mib above p99 for 6 steps (last 6144 vs bound 4096," in event_line(memory)


def test_event_dict_of_an_anomaly():
    data = event_dict(anomaly_event())
    assert (data["kind"], data["host"], data["ts"]) == ("anomaly", "host-a", T + 5)
    a = data["anomaly"]
    assert (a["vm"], a["metric"], a["direction"], a["quantile"], a["model"]) == (
        "web-1", "cpu_cores", "above", 0.99, "lstm-20231114-0000")
    assert a["actual"][-1] == 3.2 and a["bound"][-1] == 2.1 and len(a["ts"]) == 6


def test_events_command_streams_an_anomaly(coordinator, capsys):
    result: dict[str, int] = {}
    watcher = threading.Thread(target=lambda: result.update(code=cli.main(
        ["events", "--count", "1", "--json", "--coordinator", coordinator.address])), daemon=True)
    watcher.start()
    wait_until(lambda: coordinator.call(lambda: coordinator.server.events.active), what="the watcher to subscribe")
    anomaly = ForecastAnomaly("h1", "u-web2", "web-2", "cpu_cores", ABOVE, 0.99, "lstm-x",
                              tuple(BandStep(T + i * STEP, 4.0, 0.5, 1.0) for i in range(3)))
    coordinator.call(lambda: coordinator.server.events.publish(Event(T + 3 * STEP, "h1", anomaly)))
    watcher.join(timeout=30)
    assert not watcher.is_alive(), "presculpt events did not stop after its one event"
    out = capsys.readouterr().out
    assert result == {"code": 0}
    data = json.loads(out)
    assert (data["kind"], data["host"]) == ("anomaly", "h1")
    assert (data["anomaly"]["vm"], data["anomaly"]["bound"], data["anomaly"]["actual"]) == ("web-2", [1.0] * 3,
                                                                                            [4.0] * 3)
