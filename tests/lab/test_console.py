"""Parsing guestd's console reports and waiting for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from presculpt.lab.console import (
    ReportTimeout,
    console_offset,
    latest_report,
    parse_line,
    parse_reports,
    read_reports,
    wait_for_report,
)

READY = (
    "PRESCULPT-READY seq=0 uptime_ms=2242 reason=ready online_cpus=1 mem_total_kib=962484 "
    "mem_available_kib=860292 load_cores=0.000 work_rate=0 demand_cores=0.500 demand_mem_mib=64 "
    "mem_held_mib=0 step=0 label=constant:0.5cores:64MiB"
)


def report(seq: int, cpus: int = 1, mem_kib: int = 458676, reason: str = "tick") -> str:
    return (
        f"PRESCULPT-REPORT seq={seq} uptime_ms={1000 * seq} reason={reason} online_cpus={cpus} "
        f"mem_total_kib={mem_kib} mem_available_kib=300000 load_cores=0.480 work_rate=12345 "
        f"demand_cores=0.500 demand_mem_mib=64 mem_held_mib=64 step=0"
    )


def test_parse_ready_line() -> None:
    r = parse_line(READY)
    assert r is not None and r.kind == "ready"
    assert r.seq == 0 and r.online_cpus == 1 and r.mem_total_kib == 962484
    assert r.demand_cores == 0.5 and r.fields["label"] == "constant:0.5cores:64MiB"
    assert r.mem_total_mib == pytest.approx(962484 / 1024)


def test_parse_report_with_noise_and_carriage_return() -> None:
    r = parse_line("[    4.96] smpboot: " + report(3, cpus=2) + "\r")
    assert r is not None and r.kind == "report"
    assert r.online_cpus == 2 and r.step == 0 and r.work_rate == 12345
    assert r.load_cores == 0.48 and r.mem_held_mib == 64


def test_other_lines_and_bad_fields() -> None:
    assert parse_line("[    1.49] Key type encrypted registered") is None
    event = parse_line("PRESCULPT-EVENT kind=mem_short held_mib=12")
    assert event is not None and event.kind == "event" and event.fields["kind"] == "mem_short"
    r = parse_line("PRESCULPT-REPORT seq=x online_cpus=")
    assert r is not None and r.seq is None and r.online_cpus is None
    assert [x.kind for x in parse_reports(f"noise\n{READY}\n{report(1)}\n")] == ["ready", "report"]


def test_latest_report_skips_events_and_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    assert latest_report(log) is None
    log.write_text(
        f"{READY}\n{report(1)}\n{report(2, cpus=3)}\nPRESCULPT-EVENT kind=x\nPRESCULPT-REP"
    )
    latest = latest_report(log)
    assert latest is not None and latest.seq == 2 and latest.online_cpus == 3


def test_latest_report_reads_further_back_when_the_tail_has_none(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(f"{report(7)}\n" + "kernel noise line\n" * 5000)
    latest = latest_report(log, tail_bytes=64)
    assert latest is not None and latest.seq == 7


def test_read_reports_from_an_offset_and_after_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(f"{READY}\n{report(1)}\n")
    first, offset = read_reports(log)
    assert [r.seq for r in first] == [0, 1] and offset == log.stat().st_size
    with log.open("a") as handle:
        handle.write(f"{report(2)}\npartial")
    more, offset2 = read_reports(log, offset)
    assert [r.seq for r in more] == [2] and offset2 == log.stat().st_size - len("partial")
    log.write_text(f"{READY}\n")  # the guest booted again: the log restarted
    again, _ = read_reports(log, offset2)
    assert [r.kind for r in again] == ["ready"]


class FakeTime:
    """A clock that advances only when slept, calling ``on_sleep`` each time."""

    def __init__(self, on_sleep=None) -> None:
        self.now = 100.0
        self.on_sleep = on_sleep
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep:
            self.on_sleep(self.sleeps)


def test_wait_for_report_sees_only_newer_matching_reports(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(f"{READY}\n{report(1, cpus=2)}\n")
    offset = console_offset(log)

    def guest_writes(sleeps: int) -> None:
        with log.open("a") as handle:
            handle.write(f"{report(1 + sleeps, cpus=1 if sleeps < 3 else 2, reason='cpus')}\n")

    fake = FakeTime(guest_writes)
    seen = wait_for_report(
        log, lambda r: r.online_cpus == 2, after_offset=offset, clock=fake.clock, sleep=fake.sleep
    )
    assert seen.report.seq == 4 and seen.report.reason == "cpus"
    assert seen.seen_at == pytest.approx(100.0 + 3 * 0.05)
    assert seen.offset == log.stat().st_size


def test_wait_for_report_times_out_naming_the_last_report(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(f"{report(5)}\n")
    fake = FakeTime()
    with pytest.raises(ReportTimeout, match="'seq': '5'"):
        wait_for_report(
            log, lambda r: r.online_cpus == 9, timeout_s=1, clock=fake.clock, sleep=fake.sleep
        )
    with pytest.raises(ReportTimeout, match="nothing reported"):
        wait_for_report(
            tmp_path / "none.log", lambda r: True, timeout_s=1, clock=fake.clock, sleep=fake.sleep
        )


def test_wait_for_report_can_include_events(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("PRESCULPT-EVENT kind=agent_exit status=1\n")
    seen = wait_for_report(log, lambda r: r.kind == "event", include_events=True, timeout_s=0)
    assert seen.report.fields["kind"] == "agent_exit"
