"""The demo's live view: one row per guest, redrawn in place on a terminal (plain ANSI), or plain
lines now and then when stdout is not one (CI logs)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from presculpt.clitools import format_table

COLUMNS = (
    ("guest", "GUEST"), ("vm", "TRACE VM"), ("demand", "DEMAND NOW"), ("forecast", "FORECAST p50 [p90-p99]"),
    ("alloc", "ALLOCATION"), ("inside", "GUEST SEES"), ("action", "LAST ACTION"), ("reason", "REASON"),
)
CLEAR = "\x1b[H\x1b[2J"
PLAIN_EVERY_S = 15.0  # without a terminal, a status block this often (actions are printed as they happen)


@dataclass(frozen=True)
class GuestRow:
    guest: str
    vm: str
    demand: str
    forecast: str
    alloc: str
    inside: str
    action: str
    reason: str


class LiveView:
    """Shows rows as they change. ``tty`` None: decide from the stream."""

    def __init__(self, stream: TextIO = sys.stdout, tty: bool | None = None):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._last_plain = float("-inf")
        self._printed_actions: set[str] = set()

    def show(self, header: str, rows: Sequence[GuestRow], footer: str = "") -> None:
        if self.tty:
            width = shutil.get_terminal_size((160, 40)).columns
            table = format_table([r.__dict__ for r in rows], COLUMNS)
            lines = [header, "", *(_clip(line, width) for line in table.splitlines())]
            if footer:
                lines += ["", footer]
            self.stream.write(CLEAR + "\n".join(lines) + "\n")
            self.stream.flush()
            return
        now = time.monotonic()
        if now - self._last_plain < PLAIN_EVERY_S:
            return
        self._last_plain = now
        self.stream.write(header + "\n")
        for r in rows:
            self.stream.write(f"  {r.guest} ({r.vm}): demand {r.demand}; forecast {r.forecast}; allocated {r.alloc}; "
                              f"guest sees {r.inside}; last {r.action}\n")
        self.stream.flush()

    def action(self, key: str, line: str) -> None:
        """An action as it happens (plain mode only: the table shows the latest one)."""
        if self.tty or key in self._printed_actions:
            return
        self._printed_actions.add(key)
        self.stream.write(f"  action: {line}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(width - 1, 10)] + "…"
