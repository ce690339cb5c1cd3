"""guestd built for the host and run as a plain process (not PID 1, CPUs left alone with -n)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from presculpt.lab.console import Report, parse_line
from presculpt.lab.image import compile_guestd
from presculpt.lab.loadspec import LoadSpec, LoadStep

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

GUESTD_C = Path(__file__).parents[2] / "lab" / "guest" / "guestd.c"


@pytest.fixture(scope="module")
def guestd(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("guestd") / "guestd"
    compile_guestd(GUESTD_C.read_bytes(), out)
    return out


def run_until(guestd: Path, spec_path: Path, done, timeout_s: float = 30.0) -> list[Report]:
    """Run guestd until ``done(reports)`` holds; returns every report it printed."""
    proc = subprocess.Popen([str(guestd), "-n", str(spec_path)], stdout=subprocess.PIPE, text=True)
    reports: list[Report] = []
    deadline = time.monotonic() + timeout_s
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            report = parse_line(line)
            if report is not None:
                reports.append(report)
            if done(reports) or time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    return reports


def test_guestd_follows_its_steps_and_reports(guestd: Path, tmp_path: Path) -> None:
    spec = LoadSpec((LoadStep(0.3, 8), LoadStep(0.0, 0)), seconds_per_step=1.5, label="unit-test")
    spec_path = tmp_path / "load.spec"
    spec_path.write_text(spec.render())
    reports = run_until(
        guestd, spec_path, lambda rs: any(r.step == 1 and r.reason == "tick" for r in rs)
    )

    ready = reports[0]
    assert ready.kind == "ready" and ready.seq == 0
    assert ready.fields["label"] == "unit-test"
    assert ready.demand_cores == pytest.approx(0.3) and ready.demand_mem_mib == 8
    assert ready.online_cpus and ready.online_cpus >= 1
    assert ready.mem_total_kib and ready.mem_total_kib > 0

    ticks = [r for r in reports if r.reason == "tick"]
    first = ticks[0]
    assert first.step == 0 and first.mem_held_mib == 8
    assert first.work_rate and first.work_rate > 0
    assert [r.seq for r in reports] == list(range(len(reports)))
    last = ticks[-1]
    assert last.step == 1 and last.demand_cores == 0


def test_guestd_holds_the_first_step_until_its_start_signal(guestd: Path, tmp_path: Path) -> None:
    spec = LoadSpec((LoadStep(0.0, 0), LoadStep(0.2, 4)), seconds_per_step=0.5, start_on_nmi=True)
    spec_path = tmp_path / "load.spec"
    spec_path.write_text(spec.render())
    proc = subprocess.Popen([str(guestd), "-n", str(spec_path)], stdout=subprocess.PIPE, text=True)
    reports: list[Report] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            report = parse_line(line)
            if report is None:
                continue
            reports.append(report)
            ticks = [r for r in reports if r.reason == "tick"]
            if len(ticks) == 2 and not any(r.started for r in reports):
                signalled = time.monotonic()
                proc.send_signal(signal.SIGUSR1)  # on a host, the stand-in for an NMI
            if report.step == 1 or len(reports) > 40:
                break
    finally:
        proc.kill()
        proc.wait()
    waiting = [r for r in reports if not r.started]
    assert waiting and all(r.step == 0 for r in waiting)  # 2 s held at the first step, not 4 steps on
    start = next(r for r in reports if r.started)
    assert start.reason == "start" and start.step == 0
    assert reports[-1].step == 1 and reports[-1].started
    assert time.monotonic() - signalled < 5


def test_guestd_without_spec_reports_idle(guestd: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["timeout", "1.5", str(guestd), "-n", str(tmp_path / "missing.spec")],
        capture_output=True,
        text=True,
    )
    kinds = [(r.kind, r.fields.get("kind")) for r in map(parse_line, proc.stdout.splitlines()) if r]
    assert kinds[0] == ("event", "spec_missing")
    assert kinds[1] == ("ready", None)
