"""The planner served by the coordinator: snapshots from a real SQLite store, observe and enforce
modes, idempotent commands, unmet demand events, the scheduled job, GetPlan over gRPC,
``presculpt plan`` and the ``[planner]`` configuration."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import tomllib
from pathlib import Path

import grpc
import pytest

from presculpt import cli
from presculpt.config import ConfigError
from presculpt.coordinator.config import (
    DispatchConfig,
    JobsConfig,
    PacingSettings,
    PlannerSettings,
    QuotaSettings,
    StoreConfig,
    TierSettings,
    load_coordinator_config,
)
from presculpt.coordinator.model import ForecastRecord, HostRecord, MetricBatch, SampleRow, Shape, VmRecord
from presculpt.coordinator.planner.model import PlannerConfig
from presculpt.coordinator.planning import PlanRun, command_kind, target_shape
from presculpt.v1 import api_pb2, api_pb2_grpc

from .conftest import CoordinatorThread, coordinator_config, wait_until

STEP = 300.0
QUANTILES = (0.1, 0.5, 0.9, 0.99)
HORIZON = 12
ROOT = Path(__file__).resolve().parents[2]


def vm(host: str, uuid: str, name: str, **metadata: str) -> VmRecord:
    return VmRecord(host=host, uuid=uuid, name=name, state="running", vcpus=2, max_vcpus=8, cpu_quota_cores=None,
                    memory_mib=4096, max_memory_mib=8192, metadata=metadata)


# web-1 is forecast to need far more CPU than its 2 cores; db-1's forecast fits its allocation.
VMS = [vm("h1", "u-web1", "web-1", customer="acme"), vm("h2", "u-db1", "db-1", customer="globex")]
CPU_BAND = {"u-web1": (2.5, 3.0, 3.5, 4.0), "u-db1": (1.0, 1.2, 1.4, 1.6)}
MEMORY_BAND = (2000.0, 2200.0, 2400.0, 2600.0)
# The tiers these tests pin: the shipped ones with silver at p99 plus its margin, grown past the need
# by its headroom, waiting 3 runs before a downgrade (the wiring is tested, not the tuned defaults).
TIERS = {**PlannerSettings().tiers, "silver": TierSettings(priority=2)}
SILVER = TIERS["silver"]
WEB1_NEED = f"CPU p99 forecast {4.0 * (1 + SILVER.margin):.2g} cores"  # how the reason starts
# web-1's p99 of 4 cores, with the silver tier's margin and grow headroom (whole thousandths, rounded down)
WEB1_TARGET = Shape(vcpus=5, cpu_cores=math.floor(4.0 * (1 + SILVER.margin) * (1 + SILVER.grow_headroom) * 1000) / 1000,
                    memory_mib=4096)


def record(host: str, uuid: str, metric: str, origin: float, band: tuple[float, ...]) -> ForecastRecord:
    return ForecastRecord(host, uuid, metric, origin, STEP, "test", False, QUANTILES, tuple([band] * HORIZON))


def store_forecasts(store, origin: float, vms: list[VmRecord] = VMS) -> None:
    store.store_forecasts([r for v in vms for r in (
        record(v.host, v.uuid, "cpu_cores", origin, CPU_BAND.get(v.uuid, CPU_BAND["u-web1"])),
        record(v.host, v.uuid, "memory_mib", origin, MEMORY_BAND))])


def now_in_a_step() -> float:
    """A second into the current 5-minute step: every run of a test at this instant is in one step."""
    return math.floor(time.time() / STEP) * STEP + 1


def start(tmp_path: Path, vms: list[VmRecord] = VMS, host_cpus: int = 16, **planner) -> CoordinatorThread:
    """A coordinator whose scheduled jobs do not plan or forecast (unless ``every_s`` is given);
    commands it sends outlive the test (a long deadline), and no agent takes them: they stay held."""
    config = coordinator_config(
        tmp_path, store=StoreConfig(rollup_settle_s=0, synchronous="NORMAL"),
        jobs=JobsConfig(dispatch_tick_s=0.1, forecast_every_s=0, retrain_every_s=0),
        dispatch=DispatchConfig(default_timeout_s=3600.0), planner=PlannerSettings(**{"every_s": 0.0, "tiers": TIERS, **planner}))
    c = CoordinatorThread(config).start()
    for host in sorted({v.host for v in vms}):
        c.server.store.upsert_inventory(HostRecord(host, host, "test:///default", host_cpus, 65536),
                                        [v for v in vms if v.host == host])
    return c


@pytest.fixture
def observe(tmp_path):
    c = start(tmp_path)
    yield c
    c.stop()


@pytest.fixture
def enforce(tmp_path):
    c = start(tmp_path, mode="enforce")
    yield c
    c.stop()


def held(c: CoordinatorThread, command_id: str):
    """The dispatcher's record of a command (None: never submitted); read on the coordinator's loop."""
    return c.call(lambda: c.server.dispatcher.find(command_id))


def pending(c: CoordinatorThread, host: str) -> int:
    return c.call(lambda: c.server.dispatcher.pending_count(host))


def plan_and_apply(c: CoordinatorThread, at: float) -> PlanRun:
    """What the scheduled job does: plan in this thread, then apply the run on the event loop."""
    run = c.server.planner.plan_once(at)
    c.call(lambda: c.server.routines.apply_plan(run))
    return run


def metric(c: CoordinatorThread, name: str, **labels: str) -> float:
    return c.server.metrics.registry.get_sample_value(name, labels) or 0.0


# -- observe and enforce ---------------------------------------------------------------------------

def test_observe_mode_plans_and_sends_nothing(observe):
    c, at = observe, now_in_a_step()
    store_forecasts(c.server.store, at - 1)
    run = plan_and_apply(c, at)
    [action] = run.plan.applied()
    assert (action.vm, action.host, action.kind, run.mode) == ("u-web1", "h1", "presculpt", "observe")
    assert c.server.planner.commands(run) == []
    assert held(c, f"plan-{run.step}-u-web1") is None and pending(c, "h1") == pending(c, "h2") == 0
    assert metric(c, "presculpt_planner_actions_total", kind="presculpt", mode="observe") == 1
    assert run.cost_per_hour > 0 and metric(c, "presculpt_planner_cost_per_hour") == pytest.approx(run.cost_per_hour)


def test_enforce_mode_sends_the_target_once_per_step(enforce):
    c, at = enforce, now_in_a_step()
    store_forecasts(c.server.store, at - 1)
    run = plan_and_apply(c, at)
    command_id = f"plan-{run.step}-u-web1"
    sent = held(c, command_id)
    assert sent is not None and pending(c, "h1") == 1 and pending(c, "h2") == 0
    command = sent.command
    assert (command.kind, command.host, command.vm) == ("presculpt", "h1", "web-1")
    assert command.target == WEB1_TARGET
    assert command.reason.startswith("planner presculpt: " + WEB1_NEED)
    assert command.demand_at == (run.step + 1) * STEP and command.deadline == at + 3600.0

    again = plan_and_apply(c, at + 60)  # the same step: the same plan and command id, nothing sent again
    assert again.repeat and [a.target for a in again.plan.applied()] == [a.target for a in run.plan.applied()]
    assert c.call(lambda: c.server.planner.enforce(again)) == []
    assert pending(c, "h1") == 1 and held(c, command_id) is sent
    assert metric(c, "presculpt_planner_actions_total", kind="presculpt", mode="enforce") == 1


def test_a_forecast_made_steps_ago_plans_from_the_current_step(enforce):
    c, at = enforce, now_in_a_step()
    # Two steps old: web-1's first two steps were low, the rest high; only the rest is planned from.
    rows = ((1.0, 1.1, 1.2, 1.3),) * 2 + (CPU_BAND["u-web1"],) * (HORIZON - 2)
    c.server.store.store_forecasts([ForecastRecord("h1", "u-web1", "cpu_cores", at - 1 - 2 * STEP, STEP, "test",
                                                   False, QUANTILES, rows)])
    snapshot, _, with_forecast = c.server.planner.load_snapshot(at, int(at // STEP), {})
    web1 = next(v for v in snapshot.vms if v.uuid == "u-web1")
    assert with_forecast == 1 and web1.cpu.horizon == HORIZON - 2 and web1.memory is None
    assert web1.cpu.values[0].tolist() == list(CPU_BAND["u-web1"])
    # An hour old: nothing left to plan from.
    assert c.server.planner.load_snapshot(at + HORIZON * STEP, int(at // STEP) + HORIZON, {})[2] == 0


def test_metadata_tier_opt_out_and_memory_use(tmp_path):
    vms = [vm("h1", "u-web1", "web-1", tier="gold"), vm("h1", "u-web2", "web-2", opt_in="false"),
           vm("h1", "u-web3", "web-3", tier="platinum"),
           dataclasses.replace(vm("h1", "u-web4", "web-4"), state="paused"),
           dataclasses.replace(vm("h1", "u-web5", "web-5"), state="shutoff")]
    c = start(tmp_path, vms=vms)
    try:
        at = now_in_a_step()
        store_forecasts(c.server.store, at - 1, vms)
        # What web-1 used: 9000 MiB 25 hours ago (past the 24-hour peak window), 6000 an hour ago, 3500 now.
        for seq, (ago, used) in enumerate(((25 * 3600, 9000.0), (3600, 6000.0), (10, 3500.0)), start=1):
            c.server.store.store_batch(MetricBatch("h1", seq, (SampleRow("u-web1", at - ago, 5.0, 2.0, 2, None, 4096,
                                                                         used, 500.0, 0, 0, 0, 0),)))
        c.server.store.compute_rollups(now=at)
        snapshot, names, _ = c.server.planner.load_snapshot(at, int(at // STEP), {})
        by_uuid = {v.uuid: v for v in snapshot.vms}
        assert by_uuid["u-web1"].memory_used_mib == 3500.0 and by_uuid["u-web2"].memory_used_mib is None
        assert by_uuid["u-web1"].memory_peak_mib == 6000.0 and by_uuid["u-web2"].memory_peak_mib is None
        # A paused VM is left as it is but counts in its host's capacity; a shut-off one is not planned.
        assert names == {("h1", f"u-web{i}"): f"web-{i}" for i in (1, 2, 3, 4)}
        assert not by_uuid["u-web4"].opted_in and by_uuid["u-web4"].cpu is None
        run = c.server.planner.plan_once(at, dry_run=True)
        actions = {a.vm: a for a in run.plan.actions}
        assert set(actions) == {"u-web1", "u-web3"}  # web-2 opted out
        assert "CPU p99.5 forecast" in actions["u-web1"].reason  # gold
        assert "CPU p99 forecast" in actions["u-web3"].reason  # an unknown tier is the default, silver
    finally:
        c.stop()


def test_unmet_demand_is_an_event_once_per_episode(tmp_path):
    # h1 has 4 cores and no overcommit: web-1's forecast need (4.2 cores and headroom) does not fit.
    c = start(tmp_path, host_cpus=4, cpu_overcommit=1.0)
    channel = grpc.insecure_channel(c.address)
    try:
        api = api_pb2_grpc.CoordinatorServiceStub(channel)
        events = api.WatchEvents(api_pb2.WatchEventsRequest(host="h1"), timeout=60)
        wait_until(lambda: c.call(lambda: c.server.events.active), what="the watcher to subscribe")
        at = now_in_a_step()
        store_forecasts(c.server.store, at - 1)
        run = plan_and_apply(c, at)
        [action] = run.plan.applied()
        assert action.target.cpu_cores == pytest.approx(4.0) and "host h1 short of cpu" in action.reason
        [unmet] = run.unmet
        assert (unmet.host, unmet.vm, unmet.uuid) == ("h1", "web-1", "u-web1")
        assert unmet.cpu_cores == pytest.approx(WEB1_TARGET.cpu_cores - 4.0, abs=1e-3)
        event = next(events)
        assert event.WhichOneof("kind") == "unmet" and event.host == "h1"
        assert (event.unmet.vm, event.unmet.reason) == ("web-1", "host h1 has no cpu left for the forecast demand (web-1, tier silver)")
        assert plan_and_apply(c, at + STEP).new_unmet == ()  # the same episode: no second event
        assert metric(c, "presculpt_planner_unmet_total") == 1
        events.cancel()
    finally:
        channel.close()
        c.stop()


def test_the_scheduled_planner_job_sends_commands(tmp_path):
    c = start(tmp_path, mode="enforce", every_s=0.2)
    try:
        origin = math.floor(time.time() / STEP) * STEP
        store_forecasts(c.server.store, origin)
        # The step of the first scheduled run: this one, or the next if it starts after the boundary.
        ids = [f"plan-{step}-u-web1" for step in (int(origin // STEP), int(origin // STEP) + 1)]
        sent = wait_until(lambda: next(filter(None, (held(c, i) for i in ids)), None),
                          what="the scheduled planner's command")
        assert sent.command.kind == "presculpt" and sent.command.target == WEB1_TARGET
    finally:
        c.stop()


def test_command_kinds():
    from presculpt.coordinator.planner.model import Action, Allocation

    small, big = Allocation(1, 1.0, 1024.0), Allocation(2, 2.0, 2048.0)
    grow_cpu_shrink_memory = Allocation(2, 2.0, 512.0)
    assert command_kind(Action("u", "h", "presculpt", big, small, "")) == "presculpt"
    for kind in ("downgrade", "reclaim", "swap", "throttle"):
        assert command_kind(Action("u", "h", kind, small, big, "")) == "downgrade"
    assert command_kind(Action("u", "h", "throttle", grow_cpu_shrink_memory, small, "")) == "resize"


def test_command_targets_name_vcpus_only_when_they_grow():
    from presculpt.coordinator.planner.model import Action, Allocation

    two = Allocation(2, 2.0, 1024.0)
    # Fewer vCPUs are left to the agent, which caps them through the quota where it cannot unplug (TCG).
    assert target_shape(Action("u", "h", "downgrade", Allocation(1, 0.5, 1024.0), two, "")) == Shape(
        vcpus=None, cpu_cores=0.5, memory_mib=1024)
    assert target_shape(Action("u", "h", "presculpt", Allocation(3, 2.5, 1024.0), two, "")) == Shape(
        vcpus=3, cpu_cores=2.5, memory_mib=1024)


# -- GetPlan and `presculpt plan` ---------------------------------------------------------------------

@pytest.fixture(autouse=True)
def plain_text_client(monkeypatch):
    """The coordinators here run in plain text (--insecure); the operator's commands say so too."""
    monkeypatch.setenv("PRESCULPT_INSECURE", "1")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_get_plan_is_a_dry_run_whatever_the_mode(enforce):
    c = enforce
    store_forecasts(c.server.store, math.floor(time.time() / STEP) * STEP)
    channel = grpc.insecure_channel(c.address)
    try:
        api = api_pb2_grpc.CoordinatorServiceStub(channel)
        response = api.GetPlan(api_pb2.GetPlanRequest(), timeout=10)
        assert (response.mode, response.vms, response.forecast_vms, response.step_s) == ("enforce", 2, 2, STEP)
        [action] = response.actions
        assert (action.vm, action.uuid, action.host, action.kind, action.command) == (
            "web-1", "u-web1", "h1", "presculpt", "presculpt")
        assert (action.previous.vcpus, action.previous.cpu_cores, action.previous.memory_mib) == (2, 2.0, 4096)
        assert (action.target.vcpus, action.target.cpu_cores, action.target.memory_mib) == (
            WEB1_TARGET.vcpus, WEB1_TARGET.cpu_cores, WEB1_TARGET.memory_mib)
        assert action.reason.startswith(f"{WEB1_NEED} (with {SILVER.margin:.0%} margin) within 10 min exceeds the 2 ")
        assert action.confidence == pytest.approx(1 - 0.1 * 2.0 / 2.5) and action.cost_per_hour > 0 and not action.vetoed
        assert set(response.customer_cost_per_hour) == {"acme", "globex"}
        assert response.cost_per_hour == pytest.approx(sum(response.customer_cost_per_hour.values()))
        assert pending(c, "h1") == 0  # nothing sent, nothing remembered
        assert c.server.planner.memory_for(response.step) == {}
        assert not api.GetPlan(api_pb2.GetPlanRequest(host="h2"), timeout=10).actions
        with pytest.raises(grpc.RpcError) as err:
            api.GetPlan(api_pb2.GetPlanRequest(host="nope"), timeout=10)
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "no host 'nope'")
    finally:
        channel.close()


