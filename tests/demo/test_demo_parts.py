"""The demo's parts without real guests: scenario, trace clock, seen-inside judgement, scores, JSON,
live view, pictures, and the teardown that runs whatever happens."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.coordinator.model import Command, Event, ForecastRecord, Outcome, Shape, VmRecord
from presculpt.demo import record, summary
from presculpt.demo.model import training_series
from presculpt.demo.plot import plot_guest
from presculpt.demo.run import Demo, DemoOptions
from presculpt.demo.scenario import (
    GUEST_OWN_MEMORY_MIB,
    GuestScale,
    build_scenario,
    guest_arrays,
    pick_vms,
    selection_score,
    window_origin,
)
from presculpt.demo.stack import OnlyDomains
from presculpt.demo.view import GuestRow, LiveView
from presculpt.errors import UserError
from presculpt.lab.console import Report, parse_line
from presculpt.lab.trace import load_trace
from presculpt.timescale import ScaledClock

from ..forecast.conftest import TRACE_START_TS, write_trace

DAY = 86400


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    """6 VMs, 10 days: enough for 8 days of history before a window on day 9."""
    return write_trace(tmp_path_factory.mktemp("trace") / "t", vms=6, days=10.0)


def report(**fields) -> Report:
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    parsed = parse_line(f"PRESCULPT-REPORT {text}")
    assert parsed is not None
    return parsed


# -- the scenario -------------------------------------------------------------------------------

def test_the_window_starts_days_after_the_first_midnight(trace):
    traces = load_trace(trace)
    assert window_origin(traces, 9.25) == TRACE_START_TS + 9 * DAY + 6 * 3600


def test_scenario_maps_the_trace_onto_the_guest_and_waits_for_the_start(trace):
    traces = load_trace(trace)
    origin = window_origin(traces, 9.0)
    scale = GuestScale()
    s = build_scenario(trace, traces, ["vm-1", "vm-2"], origin, steps=20, step_seconds=2.0, scale=scale)
    assert s.speedup == 150 and s.end == origin + 20 * 300
    vm = s.vms[0]
    cores, held = guest_arrays(traces["vm-1"], scale)
    i = int(np.searchsorted(np.asarray(traces["vm-1"].ts), origin))
    assert vm.ts[vm.index(origin) - 1] == origin - 300
    demand_cores, demand_mem = s.demand(0)
    assert len(demand_cores) == 20
    np.testing.assert_allclose(demand_cores, cores[i:i + 20], atol=1e-4)  # the load spec rounds to 4 decimals
    np.testing.assert_allclose(demand_mem, np.round(held[i:i + 20]))
    assert vm.load.start_on_nmi and vm.load.seconds_per_step == 2.0 and len(vm.load.steps) == 23
    assert vm.load.label == f"trace:vm-1@{int(origin)}"
    ts, hist_cores, _ = s.history(0)
    assert len(ts) == 8 * 288 and ts[-1] == origin - 300
    np.testing.assert_allclose(hist_cores, cores[i - 8 * 288:i], atol=1e-4)
    # vm-1 has 4 vCPUs and 4 GiB: its share maps onto the guest's 4 vCPUs and 512 MiB
    assert cores.max() <= 4 and held.max() <= 512


def test_vms_are_picked_by_repeating_variation_within_the_host(trace):
    traces = load_trace(trace)
    origin = window_origin(traces, 9.0)
    picked = pick_vms(traces, origin, 40, 2, GuestScale(), host_cpus=8)
    assert len(picked) == 2 and len(set(picked)) == 2
    with pytest.raises(UserError, match="only 0 VM"):
        pick_vms(traces, origin, 40, 2, GuestScale(), host_cpus=0)  # no VM is light enough
    flat = np.ones(10)
    assert selection_score(flat, flat) == 0.0
    wave = np.sin(np.arange(10))
    assert selection_score(wave, wave) == pytest.approx(wave.std())
    assert selection_score(wave, -wave) == 0.0


def test_training_series_look_like_the_guests(trace):
    traces = load_trace(trace)
    origin = window_origin(traces, 9.0)
    series = training_series(traces, origin, GuestScale(), days=5.0)
    assert {s.metric for s in series} == {"cpu_cores", "memory_mib"} and len(series) == 12
    mem = next(s for s in series if s.metric == "memory_mib")
    assert mem.capacity == 1024 and mem.values.min() >= GUEST_OWN_MEMORY_MIB and len(mem.values) == 5 * 288


def test_a_window_past_the_trace_is_refused(trace):
    traces = load_trace(trace)
    with pytest.raises(UserError, match="does not cover"):
        build_scenario(trace, traces, ["vm-0"], window_origin(traces, 9.9), steps=100, step_seconds=3.0)


# -- the trace clock ----------------------------------------------------------------------------

def test_scaled_clock_holds_then_runs_faster():
    wall = [100.0]
    clock = ScaledClock(origin=1_000_000.0, speedup=100.0, wall=lambda: wall[0])
    wall[0] = 150.0
    assert clock() == 1_000_000.0 and not clock.started
    clock.start()
    wall[0] = 153.0
    assert clock() == 1_000_300.0
    assert clock.wall_seconds(300) == 3.0
    assert clock.wall_until(1_000_600.0) == pytest.approx(3.0)


# -- what the guests saw ------------------------------------------------------------------------

def test_parse_steps():
    assert record.parse_steps(["vcpus 1->2", "cpu quota none->1.3", "memory 512->400 MiB"]) == {
        "vcpus": (1, 2), "quota": (None, 1.3), "memory": (512, 400)}


def test_new_vcpus_and_memory_are_seen_in_the_guests_reports():
    reports = [(10.2, report(reason="cpus", online_cpus=1, mem_total_kib=458752)),
               (10.5, report(reason="cpus", online_cpus=2, mem_total_kib=458752)),
               (10.9, report(reason="mem", online_cpus=2, mem_total_kib=(400 - 64) * 1024))]
    verdict = record.judge_seen(["vcpus 1->2", "memory 512->400 MiB"], reports, 10.0, gap_mib=64)
    assert verdict.seen is True and verdict.after_s == pytest.approx(0.9) and not verdict.pending
    assert verdict.detail == "2 CPUs online; MemTotal 336 MiB"
    verdict = record.judge_seen(["vcpus 1->3"], reports, 10.0, gap_mib=64)
    assert verdict.seen is False and "never 3 CPUs" in verdict.detail
    waiting = record.judge_seen(["vcpus 1->2", "cpu quota none->1.5"], reports, 10.0, gap_mib=64)
    assert waiting.seen is True and waiting.pending  # the cap shows only in a later periodic report


def test_a_cpu_cap_is_seen_only_where_it_binds():
    def ticks(load: float, demand: float):
        return [(12.0 + i, report(reason="tick", online_cpus=2, load_cores=load, demand_cores=demand))
                for i in range(3)]

    binding = record.judge_seen(["cpu quota none->0.5"], ticks(0.52, 1.5), 10.0, 64)
    assert binding.seen is True and "0.52 cores at the 0.5-core cap" in binding.detail
    ignored = record.judge_seen(["cpu quota none->0.5"], ticks(1.5, 1.5), 10.0, 64)
    assert ignored.seen is False
    invisible = record.judge_seen(["cpu quota 0.8->0.5"], ticks(0.2, 0.2), 10.0, 64)
    assert invisible.seen is None and "not binding" in invisible.detail
    lifted = record.judge_seen(["cpu quota 0.5->none"], ticks(1.48, 1.5), 10.0, 64)
    assert lifted.seen is True


# -- scores and the JSON --------------------------------------------------------------------------

def step(k: int, demand: float, alloc: float, mem_demand: float = 200.0, mem_alloc: float = 448.0):
    return record.StepRecord(k, 1000.0 + 300 * k, demand, alloc, demand, mem_demand, mem_alloc, mem_demand, False,
                             (0.1, 0.2, 0.3, 0.4), None)


def test_violation_and_slack_against_static():
    steps = [step(0, 0.5, 1.0), step(1, 1.5, 1.0), step(2, 1.0, 1.0), step(3, 0.0, 1.0, 500.0, 448.0)]
    guest = summary.GuestResult("g1", "vm-1", 4, 960.0, tuple(steps), ())
    p, s = summary.scores([guest])
    assert p.violation == 0.25 and p.slack == pytest.approx((0.5 + 0 + 0 + 1.0) / 4.0)
    assert p.memory_violation == 0.25
    assert s.violation == 0.0 and s.slack == pytest.approx((16 - 3.0) / 16)
    assert s.memory_slack == pytest.approx(1 - (200 * 3 + 500) / (4 * 960))


def test_summary_and_action_json_have_the_documented_shape():
    command = Command(id="plan-1-u", host="h", kind="presculpt", issued_at=1300.0, deadline=4000.0, vm="g1",
                      target=Shape(vcpus=2, cpu_cores=1.2, memory_mib=400), reason="planner presculpt: CPU p99 ...")
    action = record.ActionRecord(command, 5.0, Outcome("plan-1-u", "APPLIED", "ok", ("vcpus 1->2",), VmRecord(
        "h", "u", "g1", "running", 2, 4, 1.2, 400, 1024)), 5.4, True, "2 CPUs online", 0.4)
    guest = summary.GuestResult("g1", "vm-1", 4, 960.0, (step(0, 0.5, 1.0), step(1, 1.5, 1.0)), (action,))
    result = summary.build_summary([guest])
    assert set(result) >= {"presculpt", "static", "guests"}
    assert {"violation", "slack", "actions", "applied", "seen"} <= set(result["presculpt"])
    assert result["presculpt"]["actions"] == 1 and result["static"]["actions"] == 0
    assert result["guests"]["g1"]["trace_vm"] == "vm-1"
    item = summary.action_json(action, {"g1": "vm-1"}, 1000.0, 300.0)
    assert {"vm", "kind", "applied", "guest_seen"} <= set(item)
    assert (item["vm"], item["kind"], item["applied"], item["guest_seen"], item["step"]) == (
        "g1", "presculpt", True, True, 1)
    assert item["reason"] == "CPU p99 ..." and item["after"]["vcpus"] == 2
    json.dumps(result), json.dumps(item)
    table = summary.summary_table(result)
    assert table.splitlines()[0].split()[:3] == ["GUEST", "TRACE", "VM"]
    assert "total" in table and "static" in table


def test_forecast_at_takes_the_newest_forecast_made_before_the_step():
    def fc(origin: float, base: float) -> ForecastRecord:
        return ForecastRecord("h", "u", "cpu_cores", origin, 300.0, "lstm", False, (0.1, 0.5, 0.9, 0.99),
                              tuple((base + h, base + h, base + h, base + h) for h in range(12)))

    records = [fc(0.0, 10.0), fc(300.0, 20.0), fc(900.0, 30.0)]
    assert record.forecast_at(records, 600.0)[1] == 21.0  # made at 300, one step ahead
    assert record.forecast_at(records, 900.0)[1] == 30.0
    assert record.forecast_at(records, -300.0) is None


def test_recorder_pairs_commands_with_outcomes():
    rec = record.Recorder([], lambda name: Path("/nonexistent"), None, lambda: 0.0, 0.0)
    command = Command(id="c1", host="h", kind="downgrade", issued_at=0.0, deadline=10.0, vm="g1",
                      reason="planner downgrade: x")
    rec.on_event(Event(0.0, "h", command))
    rec.on_event(Event(1.0, "h", Outcome("c1", "APPLIED", steps=("cpu quota 1->0.5",))))
    rec.on_event(Event(1.0, "h", Outcome("other", "APPLIED")))
    (a,) = rec.actions()
    assert a.applied and a.planner_kind == "downgrade" and a.reason == "x"


# -- the live view and the pictures ---------------------------------------------------------------

ROW = GuestRow("g1", "vm-1", "0.50 cores", "0.45 [0.6-0.8]", "1.00 cores on 1 vCPU", "1 CPU", "presculpt", "why")


def test_live_view_redraws_on_a_terminal_and_prints_lines_otherwise():
    tty = io.StringIO()
    LiveView(tty, tty=True).show("header", [ROW])
    assert tty.getvalue().startswith("\x1b[H\x1b[2J") and "TRACE VM" in tty.getvalue()
    plain = io.StringIO()
    view = LiveView(plain, tty=False)
    view.show("header", [ROW])
    view.show("header again", [ROW])  # too soon: not printed again
    view.action("a1", "g1 presculpt applied")
    view.action("a1", "g1 presculpt applied")
    text = plain.getvalue()
    assert "\x1b" not in text and text.count("header") == 1 and text.count("action:") == 1
    assert "g1 (vm-1): demand 0.50 cores" in text


def test_a_picture_is_written_per_guest(tmp_path):
    steps = [step(k, 0.2 + 0.1 * (k % 3), 0.8) for k in range(12)]
    p, s = summary.scores([summary.GuestResult("g1", "vm-1", 4, 960.0, tuple(steps), ())])
    path = plot_guest(tmp_path / "g1.png", "g1", steps, (), 4, 960.0, p, s)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the hypervisor the agent sees, and the teardown ----------------------------------------------

def test_the_demo_agent_sees_only_the_demo_guests():
    hv = FakeHypervisor()
    hv.add_domain("presculpt-lab-demo-1")
    hv.add_domain("production-db")
    hv.connect()
    only = OnlyDomains(hv, ["presculpt-lab-demo-1"])
    assert [d.name for d in only.list_domains()] == ["presculpt-lab-demo-1"]
    assert [c.name for c in only.domain_counters()] == ["presculpt-lab-demo-1"]
    assert only.host_info() == hv.host_info()


class ScriptedDemo(Demo):
    """A Demo whose steps only note that they ran; ``fail_at`` raises there."""

    def __init__(self, fail_at: str, error: BaseException, started: bool):
        super().__init__(DemoOptions(), out=lambda line: None)
        self.ran: list[str] = []
        self.fail_at, self.error, self.started = fail_at, error, started
        for name in ("prepare_scenario", "prepare_forecaster", "boot_guests", "start_stack", "seed_history",
                     "start_replay", "watch", "finish", "teardown"):
            setattr(self, name, self._step(name))

    def _step(self, name: str):
        def run() -> None:
            self.ran.append(name)
            if name == "start_stack" and self.started:
                self.recorder = object()
                self.clock = ScaledClock(0.0, 1.0)
                self.clock.start()
            if name == self.fail_at:
                raise self.error
        return run


@pytest.mark.parametrize("fail_at", ["boot_guests", "watch"])
def test_ctrl_c_anywhere_tears_everything_down(fail_at):
    demo = ScriptedDemo(fail_at, KeyboardInterrupt(), started=fail_at == "watch")
    if fail_at == "watch":  # during the replay: the figures of what ran, then the teardown
        result = demo.run()
        assert demo.interrupted and demo.ran[-2:] == ["finish", "teardown"]
        assert "timing" in result
    else:  # before it: straight to the teardown, and the interrupt goes on to the command line
        with pytest.raises(KeyboardInterrupt):
            demo.run()
        assert demo.ran == ["prepare_scenario", "prepare_forecaster", "boot_guests", "teardown"]


def test_an_error_tears_everything_down_too():
    demo = ScriptedDemo("seed_history", UserError("boom"), started=True)
    with pytest.raises(UserError, match="boom"):
        demo.run()
    assert demo.ran[-1] == "teardown" and "finish" not in demo.ran
