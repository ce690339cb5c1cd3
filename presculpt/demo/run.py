"""``presculpt demo``: the whole loop on real guests, in one run of named steps.

    prepare_scenario   read the trace, pick the VMs and the window, map them onto the guests
    prepare_forecaster train the small LSTM on the history before the window (or load it cached)
    boot_guests        the lab: one real guest per VM, its load waiting at the window's first step
    start_stack        the coordinator (embedded store, enforce mode) and an agent, on the trace clock
    seed_history       the week before the window into the store, so forecasts start informed
    start_replay       every guest's load and the trace clock at one instant
    watch              the live view until the window is over (or Ctrl-C)
    finish             figures, pictures, JSON; then the guests, the agent and the coordinator go

Teardown runs whatever happened (Ctrl-C and SIGTERM included), with Ctrl-C masked meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from presculpt.errors import UserError
from presculpt.lab.trace import GRID_S

log = logging.getLogger(__name__)

NAME_PREFIX = "presculpt-lab-demo-"
DEFAULT_TRACE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "bitbrains-rnd-2013-08"
TICK_S = 0.1  # console logs are read this often
SAMPLE_S = 0.5  # libvirt's view of the allocations, this often
VIEW_S = 1.0
STARTUP_TIMEOUT_S = 180.0  # the agent's first inventory at the coordinator, on a busy 2-core host
FORECAST_PHASE = 0.35  # the forecast job runs this far into each step (after the last step's roll-up)
SEEN_WINDOW_STEPS = 3  # an action is judged "seen" or not this many steps after it was sent (at least 10 s)


@dataclass(frozen=True)
class DemoOptions:
    uri: str = "qemu:///system"
    accel: str = "tcg"
    guests: int = 3
    vms: tuple[str, ...] = ()
    trace: Path | None = None
    start_days: float = 14.25
    duration_s: float = 300.0
    step_seconds: float = 3.0
    keep: bool = False
    cache_dir: Path = Path("/var/lib/libvirt/images/presculpt-lab")
    out_dir: Path = Path("presculpt-demo")
    json_path: Path | None = None


@dataclass
class Timings:
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.marks[name] = round(time.monotonic() - t0, 1)
            log.info("demo step %s took %.1f s", name, self.marks[name])


class Demo:
    """One run. Build it, call :meth:`run`; it returns the JSON result (and cleans up whatever happens)."""

    def __init__(self, options: DemoOptions, out: Callable[[str], None] = lambda line: print(line, flush=True)):
        self.o = options
        self.say = out
        self.timings = Timings()
        self.scenario = None
        self.checkpoint: Path | None = None
        self.checkpoint_cached = False
        self.hv = None
        self.agent_hv = None
        self.lab = None
        self.names: list[str] = []
        self.clock = None
        self.coordinator = None
        self.agent = None
        self.recorder = None
        self.workdir: tempfile.TemporaryDirectory | None = None
        self.interrupted = False
        self.result: dict[str, Any] = {}

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        # Ctrl-C and SIGTERM stop the demo cleanly, also when it was started with SIGINT ignored
        # (as a background job of a script is): Python then installs no KeyboardInterrupt of its own.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt), signal.signal(signal.SIGINT, _raise_interrupt)
        try:
            try:
                with self.timings.step("prepare_scenario"):
                    self.prepare_scenario()
                with self.timings.step("prepare_forecaster"):
                    self.prepare_forecaster()
                with self.timings.step("boot_guests"):
                    self.boot_guests()
                with self.timings.step("start_stack"):
                    self.start_stack()
                with self.timings.step("seed_history"):
                    self.seed_history()
                with self.timings.step("start_replay"):
                    self.start_replay()
                with self.timings.step("watch"):
                    self.watch()
            except KeyboardInterrupt:
                self.interrupted = True
                self.say("\ninterrupted: stopping (the guests, the agent and the coordinator are removed)")
                if self.recorder is None or self.clock is None or not self.clock.started:
                    raise
            with _sigint_masked(), self.timings.step("finish"):
                self.finish()
        finally:
            with _sigint_masked(), self.timings.step("teardown"):
                self.teardown()
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
        self.result["timing"] = {**self.timings.marks,
                                 "total_s": round(time.monotonic() - self.timings.started, 1)}
        if self.o.json_path:
            self.o.json_path.write_text(json.dumps(self.result, indent=2) + "\n")
            self.say(f"wrote {self.o.json_path}")
        return self.result

    # -- the steps ----------------------------------------------------------------------------
    def prepare_scenario(self) -> None:
        from presculpt.demo.scenario import GuestScale, build_scenario, pick_vms, window_origin
        from presculpt.lab.trace import load_trace

        trace = self.o.trace or DEFAULT_TRACE
        if not (trace / "vms.csv").exists():
            raise UserError(f"no trace at {trace}: give --trace DIR (a trace in the canonical format, "
                            f"see traces/FORMAT.md)")
        self.say(f"reading the trace {trace} ...")
        self.traces = load_trace(trace)
        origin = window_origin(self.traces, self.o.start_days)
        steps = max(1, int(round(self.o.duration_s / self.o.step_seconds)))
        scale = GuestScale()
        vm_ids = list(self.o.vms) or pick_vms(self.traces, origin, steps, self.o.guests, scale, os.cpu_count() or 1)
        self.scenario = s = build_scenario(trace, self.traces, vm_ids, origin, steps, self.o.step_seconds, scale)
        self.say(f"replaying {_utc(s.origin)} to {_utc(s.end)} ({steps} steps of 5 minutes, each {s.step_seconds:g} s "
                 f"here: {s.speedup:g}x) of trace VMs {', '.join(vm_ids)}")
        self.say(f"scale: {scale.describe()}")

    def prepare_forecaster(self) -> None:
        from presculpt.demo.model import checkpoint_path, demo_checkpoint

        s = self.scenario
        cache = Path(self.o.cache_dir)
        self.checkpoint_cached = checkpoint_path(cache, s.trace_dir, s.origin, s.scale).exists()
        if not self.checkpoint_cached:
            self.say("training the forecaster on the trace before the window (once: it is cached) ...")
        self.checkpoint = demo_checkpoint(s.trace_dir, self.traces, s.origin, s.scale, cache)
        self.say(f"forecaster: {'cached ' if self.checkpoint_cached else ''}{self.checkpoint}")
        del self.traces  # the scenario keeps what it needs

    def boot_guests(self) -> None:
        from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
        from presculpt.lab.lab import GuestShape, Lab, ensure_libvirt_running

        s = self.scenario
        ensure_libvirt_running(self.o.uri)
        self.hv = LibvirtHypervisor(self.o.uri)
        self.hv.connect()
        self.lab = Lab(self.hv, cache_dir=Path(self.o.cache_dir), name_prefix=NAME_PREFIX)
        shape = GuestShape(vcpus=s.scale.vcpus, max_vcpus=s.scale.max_vcpus, memory_mib=s.scale.memory_mib,
                           max_memory_mib=s.scale.max_memory_mib)
        self.say(f"booting {len(s.vms)} real guests ({self.o.accel}) ...")
        t0 = time.monotonic()
        self.names = self.lab.up(len(s.vms), accel=self.o.accel, loads=[vm.load for vm in s.vms], shape=shape)
        self.say(f"booted {', '.join(self.names)} in {time.monotonic() - t0:.0f} s")

    def start_stack(self) -> None:
        from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
        from presculpt.demo.record import GuestTrack, Recorder
        from presculpt.demo.stack import (
            AGENT_ID,
            AgentThread,
            CoordinatorThread,
            OnlyDomains,
            agent_config,
            coordinator_config,
            make_demo_pki,
        )
        from presculpt.timescale import ScaledClock

        s = self.scenario
        self.workdir = tempfile.TemporaryDirectory(prefix="presculpt-demo-")
        work = Path(self.workdir.name)
        self.clock = ScaledClock(s.origin, s.speedup)
        tracks = []
        for name, vm in zip(self.names, s.vms, strict=True):
            info = self.hv.domain_info(name)
            tracks.append(GuestTrack(name, vm.vm_id, info.uuid, info.max_vcpus, info.max_memory_mib))
        self.recorder = Recorder(tracks, self.lab.console_path, self.hv, self.clock, s.origin)
        pki = make_demo_pki(work)
        config = coordinator_config(work, s.step_seconds, self.checkpoint, os.cpu_count() or 1, len(s.vms),
                                    s.scale.max_vcpus, pki["coordinator"])
        self.coordinator_config = config
        self.say("starting the coordinator (embedded store, planner in enforce mode) and an agent ...")
        self.coordinator = CoordinatorThread(config, self.clock, self.recorder.on_event).start()
        self.agent_hv = LibvirtHypervisor(self.o.uri)
        self.agent_hv.connect()
        self.agent = AgentThread(OnlyDomains(self.agent_hv, self.names),
                                 agent_config(work, s.step_seconds, self.coordinator.address,
                                              config.planner.cpu_overcommit, pki[AGENT_ID]), self.clock).start()
        store = self.coordinator.server.store
        _wait(lambda: {v.name for v in store.vms()} >= set(self.names), STARTUP_TIMEOUT_S,
              "the agent's inventory at the coordinator")

    def seed_history(self) -> None:
        """The week before the window at the guests' scale: the trace's CPU, and the guest's own
        memory (measured now) plus what the trace holds. (What emulating a guest costs the host
        besides, some 0.05 core under TCG, shows in the live usage only.)"""
        from presculpt.coordinator.model import RollupRow, Stat
        from presculpt.demo.stack import AGENT_ID

        s = self.scenario
        store = self.coordinator.server.store
        self.recorder.read_consoles()
        for i, track in enumerate(self.recorder.tracks):
            report = track.latest()
            info = self.hv.domain_info(track.name)
            if report is None or report.mem_total_mib is None or report.mem_available_mib is None:
                raise UserError(f"{track.name} has not reported its memory (see {self.lab.console_path(track.name)})")
            track.gap_mib = info.memory_mib - report.mem_total_mib
            track.base_mib = report.mem_total_mib - report.mem_available_mib - (report.mem_held_mib or 0.0)
            ts, cores, held = s.history(i)
            rows = [RollupRow(track.uuid, float(t), GRID_S, 1,
                              {"cpu_cores": Stat(c, c, c), "memory_used_mib": Stat(m, m, m)})
                    for t, c, m in zip(ts.tolist(), cores.tolist(), (held + track.base_mib).tolist())]
            store.import_rollups(AGENT_ID, rows)
        days = len(rows) * GRID_S / 86400
        tracks = self.recorder.tracks
        self.say(f"seeded the store with the {days:g} days before the window (each guest's own memory use, "
                 f"{', '.join(f'{t.base_mib:.0f}' for t in tracks)} MiB, added to its trace's)")

    def start_replay(self) -> None:
        """Start the loads and the clock at one instant, placed so that the coordinator's forecast
        job runs a third of the way into each step (once the step before is rolled up) and the
        planner half a step later."""
        server = self.coordinator.server
        step = self.scenario.step_seconds
        next_forecast = asyncio.run_coroutine_threadsafe(_call(lambda: server.next_run("forecast")),
                                                         self.coordinator.loop).result(timeout=30)
        at = time.time() + 0.3
        if next_forecast is not None:
            start = next_forecast - FORECAST_PHASE * step
            at = start + math.ceil((at - start) / step) * step
        time.sleep(max(0.0, at - time.time()))
        self.clock.start()
        self.lab.start_loads(self.names)
        self.wall_started = time.monotonic()
        self.say(f"replay running: {self.scenario.steps} steps, {self.scenario.steps * step:.0f} s "
                 f"(Ctrl-C stops it cleanly)")

    def watch(self) -> None:
        from presculpt.demo.view import LiveView

        s = self.scenario
        view = LiveView()
        self.view = view
        next_sample = next_view = 0.0
        seen_window = max(10.0, SEEN_WINDOW_STEPS * s.step_seconds)
        deadline = self.wall_started + s.steps * s.step_seconds * 1.5 + 30  # a stuck clock never hangs us
        while self.clock() < s.end and time.monotonic() < deadline:
            now = time.monotonic()
            self.recorder.read_consoles()
            if now >= next_sample:
                self.recorder.sample_allocations()
                next_sample = now + SAMPLE_S
            if now >= next_view:
                self.recorder.judge_actions(seen_window)
                self.show(view)
                next_view = now + VIEW_S
            time.sleep(TICK_S)
        view.done()

    def finish(self) -> None:
        """Figures, pictures and the JSON, from what was recorded."""
        from presculpt.demo.plot import plot_guest
        from presculpt.demo.stack import AGENT_ID, describe_config
        from presculpt.demo.summary import GuestResult, action_json, build_summary, scores, summary_table

        s, rec = self.scenario, self.recorder
        if self.agent is not None:  # no more resizes: the window is over
            self.agent.stop()
            self.agent = None
        # The guests still run: give the last actions the time to show inside them (not after Ctrl-C).
        seen_window = max(10.0, SEEN_WINDOW_STEPS * s.step_seconds)
        deadline = time.monotonic() + (0.0 if self.interrupted else seen_window)
        while time.monotonic() < deadline:
            rec.read_consoles()
            rec.judge_actions(seen_window)
            if all(a.seen is not None or a.seen_detail or not a.applied for a in rec.actions()):
                break
            time.sleep(TICK_S)
        rec.read_consoles()
        rec.judge_actions(0)
        store = self.coordinator.server.store
        reached = min(s.steps, max(0, int(math.ceil((min(self.clock(), s.end) - s.origin) / GRID_S))))
        results = []
        for i, t in enumerate(rec.tracks):
            forecasts = {m: store.forecasts(AGENT_ID, t.uuid, m, s.origin - 3600, s.end)
                         for m in ("cpu_cores", "memory_mib")}
            demand_cores, demand_mem = s.demand(i)
            steps = rec.steps(t, demand_cores, demand_mem, forecasts, reached)
            actions = tuple(a for a in rec.actions() if a.command.vm == t.name and a.command.issued_at < s.end)
            results.append(GuestResult(t.name, t.vm_id, t.max_vcpus, t.max_memory_mib - t.gap_mib, tuple(steps),
                                       actions))
        summary = build_summary(results)
        self.say("\n" + summary_table(summary))
        actions = [a for r in results for a in r.actions]
        self.say(f"\n{len(actions)} actions; violation: share of steps with demand above the allocation; slack: "
                 f"share of the allocation not used. Static: every guest at its maximum "
                 f"({s.scale.max_vcpus} vCPUs, {s.scale.max_memory_mib} MiB).")
        self.o.out_dir.mkdir(parents=True, exist_ok=True)
        plots = {}
        for r in results:
            if not r.steps:
                continue
            path = self.o.out_dir / f"{r.name}.png"
            plot_guest(path, f"{r.name} driven by trace VM {r.vm_id}", r.steps, r.actions, r.max_vcpus,
                       r.static_mem_mib, *scores([r]))
            plots[r.name] = str(path)
        if plots:
            self.say("pictures: " + ", ".join(plots.values()))
        vm_of = {t.name: t.vm_id for t in rec.tracks}
        self.result = {
            "scenario": {
                "trace": str(s.trace_dir), "window_start": _utc(s.origin), "window_end": _utc(s.end),
                "origin_ts": s.origin, "steps": s.steps, "steps_run": reached, "step_seconds": s.step_seconds,
                "speedup": s.speedup, "scale": s.scale.describe(),
                "guests": [{"guest": t.name, "trace_vm": t.vm_id, "trace_vcpus": vm.max_vcpus,
                            "trace_memory_mib": vm.max_mem_mib, "guest_max_vcpus": t.max_vcpus,
                            "guest_max_memory_mib": t.max_memory_mib, "guest_own_memory_mib": round(t.base_mib, 1)}
                           for t, vm in zip(rec.tracks, s.vms)],
            },
            "forecaster": {"checkpoint": str(self.checkpoint), "cached": self.checkpoint_cached},
            "coordinator": describe_config(self.coordinator_config),
            "actions": [action_json(a, vm_of, s.origin, GRID_S) for a in sorted(actions, key=lambda a: a.sent_wall)],
            "summary": summary,
            "steps": {r.name: [step_json(x) for x in r.steps] for r in results},
            "plots": plots,
            "interrupted": self.interrupted,
        }

    def teardown(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self.coordinator is not None:
            self.coordinator.stop()
            self.coordinator = None
        if self.agent_hv is not None:
            self.agent_hv.close()
            self.agent_hv = None
        if self.lab is not None:
            if self.o.keep and not self.interrupted:
                self.say("kept the guests: `presculpt lab status`; `presculpt lab down` removes them")
            else:
                removed = self.lab.down()
                if removed:
                    self.say(f"removed {', '.join(removed)}")
        if self.hv is not None:
            self.hv.close()
            self.hv = None
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    # -- the live view ------------------------------------------------------------------------
    def show(self, view) -> None:
        from presculpt.demo.record import forecast_at
        from presculpt.demo.view import GuestRow

        s, rec = self.scenario, self.recorder
        now = self.clock()
        step = int((now - s.origin) // GRID_S)
        step_start = s.origin + step * GRID_S
        store = self.coordinator.server.store
        forecasts = {(r.uuid, r.metric): r for r in store.latest_forecasts(now - 12 * GRID_S, now + GRID_S)}
        actions = rec.actions()
        rows = []
        for t in rec.tracks:
            r = t.latest()
            alloc = t.allocations[-1] if t.allocations else None
            cpu = forecast_at([forecasts[(t.uuid, "cpu_cores")]], step_start) if (t.uuid, "cpu_cores") in forecasts else None
            last = next((a for a in reversed(actions) if a.command.vm == t.name), None)
            rows.append(GuestRow(
                guest=t.name, vm=t.vm_id,
                demand=(f"{r.demand_cores:.2f} cores, {t.base_mib + (r.demand_mem_mib or 0):.0f} MiB"
                        if r and r.demand_cores is not None else "-"),
                forecast=f"{cpu[1]:.2f} [{cpu[2]:.2f}-{cpu[3]:.2f}] cores" if cpu else "(none yet)",
                alloc=(f"{alloc.cpu_cores:.2f} cores on {alloc.vcpus} vCPU, {alloc.memory_mib} MiB" if alloc else "-"),
                inside=(f"{r.online_cpus} CPU {r.load_cores:.2f} busy, {r.mem_total_mib:.0f} MiB"
                        if r and r.load_cores is not None and r.mem_total_mib is not None else "-"),
                action=_describe_action(last, s.origin) if last else "-",
                reason=(last.reason if last else "")))
        for a in actions:
            if a.outcome is not None:
                view.action(a.command.id, f"{a.command.vm} {_describe_action(a, s.origin)}: {a.reason}")
        done = sum(a.applied for a in actions)
        seen = sum(a.seen is True for a in actions)
        header = (f"Presculpt demo: trace time {_utc(now)}, step {min(step + 1, s.steps)}/{s.steps} "
                  f"(1 step = 5 min = {s.step_seconds:g} s); {len(actions)} actions, {done} applied, {seen} seen "
                  f"inside the guests")
        view.show(header, rows, "Ctrl-C stops cleanly; demand and forecast in cores (CPU), allocation = vCPUs "
                                "capped by the CPU quota, memory = balloon")


def step_json(r) -> dict[str, Any]:
    return {"step": r.step, "ts": r.ts, "demand_cores": r.demand_cores, "alloc_cores": _round(r.alloc_cores),
            "load_cores": _round(r.load_cores), "demand_mem_mib": _round(r.demand_mem_mib),
            "alloc_mem_mib": _round(r.alloc_mem_mib), "used_mem_mib": _round(r.used_mem_mib), "mem_short": r.mem_short,
            "cpu_forecast": [_round(v) for v in r.cpu_forecast] if r.cpu_forecast else None,
            "mem_forecast": [_round(v) for v in r.mem_forecast] if r.mem_forecast else None}


def _describe_action(a, origin: float) -> str:
    status = a.outcome.status if a.outcome else "sent"
    step = int((a.command.issued_at - origin) // GRID_S) + 1
    seen = {True: ", seen", False: ", NOT seen"}.get(a.seen, "")
    return f"{a.planner_kind} {status.lower()} at step {step}{seen}"


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


async def _call(func: Callable[[], Any]) -> Any:
    return func()


def _wait(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise UserError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigint_masked() -> Iterator[None]:
    """Ignore Ctrl-C (and SIGTERM) while cleaning up, so that a second one cannot leave guests behind."""
    if threading_main():
        old = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old[0])
            signal.signal(signal.SIGTERM, old[1])


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def configure_logs(log_path: Path, verbose: bool, tty: bool) -> None:
    """Everything (INFO) to ``log_path``; on stderr warnings, unless a live table is drawn there
    (then nothing: it would tear the table), or everything with -v."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stderr:
            handler.setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1 if tty else logging.WARNING)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_path, mode="w")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(file_handler)
