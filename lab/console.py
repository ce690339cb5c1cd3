"""Read what lab guests report on their serial console (the log file QEMU writes).

guestd prints ``PRESCULPT-READY`` once, then ``PRESCULPT-REPORT`` lines of ``key=value`` fields
every second and at once when its CPUs or MemTotal change; ``PRESCULPT-EVENT`` lines tell of
trouble. Kernel messages may share the log, so anything else is ignored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

READY_TAG = "PRESCULPT-READY"
REPORT_TAG = "PRESCULPT-REPORT"
EVENT_TAG = "PRESCULPT-EVENT"
_KINDS = {READY_TAG: "ready", REPORT_TAG: "report", EVENT_TAG: "event"}


@dataclass(frozen=True)
class Report:
    """One line from guestd: ``kind`` is ready, report or event; ``fields`` its key=value pairs.

    The typed properties are None when a field is missing or unreadable.
    """

    kind: str
    fields: Mapping[str, str] = field(default_factory=dict)

    def number(self, key: str) -> float | None:
        try:
            return float(self.fields[key])
        except (KeyError, ValueError):
            return None

    def integer(self, key: str) -> int | None:
        value = self.number(key)
        return None if value is None else int(value)

    @property
    def seq(self) -> int | None:
        return self.integer("seq")

    @property
    def uptime_ms(self) -> int | None:
        return self.integer("uptime_ms")

    @property
    def reason(self) -> str | None:
        return self.fields.get("reason")

    @property
    def online_cpus(self) -> int | None:
        return self.integer("online_cpus")

    @property
    def mem_total_kib(self) -> int | None:
        return self.integer("mem_total_kib")

    @property
    def mem_total_mib(self) -> float | None:
        kib = self.mem_total_kib
        return None if kib is None else kib / 1024

    @property
    def mem_available_kib(self) -> int | None:
        return self.integer("mem_available_kib")

    @property
    def mem_available_mib(self) -> float | None:
        kib = self.mem_available_kib
        return None if kib is None else kib / 1024

    @property
    def load_cores(self) -> float | None:
        return self.number("load_cores")

    @property
    def work_rate(self) -> float | None:
        """Busy-loop iterations per second, all workers together."""
        return self.number("work_rate")

    @property
    def demand_cores(self) -> float | None:
        return self.number("demand_cores")

    @property
    def demand_mem_mib(self) -> float | None:
        return self.number("demand_mem_mib")

    @property
    def mem_held_mib(self) -> float | None:
        return self.number("mem_held_mib")

    @property
    def step(self) -> int | None:
        return self.integer("step")

    @property
    def started(self) -> bool | None:
        """False while the guest's load waits for its start signal (None: not reported)."""
        value = self.integer("started")
        return None if value is None else value != 0


@dataclass(frozen=True)
class SeenReport:
    """A report and when the host saw it: ``seen_at`` is ``time.monotonic()`` (or the clock
    passed in), ``offset`` the log position just after its line."""

    report: Report
    seen_at: float
    offset: int


class ReportTimeout(TimeoutError):
    """No report satisfying the condition appeared before the deadline."""


def parse_line(line: str) -> Report | None:
    """The report on one console line, or None when the line holds none."""
    for tag, kind in _KINDS.items():
        start = line.find(tag)
        if start < 0:
            continue
        fields = {}
        for token in line[start + len(tag) :].split():
            key, sep, value = token.partition("=")
            if sep and key:
                fields[key] = value
        return Report(kind, fields)
    return None


def parse_reports(text: str) -> list[Report]:
    """Every report in ``text``, in order."""
    return [r for r in map(parse_line, text.splitlines()) if r is not None]


def console_offset(path: Path) -> int:
    """The log's current size: pass it as ``after_offset`` to wait only for newer reports."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def read_reports(path: Path, offset: int = 0) -> tuple[list[Report], int]:
    """Reports on the complete lines after ``offset`` and the offset after the last of them.

    A log shorter than ``offset`` was restarted (the guest booted again) and is read from 0.
    """
    lines, end = _read_lines(path, offset)
    return [r for r in (parse_line(line) for line, _ in lines) if r is not None], end


def latest_report(path: Path, *, tail_bytes: int = 16384) -> Report | None:
    """The guest's most recent READY or REPORT line (events skipped), or None."""
    size = console_offset(path)
    tail = tail_bytes
    while True:
        start = max(0, size - tail)
        lines, _ = _read_lines(path, start, skip_partial_first=start > 0)
        for line, _ in reversed(lines):
            report = parse_line(line)
            if report is not None and report.kind != "event":
                return report
        if start == 0:
            return None
        tail *= 4


def wait_for_report(
    path: Path,
    predicate: Callable[[Report], bool],
    *,
    after_offset: int = 0,
    timeout_s: float = 180.0,
    poll_s: float = 0.05,
    include_events: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SeenReport:
    """Poll the log until a report after ``after_offset`` satisfies ``predicate``.

    Raises :class:`ReportTimeout` (naming the last report seen) after ``timeout_s``.
    """
    deadline = clock() + timeout_s
    offset = after_offset
    last: Report | None = None
    while True:
        lines, end = _read_lines(path, offset)
        now = clock()
        for line, line_end in lines:
            report = parse_line(line)
            if report is None or (report.kind == "event" and not include_events):
                continue
            last = report
            if predicate(report):
                return SeenReport(report, now, line_end)
        offset = end
        if now >= deadline:
            seen = f"last: {last.kind} {dict(last.fields)}" if last else "nothing reported"
            raise ReportTimeout(f"no matching report in {path} within {timeout_s:g} s ({seen})")
        sleep(poll_s)


def _read_lines(
    path: Path, offset: int, skip_partial_first: bool = False
) -> tuple[list[tuple[str, int]], int]:
    """Complete lines after ``offset`` with the offset after each, and the offset after the last."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < offset:
                offset = 0
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    lines: list[tuple[str, int]] = []
    pos = 0
    if skip_partial_first:
        pos = data.find(b"\n") + 1 if b"\n" in data[:end] else end
    while pos < end:
        nl = data.index(b"\n", pos)
        lines.append((data[pos:nl].decode("utf-8", "replace").rstrip("\r"), offset + nl + 1))
        pos = nl + 1
    return lines, offset + end