def test_presculpt_plan_json_and_table(observe, capsys):
    c = observe
    store_forecasts(c.server.store, math.floor(time.time() / STEP) * STEP)
    code, out, err = run_cli(capsys, "plan", "--json", "--coordinator", c.address)
    assert code == 0, err
    data = json.loads(out)
    assert (data["mode"], data["vms"], data["forecast_vms"], data["unmet"]) == ("observe", 2, 2, [])
    [action] = data["actions"]
    assert {k: action[k] for k in ("vm", "host", "kind", "command", "vetoed")} == {
        "vm": "web-1", "host": "h1", "kind": "presculpt", "command": "presculpt", "vetoed": False}
    assert action["previous"] == {"vcpus": 2, "cpu_cores": 2.0, "memory_mib": 4096}
    assert action["target"] == dataclasses.asdict(WEB1_TARGET)
    assert action["reason"].startswith(WEB1_NEED)

    code, out, err = run_cli(capsys, "plan", "--coordinator", c.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("plan at ") and "mode observe: nothing is sent" in lines[0]
    assert lines[1].split()[:8] == ["VM", "HOST", "ACTION", "FROM", "TO", "P(SHORT)", "COST/H", "REASON"]
    row = lines[2]
    assert row.split()[:3] == ["web-1", "h1", "presculpt"] and "2v 2c 4096M" in row and f"5v {WEB1_TARGET.cpu_cores:.2f}c 4096M" in row
    assert WEB1_NEED in row


def test_presculpt_plan_errors_are_one_line(observe, capsys):
    code, out, err = run_cli(capsys, "plan", "--host", "nope", "--coordinator", observe.address)
    assert (code, out, err) == (1, "", "presculpt: error: NOT_FOUND: no host 'nope'\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plan", "web-1", "--coordinator", observe.address])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == "" and err.count("\n") == 1 and "unrecognized arguments: web-1" in err


# -- configuration ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ('mode = "auto"', "planner: mode: expected one of 'observe', 'enforce', got 'auto'"),
    ("every_s = -5", "planner.every_s must be positive \\(or 0: never\\), got -5"),
    ('default_tier = "platinum"', "default_tier 'platinum' is not a configured tier \\(bronze, gold, silver\\)"),
    ("[planner.tiers.gold]\nquantile = 1.5", "tier 'gold': quantile must be in \\[0.5, 1\\), got 1.5"),
    ("[planner.tiers.gold]\nquantil = 0.9", "planner: tiers: gold: unknown key 'quantil'"),
    ("[planner.quotas.acme]\nmax_cores = 'lots'", "planner: quotas: acme: max_cores: expected a number"),
    ("cpu_overcommit = 0", "cpu_overcommit and memory_overcommit must be positive"),
    ("price_vcpu_hour = -1", "cost model prices must not be negative"),
    ("memory_peak_hours = 0", "planner memory_peak_hours must be positive, got 0"),
    ("[planner.tiers.gold]\nmemory_peak_factor = -1.2", "tier 'gold': memory_peak_factor must be positive, got -1.2"),
    ("[planner.tiers.silver]\nmin_level = 1.5", "tier 'silver': min_level must be in \\[0.5, 1\\), got 1.5"),
])
def test_a_bad_planner_value_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "coordinator.toml"
    path.write_text(f"[planner]\n{text}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_coordinator_config(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}: planner: ")


def test_planner_settings_become_the_planner_config():
    assert PlannerSettings().planner_config() == PlannerConfig()
    settings = PlannerSettings(mode="enforce", tiers={"only": TierSettings(quantile=0.9, violation_penalty=5.0)},
                               default_tier="only", price_vcpu_hour=0.1, quotas={"acme": QuotaSettings(max_cores=8)})
    config = settings.planner_config()
    assert config.mode == "enforce" and config.cost.price_vcpu_hour == 0.1
    assert config.tier("anything").name == "only" and config.tiers["only"].penalty == 5.0


def test_the_sample_config_documents_every_planner_key(tmp_path):
    sample = tomllib.loads((ROOT / "config" / "coordinator.sample.toml").read_text())["planner"]
    assert set(sample) == {f.name for f in dataclasses.fields(PlannerSettings)}
    for tier in sample["tiers"].values():
        assert set(tier) == {f.name for f in dataclasses.fields(TierSettings)}
        assert set(tier["memory_pacing"]) == {f.name for f in dataclasses.fields(PacingSettings)}
    # A quota as the sample's comment shows it.
    path = tmp_path / "coordinator.toml"
    path.write_text("[planner.quotas.acme]\nmax_cores = 64.0\nmax_memory_mib = 262144.0\n")
    assert load_coordinator_config(path).planner.quotas == {"acme": QuotaSettings(64.0, 262144.0)}


def test_held_back_actions_are_counted_by_what_held_them():
    from presculpt.coordinator.dispatch import Dispatcher
    from presculpt.coordinator.config import DispatchConfig
    from presculpt.coordinator.metrics import CoordinatorMetrics
    from presculpt.coordinator.planner.model import Action, Allocation, Plan
    from presculpt.coordinator.planning import PlannerService, PlanRun

    metrics = CoordinatorMetrics()
    service = PlannerService(None, Dispatcher(DispatchConfig()), metrics=metrics)
    shape = Allocation(1, 1.0, 512.0)
    actions = tuple(Action(f"u{k}", "h1", "presculpt", shape, shape, "why", vetoed=True, held_by=by)
                    for k, by in enumerate(("cost", "host budget", "host budget")))
    run = PlanRun(0.0, 0, "enforce", False, Plan(actions, (), {}, {}, {}), {}, 0, (), (), 0.01)
    service.report(run)
    value = metrics.registry.get_sample_value
    assert value("presculpt_planner_vetoed_total", {"kind": "presculpt", "by": "host budget"}) == 2
    assert value("presculpt_planner_vetoed_total", {"kind": "presculpt", "by": "cost"}) == 1
